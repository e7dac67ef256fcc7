"""What run.json records about a run: the base model's identity, every parent run, data and library versions."""

from __future__ import annotations

import hashlib
import json
import platform
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path


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


def adapter_fingerprint(path: Path) -> str:
    """A short hash of an adapter's config and weights: identifies exactly what was merged or trained on."""
    digest = hashlib.sha256()
    for file in [path / "adapter_config.json"] + sorted(path.glob("adapter_model.*")):
        with open(file, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
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


def new_manifest(command: str, groups: list, start, template: str, precision: str, data_report: dict) -> dict:
    """The run.json a training method writes before training: enough to resume, infer, serve or export.

    `groups` are the parsed argument dataclasses; `start` is the `StartingPoint` the policy was loaded from."""
    return {
        "command": command,
        "status": "running",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "base_model": start.base_name,
        "base_model_source": start.resolved.source,
        "base_model_path": str(start.resolved.path),
        "base_model_fingerprint": model_fingerprint(Path(start.resolved.path)),
        "chain": start.chain,
        "tuner": next(g.tuner for g in groups if hasattr(g, "tuner")),
        "template": template,
        "precision": precision,
        "seed": next(g.seed for g in groups if hasattr(g, "seed")),
        "config": {_group_name(g): asdict(g) for g in groups if is_dataclass(g)},
        "data": data_report,
        "versions": library_versions(),
    }


def _group_name(group) -> str:
    """`ModelArgs` -> `model`, `DpoArgs` -> `method`: the key a group's flags are recorded under."""
    name = type(group).__name__.removesuffix("Args").lower()
    return name if name in ("model", "data", "tuner", "train", "parallel") else "method"
