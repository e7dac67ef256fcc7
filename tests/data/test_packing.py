"""Packing: a packed row computes exactly what its examples compute one by one."""

import pytest
import torch

from tunestack.data.packing import Collator, pack_sequences
from tunestack.data.tokenize import IGNORE_INDEX, encode_conversation
from helpers import CHAT_ROWS


def summed_loss(model, batch) -> torch.Tensor:
    labels = batch.pop("labels")
    logits = model(**batch, use_cache=False).logits.float()
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
        ignore_index=IGNORE_INDEX, reduction="sum",
    )


@pytest.fixture(params=["sdpa", "eager", "tunestack_packed"])
def any_attention_model(request, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from tunestack.model.attention import register

    register()
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype="float32", attn_implementation=request.param)


def test_packed_row_loss_equals_sum_of_unpacked_losses(tiny_tokenizer, any_attention_model):
    tiny_model = any_attention_model
    examples = [encode_conversation(tiny_tokenizer, r["messages"], 512) for r in CHAT_ROWS[:6]]
    examples = [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]
    rows = pack_sequences(examples, max_length=512)
    assert len(rows) == 1 and len(rows[0]["input_ids"]) == sum(len(e["input_ids"]) for e in examples)
    collate = Collator(tiny_tokenizer.pad_token_id)
    with torch.no_grad():
        packed = summed_loss(tiny_model, collate(rows))
        separate = sum(summed_loss(tiny_model, collate([e])) for e in examples)
        # The same rows padded into one batch of separate sequences agree too.
        batched = summed_loss(tiny_model, collate(examples))
    torch.testing.assert_close(packed, separate, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(batched, separate, rtol=1e-5, atol=1e-4)


def test_packing_leaks_nothing_across_examples(tiny_tokenizer, any_attention_model):
    tiny_model = any_attention_model
    """Changing the first example of a row leaves the logits of the second untouched."""
    a, b, c = (encode_conversation(tiny_tokenizer, r["messages"], 512) for r in CHAT_ROWS[:3])
    collate = Collator(tiny_tokenizer.pad_token_id)
    first = collate([{"input_ids": a.input_ids + c.input_ids, "labels": a.labels + c.labels,
                      "position_ids": list(range(len(a.input_ids))) + list(range(len(c.input_ids)))}])
    second = collate([{"input_ids": b.input_ids + c.input_ids, "labels": b.labels + c.labels,
                       "position_ids": list(range(len(b.input_ids))) + list(range(len(c.input_ids)))}])
    first.pop("labels"), second.pop("labels")
    with torch.no_grad():
        tail_a = tiny_model(**first, use_cache=False).logits[0, len(a.input_ids):]
        tail_b = tiny_model(**second, use_cache=False).logits[0, len(b.input_ids):]
    torch.testing.assert_close(tail_a, tail_b, rtol=1e-5, atol=1e-5)


def test_bins_respect_max_length_and_keep_every_token():
    examples = [{"input_ids": [1] * n, "labels": [1] * n} for n in (5, 9, 3, 7, 2, 8, 1)]
    rows = pack_sequences(examples, max_length=10)
    assert all(len(r["input_ids"]) <= 10 for r in rows)
    assert sum(len(r["input_ids"]) for r in rows) == 35
    assert len(rows) == 4  # 35 tokens need at least 4 rows of 10
    for row in rows:
        starts = [i for i, p in enumerate(row["position_ids"]) if p == 0]
        assert all(row["labels"][i] == IGNORE_INDEX for i in starts)
