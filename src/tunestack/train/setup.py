"""Checks and records shared by the training methods: flag validation, run manifest, fingerprints, and the
evaluation of a finished run (--eval_tasks)."""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

from tunestack.config import DataArgs, ModelArgs, TrainArgs, TunerArgs
from tunestack.config.parse import field_problems
from tunestack.errors import ConfigError
from tunestack.run import RunDir


def validate_training(data: DataArgs, tuner: TunerArgs, train: TrainArgs) -> None:
    """Cross-field checks before anything heavy runs; every problem is reported at once."""
    problems = []
    if not data.dataset:
        problems.append("--dataset: required; a file, folder, built-in (self-cognition, arith) or hub id")
    for group in (data, tuner, train):
        problems += field_problems(group)
    checks = [
        (train.num_train_epochs > 0 or train.max_steps > 0,
         "--num_train_epochs / --max_steps: one of them must be positive"),
        (not (data.streaming and train.max_steps <= 0),
         "--streaming: a stream has no known length; set --max_steps"),
        (not (train.resume and train.overwrite_output_dir), "--resume and --overwrite_output_dir exclude each other"),
    ]
    problems += [message for ok, message in checks if not ok]
    if problems:
        raise ConfigError(problems)


def model_fingerprint(path: Path, legacy: bool = False) -> str:
    """A short hash of a model folder's config and weight file names and sizes: identifies the base model.

    The config's `transformers_version` is left out: the same weights converted or saved by another transformers
    release are the same base. `legacy` hashes the config file as it is, as runs recorded before did."""
    digest = hashlib.sha256()
    config = path / "config.json"
    if config.is_file() and legacy:
        digest.update(config.read_bytes())
    elif config.is_file():
        settings = {k: v for k, v in json.loads(config.read_text()).items() if k != "transformers_version"}
        digest.update(json.dumps(settings, sort_keys=True).encode())
    for weights in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        digest.update(f"{weights.name}:{weights.stat().st_size}".encode())
    return digest.hexdigest()[:16]


def rows_fingerprint(rows: list[dict]) -> str:
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(row["input_ids"]).encode())
        digest.update(json.dumps(row["labels"]).encode())
    return digest.hexdigest()[:16]


def library_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for name in ("tunestack", "torch", "transformers", "peft", "trl", "accelerate", "datasets"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def new_manifest(command: str, model: ModelArgs, data: DataArgs, tuner: TunerArgs, train: TrainArgs,
                 resolved, template: str, precision: str, data_report: dict) -> dict:
    """The run.json a training method writes before training: enough to resume, infer, serve or export."""
    return {
        "command": command,
        "status": "running",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "base_model": model.model,
        "base_model_source": resolved.source,
        "base_model_path": str(resolved.path),
        "base_model_fingerprint": model_fingerprint(Path(resolved.path)),
        "tuner": tuner.tuner,
        "template": template,
        "precision": precision,
        "seed": train.seed,
        "config": {"model": asdict(model), "data": asdict(data), "tuner": asdict(tuner), "train": asdict(train)},
        "data": data_report,
        "versions": library_versions(),
    }


def eval_args(data_args: DataArgs, train_args: TrainArgs):
    """The `tunestack eval` flags that --eval_tasks, --eval_task_data and --eval_limit stand for."""
    from tunestack.config import EvalArgs

    return EvalArgs(tasks=train_args.eval_tasks, task_data=train_args.eval_task_data, limit=train_args.eval_limit,
                    batch_size=train_args.per_device_eval_batch_size, seed=train_args.seed,
                    model_name=data_args.model_name, model_author=data_args.model_author)


def evaluate_final(run: RunDir, model_args: ModelArgs, data_args: DataArgs, train_args: TrainArgs) -> None:
    """Evaluate the finished run (base + adapter, or the full model) and write the report into run/eval/."""
    import dataclasses

    from tunestack.eval.command import run_eval

    print(f"evaluating {run.final} on {', '.join(train_args.eval_tasks)}", file=sys.stderr, flush=True)
    summary = run_eval(dataclasses.replace(model_args, model=str(run.path)), eval_args(data_args, train_args),
                       run.path / "eval")
    run.update(eval={task: {name: metric["value"] for name, metric in result["metrics"].items()}
                     for task, result in summary["tasks"].items()})

