"""`tunestack export --to gguf`: the file loads back in transformers with the source's logits, tokenizer, template."""

import json
import shutil

import numpy as np
import pytest
import torch

from helpers import build_tokenizer, cli
from tunestack.config import ExportArgs, ModelArgs
from tunestack.errors import TunestackError
from tunestack.export.gguf import _permute, write_gguf
from tunestack.export.merge import run_export

PROMPT = [{"role": "user", "content": "What is 12 + 30? 你好, hello  world!"}]
ERROR_BOUNDS = {"f32": ("max", 1e-4), "f16": ("max", 1e-2), "q8_0": ("mean", 0.05), "q4_0": ("mean", 0.25)}
"""Largest logit difference from the source: absolute for f32/f16, mean as a share of the logits' std for q8_0/q4_0."""


def load_gguf(path):
    """Model and tokenizer from a folder holding only the GGUF file, so nothing comes from the HF files beside it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    alone = path.parent.with_name(path.parent.name + "-gguf-only")
    alone.mkdir(exist_ok=True)
    shutil.copy(path, alone / path.name)
    model = AutoModelForCausalLM.from_pretrained(alone, gguf_file=path.name, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(alone, gguf_file=path.name)


def sequences(tokenizer):
    chat = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt",
                                         return_dict=True)["input_ids"]
    torch.manual_seed(0)
    return [chat, torch.randint(0, len(tokenizer), (2, 16))]


def logit_error(model, reference, tokenizer, measure: str) -> float:
    with torch.no_grad():
        pairs = [(model(ids).logits, reference(ids).logits) for ids in sequences(tokenizer)]
    if measure == "max":
        return max((a - b).abs().max().item() for a, b in pairs)
    return max(((a - b).abs().mean() / b.std()).item() for a, b in pairs)


def source(folder):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


@pytest.mark.parametrize("gguf_type", ["f32", "f16", "q8_0", "q4_0"])
def test_round_trip_keeps_logits_tokenizer_and_template(gguf_type, tiny_model_dir, tiny_tokenizer, tmp_path):
    out = run_export(ModelArgs(model=str(tiny_model_dir)),
                     ExportArgs(output_dir=str(tmp_path / "out"), to="gguf", gguf_type=gguf_type))
    record = json.loads((out / "export.json").read_text())
    path = out / f"model-{gguf_type}.gguf"
    assert record["method"] == "convert" and record["gguf"] == {
        "file": path.name, "bytes": path.stat().st_size, "type": gguf_type, "f16_fallback": []}
    model, tokenizer = load_gguf(path)
    measure, bound = ERROR_BOUNDS[gguf_type]
    error = logit_error(model, source(tiny_model_dir), tiny_tokenizer, measure)
    print(f"{gguf_type}: {measure} logit error {error:.2e}")
    assert error < bound
    text = tiny_tokenizer.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True)
    assert tokenizer(text)["input_ids"] == tiny_tokenizer(text)["input_ids"]
    assert tokenizer.chat_template == tiny_tokenizer.chat_template
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == ("<|im_start|>", "<|im_end|>",
                                                                               "<|endoftext|>")
    assert not list(out.glob(".*.tmp-*")) and not list(tmp_path.glob("out.*"))


def test_layout_follows_llama_cpp(tiny_model_dir, tmp_path):
    """Q and K rows interleaved per head, norms in f32, an untied head written as output.weight."""
    from gguf import GGMLQuantizationType, GGUFReader

    write_gguf(tiny_model_dir, tmp_path / "m.gguf", "f16")
    tensors = {t.name: t for t in GGUFReader(tmp_path / "m.gguf").tensors}
    weights = source(tiny_model_dir).state_dict()
    q = weights["model.layers.0.self_attn.q_proj.weight"].numpy()
    k = weights["model.layers.0.self_attn.k_proj.weight"].numpy()
    stored_q, stored_k = (np.asarray(tensors[f"blk.0.attn_{n}.weight"].data, np.float32) for n in "qk")
    assert np.allclose(stored_q, _permute(q, 4), atol=1e-3) and not np.allclose(stored_q, q, atol=1e-3)
    assert np.allclose(stored_k, _permute(k, 2), atol=1e-3) and not np.allclose(stored_k, k, atol=1e-3)
    assert tensors["blk.0.attn_norm.weight"].tensor_type == GGMLQuantizationType.F32
    assert tensors["output.weight"].tensor_type == GGMLQuantizationType.F16


def test_tied_embeddings_and_short_rows(tmp_path):
    """A tied head is left to token_embd.weight; q8_0 rows of 48 values fall back to f16, and say so."""
    from gguf import GGUFReader
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True,
                         max_position_embeddings=128)
    folder = tmp_path / "tied"
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    record = write_gguf(folder, folder / "m.gguf", "q8_0")
    names = {t.name for t in GGUFReader(folder / "m.gguf").tensors}
    assert "output.weight" not in names and "token_embd.weight" in names
    assert "blk.0.attn_q.weight" in record["f16_fallback"] and "blk.0.ffn_down.weight" not in record["f16_fallback"]
    model, _ = load_gguf(folder / "m.gguf")
    assert model.config.tie_word_embeddings
    assert logit_error(model, source(folder), tokenizer, "mean") < 0.05


def test_cli_merges_an_adapter_and_writes_q8_0(tiny_model_dir, tiny_tokenizer, tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model

    torch.manual_seed(1)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
    get_peft_model(source(tiny_model_dir), lora).save_pretrained(tmp_path / "adapter")
    out = tmp_path / "out"
    result = cli("export", "--model", str(tiny_model_dir), "--adapter", str(tmp_path / "adapter"), "--output_dir",
                 str(out), "--to", "gguf", "--gguf_type", "q8_0")
    assert result.stdout == f"{out}\n" and "model-q8_0.gguf" in result.stderr
    record = json.loads((out / "export.json").read_text())
    assert record["method"] == "merge" and record["gguf"]["type"] == "q8_0"
    model, _ = load_gguf(out / "model-q8_0.gguf")
    merged = PeftModel.from_pretrained(source(tiny_model_dir), str(tmp_path / "adapter")).merge_and_unload()
    assert logit_error(model, merged, tiny_tokenizer, "mean") < 0.05


def _tiny_gguf(config, tmp_path, randomize=()):
    """A tiny random model of `config` (with the parameters named in `randomize` drawn from a normal, as trained
    biases are), saved with the test tokenizer; its GGUF (f32) tensors by name, the reader, and the model."""
    from gguf import GGUFReader
    from transformers import AutoModelForCausalLM

    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    config.vocab_size = len(tokenizer)
    model = AutoModelForCausalLM.from_config(config).eval()
    for name, parameter in model.named_parameters():
        if name.endswith(randomize):
            torch.nn.init.normal_(parameter)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    write_gguf(tmp_path / "model", tmp_path / "m.gguf", "f32")
    reader = GGUFReader(tmp_path / "m.gguf")
    return {t.name: torch.from_numpy(np.array(t.data)) for t in reader.tensors}, reader, model


def test_gpt_oss_experts_compute_as_llama_cpp_reads_them(tmp_path):
    """An expert computed from the GGUF tensors as llama.cpp does (x @ W.T + b per projection, clamped SwiGLU)
    equals transformers' fused, interleaved gate-and-up expert; sinks, router bias and YaRN keys are there."""
    from transformers import GptOssConfig

    config = GptOssConfig(hidden_size=64, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, head_dim=16, num_local_experts=4, num_experts_per_tok=2,
                          sliding_window=8, max_position_embeddings=256)
    tensors, reader, model = _tiny_gguf(config, tmp_path, randomize=("proj_bias",))
    experts = model.model.layers[1].mlp.experts
    x = torch.randn(3, 64)
    with torch.no_grad():
        expected = experts._apply_gate(x @ experts.gate_up_proj[2] + experts.gate_up_proj_bias[2])
        expected = expected @ experts.down_proj[2] + experts.down_proj_bias[2]

    def linear(name):
        return x @ tensors[f"blk.1.ffn_{name}_exps.weight"][2].T + tensors[f"blk.1.ffn_{name}_exps.bias"][2]

    gate, up = linear("gate").clamp(max=7.0), linear("up").clamp(-7.0, 7.0)
    hidden = gate * torch.sigmoid(1.702 * gate) * (up + 1)
    actual = hidden @ tensors["blk.1.ffn_down_exps.weight"][2].T + tensors["blk.1.ffn_down_exps.bias"][2]
    assert torch.allclose(actual, expected, atol=1e-5)
    assert {"blk.0.attn_sinks.weight", "blk.0.ffn_gate_inp.bias", "blk.0.attn_q.bias"} <= set(tensors)
    keys = {k: reader.fields[k].contents() for k in reader.fields if k.startswith("gpt-oss.")}
    assert keys["gpt-oss.rope.scaling.type"] == "yarn" and keys["gpt-oss.rope.scaling.factor"] == 32.0
    assert keys["gpt-oss.rope.scaling.original_context_length"] == 4096
    assert keys["gpt-oss.attention.sliding_window"] == 8


