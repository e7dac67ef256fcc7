"""KVBatch row selection through transformers' own `DynamicCache.batch_select_indices`."""

from __future__ import annotations

import torch
from transformers import DynamicCache

from tunestack.inference.kv_batch import KVBatch


def _cache(rows: int, layers: int = 2, width: int = 5) -> tuple[DynamicCache, list[torch.Tensor]]:
    cache, keys = DynamicCache(), []
    for layer in range(layers):
        key = torch.randn(rows, 2, width, 4)
        cache.update(key, key + 1, layer)
        keys.append(key)
    return cache, keys


def test_keep_selects_rows_and_drops_padding_no_row_needs():
    cache, keys = _cache(rows=3)
    batch = KVBatch(cache, pads=[2, 0, 3])
    batch.keep([0, 2])
    assert batch.pads == [0, 1] and batch.width == 3
    for layer, key in zip(cache.layers, keys):
        assert torch.equal(layer.keys, key[[0, 2], :, 2:]) and torch.equal(layer.values, key[[0, 2], :, 2:] + 1)


def test_keep_on_a_cache_that_holds_nothing_yet():
    batch = KVBatch(DynamicCache(), pads=[0, 0])
    batch.keep([1])
    assert batch.pads == [0] and batch.width == 0
