"""Tiny task files in each benchmark's hub schema, written on the spot."""

from __future__ import annotations

import pytest

from helpers import write_jsonl

MMLU_ROWS = [
    {"question": f"What is {a} + {a}?", "subject": "astronomy" if a % 2 else "virology",
     "choices": [str(2 * a), str(2 * a + 1), str(a), str(3 * a)], "answer": a % 4}
    for a in range(1, 11)
]
GSM8K_ROWS = [
    {"question": f"Tom has {a} apples and buys {a} more. How many apples does he have?",
     "answer": f"He has {a} + {a} = <<{a}+{a}={2 * a}>>{2 * a} apples.\n#### {2 * a}"}
    for a in range(1, 7)
]
ARC_ROWS = [
    {"id": f"q{i}", "question": f"Which number is the largest in set {i}?",
     "choices": {"text": [str(i), str(i + 10), "zero"], "label": ["A", "B", "C"]}, "answerKey": "B"}
    for i in range(5)
]


@pytest.fixture()
def mmlu_file(tmp_path):
    return write_jsonl(tmp_path / "mmlu.jsonl", MMLU_ROWS)


@pytest.fixture()
def gsm8k_file(tmp_path):
    return write_jsonl(tmp_path / "gsm8k.jsonl", GSM8K_ROWS)


@pytest.fixture()
def arc_file(tmp_path):
    return write_jsonl(tmp_path / "arc.jsonl", ARC_ROWS)