def test_deepseek_latent_attention_splits_as_llama_cpp_reads_it(tmp_path):
    """llama.cpp scores a query against the latent with k_b and expands values with v_b per head: both equal
    transformers' kv_b_proj; DeepSeek-V3's router is written as sigmoid with its correction bias."""
    from transformers import DeepseekV3Config

    config = DeepseekV3Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                              num_key_value_heads=4, kv_lora_rank=16, q_lora_rank=32, qk_rope_head_dim=8,
                              qk_nope_head_dim=8, v_head_dim=16, n_routed_experts=4, moe_intermediate_size=32,
                              first_k_dense_replace=1, n_group=1, topk_group=1, num_experts_per_tok=2,
                              max_position_embeddings=256)
    tensors, reader, model = _tiny_gguf(config, tmp_path)
    kv_b = model.model.layers[0].self_attn.kv_b_proj.weight.detach().reshape(4, 8 + 16, 16)
    latent, query = torch.randn(16), torch.randn(4, 8)
    k_b, v_b = tensors["blk.0.attn_k_b.weight"], tensors["blk.0.attn_v_b.weight"]
    for head in range(4):
        assert torch.allclose((k_b[head] @ query[head]) @ latent, query[head] @ (kv_b[head, :8] @ latent), atol=1e-5)
        assert torch.allclose(v_b[head] @ latent, kv_b[head, 8:] @ latent, atol=1e-5)
    assert "blk.1.exp_probs_b.bias" in tensors and "blk.0.attn_kv_b.weight" not in tensors
    keys = {k: reader.fields[k].contents() for k in reader.fields if k.startswith("deepseek2.")}
    assert keys["deepseek2.attention.head_count_kv"] == 1 and keys["deepseek2.attention.key_length"] == 16 + 8
    assert keys["deepseek2.expert_gating_func"] == 2 and keys["deepseek2.leading_dense_block_count"] == 1


