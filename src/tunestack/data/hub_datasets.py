"""Read a hub dataset split into rows, failing in seconds with the fix when it is not downloaded and the hub is down."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

from tunestack.data.readers import LocatedRow
from tunestack.errors import DataError


def hub_rows(repo: str, subset: str | None, split: str, streaming: bool = False) -> Iterator[LocatedRow]:
    """Rows of a hub dataset split; fails in seconds, with the fix, when the hub cannot be reached."""
    dataset = _load_hub(repo, subset, split, streaming)
    for number, row in enumerate(dataset, 1):
        yield f"{repo}, row {number}", row


def _load_hub(repo: str, subset: str | None, split: str, streaming: bool):
    import datasets

    tried = f"hub dataset {repo}{':' + subset if subset else ''}@{split} (not a local file or folder either)"
    fix = f"download it with `tunestack download --dataset {repo}` where the hub is reachable, or pass a local file"
    source = _downloaded_snapshot(repo)
    if source is None and not datasets.config.HF_HUB_OFFLINE:
        # datasets itself would retry the network for about 20 s before giving up
        if _env_flag("HF_HUB_OFFLINE"):
            raise DataError(f"{tried}: it is not downloaded and offline mode (HF_HUB_OFFLINE) is on; {fix}")
        if not _hub_reachable():
            raise DataError(f"{tried}: it is not downloaded and the hub is unreachable; {fix}")
    try:
        return datasets.load_dataset(source or repo, subset, split=split, streaming=streaming)
    except Exception as e:  # datasets raises many types (not found, offline, gated, bad split); all need the same fix
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{tried} could not be loaded ({reason}); {fix}") from None


def _downloaded_snapshot(repo: str) -> str | None:
    """The folder `tunestack download --dataset` left in the hub cache, found without the network."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo, repo_type="dataset", local_files_only=True)
    except (OSError, ValueError):  # not in the cache, or not a valid repo id
        return None


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE")


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub endpoint opens; behind a proxy we cannot tell, so assume yes."""
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    from huggingface_hub import constants

    url = urlsplit(os.environ.get("HF_ENDPOINT") or constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
    except OSError:
        return False
    return True
