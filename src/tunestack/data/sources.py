"""What a `--dataset` item names (a registered name, a built-in, a local file or folder, a hub id), as parts to read."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from tunestack.data.builtin import BUILTIN_DATASETS
from tunestack.data.readers import SUFFIXES, check_suffix, list_data_files
from tunestack.data.registry import RegisteredDataset, RowPreprocessor
from tunestack.errors import DataError

_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+(:[\w.-]+)?(@[\w.\[\]:%+-]+)?$")


@dataclass(frozen=True)
class Part:
    """One thing to read: a file, a built-in or a hub split, with the column mapping to apply."""

    kind: str  # "file", "builtin" or "hub"
    target: str
    columns: dict = field(default_factory=dict)
    subset: str | None = None
    split: str = "train"
    preprocess: RowPreprocessor | None = None
    """A registered dataset's own row mapping, applied before `columns`."""


@dataclass(frozen=True)
class Source:
    """One `--dataset` item: its parts, an optional sample size and, for registered names, validation parts."""

    spec: str
    parts: tuple[Part, ...]
    count: int | None = None
    val: tuple[Part, ...] = ()


def resolve(spec: str, registry: dict[str, RegisteredDataset], task: str) -> Source:
    """What `spec` names, tried in order: a registered name, a built-in, a local file or folder, a hub id."""
    name, count = _parse_count(spec)
    if name in registry:
        entry = registry[name]
        if entry.task and entry.task != task:
            raise DataError(f"{name} is declared as {entry.task} data in {entry.info_file}; {task} cannot use it")
        if entry.hub:
            parts = (Part("hub", entry.hub, entry.columns, entry.subset, entry.split or "train", entry.preprocess),)
        else:
            parts = _file_parts(entry.train, entry.columns, entry.where("train"), entry.preprocess)
        return Source(spec, parts, count, _file_parts(entry.val, entry.columns, entry.where("val"), entry.preprocess))
    if name in BUILTIN_DATASETS:
        return Source(spec, (Part("builtin", name),), count)
    path = Path(name).expanduser()
    if path.exists():
        return Source(spec, _file_parts([path], {}, None), count)
    if _HUB_ID.match(name) and path.suffix.lower() not in SUFFIXES:
        repo, _, split = name.partition("@")
        repo, _, subset = repo.partition(":")
        return Source(spec, (Part("hub", repo, {}, subset or None, split or "train"),), count)
    names = f", names declared in {_registered_names(registry)}" if registry else ""
    raise DataError(
        f"file not found: {name} (no such file; datasets are local files, folders, "
        f"built-ins ({', '.join(BUILTIN_DATASETS)}){names} or hub ids)"
    )


def _registered_names(registry: dict[str, RegisteredDataset]) -> str:
    """The registration file and its names, for messages: `info.yaml (a, b)`."""
    return f"{next(iter(registry.values())).info_file} ({', '.join(registry)})"


def _parse_count(spec: str) -> tuple[str, int | None]:
    """Split `NAME#N` into the name and the sample size."""
    if "#" not in spec or Path(spec).expanduser().exists():
        return spec, None
    name, _, count = spec.rpartition("#")
    if not name or not count.isdigit() or int(count) < 1:
        raise DataError(
            f"{spec}: the sample count {count!r} is not a positive whole number; "
            f"write NAME#N, e.g. {name or 'data.jsonl'}#500"
        )
    return name, int(count)


def _file_parts(paths, columns: dict, declared: str | None,
                preprocess: RowPreprocessor | None = None) -> tuple[Part, ...]:
    parts = []
    for path in paths:
        if path.is_dir():
            parts += [Part("file", str(f), columns, preprocess=preprocess) for f in list_data_files(path)]
        elif path.is_file():
            check_suffix(path)
            parts.append(Part("file", str(path), columns, preprocess=preprocess))
        else:
            raise DataError(f"file not found: {path} (no such file or folder; declared as {declared})")
    return tuple(parts)
