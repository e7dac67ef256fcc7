"""Turn canonical rows into training sequences: tokenize, mask, truncate or drop, optionally pack."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from tunestack.data.packing import pack_sequences
from tunestack.data.tokenize import IGNORE_INDEX, encode_conversation, encode_text
from tunestack.errors import DataError


@dataclass
class EncodeStats:
    """What encoding did to the data, reported to the user and stored in run.json."""

    examples: int = 0
    truncated: int = 0
    dropped_too_long: int = 0
    dropped_no_target: int = 0
    tokens: int = 0
    target_tokens: int = 0
    rows: int = 0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{self.examples} examples, {self.tokens:,} tokens ({self.target_tokens:,} trained on)"]
        if self.truncated:
            parts.append(f"{self.truncated} truncated to --max_length")
        if self.dropped_too_long:
            parts.append(f"{self.dropped_too_long} dropped as longer than --max_length")
        if self.dropped_no_target:
            parts.append(f"{self.dropped_no_target} dropped with no assistant tokens left after truncation")
        if self.rows != self.examples:
            parts.append(f"packed into {self.rows} rows")
        return "; ".join(parts)


def _encode_row(tokenizer, row: dict, task: str, max_length: int, truncation: str, template_kwargs: dict | None):
    if task == "pt":
        return encode_text(tokenizer, row["text"], max_length, truncation)
    tools = json.loads(row["tools"]) if row.get("tools") else None
    return encode_conversation(tokenizer, row["messages"], max_length, truncation, tools, template_kwargs)


def encode_examples(rows, tokenizer, task: str, max_length: int, truncation: str, stats: EncodeStats,
                    source: str = "dataset", first_index: int = 0, template_kwargs: dict | None = None) -> list[dict]:
    """Tokenize and mask canonical rows, skipping (and counting in `stats`) those with nothing to train on.
    `template_kwargs` go to the chat template (e.g. {"enable_thinking": False})."""
    encoded = []
    for index, row in enumerate(rows, first_index):
        try:
            item = _encode_row(tokenizer, row, task, max_length, truncation, template_kwargs)
        except DataError as exc:
            raise DataError(f"{source}, example {index + 1}: {exc}") from None
        if item is None:
            stats.dropped_too_long += 1
            continue
        targets = sum(label != IGNORE_INDEX for label in item.labels[1:])
        if targets == 0:
            stats.dropped_no_target += 1
            continue
        stats.examples += 1
        stats.truncated += item.truncated
        stats.tokens += len(item.input_ids)
        stats.target_tokens += targets
        encoded.append({"input_ids": item.input_ids, "labels": item.labels})
    return encoded


def encode_rows(rows, tokenizer, task: str, max_length: int, truncation: str, packing: bool,
                source: str = "dataset", template_kwargs: dict | None = None, num_proc: int = 1):
    """Encode an iterable of canonical rows into a list of training dicts, with the counts of what happened.
    With `num_proc` > 1 (--num_proc) the rows are tokenized in that many processes, in contiguous shares whose
    results are joined in order: the same rows, counts and errors as one process gives."""
    stats = EncodeStats()
    if num_proc > 1 and hasattr(rows, "__len__") and len(rows) >= num_proc * _MIN_SHARE:
        encoded = _encode_in_processes(rows, tokenizer, task, max_length, truncation, stats, source,
                                       template_kwargs, num_proc)
    else:
        encoded = encode_examples(rows, tokenizer, task, max_length, truncation, stats, source,
                                  template_kwargs=template_kwargs)
    if not encoded:
        raise DataError(
            f"{source}: no usable examples after tokenization ({stats.summary()}); raise --max_length "
            "or use --truncation truncate"
        )
    rows_out = pack_sequences(encoded, max_length) if packing else encoded
    stats.rows = len(rows_out)
    return rows_out, stats


_MIN_SHARE = 256
"""Fewer rows than this per process are tokenized in this process: starting one costs more than they take."""


def _encode_in_processes(rows, tokenizer, task, max_length, truncation, stats: EncodeStats, source, template_kwargs,
                         num_proc: int) -> list[dict]:
    """encode_examples over `num_proc` contiguous shares of `rows` in fresh (spawned) processes, joined in order."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    size = -(-len(rows) // num_proc)
    bounds = [(start, min(start + size, len(rows))) for start in range(0, len(rows), size)]
    shares = [rows.select(range(a, b)) if hasattr(rows, "select") else rows[a:b] for a, b in bounds]
    with ProcessPoolExecutor(len(shares), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_encode_share, share, tokenizer, task, max_length, truncation, source, a,
                               template_kwargs) for share, (a, _) in zip(shares, bounds)]
        results = [future.result() for future in futures]  # the first share's error is the first row's error
    encoded = []
    for share_rows, share_stats in results:
        encoded += share_rows
        for name in ("examples", "truncated", "dropped_too_long", "dropped_no_target", "tokens", "target_tokens"):
            setattr(stats, name, getattr(stats, name) + getattr(share_stats, name))
    return encoded


def _encode_share(rows, tokenizer, task, max_length, truncation, source, first_index, template_kwargs):
    stats = EncodeStats()
    encoded = encode_examples(rows, tokenizer, task, max_length, truncation, stats, source, first_index,
                              template_kwargs)
    return encoded, stats


def to_dataset(rows: list[dict]):
    """A datasets.Dataset over encoded rows, in the order given."""
    from datasets import Dataset

    return Dataset.from_list(rows)
