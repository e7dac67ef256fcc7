"""Format detection and conversion of every row format to the canonical columns of each task."""

import pytest

from tunestack.data.formats import canonical_rows, features_for
from tunestack.errors import DataError

Q, A = {"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}
SYS = {"role": "system", "content": "Be kind."}


def convert(rows, task="sft", system=None, columns=None):
    """Canonical rows of `rows`, located as lines of data.jsonl."""
    located = [(f"data.jsonl, line {i}", row) for i, row in enumerate(rows, 1)]
    return list(canonical_rows(located, task, system, columns))


def error(rows, task="sft", **kw) -> str:
    with pytest.raises(DataError) as e:
        convert(rows, task, **kw)
    assert "\n" not in str(e.value)
    return str(e.value)


@pytest.mark.parametrize(
    "row",
    [
        {"messages": [Q, A]},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi?"}]}, A]},
        {"conversations": [{"from": "human", "value": "Hi?"}, {"from": "gpt", "value": "Hello."}]},
        {"conversations": [Q, A]},
        {"instruction": "Hi?", "output": "Hello."},
        {"instruction": "Hi?", "input": "", "output": "Hello."},
        {"query": "Hi?", "response": "Hello."},
    ],
)
def test_sft_formats_become_messages(row):
    assert convert([row]) == [{"messages": [Q, A]}]


def test_text_parts_are_joined():
    content = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    assert convert([{"messages": [{"role": "user", "content": content}, A]}])[0]["messages"][0]["content"] == "a\nb"


def test_alpaca_input_history_and_system():
    row = {"instruction": "Add", "input": "1 2", "output": "3", "system": "Be kind.", "history": [["Hi?", "Hello."]]}
    assert convert([row]) == [
        {"messages": [SYS, Q, A, {"role": "user", "content": "Add\n1 2"}, {"role": "assistant", "content": "3"}]}
    ]


def test_query_response_history():
    row = {"query": "2?", "response": "two", "history": [["Hi?", "Hello."]]}
    assert convert([row])[0]["messages"][:2] == [Q, A]


def test_sharegpt_system_key():
    turns = [{"from": "human", "value": "Hi?"}, {"from": "gpt", "value": "Hello."}]
    row = {"system": "Be kind.", "conversations": turns}
    assert convert([row]) == [{"messages": [SYS, Q, A]}]


def test_system_is_added_only_where_missing():
    own = {"role": "system", "content": "Own."}
    rows = convert([{"messages": [Q, A]}, {"messages": [own, Q, A]}], system="Be kind.")
    assert rows[0]["messages"] == [SYS, Q, A]
    assert rows[1]["messages"][0] == {"role": "system", "content": "Own."}


def test_preference_with_strings_and_message_lists():
    expected = {"prompt": [Q], "chosen": [A], "rejected": [{"role": "assistant", "content": "Go away."}]}
    assert convert([{"prompt": "Hi?", "chosen": "Hello.", "rejected": "Go away."}], "preference") == [expected]
    row = {"prompt": [Q], "chosen": [A], "rejected": [{"role": "assistant", "content": "Go away."}]}
    assert convert([row], "preference") == [expected]
    full = {"prompt": [Q], "chosen": [Q, A], "rejected": [Q, {"role": "assistant", "content": "Go away."}]}
    assert convert([full], "preference") == [expected]


def test_preference_full_conversations_split_at_the_shared_prompt():
    bad = {"role": "assistant", "content": "Go away."}
    row = {"chosen": [SYS, Q, A], "rejected": [SYS, Q, bad]}
    assert convert([row], "preference") == [{"prompt": [SYS, Q], "chosen": [A], "rejected": [bad]}]


def test_preference_system_goes_into_the_prompt():
    rows = convert([{"prompt": "Hi?", "chosen": "Hello.", "rejected": "No."}], "preference", system="Be kind.")
    assert rows[0]["prompt"] == [SYS, Q]


@pytest.mark.parametrize("label, expected", [(True, True), (0, False), ("true", True), ("False", False), ("1", True)])
def test_kto_rows(label, expected):
    rows = convert([{"prompt": "Hi?", "completion": "Hello.", "label": label}], "kto")
    assert rows == [{"prompt": [Q], "completion": [A], "label": expected}]


def test_text_rows():
    assert convert([{"text": "once upon a time"}], "pt") == [{"text": "once upon a time"}]


def test_column_mapping_applies_before_detection():
    rows = convert([{"q": "Hi?", "a": "Hello."}], columns={"q": "query", "a": "response"})
    assert rows == [{"messages": [Q, A]}]


def test_stats_report_format_and_rows():
    stats = {}
    list(canonical_rows([("x", {"text": "a"}), ("y", {"text": "b"})], "pt", stats=stats))
    assert stats == {"format": "text", "rows": 2}


@pytest.mark.parametrize("task", ["sft", "pt", "preference", "kto"])
def test_features_hold_canonical_rows(task):
    from datasets import Dataset

    row = {
        "sft": {"messages": [Q, A]},
        "pt": {"text": "a"},
        "preference": {"prompt": [Q], "chosen": [A], "rejected": [A]},
        "kto": {"prompt": [Q], "completion": [A], "label": True},
    }[task]
    assert Dataset.from_list([row], features=features_for(task))[0] == row


# --- errors: one line naming the file, line, field, what was expected and what was found -------------------------


def test_unknown_keys():
    assert error([{"ask": "Hi?"}]) == (
        'data.jsonl, line 1: expected a "messages" list, a "conversations" list, "instruction"/"output" fields '
        "or \"query\"/\"response\" fields, found keys ['ask']"
    )


def test_row_that_does_not_match_the_first_row():
    message = error([{"messages": [Q, A]}, {"messages": [Q, A]}, {"instruction": "x", "output": "y"}])
    assert message == (
        "data.jsonl, line 3: expected a \"messages\" list like the first row, found keys ['instruction', 'output']"
    )


def test_bad_role():
    message = error([{"messages": [Q, {"role": "bot", "content": "x"}]}])
    assert message == "data.jsonl, line 1: messages[1].role is 'bot'; expected system, user, assistant, tool or model"


def test_bad_sharegpt_role():
    message = error([{"conversations": [{"from": "human", "value": "x"}, {"from": "bot", "value": "y"}]}])
    assert message == (
        "data.jsonl, line 1: conversations[1].from is 'bot'; expected human, gpt, system, user, assistant, model or tool"
    )


def test_no_assistant_turn():
    assert error([{"messages": [Q, A]}, {"messages": [Q]}]).startswith(
        "data.jsonl, line 2: conversation has no assistant turn"
    )


def test_non_string_content():
    message = error([{"messages": [Q, {"role": "assistant", "content": 5}]}])
    assert message == "data.jsonl, line 1: messages[1].content is a number (5); expected a string"


def test_missing_content():
    assert "messages[0].content is null; expected a string" in error([{"messages": [{"role": "user"}, A]}])


def test_image_content_outside_user_turns():
    row = {"messages": [{"role": "user", "content": "hi"},
                        {"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}
    assert error([row]) == (
        "data.jsonl, line 1: messages[1].content[0]: images are not supported here; only user turns of "
        "conversations to fine-tune on (sft) may hold them"
    )


def test_empty_messages():
    assert "messages is a list ([]); expected a non-empty list of messages" in error([{"messages": []}])


def test_non_string_field():
    assert "line 1: output is a number (3); expected a string" in error([{"instruction": "x", "output": 3}])


def test_bad_history():
    message = error([{"query": "x", "response": "y", "history": [["only a question"]]}])
    assert "line 1: history[0] is a list ([\"only a question\"]); expected a [question, answer] pair" in message


def test_conversations_for_pt_suggest_sft():
    message = error([{"messages": [Q, A]}], "pt")
    assert message == (
        'data.jsonl, line 1: rows with a "messages" list are conversations, which `tunestack sft` trains on; '
        'pt data needs a "text" field'
    )


def test_text_for_sft_suggests_pt():
    assert "`tunestack pt`" in error([{"text": "x"}], "sft")


def test_preference_rows_for_sft_suggest_dpo():
    assert "`tunestack dpo`" in error([{"prompt": "x", "chosen": "y", "rejected": "z"}], "sft")


def test_identical_chosen_and_rejected():
    message = error([{"chosen": [Q, A], "rejected": [Q, A]}], "preference")
    assert message.startswith("data.jsonl, line 1: after the 2 shared message(s), chosen and rejected must each")


def test_string_pair_without_prompt():
    assert 'string chosen/rejected need a "prompt" field' in error([{"chosen": "a", "rejected": "b"}], "preference")


def test_chosen_that_starts_with_a_user_turn():
    message = error([{"prompt": "Hi?", "chosen": [SYS, A], "rejected": "b"}], "preference")
    assert message == "data.jsonl, line 1: chosen starts with a system message; expected the assistant's answer"


def test_bad_kto_label():
    message = error([{"prompt": "x", "completion": "y", "label": "maybe"}], "kto")
    assert message == "data.jsonl, line 1: label is 'maybe'; expected true or false"
