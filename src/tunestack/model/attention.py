"""Attention kernels for training on CPU, registered through transformers' public `AttentionInterface`.

`grouped_attention` ("tunestack_eager"), for unpacked rows of up to 1024 tokens: transformers' eager attention, the
same operations in the same order, except that grouped-query models' keys and values are not repeated per query
head. Eager attention copies them to every head (`repeat_kv`) and autograd keeps the copies; here each key/value
head's query heads are stacked along the query axis instead, so that one matrix product serves a group and only the
key/value heads' own keys and values are kept: a 9-head, 3-key/value-head model keeps a third of them. Rows of
`flash_from` tokens or more go to sdpa's kernel under the same mask, faster there and without scores to keep.

`decode_attention` ("tunestack_decode"), for decoding on a CPU with `--torch_compile`: sdpa, except inside a compiled
decoding step (one query per row), where it runs products and sums that inductor fuses into reductions reading each
cached key and value once. There sdpa's CPU kernel over a 256-position static cache took 4.4 ms of a bf16 step's 30
layers, the grouped kernel's matrix products 1.1-3.2 ms, the fused reductions 0.4 ms.

`packed_attention`, for packed rows: each packed example attends only within itself, at the cost of its own length.
Groups of short examples run the grouped operations (matmul, mask, softmax, matmul); groups whose longest example
reaches `flash_from` tokens run sdpa's causal kernel, which on a CPU is faster there and keeps no scores (a group's
examples are padded at their ends, which a causal query never sees).

transformers' sdpa and eager kernels handle packed rows with a block-diagonal mask over the whole row, so a row of
eight 64-token examples pays for 512x512 scores. This kernel, registered through transformers' public
`AttentionInterface`, splits each row where `position_ids` restart at 0 and runs causal attention per example.
It gets no mask from transformers (none is built for a registered kernel), so it is only for packed training
rows, whose padding sits in a block of its own.
"""

from __future__ import annotations

import torch

NAME = "tunestack_packed"
GROUPED = "tunestack_eager"
DECODE = "tunestack_decode"
GROUPED_FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "smollm3", "mixtral", "qwen2_moe", "qwen3_moe", "phi3")
"""Text families whose attention hands [batch, heads, length, dim] queries and [batch, key/value heads, length, dim]
keys and values to the attention interface, their eager kernel repeating the keys and values (`repeat_kv`)."""


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


def flash_from(element_bytes: int, masked: bool = False) -> int:
    """The longest example from which a group of packed examples is attended by sdpa's causal (flash) kernel rather
    than by the grouped operations, for queries of `element_bytes` per element. The grouped operations keep fp32
    scores (and a bf16 copy in bf16) per head and query-key pair for the backward pass; sdpa's kernel keeps none.
    Their time, forward and backward over the same grids of about 2,048 tokens (9 query heads, 3 key/value heads;
    grouped / sdpa, `benchmarks/attention_kernels.py`, a 2-core AMD EPYC with AVX-512 BF16): fp32 0.88 at 48
    tokens, 1.1 at 128, 0.9-1.3 from 192 to 384, 2.5 at 512, 3.9 at 1,024 (capped at AVX2: 1.26 at 128, 1.5 at
    192); bf16 0.27 at 48, 0.61 at 128, 0.7-0.9 at 192, 0.8-1.4 from 256 to 512 in repeated runs, 1.9-2.5 at 768,
    3-4 at 1,024.

    `masked`: the length from which the grouped eager kernel's padded rows go to sdpa's kernel under their mask,
    which is slower than the causal one (grouped / sdpa in bf16: 0.56 at 256 tokens, 0.9 at 384, 1.37 at 512, 2.1
    at 1,024; fp32: 1.12 at 256, 1.72 at 512)."""
    return 128 if element_bytes >= 4 else 512 if masked else 256


