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


def test_other_architectures_and_tokenizers_are_refused(tiny_model_dir, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    qwen = tmp_path / "qwen"
    Qwen2ForCausalLM(Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2)).save_pretrained(qwen)
    result = cli("export", "--model", str(qwen), "--output_dir", str(tmp_path / "o"), "--to", "gguf", check=False)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "'qwen2' architecture" in result.stderr and "only llama" in result.stderr
    assert not (tmp_path / "o").exists()

    folder = tmp_path / "wordlevel"
    shutil.copytree(tiny_model_dir, folder)
    core = Tokenizer(models.WordLevel({"<unk>": 0, "a": 1}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>").save_pretrained(folder)
    with pytest.raises(TunestackError, match="byte-level BPE tokenizers only") as error:
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
