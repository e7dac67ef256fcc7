"""Each tuner trains exactly the parameters it should, and the rest stay bit-for-bit unchanged."""

import importlib.util

import pytest
import torch

from helpers import CHAT_ROWS
from tunestack.config import TunerArgs
from tunestack.data.packing import Collator
from tunestack.data.tokenize import encode_conversation
from tunestack.model.tuners import attach_tuner, linear_module_names


def train_steps(model, tokenizer, steps: int = 3):
    examples = [encode_conversation(tokenizer, r["messages"], 512) for r in CHAT_ROWS[:4]]
    batch = Collator(tokenizer.pad_token_id)([{"input_ids": e.input_ids, "labels": e.labels} for e in examples])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return loss.item()


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equality (4-bit weights packed into float storage may hold NaN bit patterns)."""
    return torch.equal(a.detach().contiguous().view(torch.uint8), b.detach().contiguous().view(torch.uint8))


def changed_parameters(model, tokenizer) -> set[str]:
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_steps(model, tokenizer)
    return {n for n, p in model.named_parameters() if not same_bits(before[n], p)}


@pytest.mark.parametrize("tuner", ["lora", "dora"])
def test_adapters_train_only_adapter_weights(tiny_model, tiny_tokenizer, tuner):
    linear = set(linear_module_names(tiny_model))
    model = attach_tuner(tiny_model, TunerArgs(tuner=tuner, lora_rank=4, lora_alpha=8))
    changed = changed_parameters(model, tiny_tokenizer)
    assert changed, "training changed nothing"
    allowed = ("lora_A", "lora_B", "lora_magnitude_vector") if tuner == "dora" else ("lora_A", "lora_B")
    assert all(any(key in name for key in allowed) for name in changed)
    if tuner == "dora":
        assert any("lora_magnitude_vector" in name for name in changed)
    # all-linear reaches every projection of every layer (and leaves the output head alone).
    adapted = {name.split(".lora_A")[0].rsplit(".", 1)[-1] for name in changed if "lora_A" in name}
    assert adapted == linear == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert not any("lm_head" in name for name in changed)


def test_target_modules_limit_the_adapters(tiny_model, tiny_tokenizer):
    model = attach_tuner(tiny_model, TunerArgs(target_modules=["q_proj", "v_proj"]))
    changed = changed_parameters(model, tiny_tokenizer)
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in changed} == {"q_proj", "v_proj"}


def test_unknown_target_module_lists_the_real_ones(tiny_model):
    from tunestack.errors import TunestackError

    with pytest.raises(TunestackError, match="qkv.*not found.*q_proj"):
        attach_tuner(tiny_model, TunerArgs(target_modules=["qkv"]))


def test_full_fine_tuning_trains_everything(tiny_model, tiny_tokenizer):
    model = attach_tuner(tiny_model, TunerArgs(tuner="full"))
    changed = changed_parameters(model, tiny_tokenizer)
    # Every parameter that takes part in the loss changes (the padding row of the embedding gets no gradient).
    assert changed == {n for n, _ in model.named_parameters()}


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes is not installed")
def test_qlora_trains_adapters_over_a_frozen_nf4_base(tiny_model_dir, tiny_tokenizer):
    from tunestack.model.load import load_model

    model = load_model(tiny_model_dir, torch.float32, quantize_4bit=True)
    assert type(model.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"
    torch.manual_seed(0)  # the adapter's initialisation, whatever tests ran before
    model = attach_tuner(model, TunerArgs(tuner="qlora", lora_rank=4))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss_first = train_steps(model, tiny_tokenizer, steps=1)
    loss_later = train_steps(model, tiny_tokenizer, steps=5)
    changed = {n for n, p in model.named_parameters() if not same_bits(before[n], p)}
    assert changed and all("lora_" in n for n in changed)
    assert loss_later < loss_first


def test_peft_input_casts_are_off_only_inside_half_precision_training(tiny_model_dir):
    from peft.tuners.tuners_utils import BaseTunerLayer
    from transformers import AutoModelForCausalLM

    from tunestack.model.tuners import training_input_casts

    def casts(model) -> set[bool]:
        return {m.cast_input_dtype_enabled for m in model.modules() if isinstance(m, BaseTunerLayer)}

    half = attach_tuner(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16), TunerArgs())
    assert casts(half) == {True}  # inference on the model, outside training, keeps peft's cast
    with training_input_casts(half):
        assert casts(half) == {False}
    assert casts(half) == {True}
    full = attach_tuner(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32), TunerArgs())
    with training_input_casts(full):
        assert casts(full) == {True}
