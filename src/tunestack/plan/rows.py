"""The rows a run trains on, as an estimate needs them: the longest micro-batch, average tokens, how many rows."""

from __future__ import annotations

import random
from dataclasses import dataclass

IGNORE_INDEX = -100  # the label of positions without a target (tunestack.data.tokenize.IGNORE_INDEX)


@dataclass(frozen=True)
class RowProfile:
    """One micro-batch of `batch` rows: the worst one (for memory) and an average one (for time)."""

    batch: int
    length: int
    """The longest row; every row of the worst micro-batch is padded to it."""
    kept: int
    """Positions of a row whose logits are computed: the columns where some row of the micro-batch has a target."""
    examples: int
    """Examples in the worst micro-batch (several per row when packed, padding blocks included)."""
    longest_example: int
    """The longest single example (packed rows are attended per example)."""
    grid: tuple[tuple[int, int], ...]
    """The packed-row kernel's grids in the worst micro-batch: (longest example, examples) of each group of similar
    lengths (model/attention.grid_groups); packed rows are attended per group, each example padded to its group's
    longest."""
    mean_padded: float
    """The padded length of an average micro-batch."""
    mean_tokens: float
    """Real (non-padding) tokens of an average row."""

    @property
    def tokens(self) -> int:
        """Token positions (padding included) of the worst micro-batch."""
        return self.batch * self.length

    @property
    def grid_positions(self) -> int:
        """Positions of the packed kernel's grids (examples padded to their group's longest)."""
        return sum(longest * count for longest, count in self.grid)

    @property
    def grid_pairs(self) -> int:
        """Query-key pairs of the packed kernel's grids."""
        return sum(longest**2 * count for longest, count in self.grid)

    def masked_pairs(self, flash: int) -> int:
        """Query-key pairs of the grids the grouped operations attend (longest example under `flash` tokens,
        model/attention.flash_from): their masks, and their scores per head."""
        return sum(longest**2 * count for longest, count in self.grid if longest < flash)

    def flash_positions(self, flash: int) -> int:
        """Positions of the grids sdpa's causal kernel attends (longest example from `flash` tokens on)."""
        return sum(longest * count for longest, count in self.grid if longest >= flash)


