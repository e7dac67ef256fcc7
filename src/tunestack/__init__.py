"""tunestack: fine-tune, align, export, serve and evaluate language models with one tool."""

__version__ = "0.1.0"
