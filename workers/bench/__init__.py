"""Device benchmarking (`ecobatch bench`) and its plots."""
