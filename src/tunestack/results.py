"""What the Python API returns: a training run, an export and an evaluation report, each read from its folder."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Run:
    """A run directory: its manifest, metrics and final model."""

    path: Path

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads((self.path / "run.json").read_text())

    @property
    def status(self) -> str:
        return str(self.manifest.get("status", "unknown"))

    @property
    def metrics(self) -> list[dict[str, Any]]:
        """One dict per logged step (metrics.jsonl)."""
        file = self.path / "metrics.jsonl"
        return [json.loads(line) for line in file.read_text().splitlines() if line.strip()] if file.is_file() else []

    @property
    def final_loss(self) -> float | None:
        value = self.manifest.get("final_loss")
        return float(value) if value is not None else None

    @property
    def final(self) -> Path:
        return self.path / "final"

    def chat(self, prompt: str | list[dict], **kwargs: Any) -> str:
        """One answer from the trained model (`tunestack infer --model RUN --prompt ...`)."""
        from tunestack.api import chat

        return chat(self.path, prompt, **kwargs)

    def plot(self, keys: tuple[str, ...] = ("loss",)):
        """A matplotlib figure of the logged figures against step (shown inline in a notebook)."""
        import matplotlib.pyplot as plt  # in a notebook this is what shows figures inline

        fig, ax = plt.subplots(figsize=(7, 4))
        for key in keys:
            points = [(m["step"], m[key]) for m in self.metrics if key in m]
            if points:
                ax.plot(*zip(*points), label=key)
        ax.set_xlabel("step")
        ax.legend()
        ax.grid(alpha=0.3)
        plt.close(fig)  # shown once, as the cell's result
        return fig

    def _repr_html_(self) -> str:
        return f"<b>Run</b> {self.path} — {self.status}, final loss {self.final_loss}"


@dataclass
class Export:
    """An export folder: the model files, export.json's sizes and perplexities."""

    path: Path

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    @property
    def record(self) -> dict[str, Any]:
        file = self.path / "export.json"
        return json.loads(file.read_text()) if file.is_file() else {}

    @property
    def sizes(self) -> dict[str, Any]:
        return dict(self.record.get("sizes", {}))

    @property
    def perplexity(self) -> dict[str, Any]:
        """Perplexity of the source and of the export on the same text (with --eval_ppl)."""
        return dict(self.record.get("perplexity", {}))


@dataclass
class EvalReport:
    """An evaluation's output folder: report.json's scores and the per-question samples."""

    path: Path

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    @property
    def report(self) -> dict[str, Any]:
        return json.loads((self.path / "report.json").read_text())

    @property
    def scores(self) -> dict[str, dict[str, float]]:
        """task -> metric -> value."""
        return {task: {name: metric["value"] for name, metric in result.get("metrics", {}).items()}
                for task, result in self.report.get("tasks", {}).items()}

    def samples(self, task: str) -> list[dict[str, Any]]:
        file = self.path / "samples" / f"{task}.jsonl"
        return [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
