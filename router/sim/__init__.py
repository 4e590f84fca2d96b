"""Discrete-event fleet simulator: arrivals, fleet, the event loop around the live router code,
metrics and plots."""
