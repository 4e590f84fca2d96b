"""Getting lost work back: Redis losses, unpublished batches, batches of lost workers."""
