"""The live routing pass: batching pending prompts, hard limits (liveness, memory), publishing batches."""