def rung(length: int) -> int:
    """The step of the ladder 16, 24, 32, 48, 64, 96, ... that `length` rounds up to: examples of one step are
    attended together, each padded to the longest of them, so that no example is padded to more than 1.5 times its
    length (16 for the shortest)."""
    if length <= 16:
        return 16
    low = 1 << (length - 1).bit_length() - 1  # the power of two below length
    return low * 3 // 2 if length <= low * 3 // 2 else low * 2


def grid_groups(lengths: list[int]) -> list[list[int]]:
    """The examples (indices into `lengths`) attended together, by the rung of their length, shortest first."""
    groups: dict[int, list[int]] = {}
    for index, length in enumerate(lengths):
        groups.setdefault(rung(length), []).append(index)
    return [groups[key] for key in sorted(groups)]


class _Layout:
    """The packed examples of a batch in groups of similar length (`grid_groups`), each group a grid of
    [examples, longest of the group] positions with its causal mask, and the indices that move token states between
    the rows and the grids.

    A grid over all examples at the length of the longest would pay for one long example (a padding block, say)
    with every short one: a batch of short chats with 500 tokens of padding would keep 500x500 scores per example.
    """

    def __init__(self, spans: list[list[tuple[int, int]]], length: int, device, flash: int):
        examples = [(r * length + s, e - s) for r, row in enumerate(spans) for s, e in row]
        groups, placed = [], []
        for members in grid_groups([n for _, n in examples]):
            starts = torch.tensor([examples[i][0] for i in members])
            counts = torch.tensor([examples[i][1] for i in members])
            longest = int(counts.max())
            offsets = torch.arange(longest)
            valid = offsets < counts.unsqueeze(1)  # [examples, longest]
            # where each grid position reads its token (padding reads its example's first, and is masked)
            gather = torch.where(valid, starts.unsqueeze(1) + offsets, starts.unsqueeze(1))
            blocked = None  # from `flash` tokens on, sdpa's causal kernel: padding ends each example, unseen
            if longest < flash:
                causal = torch.ones(longest, longest, dtype=torch.bool).tril()
                blocked = ~(causal & valid.unsqueeze(1)).unsqueeze(1).to(device)  # [examples, 1, queries, keys]
            example, position = valid.nonzero(as_tuple=True)  # the grid's real positions, in token order
            groups.append((gather.to(device), blocked, example.to(device), position.to(device),
                           (~valid)[:, :, None, None].to(device)))
            placed.append(gather[valid])
        # token t of the rows is row `order[t]` of the groups' real positions stacked
        self.order = torch.cat(placed).argsort().to(device)
        self.gathers, self.blocked, self.examples, self.positions, self.paddings = zip(*groups)

    def grids(self, states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """[batch, heads, length, dim] -> each group's [examples, heads, longest, dim] grid."""
        batch, heads, length, dim = states.shape
        return _ToGrids.apply(states.transpose(1, 2).reshape(batch * length, heads, dim), self)

    def rows(self, grids: list[torch.Tensor], batch: int, length: int) -> torch.Tensor:
        """The groups' [examples, heads, longest, dim] outputs -> [batch, length, heads, dim]: the inverse of
        `grids`, padding dropped."""
        tokens = _ToRows.apply(self, *grids)
        return tokens.view(batch, length, *tokens.shape[1:])


def _to_grids(tokens: torch.Tensor, gathers, paddings=None) -> tuple[torch.Tensor, ...]:
    """[tokens, heads, dim] -> each group's [examples, heads, longest, dim] grid. Padding reads its example's first
    token, or zeros where `paddings` (each group's [examples, longest, 1, 1] padding positions) are given."""
    grids = [tokens[gather] for gather in gathers]
    if paddings is not None:
        grids = [grid.masked_fill_(padding, 0) for grid, padding in zip(grids, paddings)]
    return tuple(grid.transpose(1, 2) for grid in grids)


def _to_rows(grids, examples, positions, order: torch.Tensor) -> torch.Tensor:
    """The grids -> [tokens, heads, dim], padding dropped."""
    return torch.cat([grid[example, :, position] for grid, example, position in zip(grids, examples, positions)])[order]


class _ToGrids(torch.autograd.Function):
    """Tokens to grids and back (`_ToRows`), each direction's gradient the other direction. Every token sits at one
    real position of one grid, so both directions are gathers, where autograd's gradient of indexing would scatter
    with accumulation (`index_put_`), which runs serially on a CPU: 1.7x the packed kernel's forward and backward
    time over short examples in fp32. The padding's gradient is dropped: padded keys are masked, and padded queries'
    outputs are never read."""

    @staticmethod
    def forward(ctx, tokens: torch.Tensor, layout: _Layout):
        ctx.save_for_backward(*layout.examples, *layout.positions, layout.order)
        return _to_grids(tokens, layout.gathers)

    @staticmethod
    def backward(ctx, *grads):
        saved, n = ctx.saved_tensors, len(grads)
        return _to_rows(grads, saved[:n], saved[n:2 * n], saved[-1]), None


class _ToRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, layout: _Layout, *grids: torch.Tensor):
        ctx.save_for_backward(*layout.gathers, *layout.paddings)
        return _to_rows(grids, layout.examples, layout.positions, layout.order)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        saved = ctx.saved_tensors
        n = len(saved) // 2
        return (None, *_to_grids(grad, saved[:n], saved[n:]))


