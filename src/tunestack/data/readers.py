"""Read dataset files (.jsonl, .json, .csv, .parquet, .txt) into rows labelled with their origin."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

from tunestack.errors import DataError

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".txt")

# A row and its location for messages: ("data.jsonl, line 7", {...}).
LocatedRow = tuple[str, dict]


def check_suffix(path: Path) -> None:
    """Raise unless `path` has a file type we can read."""
    if path.suffix.lower() not in SUFFIXES:
        kind = f"file type {path.suffix}" if path.suffix else "file without a type suffix"
        raise DataError(f"{path}: unsupported {kind}; expected .jsonl, .json, .csv, .parquet or .txt")


def list_data_files(folder: Path) -> list[Path]:
    """Every readable dataset file under `folder`, recursively and sorted; hidden files are skipped."""
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if not files:
        raise DataError(f"{folder}: folder holds no dataset files; expected .jsonl, .json, .csv, .parquet or .txt")
    return files


def read_rows(path: Path) -> Iterator[LocatedRow]:
    """Rows of one file; JSONL and text files are read lazily, a line at a time."""
    check_suffix(path)
    readers = {".jsonl": _jsonl_rows, ".json": _json_rows, ".csv": _csv_rows, ".parquet": _parquet_rows}
    try:
        yield from readers.get(path.suffix.lower(), _txt_rows)(path)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}); save the file as UTF-8") from None


def _jsonl_rows(path: Path) -> Iterator[LocatedRow]:
    with path.open(encoding="utf-8-sig") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}, line {number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: not valid JSON ({e.msg}: column {e.colno})") from None
            yield where, _require_object(row, where)


def _json_rows(path: Path) -> Iterator[LocatedRow]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e.msg}: line {e.lineno} column {e.colno})") from None
    if isinstance(data, dict):
        lists = [value for value in data.values() if isinstance(value, list)]
        if len(data) != 1 or len(lists) != 1:
            raise DataError(
                f"{path}: expected a list of rows or an object holding one list (like {{\"data\": [...]}}), "
                f"found an object with keys {sorted(data)}"
            )
        data = lists[0]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of rows, found {describe(data)}")
    for number, row in enumerate(data, 1):
        where = f"{path}, row {number}"
        yield where, _require_object(row, where)


def _csv_rows(path: Path) -> Iterator[LocatedRow]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        for number, row in enumerate(csv.DictReader(f), 1):
            if None in row:
                raise DataError(f"{path}, row {number}: more cells than header columns; quote cells holding commas")
            yield f"{path}, row {number}", row


def _parquet_rows(path: Path) -> Iterator[LocatedRow]:
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as e:  # pyarrow raises several types for unreadable files
        raise DataError(f"{path}: not a readable parquet file ({e})") from None
    for number, row in enumerate(rows, 1):
        yield f"{path}, row {number}", row


def _txt_rows(path: Path) -> Iterator[LocatedRow]:
    with path.open(encoding="utf-8-sig") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                yield f"{path}, line {number}", {"text": line.rstrip("\r\n")}


def _require_object(row, where: str) -> dict:
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object (one row), found {describe(row)}")
    return row


def describe(value) -> str:
    """A value as a user would name it in a message: `a number (5)`, `null`, `'bot'`."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    kind = {bool: "true/false", int: "a number", float: "a number", list: "a list", dict: "an object"}
    text = json.dumps(value, ensure_ascii=False, default=str)
    return f"{kind.get(type(value), type(value).__name__)} ({text if len(text) <= 40 else text[:37] + '...'})"
