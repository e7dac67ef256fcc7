"""The trainer's loss, computed on target positions only, equals the model's own causal-LM loss."""

import pytest
import torch

from helpers import CHAT_ROWS
from tunestack.data.packing import Collator, pack_sequences
from tunestack.data.tokenize import encode_conversation
from tunestack.train.trainer import TunestackTrainer


def batch_of(tokenizer, rows, packed: bool):
    examples = [encode_conversation(tokenizer, r["messages"], 512) for r in rows]
    examples = [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]
    return Collator(tokenizer.pad_token_id)(pack_sequences(examples, 512) if packed else examples)


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("num_items", [None, 37])
def test_loss_on_target_positions_equals_the_models_loss(tiny_model, tiny_tokenizer, tmp_path, packed, num_items):
    from transformers import TrainingArguments

    tiny_model.config.use_cache = False
    trainer = TunestackTrainer(model=tiny_model, args=TrainingArguments(output_dir=str(tmp_path), use_cpu=True,
                                                                         report_to="none"))
    batch = batch_of(tiny_tokenizer, CHAT_ROWS[:5], packed)
    kwargs = {} if num_items is None else {"num_items_in_batch": num_items}
    expected = tiny_model(**batch, **kwargs).loss
    ours = trainer.compute_loss(tiny_model, dict(batch), num_items_in_batch=num_items)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)
    grads = torch.autograd.grad(ours, tiny_model.model.layers[0].mlp.up_proj.weight)[0]
    reference = torch.autograd.grad(tiny_model(**batch, **kwargs).loss, tiny_model.model.layers[0].mlp.up_proj.weight)[0]
    torch.testing.assert_close(grads, reference, rtol=1e-4, atol=1e-6)
