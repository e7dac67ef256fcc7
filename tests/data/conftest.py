"""Helpers that write small dataset files of every supported type and load them."""

import csv
import json
from pathlib import Path

import pytest

from tunestack.config import DataArgs
from tunestack.data import load_datasets


def write_rows(path: Path, rows: list[dict]) -> Path:
    """Write `rows` in the format that `path`'s suffix names; nested values go into CSV cells as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    elif path.suffix == ".csv":
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        path.write_text("\n".join(r["text"] for r in rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def write_file(tmp_path):
    """write_file("name.jsonl", rows) -> the path, inside tmp_path."""
    return lambda name, rows: write_rows(tmp_path / name, rows)


@pytest.fixture
def load_data():
    """load_data([specs], task, **DataArgs fields) -> DataSplits."""

    def load(specs, task="sft", seed=42, **fields):
        return load_datasets(DataArgs(dataset=[str(s) for s in specs], **fields), task, seed=seed)

    return load

