"""Fetch models and datasets into the local cache ahead of time (`tunestack download`), resumably."""

from __future__ import annotations

from pathlib import Path

from tunestack.errors import DataError, ModelNotFoundError
from tunestack.hub.fetch import (
    MODEL_FILES,
    HubUnavailable,
    explain,
    hf_snapshot,
    looks_like_hub_id,
    modelscope_snapshot,
)
from tunestack.hub.registry import lookup_alias
from tunestack.hub.resolve import resolve_model


def download_model(name: str, hub: str = "hf", revision: str | None = None) -> Path:
    """Download a hub id or an alias's hub model into the cache (a local path just resolves); returns its directory."""
    if Path(name).expanduser().exists():
        return resolve_model(name, hub, revision).path
    alias = lookup_alias(name)
    repo_id = alias.hub_id(name, hub) if alias else name
    if not looks_like_hub_id(repo_id):
        raise ModelNotFoundError(
            f"model '{name}': not an alias (see `tunestack models`) nor a hub id (org/name), "
            "so there is nothing to download"
        )
    try:
        if hub == "modelscope":
            return modelscope_snapshot(repo_id, revision)
        return hf_snapshot(repo_id, revision, patterns=MODEL_FILES, cache_first=False)[0]
    except HubUnavailable as error:
        problem, fix = explain(error, repo_id, revision)
        raise ModelNotFoundError(f"cannot download model '{name}': {problem}. {fix}") from error


def download_dataset(name: str, revision: str | None = None) -> Path:
    """Download a Hugging Face Hub dataset repository (all files) into the cache; returns its snapshot directory."""
    if not looks_like_hub_id(name):
        raise DataError(
            f"dataset '{name}' is not a hub id (org/name); local files and built-in datasets need no download"
        )
    try:
        return hf_snapshot(name, revision, repo_type="dataset", cache_first=False)[0]
    except HubUnavailable as error:
        problem, fix = explain(error, name, revision, what="dataset")
        raise DataError(f"cannot download dataset '{name}': {problem}. {fix}") from error
