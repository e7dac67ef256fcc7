"""Load models and tokenizers with the right precision and attention kernel, and attach tuners."""
