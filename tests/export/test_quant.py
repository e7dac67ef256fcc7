"""`tunestack export --quant` and `--eval_ppl`: bitsandbytes models plain transformers reloads, perplexity records."""

import importlib
import json
import math
import sys

import pytest
import torch

from helpers import cli, make_adapter
from tunestack.config import ExportArgs, ModelArgs
from tunestack.errors import MissingExtraError
from tunestack.export.merge import run_export


def _bitsandbytes_importable() -> bool:
    try:
        importlib.import_module("bitsandbytes")
        return True
    except Exception:
        return False


needs_bnb = pytest.mark.skipif(not _bitsandbytes_importable(), reason="bitsandbytes is not importable here")
TEXT = "The quick brown fox jumps over the lazy dog. What is 12 + 30? 12 + 30 = 42. " * 20
BOUNDS = {"bnb8": 0.02, "bnb4": 0.1, "bnb4-merged": 0.25}
"""Largest mean |logit difference| from the source, as a fraction of the source logits' std. Measured: 0.007 for
bnb8 and 0.07 for bnb4 on the random tiny model; 0.17 for bnb4 once a random LoRA is merged in (its wider weights
lose more to NF4: quantizing the fp32 export directly gives the same)."""


def export(model, out, *adapters, **flags):
    return run_export(ModelArgs(model=str(model)),
                      ExportArgs(adapter=[str(a) for a in adapters], output_dir=str(out), **flags))


def logits(model, tokenizer):
    ids = tokenizer(TEXT, return_tensors="pt")
    with torch.no_grad():
        return model(**ids).logits.float()


def record(out):
    return json.loads((out / "export.json").read_text())


@pytest.fixture(scope="module")
def adapter(tiny_model_dir, tmp_path_factory):
    return make_adapter(tiny_model_dir, tmp_path_factory.mktemp("quant-adapter") / "lora", seed=1)


@pytest.fixture(scope="module")
def fp32_export(tiny_model_dir, adapter, tmp_path_factory):
    return export(tiny_model_dir, tmp_path_factory.mktemp("quant-fp32") / "merged", adapter)


@needs_bnb
@pytest.mark.parametrize(("quant", "bits", "merged"), [("bnb8", 8, False), ("bnb4", 4, False), ("bnb4", 4, True)],
                         ids=["bnb8", "bnb4", "bnb4-merged"])
def test_quantized_export_reloads_with_plain_transformers(quant, bits, merged, tiny_model_dir, tiny_tokenizer,
                                                          adapter, fp32_export, tmp_path):
    import bitsandbytes as bnb
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    # without an adapter the model is quantized as it is
    out = export(tiny_model_dir, tmp_path / quant, *([adapter] if merged else []), quant=quant)
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "bitsandbytes" and config[f"load_in_{bits}bit"]
    assert not (out / "unquantized").exists()
    reloaded = AutoModelForCausalLM.from_pretrained(out).eval()
    layer = reloaded.model.layers[0].self_attn.q_proj
    assert isinstance(layer, bnb.nn.Linear4bit if bits == 4 else bnb.nn.Linear8bitLt)
    source = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    source = logits((PeftModel.from_pretrained(source, str(adapter)) if merged else source).eval(), tiny_tokenizer)
    error = (logits(reloaded, tiny_tokenizer) - source).abs().mean().item() / source.std().item()
    print(f"{quant}: mean |logit difference| = {error:.4f} x source std")
    assert error < BOUNDS[quant + ("-merged" if merged else "")]
    if merged:  # exactly what quantizing the fp32 merged export with transformers gives
        from tunestack.export.quantize import bnb_config

        direct = AutoModelForCausalLM.from_pretrained(fp32_export, quantization_config=bnb_config(quant),
                                                      dtype=torch.float32, device_map={"": "cpu"}).eval()
        assert (logits(reloaded, tiny_tokenizer) - logits(direct, tiny_tokenizer)).abs().max() < 1e-4
    written = record(out)
    assert written["method"] == ("merge" if merged else "convert") and written["settings"]["quant"] == quant
    assert written["quantization"]["bits"] == bits and written["quantization"]["method"] == "bitsandbytes"
    assert written["sizes"]["weights_bytes"] < record(fp32_export)["sizes"]["weights_bytes"]
    print(f"{quant}: {written['sizes']['weights_bytes']} bytes vs fp32 {record(fp32_export)['sizes']['weights_bytes']}")
    ppl = written["perplexity"]
    if merged:  # the same source as the fp32 export: base + adapter, before merging
        assert ppl["source"] == pytest.approx(record(fp32_export)["perplexity"]["source"], rel=1e-6)
    assert abs(ppl["change_pct"]) < (1 if bits == 8 else 10) and ppl["tokens"] > 512


def test_plain_merge_keeps_perplexity(fp32_export):
    ppl = record(fp32_export)["perplexity"]
    assert set(ppl) == {"text", "tokens", "source", "export", "change_pct"} and "heldout.txt" in ppl["text"]
    assert math.isfinite(ppl["source"]) and ppl["tokens"] > 512  # more than one window
    assert abs(ppl["export"] - ppl["source"]) / ppl["source"] < 1e-3


def test_ppl_text_and_no_eval(tiny_model_dir, adapter, tmp_path):
    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    result = cli("export", "--model", str(tiny_model_dir), "--adapter", str(adapter), "--ppl_text", str(text),
                 "--output_dir", str(tmp_path / "out"))
    ppl = record(tmp_path / "out")["perplexity"]
    assert ppl["text"] == str(text) and ppl["tokens"] == len(tokenizer_ids(tiny_model_dir, TEXT))
    assert "perplexity on" in result.stderr and result.stdout == f"{tmp_path / 'out'}\n"
    export(tiny_model_dir, tmp_path / "quiet", adapter, eval_ppl=False)
    assert "perplexity" not in record(tmp_path / "quiet")


def tokenizer_ids(model_dir, text):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize(("args", "expected"), [
    (["--quant", "bnb4", "--to", "gguf"], ["--quant bnb4 with --to gguf", "choose one"]),
    (["--quant", "bnb2"], ["--quant: expected one of int8, int4, bnb8, bnb4, hqq, gptq, awq, fp8"]),
    (["--ppl_text", "missing.txt"], ["--ppl_text missing.txt: no such file"]),
], ids=["with gguf", "unknown", "missing text"])
def test_errors_are_one_line(args, expected, tiny_model_dir, tmp_path):
    result = cli("export", "--model", str(tiny_model_dir), "--output_dir", str(tmp_path / "o"), *args, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert all(text in result.stderr for text in expected), result.stderr
    assert not (tmp_path / "o").exists()


def test_missing_bitsandbytes_names_the_extra(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    with pytest.raises(MissingExtraError, match=r"--quant bnb8 export needs bitsandbytes.*tunestack\[qlora\]"):
        export(tiny_model_dir, tmp_path / "o", quant="bnb8")
    assert not (tmp_path / "o").exists()
