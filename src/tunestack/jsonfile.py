"""Read a small JSON file that must hold an object, with a one-line error naming the file."""

from __future__ import annotations

import json
from pathlib import Path

from tunestack.errors import TunestackError


def read_json_object(path: Path, error: type[TunestackError] = TunestackError) -> dict:
    """The JSON object in `path`; raises `error` naming the file when it is unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise error(f"{path}: cannot read it as JSON ({exc})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data
