"""Memory and time of a training run from its flags and the model's config (no weights), and the plan that fits."""
