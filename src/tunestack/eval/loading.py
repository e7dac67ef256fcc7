"""Task rows from a local file or folder in the hub dataset's schema (--task_data), or from the hub by its id."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from tunestack.errors import DataError

SPLITS = ("test", "validation", "val", "dev", "train")
SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
LOCATION = "_where"
"""Key under which each row carries where it came from (file and line), for error messages."""
SUBSET = "_subset"
"""Key under which each row read from a subject folder carries the folder's name."""


def read_local(path: str) -> dict[str, list[dict]]:
    """Rows by split from a file (all rows are the test split) or a folder whose file names say the split
    (`test.jsonl`, `dev-00000-of-00001.parquet`) and whose subfolders, if any, name subjects."""
    root = Path(path).expanduser()
    if root.is_file():
        return {"test": read_file(root)}
    if not root.is_dir():
        raise DataError(f"task data {path}: no such file or folder")
    splits: dict[str, list[dict]] = {}
    files = sorted(f for f in root.rglob("*") if f.is_file() and f.suffix.lower() in SUFFIXES)
    if not files:
        raise DataError(f"task data {path}: the folder holds no {', '.join(SUFFIXES)} files")
    for file in files:
        subset = "/".join(file.relative_to(root).parts[:-1]) or None
        rows = read_file(file)
        for row in rows:
            if subset:
                row.setdefault(SUBSET, subset)
        splits.setdefault(split_of(file), []).extend(rows)
    return splits


def split_of(file: Path) -> str:
    """The split a file name announces (`dev-00000-of-00001.parquet` is dev); test when it names none."""
    for token in re.split(r"[-_.]", file.stem.lower()):
        if token in SPLITS:
            return token
    return "test"


def read_file(file: Path) -> list[dict]:
    """The rows of one .jsonl, .json, .csv or .parquet file, each carrying its location."""
    suffix = file.suffix.lower()
    if suffix == ".jsonl":
        rows = []
        for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                rows.append(_object(_json(line, f"{file}, line {number}"), f"{file}, line {number}"))
        return rows
    if suffix == ".json":
        data = _json(file.read_text(encoding="utf-8"), str(file))
        data = data.get("data", data) if isinstance(data, dict) else data
        if not isinstance(data, list):
            raise DataError(f"{file}: expected a list of objects (or {{\"data\": [...]}})")
        return [_object(row, f"{file}, item {n}") for n, row in enumerate(data, 1)]
    if suffix == ".csv":
        with open(file, newline="", encoding="utf-8") as fh:
            return [{**row, LOCATION: f"{file}, row {n}"} for n, row in enumerate(csv.DictReader(fh), 1)]
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return [{**row, LOCATION: f"{file}, row {n}"} for n, row in enumerate(pq.read_table(file).to_pylist(), 1)]
    raise DataError(f"{file}: unsupported file type (use {', '.join(SUFFIXES)})")


def _json(text: str, where: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not valid JSON ({exc.msg}, column {exc.colno})") from None


def _object(row, where: str) -> dict:
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, found {type(row).__name__}")
    return {**row, LOCATION: where}


def read_hub(task: str, repo: str, subsets: list[str | None], splits: list[str]) -> dict[str, list[dict]]:
    """Rows by split of hub dataset `repo` (each subset in turn); fails in seconds, with the fix, offline."""
    fix = (f"download it with `tunestack download --dataset {repo}` where the hub is reachable, or pass "
           f"--task_data {task}=PATH (a file or folder in the schema of {repo})")
    import datasets

    from tunestack.hub.fetch import cached_snapshot
    from tunestack.hub.reach import hub_offline, hub_reachable

    source = repo
    if hub_offline() or not hub_reachable():
        source = cached_snapshot(repo, repo_type="dataset")
        if source is None:
            raise DataError(f"task {task}: hub dataset {repo} is not downloaded and the hub cannot be reached; {fix}")
    out: dict[str, list[dict]] = {}
    for subset in subsets:
        for split in splits:
            try:
                rows = datasets.load_dataset(str(source), subset, split=split)
            except ValueError as exc:  # this subset has no such split (e.g. no dev split)
                if "split" in str(exc).lower():
                    continue
                raise DataError(f"task {task}: hub dataset {repo} ({subset}): {exc}; {fix}") from None
            except Exception as exc:  # datasets raises many types (offline, gated, not found); all need the same fix
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise DataError(f"task {task}: hub dataset {repo} could not be loaded ({reason}); {fix}") from None
            where = f"{repo}{'/' + subset if subset else ''}@{split}"
            out.setdefault(split, []).extend(
                {**row, LOCATION: f"{where}, row {n}", **({SUBSET: subset} if subset else {})}
                for n, row in enumerate(rows, 1))
    return out


def hub_subsets(repo: str) -> list[str]:
    """The configurations (subjects) of a hub dataset."""
    import datasets

    try:
        return list(datasets.get_dataset_config_names(repo))
    except Exception as exc:
        raise DataError(f"hub dataset {repo}: cannot list its subjects ({type(exc).__name__}); "
                        f"pass --task_data or --subjects") from None
