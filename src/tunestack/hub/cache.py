"""Where downloaded and converted models live, read from the standard Hugging Face variables at call time."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """tunestack's own cache (converted GGUF models): `$HF_HOME/tunestack`."""
    return _hf_home() / "tunestack"


def hub_cache_dir() -> Path:
    """The Hugging Face Hub cache: `$HF_HUB_CACHE`, else `$HF_HOME/hub`."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return _hf_home() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _hf_home() -> Path:
    """`$HF_HOME` as set now, else huggingface_hub's default (which also honours `$XDG_CACHE_HOME`)."""
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_HOME)


def build_in_place(target: Path, write, record: dict, record_name: str) -> None:
    """Run `write(folder)` in a hidden sibling of `target`, add `record` as JSON file `record_name`, and rename the
    folder into place only once complete: a reader sees no `target`, or a whole one. Leftovers of killed builds are
    cleared first; the caller holds the lock that keeps other writers out."""
    import json
    import shutil
    import uuid

    for leftover in target.parent.glob(f".{target.name}.partial-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    partial = target.parent / f".{target.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    partial.mkdir()  # unlike tempfile.mkdtemp, honours the umask, so a shared cache stays readable
    try:
        write(partial)
        (partial / record_name).write_text(json.dumps(record, indent=2) + "\n")
        if target.exists():  # incomplete, and not ours: nothing else writes there
            shutil.rmtree(target)
        os.replace(partial, target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
