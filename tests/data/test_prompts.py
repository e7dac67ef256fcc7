"""Prompts for grpo and rloo: every accepted row shape becomes a prompt ending with the user's turn, its gold answer
and where it came from; rows of other tasks and malformed ones fail with one line naming the file and line."""

import re

import pytest

from tunestack.data.formats import canonical_rows, features_for
from tunestack.errors import DataError

USER = {"role": "user", "content": "What is 2 + 3?"}
SYS = {"role": "system", "content": "Be brief."}


def convert(rows, system=None, columns=None):
    located = [(f"data.jsonl, line {i}", row) for i, row in enumerate(rows, 1)]
    return list(canonical_rows(located, "prompts", system, columns))


def error(rows, task="prompts") -> str:
    with pytest.raises(DataError) as e:
        list(canonical_rows([(f"data.jsonl, line {i}", r) for i, r in enumerate(rows, 1)], task))
    assert "\n" not in str(e.value)
    return str(e.value)


@pytest.mark.parametrize("row, answer", [
    ({"prompt": "What is 2 + 3?", "answer": 5}, "5"),
    ({"prompt": [USER], "solution": "5"}, "5"),
    ({"messages": [USER], "answer": "5"}, "5"),
    ({"query": "What is 2 + 3?"}, None),
    ({"question": "What is 2 + 3?", "answer": 2.5}, "2.5"),
    ({"prompt": "What is 2 + 3?", "answer": ""}, None),  # an empty CSV cell
])
def test_each_shape_becomes_a_user_prompt_with_its_gold_answer(row, answer):
    assert convert([row]) == [{"prompt": [USER], "answer": answer, "source": "data.jsonl, line 1"}]


def test_instruction_and_input_are_joined_and_history_leads():
    rows = convert([{"instruction": "Add.", "input": "2 + 3"}])
    rows += convert([{"query": "4?", "history": [["2 + 3?", "5"]]}])
    assert rows[0]["prompt"] == [{"role": "user", "content": "Add.\n2 + 3"}]
    assert rows[1]["prompt"] == [{"role": "user", "content": "2 + 3?"}, {"role": "assistant", "content": "5"},
                                 {"role": "user", "content": "4?"}]


def test_system_prompt_leads_unless_the_row_has_one():
    rows = convert([{"prompt": "What is 2 + 3?"}, {"prompt": [SYS, USER]}], system="Be kind.")
    assert rows[0]["prompt"] == [{"role": "system", "content": "Be kind."}, USER]
    assert rows[1]["prompt"] == [SYS, USER]


def test_features_hold_prompt_rows():
    from datasets import Dataset

    row = {"prompt": [SYS, USER], "answer": None, "source": "arith, row 3"}
    assert Dataset.from_list([row], features=features_for("prompts"))[0] == row


def test_builtin_arith_reads_as_prompts_with_numeric_answers(load_data):
    splits = load_data(["arith#20"], "prompts")
    assert len(splits.train) == 20 and splits.report["train"][0]["files"][0]["format"] == "prompt"
    for prompt, answer, source in zip(splits.train["prompt"], splits.train["answer"], splits.train["source"]):
        a, op, b = re.search(r"(\d+) ([-+*]) (\d+)", prompt[0]["content"]).groups()
        assert int(answer) == {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]
        assert source.startswith("arith, row ")


def test_prompts_ending_with_an_answer_are_refused():
    assert error([{"messages": [USER, {"role": "assistant", "content": "5"}]}]) == (
        'data.jsonl, line 1: messages ends with a assistant message; a prompt ends with the user\'s turn (put a gold '
        'answer in an "answer" field)')


@pytest.mark.parametrize("row, expected", [
    ({"prompt": "x", "chosen": "a", "rejected": "b"},
     'data.jsonl, line 1: rows with "prompt"/"chosen"/"rejected" fields are preference pairs, which `tunestack dpo` '
     '(or orpo, simpo, cpo, rm) trains on; prompts data needs a "prompt" field, a "messages" list, a "query" field, '
     'an "instruction" field or a "question" field'),
    ({"prompt": "x", "answer": [5]}, "data.jsonl, line 1: answer is a list ([5]); expected a string or a number"),
    ({"prompt": "x", "answer": True}, "data.jsonl, line 1: answer is true/false (true); expected a string or a number"),
    ({"ask": "x"}, 'data.jsonl, line 1: expected a "prompt" field, a "messages" list, a "query" field, an '
                   "\"instruction\" field or a \"question\" field, found keys ['ask']"),
])
def test_bad_rows_name_the_line(row, expected):
    assert error([row]) == expected


def test_prompt_rows_given_to_sft_point_to_grpo():
    assert error([{"question": "x", "answer": "y"}], task="sft").startswith(
        'data.jsonl, line 1: rows with a "question" field are prompts to sample answers for, which `tunestack grpo` '
        "(or rloo) trains on; sft data needs")
