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


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_the_loss_in_chunks_equals_the_models_loss_and_keeps_the_logits_small(tiny_model, tiny_tokenizer, tmp_path,
                                                                              monkeypatch, packed):
    """Chunks of 8 target positions, each recomputed in the backward pass: the same loss and gradients (the head's
    included), and no tensor as large as all the targets' logits is ever kept for the backward pass."""
    from transformers import TrainingArguments

    import tunestack.train.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "CHUNK_ROWS", 8)
    tiny_model.config.use_cache = False
    trainer = TunestackTrainer(model=tiny_model, args=TrainingArguments(output_dir=str(tmp_path), use_cpu=True,
                                                                         report_to="none"))
    batch = batch_of(tiny_tokenizer, CHAT_ROWS[:5], packed)
    targets = int((batch["labels"][:, 1:] != -100).sum())
    vocab = tiny_model.lm_head.weight.shape[0]
    assert targets > 3 * 8

    def logits_saved(trainer):
        """The largest number of positions of logits that the loss keeps for its backward pass, and the loss."""
        saved = []

        def pack(tensor):
            if tensor.shape and tensor.shape[-1] == vocab:
                saved.append(tensor.numel() // vocab)
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            loss = trainer.compute_loss(tiny_model, dict(batch), num_items_in_batch=37)
        return max(saved, default=0), loss

    trainer.chunk_from_bytes = 2**40
    assert logits_saved(trainer)[0] >= targets  # unchunked: every target's logits at once
    trainer.chunk_from_bytes = 1
    kept, ours = logits_saved(trainer)
    assert kept <= 8  # chunked: at most one chunk's (recomputed in the backward pass)
    weights = [tiny_model.model.layers[0].mlp.up_proj.weight, tiny_model.lm_head.weight]
    expected = tiny_model(**batch, num_items_in_batch=37).loss
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)
    grads = torch.autograd.grad(ours, weights)
    reference = torch.autograd.grad(tiny_model(**batch, num_items_in_batch=37).loss, weights)
    for got, want in zip(grads, reference):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    assert isinstance(tiny_model.lm_head, torch.nn.Linear)  # the head is back in place



def changes_logits_after_its_head(family: str) -> bool:
    import inspect

    import transformers

    config = transformers.AutoConfig.for_model(family)
    source = inspect.getsource(transformers.MODEL_FOR_CAUSAL_LM_MAPPING[type(config)].forward)
    after_head = source[source.index("self.lm_head(") + len("self.lm_head("):]
    return "logits" in after_head.split("loss = None")[0]


@pytest.mark.parametrize("family", __import__("tunestack.train.trainer", fromlist=["x"]).PLAIN_HEAD_FAMILIES)
def test_the_families_chunked_have_a_plain_head(family):
    """The chunked loss stands in for `logits = lm_head(hidden)`: a family whose forward changes the logits after
    its head (Gemma 2's softcapping, Cohere's scale) must not be on the list."""
    assert not changes_logits_after_its_head(family)
    assert changes_logits_after_its_head("gemma2") and changes_logits_after_its_head("cohere")  # the check sees it
