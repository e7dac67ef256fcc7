"""The run directory: manifest, metrics, atomic checkpoints, final model, plots."""

from tunestack.run.rundir import RunDir

__all__ = ["RunDir"]
