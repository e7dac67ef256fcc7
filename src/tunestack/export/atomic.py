"""Write a folder so that it appears complete or not at all: a full disk or a kill never leaves half a model."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

from tunestack.errors import TunestackError


def write_folder_atomically(target: Path, write: Callable[[Path], None], carry: tuple[str, ...] = ()) -> None:
    """Run `write(folder)` on a sibling temporary folder, then rename it into place: `target` only ever holds the
    old contents or the complete new ones (an old `target` is replaced only once the new one is complete).
    The files named in `carry` (the export's events, appended in `target` while it writes) move from `target` into
    the new folder just before it takes its place, the same files, so a reader following one keeps its place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp-{secrets.token_hex(4)}")
    tmp.mkdir()
    try:
        write(tmp)
        for file in tmp.rglob("*"):
            if file.is_file():
                with open(file, "rb") as fh:
                    os.fsync(fh.fileno())
        carried = _move(carry, target, tmp)
        old = _set_aside(target)  # a kill between these two renames leaves the old model in target.old-*
        try:
            os.replace(tmp, target)  # over an empty folder, or none
        except BaseException:
            if old is not None:
                os.replace(old, target)
            _move(carried, tmp, target)
            raise
    except OSError as error:
        shutil.rmtree(tmp, ignore_errors=True)
        raise TunestackError(f"writing {target} failed ({error}); {target} was left as it was") from error
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _set_aside(target: Path) -> Path | None:
    """Move a non-empty `target` to a sibling name so the new folder can take its place; None when there is none."""
    if not (target.exists() and any(target.iterdir())):
        return None
    old = target.with_name(f"{target.name}.old-{secrets.token_hex(4)}")
    os.replace(target, old)
    return old


def _move(names, source: Path, target: Path) -> tuple[str, ...]:
    """Move the files `names` that `source` holds into `target`; returns those moved."""
    moved = tuple(name for name in names if (source / name).is_file() and target.is_dir())
    for name in moved:
        os.replace(source / name, target / name)
    return moved
