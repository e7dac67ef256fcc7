"""The counts the estimate is built from, against the real thing: parameters of transformers models, adapter sizes of
peft, and the activation bytes autograd keeps (read with saved-tensor hooks) for each tuner and attention kernel."""

from __future__ import annotations

import pytest
import torch

from tunestack.errors import TunestackError
from tunestack.plan.activations import activations
from tunestack.plan.rows import Rows
from tunestack.plan.setup import RunSetup
from tunestack.plan.shape import ModelShape

SHAPES = {
    "gqa_tied": dict(vocab_size=300, hidden_size=96, intermediate_size=160, num_hidden_layers=2,
                     num_attention_heads=6, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True),
    "mha_untied": dict(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                       num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=False),
}


def llama(config: dict, attn: str = "eager"):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**config, attn_implementation=attn))
    model.config.use_cache = False
    return model


@pytest.mark.parametrize("name", SHAPES)
def test_parameter_counts_match_transformers(name):
    model = llama(SHAPES[name])
    shape = ModelShape.from_config(model.config.to_dict())
    assert shape.params == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("targets,dora", [(["all-linear"], False), (["q_proj", "v_proj"], False),
                                          (["all-linear"], True)])
def test_adapter_sizes_match_peft(targets, dora):
    from peft import LoraConfig, get_peft_model

    model = llama(SHAPES["gqa_tied"])
    shape = ModelShape.from_config(model.config.to_dict())
    config = LoraConfig(r=4, target_modules="all-linear" if targets == ["all-linear"] else targets, use_dora=dora)
    peft_model = get_peft_model(model, config)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert shape.adapter_params(shape.targets(targets), 4, dora) == trainable


def test_shapes_that_are_not_modelled_are_refused_by_name():
    with pytest.raises(TunestackError, match="mixture of experts"):
        ModelShape.from_config({"model_type": "mixtral", "num_local_experts": 8, "hidden_size": 64})
    with pytest.raises(TunestackError, match="no num_hidden_layers"):
        ModelShape.from_config({"model_type": "odd", "hidden_size": 64, "num_attention_heads": 4, "vocab_size": 9})
    with pytest.raises(TunestackError, match="c_attn is not a linear layer"):
        ModelShape.from_config(SHAPES["gqa_tied"]).targets(["c_attn"])


