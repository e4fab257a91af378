"""LLM alignment: tiny offline models and synthetic tasks, pure losses, and trainers on transformers."""