_last: tuple[torch.Tensor, int, _Layout] | None = None


def _layout(position_ids: torch.Tensor | None, batch: int, length: int, device, flash: int) -> _Layout:
    """The layout for these rows; every layer of one forward pass shares it."""
    global _last
    key = position_ids.expand(batch, -1) if position_ids is not None else torch.zeros(batch, length)
    if _last is not None and _last[0].shape == key.shape and _last[1] == flash \
            and torch.equal(_last[0], key.to(_last[0].device)):
        return _last[2]
    layout = _Layout(segments(position_ids, batch, length), length, device, flash)
    _last = (key.detach().clone(), flash, layout)
    return layout


def packed_attention(module, query, key, value, attention_mask, scaling: float, dropout: float = 0.0,
                     position_ids: torch.Tensor | None = None, **kwargs):
    """Same signature and output layout as transformers' eager attention: ([batch, length, heads, dim], None)."""
    batch, _, length, _ = query.shape
    layout = _layout(position_ids, batch, length, query.device, flash_from(query.element_size()))
    outputs = []
    for q, k, v, blocked in zip(layout.grids(query), layout.grids(key), layout.grids(value), layout.blocked):
        if blocked is None:
            outputs.append(_sdpa(q, k, v, None, scaling, dropout, module.training, causal=True))
        else:
            outputs.append(_grouped(q, k, v, scaling, dropout, module.training,
                                    lambda scores, blocked=blocked: scores.masked_fill(blocked, float("-inf")))[0])
    return layout.rows(outputs, batch, length), None


def grouped_attention(module, query, key, value, attention_mask, scaling: float, dropout: float = 0.0, **kwargs):
    """transformers' eager attention without repeating keys and values: ([batch, length, heads, dim], weights).
    `attention_mask` is eager attention's additive [batch, 1, queries, keys] mask (registered with `eager_mask`).
    From `flash_from` keys on, sdpa's kernel attends under the same mask (no weights returned, no scores kept)."""
    mask = None if attention_mask is None else attention_mask[:, :, :, :key.shape[-2]]
    if key.shape[-2] >= flash_from(query.element_size(), masked=mask is not None):
        return _sdpa(query, key, value, mask, scaling, dropout, module.training).transpose(1, 2).contiguous(), None
    output, weights = _grouped(query, key, value, scaling, dropout, module.training,
                               lambda scores: scores if mask is None else scores + mask)
    return output.transpose(1, 2).contiguous(), weights


