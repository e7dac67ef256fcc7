"""--num_proc: the rows tokenized in several processes give exactly the rows, counts and errors of one process."""

from __future__ import annotations

import pytest

from tunestack.data.encode import _MIN_SHARE, encode_rows
from tunestack.errors import DataError


def rows(n: int) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"What is {i} + {i}?"},
                          {"role": "assistant", "content": f"{i} + {i} = {2 * i}. " * (1 + i % 7)}]}
            for i in range(n)]


def test_several_processes_give_the_rows_and_counts_of_one(tiny_tokenizer, monkeypatch):
    data = rows(2 * _MIN_SHARE + 37)
    options = dict(tokenizer=tiny_tokenizer, task="sft", max_length=48, truncation="truncate", packing=False)
    alone, alone_stats = encode_rows(data, **options)
    import tunestack.data.encode as encode

    shares = []
    real = encode._encode_in_processes
    monkeypatch.setattr(encode, "_encode_in_processes", lambda *a: shares.append(a[-1]) or real(*a))
    together, together_stats = encode_rows(data, num_proc=2, **options)
    assert shares == [2]  # the work did go to two processes
    assert together == alone and vars(together_stats) == vars(alone_stats)
    assert alone_stats.truncated > 0  # the counts being compared are not all zero


def test_an_error_in_a_later_share_names_its_row(tiny_tokenizer):
    data = rows(2 * _MIN_SHARE)
    data[_MIN_SHARE + 5]["tools"] = '[{"type": "function", "function": {"name": "f", "parameters": {}}}]'
    with pytest.raises(DataError, match=rf"training data, example {_MIN_SHARE + 6}: .* does not render tools"):
        encode_rows(data, tokenizer=tiny_tokenizer, task="sft", max_length=48, truncation="truncate",
                    packing=False, source="training data", num_proc=2)
