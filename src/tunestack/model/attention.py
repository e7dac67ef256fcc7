"""Attention for packed rows on CPU: each packed example attends only within itself, at the cost of its own length.

transformers' sdpa and eager kernels handle packed rows with a block-diagonal mask over the whole row, so a row of
eight 64-token examples pays for 512x512 scores. This kernel, registered through transformers' public
`AttentionInterface`, splits each row where `position_ids` restart at 0 and runs causal attention per example.
It gets no mask from transformers (none is built for a registered kernel), so it is only for packed training
rows, whose padding sits in a block of its own.
"""

from __future__ import annotations

import torch

NAME = "tunestack_packed"


def segments(position_ids: torch.Tensor | None, batch: int, length: int) -> list[list[tuple[int, int]]]:
    """Per row, the (start, end) of each packed example: a new one begins wherever the position is 0."""
    if position_ids is None:
        return [[(0, length)]] * batch
    spans = []
    for row in position_ids.expand(batch, -1):
        starts = (row == 0).nonzero().flatten().tolist()
        if not starts or starts[0] != 0:
            starts = [0] + starts
        spans.append(list(zip(starts, starts[1:] + [length])))
    return spans


class _Layout:
    """Where each packed example's tokens go in a [examples, longest] grid, and the way back."""

    def __init__(self, spans: list[list[tuple[int, int]]], length: int, device):
        flat = [(b * length + s, e - s) for b, row in enumerate(spans) for s, e in row]
        self.longest = max(n for _, n in flat)
        offsets = torch.arange(self.longest)
        starts = torch.tensor([s for s, _ in flat]).unsqueeze(1)
        sizes = torch.tensor([n for _, n in flat]).unsqueeze(1)
        self.valid = offsets < sizes  # [examples, longest]
        self.gather = (starts + offsets.clamp(max=self.longest - 1)).where(self.valid, starts).to(device)
        grid = torch.arange(len(flat) * self.longest).view(len(flat), self.longest)
        self.scatter = grid[self.valid].to(device)  # grid cell of every token, in row order
        causal = torch.ones(self.longest, self.longest, dtype=torch.bool).tril()
        self.mask = (causal & self.valid.unsqueeze(1)).unsqueeze(1).to(device)  # [examples, 1, q, k]


_last: tuple[torch.Tensor, _Layout] | None = None


def _layout(position_ids: torch.Tensor | None, batch: int, length: int, device) -> _Layout:
    """The layout for these rows; every layer of one forward pass shares it."""
    global _last
    key = position_ids.expand(batch, -1) if position_ids is not None else torch.zeros(batch, 1)
    if _last is not None and _last[0].shape == key.shape and torch.equal(_last[0], key.to(_last[0].device)):
        return _last[1]
    layout = _Layout(segments(position_ids, batch, length), length, device)
    _last = (key.detach().clone(), layout)
    return layout


def packed_attention(module, query, key, value, attention_mask, scaling: float, dropout: float = 0.0,
                     position_ids: torch.Tensor | None = None, **kwargs):
    """Same signature and output layout as transformers' eager attention: ([batch, length, heads, dim], None)."""
    batch, heads, length, dim = query.shape
    groups = heads // key.shape[1]
    if groups > 1:
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    layout = _layout(position_ids, batch, length, query.device)

    def to_grid(states):  # [batch, heads, length, dim] -> [examples, heads, longest, dim]
        return states.transpose(1, 2).reshape(batch * length, heads, dim)[layout.gather].transpose(1, 2)

    q, k, v = to_grid(query), to_grid(key), to_grid(value)
    scores = torch.matmul(q, k.transpose(-1, -2)) * scaling
    scores = scores.masked_fill(~layout.mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = torch.nn.functional.dropout(weights, p=dropout, training=module.training)
    grid = torch.matmul(weights, v).transpose(1, 2).reshape(-1, heads, dim)  # [examples * longest, heads, dim]
    return grid[layout.scatter].view(batch, length, heads, dim), None


def register() -> str:
    """Make the kernel available as `attn_implementation="tunestack_packed"`; returns that name."""
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, packed_attention)
    return NAME
