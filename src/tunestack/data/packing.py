"""Pack tokenized examples into full rows and batch them; positions restart per example so no attention leaks.

transformers turns restarting `position_ids` (with no attention mask) into a block-diagonal causal mask for
sdpa/eager and into varlen kernels for flash attention, so a packed row computes exactly what its examples
would compute one by one.
"""

from __future__ import annotations

from collections.abc import Iterable

from tunestack.data.tokenize import IGNORE_INDEX


def pack_sequences(examples: Iterable[dict], max_length: int) -> list[dict]:
    """Best-fit-decreasing bin packing of examples (dicts of input_ids, labels) into rows of at most max_length.

    Each packed row holds input_ids, labels and position_ids (restarting at 0 for each example). The first
    token of each example is never a target: unpacked, nothing predicts it; packed, only the previous example's
    last token would, across the seam.
    """
    items = sorted((e for e in examples if e["input_ids"]), key=lambda e: len(e["input_ids"]), reverse=True)
    bins: list[list[dict]] = []
    space: list[int] = []
    for example in items:
        size = len(example["input_ids"])
        best = min((i for i, free in enumerate(space) if free >= size), key=lambda i: space[i], default=None)
        if best is None:
            bins.append([example])
            space.append(max_length - size)
        else:
            bins[best].append(example)
            space[best] -= size
    return [_concat(group) for group in bins]


def _concat(group: list[dict]) -> dict:
    row = {"input_ids": [], "labels": [], "position_ids": []}
    for example in group:
        row["input_ids"] += example["input_ids"]
        # The first token of each example has no predecessor inside its block: never a target across the seam.
        row["labels"] += [IGNORE_INDEX] + list(example["labels"][1:])
        row["position_ids"] += list(range(len(example["input_ids"])))
    return row


PADDING_FREE_LENGTH = 1024
"""The longest --max_length at which padding-free rows are on by default (where a CPU run attends eagerly anyway)."""


def padding_free_rows(given: bool | None, *, task: str, text: bool, cuda: bool, attention: str, max_length: int,
                      grouped: bool, compiled: bool, per_row_outputs: bool, tensor_parallel: bool) -> bool:
    """Whether a run's micro-batches are joined into one row (`Collator(padding_free=True)`): `given` (--padding_free)
    when set, else on for sft and pt text rows on a CPU with --attn_implementation auto, rows of up to
    PADDING_FREE_LENGTH tokens, a model of a family whose attention hands its positions to tunestack's per-example
    kernel (`grouped`: GROUPED_FAMILIES, transformers' own code), not compiled (rows of varying length would compile
    again and again), without --metrics or --loss_func (`per_row_outputs`: they read outputs row by row) and without
    tensor parallelism. There it trains the same (the same loss, each example attending within itself) in less
    memory and time, as no position is padding."""
    if given is not None:
        return given and task in ("sft", "pt") and text
    return task in ("sft", "pt") and text and not cuda and attention == "auto" and max_length <= PADDING_FREE_LENGTH \
        and grouped and not compiled and not per_row_outputs and not tensor_parallel


def run_padding_free(model, data, train, parallel, *, task: str, text: bool, cuda: bool, grouped: bool) -> bool:
    """`padding_free_rows` for a run's flag groups (ModelArgs, DataArgs, TrainArgs, ParallelArgs)."""
    return padding_free_rows(
        data.padding_free, task=task, text=text, cuda=cuda, attention=model.attn_implementation,
        max_length=data.max_length, grouped=grouped, compiled=train.torch_compile,
        per_row_outputs=bool(train.metrics or train.loss_func), tensor_parallel=parallel.tp > 1)


class Collator:
    """Pads a list of examples into a batch; packed rows (with position_ids) get no attention mask. `padding_free`:
    the rows are joined into one row instead, positions restarting at each (packed rows keep theirs), so that no
    position is padding; as in a packed row, each row's first token is never a target."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None, padding_free: bool = False):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of
        self.padding_free = padding_free

    def __call__(self, features: list[dict]) -> dict:
        import torch

        if self.padding_free:
            row = {"input_ids": [], "labels": [], "position_ids": []}
            for f in features:
                row["input_ids"] += list(f["input_ids"])
                row["labels"] += [IGNORE_INDEX] + list(f["labels"][1:])
                row["position_ids"] += list(f.get("position_ids") or range(len(f["input_ids"])))
            return {key: torch.tensor([value], dtype=torch.long) for key, value in row.items()}
        longest = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            longest = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        packed = "position_ids" in features[0]
        batch = {"input_ids": [], "labels": []}
        batch["position_ids" if packed else "attention_mask"] = []
        for f in features:
            pad = longest - len(f["input_ids"])
            batch["input_ids"].append(list(f["input_ids"]) + [self.pad_token_id] * pad)
            batch["labels"].append(list(f["labels"]) + [IGNORE_INDEX] * pad)
            if packed:
                # Padding forms its own block (positions restart at 0), so it attends to nothing real.
                batch["position_ids"].append(list(f["position_ids"]) + list(range(pad)))
            else:
                batch["attention_mask"].append([1] * len(f["input_ids"]) + [0] * pad)
        return {key: torch.tensor(value, dtype=torch.long) for key, value in batch.items()}
