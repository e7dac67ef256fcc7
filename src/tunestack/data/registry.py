"""Dataset names: the registration YAML (--dataset_info), and what each name resolves to (files, built-ins, hub)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from tunestack.data.builtin import BUILTIN_DATASETS
from tunestack.data.formats import FIELDS, TASKS
from tunestack.data.readers import SUFFIXES, check_suffix, describe, list_data_files
from tunestack.errors import DataError

KEYS = ("file", "train", "val", "columns", "task", "hub", "subset", "split")
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+(:[\w.-]+)?(@[\w.\[\]:%+-]+)?$")
EXAMPLE = "mydata: {train: data/train.jsonl, val: data/val.jsonl, columns: {question: query, answer: response}}"


@dataclass(frozen=True)
class RegisteredDataset:
    """One declared name: local files (`train`, `val`) or a hub id, plus a column mapping and task."""

    name: str
    info_file: Path
    train: tuple[Path, ...] = ()
    val: tuple[Path, ...] = ()
    columns: dict = field(default_factory=dict)
    task: str | None = None
    hub: str | None = None
    subset: str | None = None
    split: str | None = None

    def where(self, key: str) -> str:
        """How messages point at this declaration: `'train' of 'mydata' in info.yaml`."""
        return f"{key!r} of {self.name!r} in {self.info_file}"


def read_dataset_info(path: str | Path) -> dict[str, RegisteredDataset]:
    """Parse and validate the registration file; relative paths resolve against its folder."""
    import yaml

    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"dataset_info file not found: {path} (no such file); pass the YAML with --dataset_info")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        line = f" at line {e.problem_mark.line + 1}" if getattr(e, "problem_mark", None) else ""
        raise DataError(f"{path}: not valid YAML ({getattr(e, 'problem', None) or e}{line})") from None
    if not isinstance(data, dict) or not data:
        raise DataError(f"{path}: expected a mapping of dataset names, like `{EXAMPLE}`, found {describe(data)}")
    return {str(name): _entry(str(name), spec, path) for name, spec in data.items()}


def _entry(name: str, spec, info_file: Path) -> RegisteredDataset:
    at = f"{info_file}: dataset {name!r}"
    if not isinstance(spec, dict):
        raise DataError(f"{at} is {describe(spec)}; expected a mapping like `{EXAMPLE}`")
    for key in spec:
        if key not in KEYS:
            raise DataError(f"{at} has unknown key {key!r}; expected {', '.join(KEYS)}")
    if ("file" in spec) + ("train" in spec) + ("hub" in spec) != 1:
        raise DataError(f"{at} needs exactly one of file, train or hub; found {sorted(k for k in spec if k in KEYS)}")
    folder = info_file.parent
    return RegisteredDataset(
        name=name,
        info_file=info_file,
        train=_paths(spec.get("file", spec.get("train")), "file" if "file" in spec else "train", at, folder),
        val=_paths(spec.get("val"), "val", at, folder),
        columns=_columns(spec.get("columns"), at),
        task=_choice(spec.get("task"), "task", at, TASKS),
        hub=_string(spec.get("hub"), "hub", at),
        subset=_string(spec.get("subset"), "subset", at),
        split=_string(spec.get("split"), "split", at),
    )


def _paths(value, key: str, at: str, folder: Path) -> tuple[Path, ...]:
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(item, str) and item for item in items):
        raise DataError(f"{at}: {key} is {describe(value)}; expected a path or a list of paths")
    return tuple(folder / Path(item).expanduser() for item in items)


def _columns(value, at: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise DataError(f"{at}: columns is {describe(value)}; expected a mapping like {{question: query}}")
    for theirs, ours in value.items():
        if ours not in FIELDS:
            raise DataError(
                f"{at}: columns maps {theirs!r} to {ours!r}, which is not a field tunestack reads; "
                f"expected one of {', '.join(FIELDS)}"
            )
    return dict(value)


def _choice(value, key: str, at: str, choices: tuple) -> str | None:
    if value is not None and value not in choices:
        raise DataError(f"{at}: {key} is {describe(value)}; expected {', '.join(choices[:-1])} or {choices[-1]}")
    return value


def _string(value, key: str, at: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise DataError(f"{at}: {key} is {describe(value)}; expected a string")
    return value


@dataclass(frozen=True)
class Part:
    """One thing to read: a file, a built-in or a hub split, with the column mapping to apply."""

    kind: str  # "file", "builtin" or "hub"
    target: str
    columns: dict = field(default_factory=dict)
    subset: str | None = None
    split: str = "train"


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
            parts = (Part("hub", entry.hub, entry.columns, entry.subset, entry.split or "train"),)
        else:
            parts = _file_parts(entry.train, entry.columns, entry.where("train"))
        return Source(spec, parts, count, _file_parts(entry.val, entry.columns, entry.where("val")))
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


def _file_parts(paths, columns: dict, declared: str | None) -> tuple[Part, ...]:
    parts = []
    for path in paths:
        if path.is_dir():
            parts += [Part("file", str(f), columns) for f in list_data_files(path)]
        elif path.is_file():
            check_suffix(path)
            parts.append(Part("file", str(path), columns))
        else:
            raise DataError(f"file not found: {path} (no such file or folder; declared as {declared})")
    return tuple(parts)
