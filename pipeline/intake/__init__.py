"""Taking prompts in: parsing files and streams, limits, the one submission path."""
