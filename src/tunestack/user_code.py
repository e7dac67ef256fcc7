"""Objects from the user's own Python files, named as PATH.py:NAME (reward functions, a loss, metrics, Trainer
callbacks, a dataset preprocessor): imported once per file, with errors that name the flag and the path."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from pathlib import Path

from tunestack.errors import TunestackError


def is_spec(spec: str) -> bool:
    """Whether `spec` has the form PATH.py:NAME."""
    path, _, name = spec.rpartition(":")
    return path.endswith(".py") and bool(name)


def load_object(where: str, spec: str, kind: str = "function", relative_to: Path | None = None):
    """The callable NAME of the file PATH.py named by `spec`; `where` leads every message (`--loss_func`), and a
    relative PATH resolves against `relative_to` (else the working directory)."""
    path, _, name = spec.rpartition(":")
    if not is_spec(spec):
        raise TunestackError(f"{where} {spec}: expected PATH.py:{kind.upper()}, e.g. my_code.py:my_{kind}")
    file = Path(path).expanduser()
    if relative_to is not None and not file.is_absolute():
        file = relative_to / file
    if not file.is_file():
        raise TunestackError(f"{where} {spec}: file {file} not found")
    try:
        module = _module(str(file.resolve()))
    except ImportFailed as exc:
        raise TunestackError(f"{where}: importing {file.resolve()} failed: {exc}") from None
    found = getattr(module, name, None)
    if not callable(found):
        raise TunestackError(f"{where} {spec}: {file} defines no {kind} {name}")
    return found


class ImportFailed(Exception):
    """Running the user's file raised."""


@functools.cache
def _module(path: str):
    digest = hashlib.sha1(path.encode()).hexdigest()[:8]
    module_spec = importlib.util.spec_from_file_location(f"tunestack_user_{Path(path).stem}_{digest}", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        raise ImportFailed(f"{type(exc).__name__}: {exc}") from None
    return module
