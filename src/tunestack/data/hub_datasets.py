"""Read a hub dataset split into rows, failing in seconds with the fix when it is not downloaded and the hub is down."""

from __future__ import annotations

from collections.abc import Iterator

from tunestack.data.readers import LocatedRow
from tunestack.errors import DataError
from tunestack.hub.fetch import cached_snapshot
from tunestack.hub.reach import hub_offline, hub_reachable


def hub_rows(repo: str, subset: str | None, split: str, streaming: bool = False) -> Iterator[LocatedRow]:
    """Rows of a hub dataset split; fails in seconds, with the fix, when the hub cannot be reached."""
    dataset = _load_hub(repo, subset, split, streaming)
    for number, row in enumerate(dataset, 1):
        yield f"{repo}, row {number}", row


def _load_hub(repo: str, subset: str | None, split: str, streaming: bool):
    import datasets

    tried = f"hub dataset {repo}{':' + subset if subset else ''}@{split} (not a local file or folder either)"
    fix = f"download it with `tunestack download --dataset {repo}` where the hub is reachable, or pass a local file"
    source = cached_snapshot(repo, repo_type="dataset")  # what `tunestack download --dataset` left in the cache
    if source is None:  # datasets itself would retry the network for about 20 s before giving up
        if hub_offline():
            raise DataError(f"{tried}: it is not downloaded and offline mode (HF_HUB_OFFLINE) is on; {fix}")
        if not hub_reachable():
            raise DataError(f"{tried}: it is not downloaded and the hub is unreachable; {fix}")
    try:
        return datasets.load_dataset(str(source or repo), subset, split=split, streaming=streaming)
    except Exception as e:  # datasets raises many types (not found, offline, gated, bad split); all need the same fix
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{tried} could not be loaded ({reason}); {fix}") from None