def decode_attention(module, query, key, value, attention_mask, scaling: float, dropout: float = 0.0, **kwargs):
    """transformers' sdpa attention, except in a compiled step of one query per row on a CPU (`_decode_one`), over
    sdpa's [batch, 1, queries, keys] mask (boolean, or None where every key is seen)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if query.shape[2] != 1 or query.device.type != "cpu" or not torch.compiler.is_compiling():
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    mask = None if attention_mask is None else attention_mask[:, :, :, :key.shape[-2]]
    if mask is not None and mask.dtype == torch.bool:
        mask = torch.where(mask, 0.0, float("-inf"))
    return _decode_one(query, key, value, scaling, mask), None


def _decode_one(query, key, value, scaling: float, mask):
    """One query per row ([n, heads, 1, dim]) over [n, key/value heads, keys, dim] keys and values, as products and
    sums for inductor to fuse into reductions that read each key and value once, in fp32 until the output: at one
    query a matrix product's kernel is all overhead (ATen's bf16 batched product took 3.2 ms of a 30-layer bf16
    step, the fused reductions 0.4). `mask` is additive, [n, 1, 1, keys]. Returns [n, 1, heads, dim]."""
    n, heads, _, dim = query.shape
    kv_heads, keys = key.shape[1], key.shape[2]
    grouped = query.reshape(n, kv_heads, heads // kv_heads, 1, dim)
    scores = (grouped * key.unsqueeze(2)).sum(-1, dtype=torch.float32) * scaling  # [n, kv heads, group, keys]
    if mask is not None:
        scores = scores + mask.view(n, 1, 1, keys)
    weights = scores.softmax(-1)
    output = (weights.unsqueeze(-1) * value.unsqueeze(2)).sum(-2, dtype=torch.float32)  # [n, kv heads, group, dim]
    return output.to(query.dtype).view(n, 1, heads, dim)


def _sdpa(query, key, value, mask, scaling: float, dropout: float, training: bool, causal: bool = False):
    """sdpa's kernel over [n, heads, queries, dim] queries and [n, key/value heads, keys, dim] keys and values
    (grouped-query heads unrepeated), under `mask` or causally; [n, heads, queries, value dim] out."""
    return torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=mask, dropout_p=dropout if training else 0.0, is_causal=causal, scale=scaling,
        enable_gqa=key.shape[1] != query.shape[1])


def _grouped(query, key, value, scaling: float, dropout: float, training: bool, masked):
    """Attention of [n, heads, queries, dim] queries over [n, key/value heads, keys, dim] keys and values, as eager
    attention computes it, `masked` applied to the [n, heads, queries, keys] scores. Query heads h*groups ..
    h*groups+groups-1 share key/value head h (as repeat_kv pairs them) and are stacked along the query axis, so that
    one matrix product serves a group and the keys and values are neither copied per query head nor kept so.
    Returns the [n, heads, queries, value dim] output and the softmax weights."""
    n, heads, length, dim = query.shape
    kv_heads, keys = key.shape[1], key.shape[2]
    stacked = query.reshape(n, kv_heads, heads // kv_heads * length, dim)
    scores = masked((torch.matmul(stacked, key.transpose(2, 3)) * scaling).view(n, heads, length, keys))
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = torch.nn.functional.dropout(weights, p=dropout, training=training)
    output = torch.matmul(weights.view(n, kv_heads, heads // kv_heads * length, keys), value)
    return output.view(n, heads, length, value.shape[-1]), weights


def register() -> str:
    """Make the kernel available as `attn_implementation="tunestack_packed"`; returns that name."""
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, packed_attention)
    return NAME


def register_decode() -> str:
    """Make `decode_attention` available as `attn_implementation="tunestack_decode"`, with sdpa's mask; returns
    that name."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register(DECODE, decode_attention)
    AttentionMaskInterface.register(DECODE, sdpa_mask)
    return DECODE


def register_grouped() -> str:
    """Make the grouped eager kernel available as `attn_implementation="tunestack_eager"`, with eager attention's
    mask; returns that name."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import eager_mask

    AttentionInterface.register(GROUPED, grouped_attention)
    AttentionMaskInterface.register(GROUPED, eager_mask)
    return GROUPED
