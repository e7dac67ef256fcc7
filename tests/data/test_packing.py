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


def test_padding_free_batches_train_as_the_padded_ones(tiny_tokenizer, tiny_model_dir):
    """A micro-batch joined into one row without padding (positions restarting per row, the per-example kernel)
    gives the padded batch's loss (grouped eager attention, what a CPU run used before) and its gradients, of rows of
    different lengths and of packed rows alike."""
    from transformers import AutoModelForCausalLM

    from tunestack.model.attention import register, register_grouped

    examples = [encode_conversation(tiny_tokenizer, r["messages"], n) for r, n in zip(CHAT_ROWS, (512, 20, 33, 9))]
    rows = [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]
    joined = Collator(tiny_tokenizer.pad_token_id, padding_free=True)(rows)
    lengths = [len(r["input_ids"]) for r in rows]
    assert joined["input_ids"].shape == (1, sum(lengths)) and "attention_mask" not in joined
    starts = [sum(lengths[:i]) for i in range(len(rows))]
    assert joined["position_ids"][0, starts].tolist() == [0] * len(rows)
    assert all(joined["labels"][0, s] == IGNORE_INDEX for s in starts)
    results = []
    for attn, batch in ((register_grouped(), Collator(tiny_tokenizer.pad_token_id)(rows)), (register(), joined)):
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype="float32", attn_implementation=attn)
        loss = summed_loss(model, dict(batch))
        loss.backward()
        results.append((loss.detach(), model.model.layers[0].self_attn.k_proj.weight.grad))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-4, atol=1e-6)
    packed = pack_sequences(rows, max_length=64)  # packed rows joined keep their own positions
    again = Collator(tiny_tokenizer.pad_token_id, padding_free=True)(packed)
    assert again["position_ids"][0].tolist() == [p for row in packed for p in row["position_ids"]]


def test_padding_free_by_default_only_where_it_is_exact_and_pays():
    from tunestack.data.packing import padding_free_rows

    cpu = dict(task="sft", text=True, cuda=False, attention="auto", max_length=512, grouped=True, compiled=False,
               per_row_outputs=False, tensor_parallel=False)
    assert padding_free_rows(None, **cpu) and padding_free_rows(None, **cpu | {"task": "pt"})
    for change in ({"task": "dpo"}, {"text": False}, {"cuda": True}, {"attention": "sdpa"}, {"max_length": 2048},
                   {"grouped": False}, {"compiled": True}, {"per_row_outputs": True}, {"tensor_parallel": True}):
        assert not padding_free_rows(None, **cpu | change), change
    assert padding_free_rows(True, **cpu | {"cuda": True, "grouped": False})  # asked for: on
    assert not padding_free_rows(False, **cpu)
