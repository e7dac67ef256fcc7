"""The fused LoRA SwiGLU MLP: the same loss and gradients as peft's module-by-module computation, half of the
MLP's saved activations, and the plain computation wherever the adapters are not plain LoRA ones. The fused RMSNorm:
the modeling code's results to rounding, with a trainable weight too."""

import inspect

import pytest
import torch

from tunestack.model.fused import (FUSED_MLP_FAMILIES, RMS_NORM_CLASSES, FusedLoraMLP, FusedRMSNorm,
                                   fuse_lora_linears, fuse_lora_mlps, fuse_rms_norms, fused_lora_linears)


def lora_model(tiny_model_dir, dtype=torch.float32, **lora):
    """The tiny Llama with LoRA on every linear layer, B initialised randomly so that every gradient is non-zero."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=dtype)
    model = get_peft_model(model, LoraConfig(**{"r": 4, "lora_alpha": 8, "lora_dropout": 0.0,
                                                "target_modules": "all-linear", **lora}))
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.05)
    return model


def loss_and_grads(model, ids, autocast: bool = False, saved: list | None = None):
    def pack(tensor):
        if saved is not None:
            saved.append(tensor)
        return tensor

    model.zero_grad()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), \
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def batch(model, rows=3, length=12):
    torch.manual_seed(1)
    return torch.randint(0, model.config.vocab_size, (rows, length))


def test_fused_gives_the_same_loss_and_gradients_and_keeps_half_the_mlp_activations(tiny_model_dir):
    """The MLPs fused, and the attention's four LoRA projections each through LoraLinearFunction."""
    plain, fused = lora_model(tiny_model_dir), lora_model(tiny_model_dir)
    layers = plain.config.num_hidden_layers
    assert fuse_lora_mlps(fused) == layers
    assert all(isinstance(layer.mlp, FusedLoraMLP) for layer in fused.base_model.model.model.layers)
    assert fuse_lora_linears(fused) == 4 * layers == fused_lora_linears(fused)  # q, k, v and o
    ids = batch(plain)
    wide = plain.config.intermediate_size
    saved_plain, saved_fused = [], []
    loss, grads = loss_and_grads(plain, ids, saved=saved_plain)
    fused_loss, fused_grads = loss_and_grads(fused, ids, saved=saved_fused)
    torch.testing.assert_close(fused_loss, loss, rtol=1e-6, atol=1e-6)
    assert fused_grads.keys() == grads.keys() and len(grads) == 7 * 2 * layers  # A and B of every linear layer
    for name, grad in grads.items():
        torch.testing.assert_close(fused_grads[name], grad, rtol=1e-5, atol=1e-7, msg=name)

    weights = {p.untyped_storage().data_ptr() for model in (plain, fused) for p in model.parameters()}

    def intermediate(saved):  # distinct activations of the MLP's width kept for the backward pass
        return len({t.untyped_storage().data_ptr() for t in saved if t.dim() >= 2 and t.shape[-1] == wide} - weights)

    assert intermediate(saved_plain) == 4 * layers  # gate, its SiLU, up, their product
    assert intermediate(saved_fused) == 2 * layers  # gate and up


def test_fused_under_bf16_autocast_is_as_close_to_fp32_as_the_plain_path(tiny_model_dir):
    """A bf16 base under autocast (how a bf16 LoRA run trains): the adapters' gradients come back in fp32, and both
    paths differ from an fp32 reference by bf16's rounding alone."""
    reference = lora_model(tiny_model_dir)
    ids = batch(reference)
    _, want = loss_and_grads(reference, ids)
    errors = {}
    for fuse in (False, True):
        model = lora_model(tiny_model_dir, dtype=torch.bfloat16)
        if fuse:
            assert fuse_lora_mlps(model) == model.config.num_hidden_layers
            assert fuse_lora_linears(model) == 4 * model.config.num_hidden_layers
            assert fuse_rms_norms(model) == 2 * model.config.num_hidden_layers + 1
        _, grads = loss_and_grads(model, ids, autocast=True)
        assert all(grad.dtype == torch.float32 for grad in grads.values())
        errors[fuse] = max(((grads[n] - want[n]).norm() / want[n].norm()).item() for n in want)
    assert errors[True] < 0.1 and errors[True] < 1.5 * errors[False] + 0.01, errors


