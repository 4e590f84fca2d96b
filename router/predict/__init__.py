"""Predicted latency and energy of a batch on a device: nominal figures or fitted benchmark profiles."""