def kept_bytes(model, batch: dict, keep: torch.Tensor) -> int:
    """Bytes of the distinct non-parameter storages autograd saves for one forward pass and the loss."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = model(**batch, logits_to_keep=keep).logits.float()
        torch.nn.functional.log_softmax(logits, dim=-1)
    return sum(seen.values())


def prepare(model, tuner: str, targets: list[str]):
    if tuner == "full":
        return model
    from peft import LoraConfig, get_peft_model

    target = "all-linear" if targets == ["all-linear"] else targets
    return get_peft_model(model, LoraConfig(r=8, target_modules=target, task_type="CAUSAL_LM"))


@pytest.mark.parametrize("name", SHAPES)
@pytest.mark.parametrize("tuner,targets", [("lora", ["all-linear"]), ("lora", ["q_proj", "v_proj"]),
                                           ("full", ["all-linear"])])
def test_kept_activations_match_autograd_exactly(name, tuner, targets):
    """Without checkpointing, what the formula counts is what autograd keeps, byte for byte (eager attention, fp32;
    logits at 10 of 24 positions; the log-softmax output is the one loss tensor counted in the logits term)."""
    model = prepare(llama(SHAPES[name]), tuner, targets).train()
    batch, length, keep = 3, 24, torch.arange(13, 23)
    ids = torch.randint(0, 300, (batch, length))
    measured = kept_bytes(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, keep)
    labels = [[-100] * 14 + [1] * 10] * batch
    rows = Rows.from_encoded([{"input_ids": list(i), "labels": l} for i, l in zip(ids.tolist(), labels)])
    profile = rows.micro_batch(batch)
    assert (profile.length, profile.kept) == (length, 10)
    setup = RunSetup(tuner=tuner, targets=targets, rank=8, batch=batch, attention="eager")
    acts = activations(ModelShape.from_config(model.config.to_dict()), setup, profile)
    counted = sum(k.bytes * k.count for k in acts.kept) + acts.head + batch * 10 * 300 * 4  # + log-softmax output
    assert counted == measured


@pytest.mark.parametrize("length,targets", [(24, ["all-linear"]), (24, ["gate_proj", "up_proj", "down_proj"]),
                                            (140, ["all-linear"]), (140, ["q_proj", "v_proj"]),
                                            (140, ["gate_proj", "up_proj", "down_proj"])])
@pytest.mark.parametrize("name", SHAPES)
def test_grouped_eager_attention_is_counted_exactly(name, length, targets):
    """tunestack's grouped eager kernel (what `auto` picks for unpacked rows of these families on a CPU) keeps each
    key/value head's keys and values once: counted byte for byte too, with and without grouped heads; rows of
    flash_from tokens or more (140 in fp32) go to sdpa's kernel, which keeps no scores but the mask and its output
    (the output projection's input, when that trains)."""
    from tunestack.model.attention import register_grouped

    model = prepare(llama(SHAPES[name], attn=register_grouped()), "lora", targets).train()
    batch, keep = 3, torch.arange(length - 11, length - 1)
    ids = torch.randint(0, 300, (batch, length))
    measured = kept_bytes(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, keep)
    labels = [[-100] * (length - 10) + [1] * 10] * batch
    profile = Rows.from_encoded([{"input_ids": list(i), "labels": l} for i, l in zip(ids.tolist(), labels)]) \
        .micro_batch(batch)
    setup = RunSetup(tuner="lora", targets=targets, rank=8, batch=batch, attention="grouped eager")
    acts = activations(ModelShape.from_config(model.config.to_dict()), setup, profile)
    counted = sum(k.bytes * k.count for k in acts.kept) + acts.head + batch * 10 * 300 * 4
    assert counted == measured


@pytest.mark.parametrize("lengths,row", [((9, 7, 6, 5, 4, 8), 16), ((44, 40, 10, 8, 6, 3), 48),
                                        ((150, 40, 130, 10), 200)])
def test_packed_attention_keeps_per_example_scores(lengths, row):
    """Packed rows under tunestack's per-example kernel keep scores over each example (padding is a block of its
    own), not over the whole row, in groups of similar lengths: counted exactly too (one group; three, with a
    32-token padding block; long examples, whose group sdpa's causal kernel attends without scores)."""
    from tunestack.data.packing import Collator, pack_sequences
    from tunestack.model.attention import register

    model = prepare(llama(SHAPES["gqa_tied"], attn=register()), "lora", ["all-linear"]).train()
    examples = [{"input_ids": list(range(5, 5 + n)), "labels": [-100] * 3 + list(range(n - 3))} for n in
                lengths]
    packed = pack_sequences(examples, row)
    profile = Rows.from_encoded(packed).micro_batch(len(packed))
    assert profile.grid == {16: ((9, 8),), 48: ((10, 5), (32, 1), (44, 2)),
                            200: ((10, 1), (40, 1), (70, 1), (150, 2))}[row]
    batch = Collator(0)(packed)
    keep = torch.arange(profile.length - 1 - profile.kept, profile.length - 1)
    measured = kept_bytes(model, {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"]}, keep)
    setup = RunSetup(tuner="lora", batch=len(packed), attention="packed")
    acts = activations(ModelShape.from_config(model.config.to_dict()), setup, profile)
    counted = sum(k.bytes * k.count for k in acts.kept) + acts.head + len(packed) * profile.kept * 300 * 4
    assert counted == measured


def test_rows_joined_without_padding_are_counted_exactly():
    """Padding-free micro-batches (the rows joined into one, attended per example by the packed kernel) keep what
    the estimate counts for them, byte for byte, and less than the same rows padded."""
    from tunestack.data.packing import Collator
    from tunestack.model.attention import register

    model = prepare(llama(SHAPES["gqa_tied"], attn=register()), "lora", ["all-linear"]).train()
    rows = [{"input_ids": list(range(5, 5 + n)), "labels": [-100] * 3 + list(range(n - 3))} for n in (30, 7, 12, 5)]
    profile = Rows.from_encoded(rows).micro_batch(len(rows), padding_free=True)
    assert (profile.batch, profile.length, profile.examples, profile.grid) == (1, 54, 4, ((12, 3), (30, 1)))
    batch = Collator(0, padding_free=True)(rows)
    assert batch["input_ids"].shape == (1, 54)
    keep = (batch["labels"][0, 1:] != -100).nonzero().squeeze(-1)
    assert len(keep) == profile.kept
    measured = kept_bytes(model, {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"]}, keep)
    setup = RunSetup(tuner="lora", batch=len(rows), attention="packed", padding_free=True)
    acts = activations(ModelShape.from_config(model.config.to_dict()), setup, profile)
    counted = sum(k.bytes * k.count for k in acts.kept) + acts.head + profile.kept * 300 * 4
    assert counted == measured
    padded = Rows.from_encoded(rows).micro_batch(len(rows))
    assert sum(k.bytes * k.count for k in activations(ModelShape.from_config(model.config.to_dict()),
                                                       RunSetup(tuner="lora", batch=4), padded).kept) > counted


def test_checkpointing_keeps_layer_inputs_only():
    shape = ModelShape.from_config(SHAPES["gqa_tied"])
    profile = Rows.assumed(256).micro_batch(8)
    full = activations(shape, RunSetup(batch=8), profile)
    ckpt = activations(shape, RunSetup(batch=8, checkpointing=True), profile)
    assert ckpt.inputs == shape.layers * 8 * 256 * shape.hidden * 4
    assert ckpt.checkpointed < full.full and ckpt.peak(True) == ckpt.checkpointed


def test_the_loss_logits_are_one_chunks_where_the_trainer_chunks_them():
    """The trainer applies a plain output head to the target tokens in chunks of LOSS_CHUNK_ROWS where their fp32
    logits pass LOSS_CHUNK_FROM_BYTES, in one process and not compiled (train/trainer.py): the estimate counts one
    chunk's logits, log-softmax and gradient there, and all of them elsewhere."""
    from transformers import Gemma2Config, LlamaConfig

    from tunestack.config import DataArgs, ModelArgs, ParallelArgs, TrainArgs, TunerArgs
    from tunestack.model.families import LOSS_CHUNK_ROWS
    from tunestack.plan.device import Device
    from tunestack.plan.setup import run_setup

    wide = ModelShape.from_config(LlamaConfig(**SHAPES["gqa_tied"] | {"vocab_size": 65536}).to_dict())
    long, short = Rows.assumed(2048).micro_batch(2), Rows.assumed(64).micro_batch(2)
    chunked = RunSetup(batch=2, loss_in_chunks=True)
    assert activations(wide, chunked, long).logits == LOSS_CHUNK_ROWS * 65536 * 3 * 4
    assert activations(wide, RunSetup(batch=2), long).logits == 2 * 2047 * 65536 * 3 * 4
    assert activations(wide, chunked, short).logits == 2 * 63 * 65536 * 3 * 4  # under the threshold: at once
    gemma = ModelShape.from_config(Gemma2Config(vocab_size=65536, hidden_size=64, intermediate_size=128,
                                                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                                head_dim=16).to_dict())
    assert activations(gemma, chunked, long).logits == 2 * 2047 * 65536 * 3 * 4  # soft-capped logits: not plain

    cpu = Device(kind="cpu", name="cpu", memory=2**34, half_precision=False)
    flags = dict(model=ModelArgs(), data=DataArgs(), tuner=TunerArgs(), device=cpu)
    assert run_setup(**flags, train=TrainArgs(), parallel=ParallelArgs()).loss_in_chunks
    assert not run_setup(**flags, train=TrainArgs(torch_compile=True), parallel=ParallelArgs()).loss_in_chunks
    assert not run_setup(**flags, train=TrainArgs(), parallel=ParallelArgs(nproc=2)).loss_in_chunks
