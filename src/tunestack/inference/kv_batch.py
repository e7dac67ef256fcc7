"""A left-padded batch of KV caches that sequences join and leave between decoding steps."""

from __future__ import annotations

import inspect

import torch


def cache_argument(model) -> str:
    """The name `model`'s forward takes its KV cache by: `cache` since transformers renamed it (5.x), where passing
    `past_key_values` still works but warns; `past_key_values` in older releases and remote code that kept it.

    The cache object passed is the one the forward fills (a DynamicCache grows in place), so callers keep it rather
    than read it back from the output under either name."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PEFT wrapper takes **kwargs
    return "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"


class KVBatch:
    """The running batch's cache (a transformers DynamicCache) with each row's count of left-padding slots.

    Row i holds `pads[i]` empty slots and then its real tokens, so every row ends at the same column and one
    forward pass extends all of them; the attention mask hides the empty slots. Dropping rows is the cache's own
    `batch_select_indices`; transformers has no left-side trim or merge of two caches, so those two are ours.

    `offsets[i]` is added to row i's position ids: a prompt with images under multimodal RoPE (Qwen2-VL's M-RoPE)
    spends fewer positions than tokens, and its text continues at count of tokens + offset (the model's
    `rope_deltas`); 0 for every other row.
    """

    def __init__(self, cache, pads: list[int], offsets: list[int] | None = None):
        self.cache = cache
        self.pads = list(pads)
        self.offsets = list(offsets) if offsets is not None else [0] * len(self.pads)

    @property
    def width(self) -> int:
        return self.cache.get_seq_length()

    def __len__(self) -> int:
        return len(self.pads)

    def attention_mask(self, new_tokens: int, device) -> torch.Tensor:
        """Mask over the cached columns plus `new_tokens` about to be appended."""
        columns = torch.arange(self.width + new_tokens, device=device)
        return (columns[None, :] >= torch.tensor(self.pads, device=device)[:, None]).long()

    def positions(self, device) -> torch.Tensor:
        """Position id of the next token of each row (its count of real tokens so far, plus its offset)."""
        tokens = self.width - torch.tensor(self.pads, device=device)
        return (tokens + torch.tensor(self.offsets, device=device))[:, None]

    def keep(self, rows: list[int]) -> None:
        """Drop every row not in `rows`, then the leading columns that are padding in all remaining rows."""
        self.cache.batch_select_indices(torch.tensor(rows, device=self._device()))
        self.pads = [self.pads[r] for r in rows]
        self.offsets = [self.offsets[r] for r in rows]
        self._trim()

    def extend(self, other: KVBatch) -> None:
        """Append the rows of `other`, padding whichever side is shorter on the left."""
        width, other_width = self.width, other.width
        target = max(width, other_width)
        for mine, theirs in zip(self.cache.layers, other.cache.layers):
            mine.keys = torch.cat([_pad_left(mine.keys, target - width), _pad_left(theirs.keys, target - other_width)])
            mine.values = torch.cat(
                [_pad_left(mine.values, target - width), _pad_left(theirs.values, target - other_width)])
        self.pads = [p + target - width for p in self.pads] + [p + target - other_width for p in other.pads]
        self.offsets += other.offsets

    def _trim(self) -> None:
        shared = min(self.pads, default=0)
        if shared:
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, shared:], layer.values[:, :, shared:]
            self.pads = [p - shared for p in self.pads]

    def _device(self):
        """Where the cached tensors live (the CPU while no layer holds any yet)."""
        filled = [layer.keys for layer in self.cache.layers if getattr(layer, "keys", None) is not None]
        return filled[0].device if filled else torch.device("cpu")


def supports_batching(cache) -> bool:
    """Only plain full-attention layers can be padded and merged this way (not sliding windows or quantized)."""
    from transformers.cache_utils import DynamicLayer

    return all(type(layer) is DynamicLayer for layer in cache.layers)


def _pad_left(tensor: torch.Tensor, amount: int) -> torch.Tensor:
    if amount == 0:
        return tensor
    shape = list(tensor.shape)
    shape[-2] = amount
    return torch.cat([tensor.new_zeros(shape), tensor], dim=-2)
