"""Checks and records shared by the training methods: flag validation, run manifest, fingerprints."""

from __future__ import annotations

import hashlib
import json
import platform
import time
from dataclasses import asdict
from pathlib import Path

from tunestack.config import DataArgs, ModelArgs, TrainArgs, TunerArgs
from tunestack.errors import ConfigError


def validate_training(data: DataArgs, tuner: TunerArgs, train: TrainArgs) -> None:
    """Cross-field checks before anything heavy runs; every problem is reported at once."""
    problems = []
    if not data.dataset:
        problems.append("--dataset: required; a file, folder, built-in (self-cognition, arith) or hub id")
    checks = [
        (data.max_length > 0, f"--max_length: expected a positive integer, got {data.max_length}"),
        (0 <= data.val_ratio < 1, f"--val_ratio: expected a fraction in [0, 1), got {data.val_ratio}"),
        (tuner.lora_rank > 0, f"--lora_rank: expected a positive integer, got {tuner.lora_rank}"),
        (tuner.lora_alpha > 0, f"--lora_alpha: expected a positive number, got {tuner.lora_alpha}"),
        (0 <= tuner.lora_dropout < 1, f"--lora_dropout: expected a fraction in [0, 1), got {tuner.lora_dropout}"),
        (train.learning_rate is None or train.learning_rate > 0,
         f"--learning_rate: expected a positive number, got {train.learning_rate}"),
        (train.per_device_train_batch_size > 0,
         f"--per_device_train_batch_size: expected a positive integer, got {train.per_device_train_batch_size}"),
        (train.gradient_accumulation_steps > 0,
         f"--gradient_accumulation_steps: expected a positive integer, got {train.gradient_accumulation_steps}"),
        (train.num_train_epochs > 0 or train.max_steps > 0,
         "--num_train_epochs / --max_steps: one of them must be positive"),
        (train.save_steps > 0, f"--save_steps: expected a positive integer, got {train.save_steps}"),
        (train.logging_steps > 0, f"--logging_steps: expected a positive integer, got {train.logging_steps}"),
        (train.save_total_limit > 0, f"--save_total_limit: expected a positive integer, got {train.save_total_limit}"),
        (0 <= train.warmup_ratio < 1, f"--warmup_ratio: expected a fraction in [0, 1), got {train.warmup_ratio}"),
        (not (data.streaming and train.max_steps <= 0),
         "--streaming: a stream has no known length; set --max_steps"),
        (not (train.resume and train.overwrite_output_dir), "--resume and --overwrite_output_dir exclude each other"),
    ]
    problems += [message for ok, message in checks if not ok]
    if problems:
        raise ConfigError(problems)


def model_fingerprint(path: Path) -> str:
    """A short hash of a model folder's config and weight file names and sizes: identifies the base model."""
    digest = hashlib.sha256()
    config = path / "config.json"
    if config.is_file():
        digest.update(config.read_bytes())
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
