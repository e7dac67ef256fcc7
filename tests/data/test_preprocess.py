"""A registered dataset's `preprocess: PATH.py:FUNCTION`: raw rows mapped to a supported format, with errors that
name the YAML file, the dataset and the row."""

import pytest

from tunestack.errors import DataError

PREPROCESS = '''
def to_chat(row):
    if row["kind"] == "skip":
        return None
    if row["kind"] == "bad":
        return ["not", "a", "row"]
    if row["kind"] == "boom":
        raise KeyError("answer_text")
    return {"messages": [{"role": "user", "content": row["q"].strip()},
                         {"role": "assistant", "content": f"{row['a']}!"}]}
'''


@pytest.fixture()
def registered(write_file, tmp_path):
    """info.yaml in conf/, the function in conf/code/, the data beside them; returns a writer of the YAML."""
    (tmp_path / "conf" / "code").mkdir(parents=True)
    (tmp_path / "conf" / "code" / "prep.py").write_text(PREPROCESS)

    def register(rows, preprocess="code/prep.py:to_chat", extra=""):
        write_file("conf/raw.jsonl", rows)
        info = tmp_path / "conf" / "info.yaml"
        info.write_text(f"mine:\n  file: raw.jsonl\n  preprocess: {preprocess}\n{extra}")
        return str(info)

    return register


def test_rows_are_mapped_and_skipped(registered, load_data):
    info = registered([{"kind": "ok", "q": " 2+2 ", "a": 4}, {"kind": "skip"}, {"kind": "ok", "q": "1+1", "a": 2}])
    splits = load_data(["mine"], dataset_info=info)
    assert splits.train[:]["messages"] == [
        [{"role": "user", "content": "2+2"}, {"role": "assistant", "content": "4!"}],
        [{"role": "user", "content": "1+1"}, {"role": "assistant", "content": "2!"}],
    ]


def test_preprocess_runs_before_the_column_mapping(registered, load_data, tmp_path):
    (tmp_path / "conf" / "code" / "rename.py").write_text(
        "def rename(row):\n    return {'question': row['q'], 'reply': str(row['a'])}\n")
    info = registered([{"kind": "ok", "q": "hi", "a": 1}], preprocess="code/rename.py:rename",
                      extra="  columns: {question: query, reply: response}\n")
    splits = load_data(["mine"], dataset_info=info)
    assert splits.train[:]["messages"] == [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "1"}]]


@pytest.mark.parametrize("kind, expected", [
    ("boom", "preprocess code/prep.py:to_chat of dataset 'mine' in {info} failed: KeyError: 'answer_text'"),
    ("bad", "preprocess code/prep.py:to_chat of dataset 'mine' in {info} returned a list"),
])
def test_a_failing_row_is_named_with_the_yaml_and_the_dataset(registered, load_data, tmp_path, kind, expected):
    info = registered([{"kind": "ok", "q": "a", "a": 1}, {"kind": kind}])
    with pytest.raises(DataError) as caught:
        load_data(["mine"], dataset_info=info)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'conf' / 'raw.jsonl'}, line 2: ")
    assert expected.format(info=info) in message


@pytest.mark.parametrize("preprocess, expected", [
    ("code/gone.py:to_chat", "preprocess code/gone.py:to_chat: file {folder}/code/gone.py not found"),
    ("code/prep.py:nope", "preprocess code/prep.py:nope: {folder}/code/prep.py defines no function nope"),
    ("to_chat", "preprocess to_chat: expected PATH.py:FUNCTION"),
])
def test_a_bad_preprocess_is_named_before_any_row_is_read(registered, load_data, tmp_path, preprocess, expected):
    info = registered([{"kind": "ok", "q": "a", "a": 1}], preprocess=preprocess)
    with pytest.raises(DataError) as caught:
        load_data(["mine"], dataset_info=info)
    assert str(caught.value).startswith(f"{info}: dataset 'mine': ")
    assert expected.format(folder=tmp_path / "conf") in str(caught.value)
