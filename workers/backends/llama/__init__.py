"""The batched llama.cpp backend: native bindings, sequences and KV streams, chat templates, memory
checks, GPU pinning.
"""
