"""ecobatch device workers: inference backends, energy meters and the device task."""
