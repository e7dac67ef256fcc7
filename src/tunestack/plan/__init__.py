"""Memory and time of a training run from its flags and the model's config (no weights), and the plan that fits.

`build_estimate` is what `tunestack estimate` reports; `auto_plan` is the pure function behind `sft --auto_plan`.
"""

from tunestack.plan.recommend import Plan, TrainingGroups, auto_plan

__all__ = ["Plan", "TrainingGroups", "auto_plan"]
