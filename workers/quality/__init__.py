"""``ecobatch eval``: a model's accuracy on a small labelled set, scored by log-likelihood."""
