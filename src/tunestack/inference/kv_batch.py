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

    def reserve(self, new_tokens: int) -> None:
        """A DynamicCache grows as it is filled: nothing to do."""

    def step_inputs(self, tokens: list[list[int]], device):
        """Input ids, attention mask and position ids for appending `tokens[i]` (all the same length) to row i."""
        ids = torch.tensor(tokens, device=device)
        positions = self.positions(device) + torch.arange(ids.shape[1], device=device)
        return ids, self.attention_mask(ids.shape[1], device), positions

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


def bucket(size: int, smallest: int = 1) -> int:
    """The power of two at least `size` (and at least `smallest`): the shapes compiled graphs are kept for."""
    return max(smallest, 1 << max(size - 1, 0).bit_length())


class StaticKVBatch:
    """The running batch in a transformers StaticCache, for a compiled decoding step: every layer's keys and values
    live in tensors of a fixed shape [rows, heads, length, head dim], so one compiled graph serves every step.

    Both sizes are buckets (powers of two): `rows` at least the running sequences, `length` at least the longest row
    plus what the next step appends. A batch outgrowing either moves to the next bucket (a new cache, its graph
    compiled once and then kept), and one that shrinks to a quarter of its rows moves down, so that few sequences do
    not pay for many. Rows past the running ones are idle: their mask shows them one column, and their outputs are
    dropped. Like KVBatch, rows are left-padded so that all end at the cache's write column (`width`); a newcomer
    prefilled in its own DynamicCache is copied in, right-aligned to that column.
    """

    SHORTEST = 256

    def __init__(self, config, first: KVBatch):
        self.config = config
        self.pads: list[int] = []
        self.offsets: list[int] = []
        self.cache = None
        self.rows = 0
        self.length = 0
        # one column of each layer's keys and values: their heads, head dim, dtype and device
        self._layout = [(layer.keys[:1, :, :1].clone(), layer.values[:1, :, :1].clone())
                        for layer in first.cache.layers]
        self.extend(first)

    @staticmethod
    def fits(config) -> bool:
        """Whether this model's static cache is plain full attention in every layer (as batching needs)."""
        from transformers import StaticCache
        from transformers.cache_utils import StaticLayer

        cache = StaticCache(config=config, max_cache_len=1)
        return bool(cache.layers) and all(type(layer) is StaticLayer for layer in cache.layers)

    @property
    def width(self) -> int:
        return int(self.cache.layers[0].cumulative_length)

    def __len__(self) -> int:
        return len(self.pads)

    def attention_mask(self, new_tokens: int, device) -> torch.Tensor:
        """[rows, length] mask: each running row's real columns up to the `new_tokens` about to be written; an idle
        row sees column 0 only (a row that sees nothing gives NaN in some attention kernels)."""
        columns = torch.arange(self.length, device=device)
        starts = torch.tensor(self.pads + [0] * (self.rows - len(self)), device=device)
        ends = torch.tensor([self.width + new_tokens] * len(self) + [1] * (self.rows - len(self)), device=device)
        return ((columns[None, :] >= starts[:, None]) & (columns[None, :] < ends[:, None])).long()

    def positions(self, device) -> torch.Tensor:
        tokens = [self.width - p + o for p, o in zip(self.pads, self.offsets)]
        return torch.tensor(tokens + [0] * (self.rows - len(self)), device=device)[:, None]

    def step_inputs(self, tokens: list[list[int]], device):
        """As KVBatch.step_inputs, with idle rows filled up to the bucket (their logits are to be dropped)."""
        width = len(tokens[0])
        self.reserve(width)
        ids = torch.tensor(tokens + [[0] * width] * (self.rows - len(self)), device=device)
        positions = self.positions(device) + torch.arange(width, device=device)
        return ids, self.attention_mask(width, device), positions

    def reserve(self, new_tokens: int) -> None:
        """Room for `new_tokens` more columns: the shared padding trimmed first, then a longer bucket if need be."""
        if self.width + new_tokens > self.length:
            self._trim()
        if self.width + new_tokens > self.length:
            self._move(self.rows, bucket(self.width + new_tokens, self.SHORTEST))

    def keep(self, rows: list[int]) -> None:
        """Drop every row not in `rows` (compacting the rest to the top), then the shared leading padding."""
        index = torch.tensor(rows, device=self._layout[0][0].device)
        for layer in self.cache.layers:
            layer.keys[:len(rows)] = layer.keys.index_select(0, index)
            layer.values[:len(rows)] = layer.values.index_select(0, index)
        self.pads = [self.pads[r] for r in rows]
        self.offsets = [self.offsets[r] for r in rows]
        self._trim()
        if bucket(len(rows)) * 4 <= self.rows:
            self._move(bucket(len(rows)), self.length)

    def extend(self, other: KVBatch) -> None:
        """Copy in the rows of `other` (a prefilled DynamicCache batch) after the running ones."""
        width = self.width if self.cache is not None else 0
        target = max(width, other.width)
        count = len(self) + len(other)
        if self.cache is None or count > self.rows or target + 1 > self.length:
            self._move(max(self.rows, bucket(count)), max(self.length, bucket(target + 1, self.SHORTEST)))
        shift = target - width
        if shift:  # the running rows move right so that every row ends at the newcomers' last column
            for layer in self.cache.layers:
                for tensor in (layer.keys, layer.values):
                    tensor[:len(self), :, shift:target] = tensor[:len(self), :, :width].clone()
            self.pads = [p + shift for p in self.pads]
        start = target - other.width
        for layer, theirs in zip(self.cache.layers, other.cache.layers):
            layer.keys[len(self):count, :, start:target] = theirs.keys
            layer.values[len(self):count, :, start:target] = theirs.values
            layer.cumulative_length.fill_(target)
        self.pads += [p + start for p in other.pads]
        self.offsets += other.offsets

    def to_dynamic(self) -> KVBatch:
        """The running rows as a KVBatch over a DynamicCache (for eager steps), copied out of the static tensors."""
        from transformers import DynamicCache

        cache, width = DynamicCache(config=self.config), self.width
        for layer, mine in zip(cache.layers, self.cache.layers):
            layer.lazy_initialization(mine.keys, mine.values)
            layer.keys = mine.keys[:len(self), :, :width].clone()
            layer.values = mine.values[:len(self), :, :width].clone()
        return KVBatch(cache, self.pads, self.offsets)

    def _trim(self) -> None:
        shared, width = min(self.pads, default=0), self.width
        if shared:
            for layer in self.cache.layers:
                for tensor in (layer.keys, layer.values):
                    tensor[:, :, :width - shared] = tensor[:, :, shared:width].clone()
                layer.cumulative_length.fill_(width - shared)
            self.pads = [p - shared for p in self.pads]

    def _move(self, rows: int, length: int) -> None:
        """Into a new cache of `rows` x `length`, keeping the running rows' columns."""
        from transformers import StaticCache

        cache = StaticCache(config=self.config, max_cache_len=length)
        width = self.width if self.cache is not None else 0
        for index, (layer, (keys, values)) in enumerate(zip(cache.layers, self._layout)):
            layer.lazy_initialization(keys.new_zeros(rows, keys.shape[1], 1, keys.shape[-1]),
                                      values.new_zeros(rows, values.shape[1], 1, values.shape[-1]))
            if self.cache is not None:
                old = self.cache.layers[index]
                layer.keys[:len(self), :, :width] = old.keys[:len(self), :, :width]
                layer.values[:len(self), :, :width] = old.values[:len(self), :, :width]
            layer.cumulative_length.fill_(width)
        self.cache, self.rows, self.length = cache, rows, length