def test_disabled_merged_or_other_adapters_run_module_by_module(tiny_model_dir):
    model = lora_model(tiny_model_dir)
    fuse_lora_mlps(model)
    fuse_lora_linears(model)
    ids = batch(model)
    with torch.no_grad():
        adapted = model(input_ids=ids).logits
        with model.disable_adapter():  # as DPO computes its reference without a second model
            base = model(input_ids=ids).logits
    assert not torch.allclose(adapted, base)
    with model.disable_adapter():
        torch.testing.assert_close(model(input_ids=ids).logits, base)  # with gradients on too: the base alone
    merged = model.merge_and_unload()
    torch.testing.assert_close(merged(input_ids=ids).logits, adapted, rtol=1e-4, atol=1e-5)
    # Not plain LoRA: dropout, DoRA, or projections left unadapted; nothing is replaced.
    assert fuse_lora_mlps(lora_model(tiny_model_dir, lora_dropout=0.1)) == 0
    assert fuse_lora_mlps(lora_model(tiny_model_dir, use_dora=True)) == 0
    assert fuse_lora_mlps(lora_model(tiny_model_dir, target_modules=["q_proj", "gate_proj", "up_proj"])) == 0
    assert fuse_lora_linears(lora_model(tiny_model_dir, lora_dropout=0.1)) == 0
    assert fuse_lora_linears(lora_model(tiny_model_dir, use_dora=True)) == 0


def test_the_saved_adapter_is_the_same(tiny_model_dir, tmp_path):
    from peft import get_peft_model_state_dict

    plain, fused = lora_model(tiny_model_dir), lora_model(tiny_model_dir)
    fuse_lora_mlps(fused)
    fuse_lora_linears(fused)
    want, got = get_peft_model_state_dict(plain), get_peft_model_state_dict(fused)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


def mlp_source(family: str) -> tuple[str, str]:
    """The source of the family's MLP forward (the class its decoder layer builds as `self.mlp`), and its default
    activation."""
    import re
    import sys

    import transformers

    config = transformers.AutoConfig.for_model(family)
    module = sys.modules[transformers.MODEL_FOR_CAUSAL_LM_MAPPING[type(config)].__module__]
    layer = next(cls for name, cls in vars(module).items() if name.endswith("DecoderLayer"))
    mlp = getattr(module, re.search(r"self\.mlp = (\w+)\(", inspect.getsource(layer.__init__)).group(1))
    return inspect.getsource(mlp.forward), config.hidden_act


