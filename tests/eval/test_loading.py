"""--task_data: files and folders in the hub dataset's schema, with splits and subjects taken from their names."""

from __future__ import annotations

import pytest

from helpers import write_jsonl
from tunestack.config import EvalArgs
from tunestack.errors import ConfigError, DataError
from tunestack.eval.loading import read_local, split_of
from tunestack.eval.prepare import prepare
from tunestack.eval.tasks import TASKS

ROW = {"question": "2 + 2?", "choices": ["4", "5", "6", "7"], "answer": 0}


def test_folder_of_subjects_with_hub_style_file_names(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "virology").mkdir()
    pq.write_table(pa.Table.from_pylist([ROW] * 3), tmp_path / "virology" / "test-00000-of-00001.parquet")
    write_jsonl(tmp_path / "virology" / "dev.jsonl", [ROW])
    splits = read_local(str(tmp_path))
    assert sorted(splits) == ["dev", "test"] and len(splits["test"]) == 3
    assert splits["test"][0]["_subset"] == "virology"
    assert "test-00000-of-00001.parquet, row 1" in splits["test"][0]["_where"]


def test_split_names():
    from pathlib import Path

    assert [split_of(Path(n)) for n in ("val.jsonl", "mmlu_dev.csv", "train-0001.parquet", "questions.json")] == \
        ["val", "dev", "train", "test"]


def test_fewshot_examples_come_from_the_subject_dev_split(tmp_path):
    (tmp_path / "astronomy").mkdir()
    write_jsonl(tmp_path / "astronomy" / "test.jsonl", [ROW, {**ROW, "question": "3 + 3?"}])
    write_jsonl(tmp_path / "astronomy" / "dev.jsonl", [{**ROW, "question": f"dev {i}"} for i in range(4)])
    prepared = prepare(TASKS["mmlu"], EvalArgs(tasks=["mmlu"], num_fewshot=2, limit=1), str(tmp_path))
    (context,) = prepared.contexts
    assert context.startswith("The following are multiple choice questions (with answers) about astronomy.\n\n"
                              "dev 0\nA. 4\nB. 5\nC. 6\nD. 7\nAnswer: A\n\ndev 1\n")
    assert context.endswith("\n\n2 + 2?\nA. 4\nB. 5\nC. 6\nD. 7\nAnswer:")


def test_bad_answer_value_is_named(tmp_path):
    data = write_jsonl(tmp_path / "m.jsonl", [{**ROW, "answer": "E"}])
    with pytest.raises(DataError, match="m.jsonl, line 1: field 'answer' must be 0-3 or A-D, got 'E'"):
        prepare(TASKS["mmlu"], EvalArgs(tasks=["mmlu"]), str(data))


def test_not_json_and_malformed_task_data(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": 1}\n{oops\n')
    with pytest.raises(DataError, match="bad.jsonl, line 2: not valid JSON"):
        read_local(str(bad))
    from tunestack.eval.prepare import task_data_paths

    with pytest.raises(ConfigError, match="expected TASK=PATH"):
        task_data_paths(EvalArgs(task_data=["mmlu"]))


def test_hellaswag_and_truthfulqa_rows_are_prepared_like_the_harness(tmp_path):
    hs = write_jsonl(tmp_path / "hs.jsonl", [{"activity_label": "Baking", "ctx_a": "A man mixes flour.",
                                               "ctx_b": "he", "endings": ["bakes [title] bread.", "sings."],
                                               "label": "0"}])
    doc = prepare(TASKS["hellaswag"], EvalArgs(tasks=["hellaswag"]), str(hs)).docs[0]
    assert doc.text == "Baking: A man mixes flour. He" and doc.choices == ["bakes. bread.", "sings."]
    tq = write_jsonl(tmp_path / "tq.jsonl", [{"question": "Is the sky green?",
                                               "mc1_targets": {"choices": ["No.", "Yes."], "labels": [1, 0]},
                                               "mc2_targets": {"choices": ["No.", "It is not.", "Yes."],
                                                               "labels": [1, 1, 0]}}])
    doc = prepare(TASKS["truthfulqa_mc"], EvalArgs(tasks=["truthfulqa_mc"]), str(tq)).docs[0]
    assert doc.text.endswith("\n\nQ: Is the sky green?\nA:") and doc.target == 0
    assert doc.extra["mc2_labels"] == [1, 1, 0]
