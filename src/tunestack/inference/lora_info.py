"""What external backends need to know about LoRA adapters without loading them: rank, and that there is one."""

from __future__ import annotations

import json
from pathlib import Path

from tunestack.errors import ConfigError


def lora_rank(folder: str | Path) -> int:
    config = json.loads((Path(folder) / "adapter_config.json").read_text())
    ranks = [config.get("r", 8), *(config.get("rank_pattern") or {}).values()]
    return max(int(r) for r in ranks)


def single_adapter(adapter_dirs: list[Path], backend: str) -> Path | None:
    """The one adapter applied to every request for the base model; backends cannot stack several."""
    if len(adapter_dirs) > 1:
        raise ConfigError([f"--backend {backend} applies one LoRA adapter per request, but {len(adapter_dirs)} "
                           "were given: merge them first (tunestack export --adapter A --adapter B), then serve that"])
    return adapter_dirs[0] if adapter_dirs else None
