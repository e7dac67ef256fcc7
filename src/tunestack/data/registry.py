"""The dataset registration YAML (--dataset_info): each name's files or hub id, column mapping, task and an optional
`preprocess: PATH.py:FUNCTION` that maps each raw row to a row in a supported format."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tunestack.data.formats import FIELDS, TASKS
from tunestack.data.readers import describe
from tunestack.errors import DataError, TunestackError

KEYS = ("file", "train", "val", "columns", "task", "hub", "subset", "split", "preprocess")
EXAMPLE = "mydata: {train: data/train.jsonl, val: data/val.jsonl, columns: {question: query, answer: response}}"


@dataclass(frozen=True)
class RowPreprocessor:
    """A registered dataset's `preprocess` function, applied to each raw row before `columns`: it returns the row in
    a supported format (a dict), or None to leave the row out."""

    function: Callable
    spec: str
    dataset: str
    info_file: Path

    def __call__(self, rows) -> Iterator:
        """(where, row) pairs in, (where, preprocessed row) pairs out."""
        for where, row in rows:
            try:
                out = self.function(row)
            except Exception as exc:
                raise DataError(f"{where}: preprocess {self.spec} of dataset {self.dataset!r} in {self.info_file} "
                                f"failed: {type(exc).__name__}: {exc}") from None
            if out is None:
                continue
            if not isinstance(out, dict):
                raise DataError(f"{where}: preprocess {self.spec} of dataset {self.dataset!r} in {self.info_file} "
                                f"returned {describe(out)}; expected a row (a dict) or None to leave it out")
            yield where, out


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
    preprocess: RowPreprocessor | None = None

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
        preprocess=_preprocess(spec.get("preprocess"), name, info_file, at),
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


def _preprocess(value, name: str, info_file: Path, at: str) -> RowPreprocessor | None:
    """The `preprocess: PATH.py:FUNCTION` function, PATH relative to the YAML file's folder."""
    from tunestack.user_code import load_object

    if value is None:
        return None
    if not isinstance(value, str):
        raise DataError(f"{at}: preprocess is {describe(value)}; expected PATH.py:FUNCTION")
    try:
        function = load_object(f"{at}: preprocess", value, relative_to=info_file.parent)
    except TunestackError as exc:
        raise DataError(str(exc)) from None
    return RowPreprocessor(function, value, name, info_file)
