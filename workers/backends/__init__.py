"""Inference backends: the protocol, the echo dry-run backend, llama.cpp, and the factory choosing one."""
