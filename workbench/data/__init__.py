"""Personalization data: examples, benchmark loaders, prompts, the bundled demo set."""