def test_other_architectures_and_tokenizers_are_refused(tiny_model_dir, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    gpt2 = tmp_path / "gpt2"
    config = GPT2Config(vocab_size=64, n_embd=32, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=0)
    GPT2LMHeadModel(config).save_pretrained(gpt2)
    result = cli("export", "--model", str(gpt2), "--output_dir", str(tmp_path / "o"), "--to", "gguf", check=False)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "'gpt2' architecture" in result.stderr and "GGUF export supports" in result.stderr
    assert not (tmp_path / "o").exists()

    folder = tmp_path / "wordlevel"
    shutil.copytree(tiny_model_dir, folder)
    core = Tokenizer(models.WordLevel({"<unk>": 0, "a": 1}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>").save_pretrained(folder)
    with pytest.raises(TunestackError, match="GGUF export supports BPE tokenizers.*WordLevel") as error:
        write_gguf(folder, folder / "m.gguf", "f16")
    assert "\n" not in str(error.value) and not list(folder.glob("*.gguf")) and not list(folder.glob(".*tmp*"))


@pytest.mark.slow
def test_embedded_model_round_trip_generates_the_same(tmp_path):
    from transformers import AutoTokenizer

    from tunestack.hub import resolve_model

    folder = resolve_model("smollm2-135m-instruct").path
    record = write_gguf(folder, tmp_path / "smollm2.gguf", "q8_0")
    assert record["f16_fallback"] == []
    model, tokenizer = load_gguf(tmp_path / "smollm2.gguf")
    reference, reference_tokenizer = source(folder), AutoTokenizer.from_pretrained(folder)
    prompt = [{"role": "user", "content": "What is the capital of France?"}]
    text = reference_tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    ids = reference_tokenizer(text, return_tensors="pt")["input_ids"]
    assert tokenizer(text)["input_ids"] == ids[0].tolist() and tokenizer.chat_template
    with torch.no_grad():
        logits = [m(ids).logits for m in (model, reference)]
        generated = [m.generate(ids, max_new_tokens=10, do_sample=False)[0, ids.shape[1]:].tolist()
                     for m in (model, reference)]
    error = ((logits[0] - logits[1]).abs().mean() / logits[1].std()).item()
    print(f"smollm2 q8_0: mean logit error {error:.2e} of the logits' std")
    assert error < 0.05 and generated[0] == generated[1]
