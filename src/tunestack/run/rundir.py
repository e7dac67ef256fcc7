"""RunDir: everything a run writes lives under one folder, and that folder alone describes the run."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from tunestack.errors import TunestackError
from tunestack.jsonfile import read_json_object

COMPLETE_MARKER = "tunestack_complete.json"


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON so that a reader (or a kill -9) only ever sees the old file or the whole new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=2, default=str)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class RunDir:
    """A run's folder: run.json, metrics.jsonl, checkpoints/, final/, loss.png, tensorboard/."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    manifest_path = property(lambda self: self.path / "run.json")
    metrics_path = property(lambda self: self.path / "metrics.jsonl")
    checkpoints = property(lambda self: self.path / "checkpoints")
    final = property(lambda self: self.path / "final")
    final_tmp = property(lambda self: self.path / "final.tmp")
    tensorboard = property(lambda self: self.path / "tensorboard")

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def read_manifest(self) -> dict:
        return read_json_object(self.manifest_path)

    def write_manifest(self, manifest: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.manifest_path, manifest)

    def update(self, **fields) -> None:
        manifest = self.read_manifest()
        manifest.update(fields)
        write_json_atomic(self.manifest_path, manifest)

    def prepare(self, resume: bool, overwrite: bool) -> None:
        """Refuse to clobber an existing run unless asked; a fresh run starts from an empty folder."""
        if resume:
            if not self.exists():
                raise TunestackError(f"--resume: {self.path} holds no run to resume (no run.json); drop --resume")
            return
        if self.path.exists() and any(self.path.iterdir()):
            if not overwrite:
                status = self.read_manifest().get("status", "unknown") if self.exists() else "not a run"
                raise TunestackError(
                    f"--output_dir {self.path} is not empty (status: {status}); pass --resume to continue it "
                    "or --overwrite_output_dir to start afresh"
                )
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)

    def complete_checkpoints(self) -> list[Path]:
        """Checkpoints whose writing finished (marker present), oldest first."""
        if not self.checkpoints.is_dir():
            return []
        found = [p for p in self.checkpoints.glob("checkpoint-*") if (p / COMPLETE_MARKER).is_file()]
        return sorted(found, key=lambda p: int(p.name.rsplit("-", 1)[1]))

    def latest_checkpoint(self) -> Path | None:
        done = self.complete_checkpoints()
        return done[-1] if done else None

    def discard_incomplete_checkpoints(self) -> list[Path]:
        """Remove checkpoint folders a crash left half-written; returns what was removed."""
        if not self.checkpoints.is_dir():
            return []
        partial = [p for p in self.checkpoints.glob("checkpoint-*") if not (p / COMPLETE_MARKER).is_file()]
        for path in partial:
            shutil.rmtree(path, ignore_errors=True)
        return partial

    def mark_checkpoint_complete(self, checkpoint: Path, step: int, keep: int) -> None:
        """Seal a fully written checkpoint, then drop the oldest sealed ones beyond `keep`."""
        for file in checkpoint.rglob("*"):
            if file.is_file():
                with open(file, "rb") as fh:
                    os.fsync(fh.fileno())
        write_json_atomic(checkpoint / COMPLETE_MARKER, {"step": step})
        done = self.complete_checkpoints()
        for old in done[: max(len(done) - keep, 0)]:
            # Unsealed first: a rotation cut short (Ctrl-C while stopping) never leaves a half-deleted sealed one.
            (old / COMPLETE_MARKER).unlink(missing_ok=True)
            shutil.rmtree(old, ignore_errors=True)

    def append_metrics(self, record: dict) -> None:
        with open(self.metrics_path, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def read_metrics(self) -> list[dict]:
        if not self.metrics_path.is_file():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]

    def save_final(self, save_fn) -> Path:
        """Write the final model into final.tmp/ with `save_fn(path)`, then swap it into place."""
        shutil.rmtree(self.final_tmp, ignore_errors=True)
        save_fn(self.final_tmp)
        return self.swap_final()

    def swap_final(self) -> Path:
        """Put the complete final.tmp/ in place of final/."""
        shutil.rmtree(self.final, ignore_errors=True)
        os.replace(self.final_tmp, self.final)
        return self.final

    def truncate_metrics(self, step: int) -> None:
        """Forget metrics logged after `step` (a resumed run logs those steps again)."""
        kept = [r for r in self.read_metrics() if r.get("step", 0) <= step]
        tmp = self.metrics_path.with_name(".metrics.jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        os.replace(tmp, self.metrics_path)
