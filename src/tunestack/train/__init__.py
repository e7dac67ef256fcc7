"""One readable file per training method; shared plumbing lives in trainer.py and setup.py."""
