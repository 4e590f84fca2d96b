"""Options per device for a batch, the strategies that score them, and the decision."""
