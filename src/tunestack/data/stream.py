"""Encode a streamed dataset lazily, packing from a bounded buffer, so large files never load whole."""

from __future__ import annotations

from collections.abc import Iterator

from torch.utils.data import IterableDataset

from tunestack.data.encode import EncodeStats, encode_examples
from tunestack.data.packing import pack_sequences


class EncodedStream(IterableDataset):
    """Token rows from a stream of canonical rows; examples that encode to nothing usable are skipped."""

    def __init__(self, rows, tokenizer, task: str, max_length: int, truncation: str, packing: bool,
                 buffer: int = 512, template_kwargs: dict | None = None):
        self.rows = rows
        self.encode = dict(tokenizer=tokenizer, task=task, max_length=max_length, truncation=truncation,
                           template_kwargs=template_kwargs)
        self.packing = packing
        self.buffer = buffer

    def __iter__(self) -> Iterator[dict]:
        pending: list[dict] = []
        start = 0
        for index, row in enumerate(self.rows):
            pending.append(row)
            if len(pending) == self.buffer:
                yield from self._flush(pending, start)
                pending, start = [], index + 1
        if pending:
            yield from self._flush(pending, start)

    def _flush(self, rows: list[dict], start: int) -> list[dict]:
        encoded = encode_examples(rows, stats=EncodeStats(), source="streamed data", first_index=start,
                                  **self.encode)
        return pack_sequences(encoded, self.encode["max_length"]) if self.packing else encoded
