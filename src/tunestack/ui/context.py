"""UiContext: what every tab of the web UI shares (the runs folder, the folders it may read, the jobs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tunestack.ui.jobs import Jobs
from tunestack.ui.paths import PathNotAllowedError, check_path, resolve_allowed

__all__ = ["PathNotAllowedError", "UiContext"]


@dataclass
class UiContext:
    """Passed to each tab's `build(ctx)`."""

    runs_root: Path
    """Where runs started from the UI go, and where the Runs tab looks (`--runs_dir`, default ./runs)."""
    allowed_paths: list[Path] = field(default_factory=list)
    """Folders whose files the UI may read (resolved): those given (default: the working folder), and `runs_root`."""
    jobs: Jobs | None = None
    """The commands started from the UI (default: recorded in RUNS/.ui-jobs/)."""

    def __post_init__(self):
        self.runs_root = Path(self.runs_root).expanduser().resolve()
        self.allowed_paths = resolve_allowed([*(self.allowed_paths or [Path.cwd()]), self.runs_root])
        if self.jobs is None:
            self.jobs = Jobs(self.runs_root / ".ui-jobs")

    def check_path(self, text: str | Path, must_exist: bool = True, what: str = "path") -> Path:
        """The resolved path; raises PathNotAllowedError (a TunestackError) naming the problem when it is outside
        the allowed folders or (with `must_exist`) missing."""
        return check_path(text, self.allowed_paths, must_exist=must_exist, what=what)

    def new_output_dir(self, command: str) -> Path:
        """A fresh run folder for `command` under the runs folder: RUNS/COMMAND-TIMESTAMP."""
        import time

        stamp = time.strftime("%Y%m%d-%H%M%S")
        path, n = self.runs_root / f"{command}-{stamp}", 1
        while path.exists():
            n += 1
            path = self.runs_root / f"{command}-{stamp}-{n}"
        return path
