"""Experiment trackers (--report_to): which are meant and installed, and the run's own config sent to them.

The trackers themselves are transformers' integrations (TrainingArguments.report_to, with the run directory's name as
run_name); TensorBoard alone is attached by run_callbacks, so that its events land in the run directory."""

from __future__ import annotations

import importlib.util

from transformers import TrainerCallback

TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "swanlab": "swanlab", "mlflow": "mlflow"}
"""--report_to's trackers and the module each needs."""


def trackers(report_to: list[str]) -> list[str]:
    """The trackers --report_to names: `none` is none, `all` is tensorboard and every other one installed."""
    if "none" in report_to:
        return []
    if "all" in report_to:
        return [name for name, module in TRACKERS.items() if importlib.util.find_spec(module) is not None]
    return list(dict.fromkeys(report_to))


def tracker_problems(report_to: list[str]) -> list[str]:
    """--report_to values that cannot work here: `none` with a tracker, a tracker that is not installed."""
    if "none" in report_to and len(set(report_to)) > 1:
        return [f"--report_to {','.join(report_to)}: none excludes the trackers named with it"]
    return [f"--report_to {name}: {name} is not installed: pip install 'tunestack[tracking]'"
            for name in trackers(report_to) if importlib.util.find_spec(TRACKERS[name]) is None]


class RunConfigToTrackers(TrainerCallback):
    """Adds the run's resolved tunestack config (run.json's `config`: model, data, tuner, training flags) to the
    wandb, swanlab and mlflow runs that transformers' integrations opened; they log TrainingArguments themselves."""

    def __init__(self, run):
        self.run = run

    def on_train_begin(self, args, state, control, **kwargs):
        active = args.report_to if isinstance(args.report_to, list) else [args.report_to]
        if not state.is_world_process_zero or not self.run.manifest_path.is_file():
            return
        config = {"tunestack": self.run.read_manifest().get("config", {})}
        if "wandb" in active:
            import wandb

            if wandb.run is not None:
                wandb.run.config.update(config, allow_val_change=True)
        if "swanlab" in active:
            import swanlab

            swanlab.config.update(config)
        if "mlflow" in active:
            import mlflow

            if mlflow.active_run() is not None:
                mlflow.log_dict(config, "tunestack_config.json")
