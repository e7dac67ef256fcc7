"""Model and dataset names made local: directories, run directories, GGUF files, aliases, hub ids, the embedded default.

Importing this package loads neither torch nor transformers; they are imported where a conversion needs them.
"""

from tunestack.hub.cache import cache_dir
from tunestack.hub.catalog import list_models
from tunestack.hub.download import download_dataset, download_model
from tunestack.hub.gguf import convert_gguf, embedded_gguf_path
from tunestack.hub.registry import ALIASES, EMBEDDED_DEFAULT, ModelAlias, lookup_alias
from tunestack.hub.resolve import ResolvedModel, resolve_model

__all__ = [
    "ALIASES",
    "EMBEDDED_DEFAULT",
    "ModelAlias",
    "ResolvedModel",
    "cache_dir",
    "convert_gguf",
    "download_dataset",
    "download_model",
    "embedded_gguf_path",
    "list_models",
    "lookup_alias",
    "resolve_model",
]
