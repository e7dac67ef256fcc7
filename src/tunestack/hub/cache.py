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