@pytest.mark.parametrize("family", FUSED_MLP_FAMILIES)
def test_the_families_fused_compute_a_gated_silu_mlp(family):
    """FusedLoraMLP stands in for `down_proj(act_fn(gate_proj(x)) * up_proj(x))` with SiLU: a family whose MLP
    computes anything else must not be on the list."""
    source, act = mlp_source(family)
    assert "self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))" in source and act == "silu"
    assert "self.gate_proj(x)" not in mlp_source("phi3")[0]  # the check sees a fused gate_up_proj


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-6), (torch.bfloat16, 8e-3)])
@pytest.mark.parametrize("train_weight", [False, True])
def test_the_fused_rmsnorm_gives_the_modeling_codes_output_and_gradients(dtype, tolerance, train_weight):
    """Against Llama's RMSNorm: output, input gradient and (full fine-tuning) weight gradient, equal to fp32's
    rounding in fp32 and to about one bf16 step in bf16 (the mean square is summed in another order)."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    torch.manual_seed(0)
    norm = LlamaRMSNorm(48, eps=1e-5).to(dtype)
    torch.nn.init.normal_(norm.weight, 1.0, 0.2)
    norm.weight.requires_grad_(train_weight)
    x = (torch.randn(3, 7, 48) * 4).to(dtype).requires_grad_(True)
    grad = torch.randn(3, 7, 48).to(dtype)
    results = []
    for module in (norm, FusedRMSNorm(norm)):
        x.grad = norm.weight.grad = None
        out = module(x)
        out.backward(grad)
        results.append([out.detach(), x.grad] + ([norm.weight.grad] if train_weight else []))
    for want, got in zip(*results):
        assert got.dtype == want.dtype == dtype
        scale = want.float().abs().max()
        assert (got.float() - want.float()).abs().max() <= tolerance * scale


def test_fused_rmsnorms_keep_the_parameter_names_and_the_loss(tiny_model_dir):
    plain, fused = lora_model(tiny_model_dir), lora_model(tiny_model_dir)
    layers = plain.config.num_hidden_layers
    assert fuse_rms_norms(fused) == 2 * layers + 1  # two in each decoder layer and the final one
    assert fuse_rms_norms(fused) == 0
    assert [name for name, _ in fused.named_parameters()] == [name for name, _ in plain.named_parameters()]
    ids = batch(plain)
    loss, grads = loss_and_grads(plain, ids)
    fused_loss, fused_grads = loss_and_grads(fused, ids)
    torch.testing.assert_close(fused_loss, loss, rtol=1e-6, atol=1e-6)
    for name, grad in grads.items():
        torch.testing.assert_close(fused_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("family", FUSED_MLP_FAMILIES)
def test_the_families_rmsnorms_compute_what_the_fused_one_does(family):
    """FusedRMSNorm stands in for the classes in RMS_NORM_CLASSES: each computes the norm in fp32 and multiplies
    the weight by the result cast back, with no offset on the weight (Gemma's `1 + weight` must not be listed)."""
    import sys

    import transformers

    config = transformers.AutoConfig.for_model(family)
    module = sys.modules[transformers.MODEL_FOR_CAUSAL_LM_MAPPING[type(config)].__module__]
    norm = next(cls for name, cls in vars(module).items() if name.endswith("RMSNorm"))
    assert norm.__name__ in RMS_NORM_CLASSES
    body = inspect.getsource(norm.forward)
    for line in ("hidden_states = hidden_states.to(torch.float32)",
                 "variance = hidden_states.pow(2).mean(-1, keepdim=True)",
                 "hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)",
                 "return self.weight * hidden_states.to(input_dtype)"):
        assert line in body, (norm.__name__, line)


def test_a_run_trains_the_same_with_the_fused_modules_or_without(tiny_model_dir, tmp_path):
    """Through the command line, in fp32: the same losses step by step, and run.json says how the MLPs, the other
    LoRA layers and the RMSNorms ran."""
    import json

    from helpers import CHAT_ROWS, cli, write_jsonl

    data = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    losses, recorded = {}, {}
    for fused in ("true", "false"):
        run = tmp_path / f"run-{fused}"
        cli("sft", "--model", str(tiny_model_dir), "--dataset", str(data), "--output_dir", str(run), "--dtype", "fp32",
            "--max_steps", "4", "--per_device_train_batch_size", "4", "--logging_steps", "1", "--learning_rate",
            "1e-2", "--fused_mlp", fused, "--fused_lora", fused, "--fused_rmsnorm", fused)
        metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        losses[fused] = [m["loss"] for m in metrics if "loss" in m]
        kernels = json.loads((run / "run.json").read_text())["kernels"]
        recorded[fused] = kernels["mlp"], kernels["lora"], kernels["rmsnorm"]
    assert len(losses["true"]) == 4 and losses["true"][-1] < losses["true"][0]
    assert losses["true"] == pytest.approx(losses["false"], rel=1e-4)
    assert recorded["true"][0].startswith("fused LoRA SwiGLU in 2 layers")
    assert recorded["true"][1:] == ("adapter terms accumulated into the matrix products in 8 other layers",
                                    "fused RMSNorm in 5 places")
    assert recorded["false"] == ("module by module", "module by module", "as the model defines it")