@dataclass(frozen=True)
class Rows:
    """The training rows' lengths, longest first, or rows of --max_length assumed when no data was read."""

    lengths: tuple[int, ...]
    examples: tuple[tuple[int, ...], ...]
    """The lengths of the examples in each row, in the same order (one example unless packed)."""
    targets: tuple[int, ...]
    """Each row's logit columns with a target, as a bit mask (bit j: column j predicts a target token j + 1)."""
    longest_example: int
    measured: bool = False
    """Whether the lengths come from tokenizing --dataset."""

    @classmethod
    def assumed(cls, max_length: int) -> Rows:
        """No data read: rows of --max_length tokens with a target at every position."""
        return cls((max_length,), ((max_length,),), (2 ** (max_length - 1) - 1,), max_length)

    @classmethod
    def from_encoded(cls, rows: list[dict]) -> Rows:
        """From encoded rows (input_ids, labels and, packed, position_ids), as the trainer's collator receives them."""
        rows = sorted(rows, key=lambda r: len(r["input_ids"]), reverse=True)
        pieces = [_examples(r) for r in rows]
        return cls(tuple(len(r["input_ids"]) for r in rows), tuple(tuple(p) for p in pieces),
                   tuple(_target_mask(r["labels"]) for r in rows), max(max(p) for p in pieces), measured=True)

    @property
    def count(self) -> int | None:
        """Training rows (packed rows with --packing); None when no data was read."""
        return len(self.lengths) if self.measured else None

    def micro_batch(self, batch: int, drawn: int | None = None, seed: int = 0,
                    padding_free: bool = False) -> RowProfile:
        """Micro-batches of `batch` rows drawn at random, as the trainer draws them, when the run draws `drawn` rows
        in all (None: every row at least once).

        The worst micro-batch holds the longest row drawn: of k rows drawn from N, its expected rank from the top is
        (N + 1) / (k + 1). Logits are computed at the columns where a row of the micro-batch has a target; which
        rows meet decides how many (packed rows interleave prompts and answers), so the most found in the
        micro-batches of a seeded shuffle of the rows drawn counts.

        `padding_free`: each micro-batch is one row, its rows joined (data/packing.py's Collator): the profile's
        batch is 1 and its length the most tokens a micro-batch joins.
        """
        count = len(self.lengths)
        top = _expected_rank(count, drawn)
        length = self.lengths[top]
        draw = random.Random(seed)
        order = draw.sample(range(count), count)[:drawn or count]
        batches = [order[start:start + batch] for start in range(0, len(order), batch)]
        longest = list(range(top, min(top + batch, count)))
        if padding_free:
            return self._joined(batch, [longest] + batches, draw)
        kept = 0
        for rows in batches:
            union = 0
            for row in rows:
                union |= self.targets[row]
            kept = max(kept, union.bit_count())
        # the packed kernel's grids: of the micro-batch of the longest rows or (packed) any of the shuffle's, the
        # largest; unpacked rows are not attended per example, but get the grid of the longest rows all the same
        packed = self.measured and max(map(len, self.examples)) > 1
        candidates = [longest] + (batches if packed else [])
        grid = max((self._grid(rows, packed) for rows in candidates),
                   key=lambda g: (sum(n * n * c for n, c in g), sum(n * c for n, c in g)))
        if not self.measured:
            grid = ((length, batch),)
        padded = [max(draw.choices(self.lengths, k=batch)) for _ in range(256)] if self.measured else [length]
        return RowProfile(
            batch=batch, length=length, kept=min(max(1, kept), length - 1),
            examples=sum(c for _, c in grid), longest_example=self.longest_example, grid=grid,
            mean_padded=sum(padded) / len(padded), mean_tokens=sum(self.lengths) / len(self.lengths),
        )

    def _joined(self, batch: int, candidates: list[list[int]], draw: random.Random) -> RowProfile:
        """Micro-batches joined into one row each: the worst is the one of the most tokens among `candidates` (the
        longest rows and the shuffle's micro-batches); its examples are attended in the packed kernel's groups."""
        worst = max(candidates, key=lambda rows: sum(self.lengths[r] for r in rows)) if self.measured \
            else [0] * batch
        lengths = [n for r in worst for n in self.examples[r]]
        length = sum(self.lengths[r] for r in worst)
        kept = max(sum(self.targets[r].bit_count() for r in rows) for rows in candidates) if self.measured \
            else batch * (length // batch - 1)
        joined = [sum(draw.choices(self.lengths, k=batch)) for _ in range(256)] if self.measured else [length]
        return RowProfile(
            batch=1, length=length, kept=min(max(1, kept), length - 1), examples=len(lengths),
            longest_example=self.longest_example,
            grid=_grid_shape(lengths),
            mean_padded=sum(joined) / len(joined), mean_tokens=sum(self.lengths) / len(self.lengths),
        )

    def _grid(self, rows: list[int], packed: bool) -> tuple[tuple[int, int], ...]:
        """(longest, examples) of each group the packed kernel attends for these rows, padded as the collator pads
        them: a packed row shorter than the micro-batch's longest gets a padding block, attended as an example."""
        longest = max(self.lengths[r] for r in rows)
        lengths = [n for r in rows for n in self.examples[r]]
        if packed:
            lengths += [longest - self.lengths[r] for r in rows if self.lengths[r] < longest]
        return _grid_shape(lengths)


def _grid_shape(lengths: list[int]) -> tuple[tuple[int, int], ...]:
    """(longest, examples) of each group of these example lengths that the packed kernel attends together."""
    from tunestack.model.attention import grid_groups

    return tuple((max(lengths[i] for i in group), len(group)) for group in grid_groups(lengths))


def _expected_rank(count: int, drawn: int | None) -> int:
    """Index, from the top of `count` sorted values, of the expected maximum of `drawn` random ones."""
    if drawn is None or drawn >= count:
        return 0
    return min(count - 1, round((count + 1) / (drawn + 1)) - 1)


def _target_mask(labels: list[int]) -> int:
    """The logit columns with a target, as bits."""
    return sum(1 << j for j, label in enumerate(labels[1:]) if label != IGNORE_INDEX)


def _examples(row: dict) -> list[int]:
    """Lengths of the examples in a row: one, or those of a packed row (positions restart at 0 in each)."""
    positions = row.get("position_ids")
    if positions is None:
        return [len(row["input_ids"])]
    starts = [i for i, p in enumerate(positions) if p == 0] + [len(positions)]
    return [b - a for a, b in zip(starts, starts[1:])]


def data_rows(source, model_args, data_args, seed: int) -> Rows:
    """Tokenize --dataset with the model's tokenizer as sft does; without data or a local tokenizer, assume rows."""
    if not data_args.dataset or source.local is None or data_args.streaming:
        return Rows.assumed(data_args.max_length)
    from tunestack.data import load_datasets
    from tunestack.data.encode import encode_rows
    from tunestack.model.load import load_tokenizer

    splits = load_datasets(data_args, task="sft", seed=seed)
    tokenizer, _ = load_tokenizer(source.local, model_args.template, model_args.trust_remote_code,
                                  fallback_template=source.template, chat_template=model_args.chat_template)
    rows, _ = encode_rows(splits.train, tokenizer=tokenizer, task="sft", max_length=data_args.max_length,
                          truncation=data_args.truncation, packing=data_args.packing, source="training data")
    return Rows.from_encoded(rows)
