"""Reading each file type into located rows, and the one-line errors for unreadable files."""

import json
import time

import pytest

from tunestack.data.hub_datasets import hub_rows
from tunestack.data.readers import describe, list_data_files, read_rows
from tunestack.errors import DataError


def test_jsonl_rows_carry_line_numbers_and_skip_blank_lines(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "a"}\n\n{"text": "b"}\n', encoding="utf-8")
    assert list(read_rows(path)) == [(f"{path}, line 1", {"text": "a"}), (f"{path}, line 3", {"text": "b"})]


def test_jsonl_invalid_json_names_line_and_column(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b"}\n{"text": "c" "d"}\n', encoding="utf-8")
    with pytest.raises(DataError) as e:
        list(read_rows(path))
    assert str(e.value) == f"{path}, line 3: not valid JSON (Expecting ',' delimiter: column 14)"


def test_jsonl_line_that_is_not_an_object(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "a"}\n["a", "b"]\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"data.jsonl, line 2: expected a JSON object \(one row\), found a list"):
        list(read_rows(path))


def test_json_list_and_single_key_object(tmp_path):
    rows = [{"text": "a"}, {"text": "b"}]
    (tmp_path / "list.json").write_text(json.dumps(rows))
    (tmp_path / "wrapped.json").write_text(json.dumps({"data": rows}))
    for name in ("list.json", "wrapped.json"):
        located = list(read_rows(tmp_path / name))
        assert [r for _, r in located] == rows
        assert located[1][0] == f"{tmp_path / name}, row 2"


def test_json_object_without_a_single_list(tmp_path):
    path = tmp_path / "data.json"
    path.write_text(json.dumps({"train": [], "test": []}))
    expected = r"data.json: expected a list of rows .* found an object with keys \['test', 'train'\]"
    with pytest.raises(DataError, match=expected):
        list(read_rows(path))


def test_json_syntax_error_names_line(tmp_path):
    path = tmp_path / "data.json"
    path.write_text('[\n{"text": "a"},\n{"text": }\n]')
    with pytest.raises(DataError, match=r"data.json: not valid JSON \(Expecting value: line 3 column 10\)"):
        list(read_rows(path))


def test_csv_rows(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text('instruction,output\n"Add 1, 2",3\nSay hi,hi\n', encoding="utf-8")
    assert list(read_rows(path)) == [
        (f"{path}, row 1", {"instruction": "Add 1, 2", "output": "3"}),
        (f"{path}, row 2", {"instruction": "Say hi", "output": "hi"}),
    ]


def test_csv_row_with_too_many_cells(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("text\nfine\nnot, fine\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"data.csv, row 2: more cells than header columns"):
        list(read_rows(path))


def test_parquet_rows(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "data.parquet"
    pq.write_table(pa.Table.from_pylist([{"text": "a"}, {"text": "b"}]), path)
    assert list(read_rows(path))[1] == (f"{path}, row 2", {"text": "b"})


def test_broken_parquet(tmp_path):
    path = tmp_path / "data.parquet"
    path.write_text("not parquet")
    with pytest.raises(DataError, match=r"data.parquet: not a readable parquet file"):
        list(read_rows(path))


def test_txt_one_row_per_non_empty_line(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text("first line\n\n  \nsecond line\n", encoding="utf-8")
    assert list(read_rows(path)) == [
        (f"{path}, line 1", {"text": "first line"}),
        (f"{path}, line 4", {"text": "second line"}),
    ]


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "x.xml"
    path.write_text("<rows/>")
    with pytest.raises(DataError) as e:
        list(read_rows(path))
    assert str(e.value) == f"{path}: unsupported file type .xml; expected .jsonl, .json, .csv, .parquet or .txt"


def test_not_utf8(tmp_path):
    path = tmp_path / "data.txt"
    path.write_bytes(b"caf\xe9\n")
    with pytest.raises(DataError, match=r"data.txt: not UTF-8 text"):
        list(read_rows(path))


def test_list_data_files_is_sorted_recursive_and_skips_others(tmp_path):
    for name in ("b.jsonl", "a.csv", "sub/c.parquet", "notes.md", ".hidden/d.jsonl", ".e.jsonl"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    assert [p.relative_to(tmp_path).as_posix() for p in list_data_files(tmp_path)] == [
        "a.csv",
        "b.jsonl",
        "sub/c.parquet",
    ]


def test_folder_without_dataset_files(tmp_path):
    (tmp_path / "readme.md").write_text("")
    with pytest.raises(DataError, match=r"folder holds no dataset files"):
        list_data_files(tmp_path)


def test_describe():
    assert describe(None) == "null"
    assert describe("bot") == "'bot'"
    assert describe(5) == "a number (5)"
    assert describe([1]) == "a list ([1])"


def _assert_fast_hub_error(repo):
    start = time.monotonic()
    with pytest.raises(DataError) as e:
        list(hub_rows(repo, None, "train"))
    assert time.monotonic() - start < 10
    message = str(e.value)
    assert "\n" not in message
    assert f"hub dataset {repo}@train" in message
    assert f"tunestack download --dataset {repo}" in message and "local file" in message


def test_hub_id_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _assert_fast_hub_error("tunestack-tests/no-such-dataset")


def test_hub_unreachable_fails_fast(monkeypatch):
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens there
    _assert_fast_hub_error("tunestack-tests/no-such-dataset")
