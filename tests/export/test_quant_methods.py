"""`tunestack export --quant int8|int4|hqq|gptq|awq|fp8`, the model card and `--push_to_hub`'s checks."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from helpers import cli, cli_env, make_adapter
from tunestack.config import ExportArgs, ModelArgs
from tunestack.errors import MissingExtraError
from tunestack.export.merge import run_export

TEXT = "The quick brown fox jumps over the lazy dog. What is 12 + 30? 12 + 30 = 42. " * 20
has = {name: importlib.util.find_spec(name) is not None for name in ("torchao", "optimum.quanto", "gptqmodel")}
fp8_capable = torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 9)


def export(model, out, *adapters, **flags):
    return run_export(ModelArgs(model=str(model)),
                      ExportArgs(adapter=[str(a) for a in adapters], output_dir=str(out), **flags))


def logits(model, tokenizer):
    with torch.no_grad():
        return model(**tokenizer(TEXT, return_tensors="pt")).logits.float()


def relative_error(model, source, tokenizer):
    reference = logits(source, tokenizer)
    return (logits(model, tokenizer) - reference).abs().mean().item() / reference.std().item()


def record(out):
    return json.loads((out / "export.json").read_text())


@pytest.fixture(scope="module")
def source(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


@pytest.mark.skipif(not has["torchao"], reason="torchao is not installed (pip install 'tunestack[torchao]')")
def test_int8_is_torchao_and_reloads_with_plain_transformers(tiny_model_dir, tiny_tokenizer, source, tmp_path):
    from torchao.quantization import Int8Tensor
    from transformers import AutoModelForCausalLM

    out = export(tiny_model_dir, tmp_path / "int8", quant="int8")
    assert json.loads((out / "config.json").read_text())["quantization_config"]["quant_method"] == "torchao"
    reloaded = AutoModelForCausalLM.from_pretrained(out).eval()
    for weight in (reloaded.model.layers[0].mlp.down_proj.weight, reloaded.model.embed_tokens.weight,
                   reloaded.lm_head.weight):
        assert isinstance(weight, Int8Tensor)
    assert reloaded.model.layers[0].input_layernorm.weight.dtype == torch.float32
    assert relative_error(reloaded, source, tiny_tokenizer) < 0.02  # measured 0.004
    written = record(out)
    assert written["quantization"]["method"] == "torchao" and written["quantization"]["bits"] == 8
    assert written["quantization"]["unquantized_linear"] == [] and written["quantization"]["embeddings"]
    assert abs(written["perplexity"]["change_pct"]) < 1


@pytest.mark.skipif(not has["torchao"], reason="torchao is not installed (pip install 'tunestack[torchao]')")
def test_int8_writes_a_tied_embedding_once_and_transformers_ties_it_back(tiny_tokenizer, tmp_path):
    import subprocess

    from safetensors import safe_open

    from helpers import build_model

    tied = build_model(tiny_tokenizer, seed=1)
    tied.config.tie_word_embeddings = True
    tied.tie_weights()
    tied.save_pretrained(tmp_path / "tied")
    tiny_tokenizer.save_pretrained(tmp_path / "tied")
    out = export(tmp_path / "tied", tmp_path / "int8", quant="int8")
    with safe_open(out / "model.safetensors", "pt") as weights:
        names = list(weights.keys())
    assert any(n.startswith("model.embed_tokens._weight_qdata") for n in names)
    assert not [n for n in names if n.startswith("lm_head")]
    # The bf16 embedding alone is 2 bytes a parameter; the int8 file holds every matrix once at about 1 byte each.
    parameters = sum(p.numel() for p in tied.parameters())
    assert record(out)["sizes"]["weights_bytes"] < 1.2 * parameters
    script = (f"import sys, torch, transformers\n"
              f"m = transformers.AutoModelForCausalLM.from_pretrained({str(out)!r})\n"
              f"assert m.lm_head.weight is m.model.embed_tokens.weight, 'untied'\n"
              f"assert type(m.lm_head.weight).__name__ == 'Int8Tensor', type(m.lm_head.weight)\n"
              f"print(m(torch.tensor([[1, 2, 3]])).logits[0, -1].tolist())")
    reloaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                              env=cli_env())
    with torch.no_grad():
        expected = tied.eval()(torch.tensor([[1, 2, 3]])).logits[0, -1]
    got = torch.tensor(json.loads(reloaded.stdout.strip().splitlines()[-1]))
    assert (got - expected).abs().max() < 0.05 * expected.abs().max()  # measured 0.0045
    # tunestack's loader looks up only the rows it needs (torchao dequantizes the whole matrix), to the same logits
    from tunestack.model.load import Int8Rows, load_exported

    fast = load_exported(out)
    rows = fast.get_input_embeddings()
    assert isinstance(rows, Int8Rows) and fast.lm_head.weight is rows.weight
    with torch.no_grad():
        assert torch.equal(fast(torch.tensor([[1, 2, 3]])).logits[0, -1], got.to(fast.dtype))


@pytest.mark.skipif(not has["optimum.quanto"], reason="optimum-quanto is not installed (pip install 'tunestack[quanto]')")
@pytest.mark.skipif(torch.cuda.is_available(), reason="on CUDA int4 goes through torchao")
def test_int4_on_cpu_says_it_used_optimum_quanto_and_infer_loads_it(tiny_model_dir, tiny_tokenizer, source,
                                                                     tmp_path):
    from optimum.quanto import QuantizedModelForCausalLM

    result = cli("export", "--model", str(tiny_model_dir), "--quant", "int4", "--output_dir", str(tmp_path / "q4"))
    assert "quantizing with optimum-quanto instead" in result.stderr
    out = tmp_path / "q4"
    written = record(out)
    assert written["quantization"]["backend"] == "optimum-quanto" and written["quantization"]["bits"] == 4
    assert json.loads((out / "config.json").read_text())["quantization_config"]["quant_method"] == "quanto"
    reloaded = QuantizedModelForCausalLM.from_pretrained(str(out))
    assert relative_error(reloaded, source, tiny_tokenizer) < 0.15  # measured 0.05 on the random tiny model
    assert "QuantizedModelForCausalLM" in (out / "README.md").read_text()
    answer = cli("infer", "--model", str(out), "--prompt", "hi", "--max_new_tokens", "4")
    assert answer.returncode == 0 and "model: local directory" in answer.stderr


@pytest.mark.skipif(not has["optimum.quanto"], reason="optimum-quanto is not installed (pip install 'tunestack[quanto]')")
def test_hqq_fits_scale_and_zero_with_optimum_quantos_hqq_optimizer_and_infer_loads_it(tiny_model_dir, tiny_tokenizer,
                                                                                        source, tmp_path):
    from optimum.quanto import QuantizedModelForCausalLM

    out = tmp_path / "hqq"
    result = cli("export", "--model", str(tiny_model_dir), "--quant", "hqq", "--output_dir", str(out))
    assert "hqq: transformers' HQQ quantizer" in result.stderr
    assert "quantizing with optimum-quanto's HQQ optimizer" in result.stderr
    written = record(out)["quantization"]
    assert (written["method"], written["backend"], written["bits"]) == ("hqq", "optimum-quanto", 4)
    assert written["group_size"] == [64, 128]  # the tiny model's layers are narrower than a group: one group a row
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "quanto" and config["optimizer"] == "hqq"
    reloaded = QuantizedModelForCausalLM.from_pretrained(str(out))
    assert relative_error(reloaded, source, tiny_tokenizer) < 0.06  # measured 0.054; int4's min-max fit gives 0.069
    assert abs(record(out)["perplexity"]["change_pct"]) < 5  # measured -0.32%
    answer = cli("infer", "--model", str(out), "--prompt", "hi", "--max_new_tokens", "4")
    assert answer.returncode == 0 and "model: local directory" in answer.stderr


@pytest.mark.skipif(not has["gptqmodel"], reason="gptqmodel is not installed (pip install 'tunestack[gptq]')")
def test_gptq_calibrates_on_the_runs_data_and_reloads(tiny_model_dir, tiny_tokenizer, source, tmp_path):
    adapter = make_adapter(tiny_model_dir, tmp_path / "lora", seed=3)
    result = cli("export", "--model", str(tiny_model_dir), "--adapter", str(adapter), "--quant", "gptq",
                 "--calib_dataset", "arith", "--calib_samples", "16", "--output_dir", str(tmp_path / "gptq"))
    assert result.stdout == f"{tmp_path / 'gptq'}\n" and "calibration data: arith" in result.stderr
    out = tmp_path / "gptq"
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "gptq" and config["bits"] == 4
    written = record(out)["quantization"]
    assert written["calibration_examples"] == 16 and written["group_size"] == 64
    assert not (Path.cwd() / "logs").exists() and not (out / "logs").exists()  # gptqmodel's own log folder
    assert abs(record(out)["perplexity"]["change_pct"]) < 10


@pytest.mark.skipif(not has["torchao"], reason="torchao is not installed (pip install 'tunestack[torchao]')")
@pytest.mark.skipif(fp8_capable, reason="on CUDA with compute capability 8.9+ fp8 goes through transformers")
def test_fp8_without_an_fp8_gpu_is_torchao_weight_only_and_infer_loads_it(tiny_model_dir, tiny_tokenizer, source,
                                                                         tmp_path):
    from safetensors import safe_open
    from torchao.quantization import Float8Tensor
    from transformers import AutoModelForCausalLM

    result = cli("export", "--model", str(tiny_model_dir), "--quant", "fp8", "--output_dir", str(tmp_path / "fp8"))
    assert "with torchao instead" in result.stderr
    out = tmp_path / "fp8"
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "torchao" and config["quant_type"]["default"]["_type"] == "Float8WeightOnlyConfig"
    with safe_open(out / "model.safetensors", "pt") as weights:
        assert weights.get_slice("model.layers.0.mlp.down_proj._weight_qdata").get_dtype() == "F8_E4M3"
    reloaded = AutoModelForCausalLM.from_pretrained(out).eval()
    assert isinstance(reloaded.model.layers[0].mlp.down_proj.weight, Float8Tensor)
    assert relative_error(reloaded, source, tiny_tokenizer) < 0.05  # measured 0.021
    written = record(out)["quantization"]
    assert written["backend"].startswith("torchao ") and written["bits"] == 8
    assert written["unquantized_linear"] == ["lm_head"]
    assert abs(record(out)["perplexity"]["change_pct"]) < 1
    answer = cli("infer", "--model", str(out), "--prompt", "hi", "--max_new_tokens", "4")
    assert answer.returncode == 0 and "model: local directory" in answer.stderr


@pytest.fixture(scope="module")
def awq_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with 4 key/value heads, so that every output width is a multiple of 64 as AWQ needs."""
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    path = tmp_path_factory.mktemp("tiny-llama-kv4")
    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.num_key_value_heads = 4
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(path)
    return path


@pytest.mark.skipif(not has["gptqmodel"], reason="gptqmodel is not installed (pip install 'tunestack[gptq]')")
def test_awq_calibrates_reloads_and_infer_loads_it(awq_model_dir, tiny_tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    result = cli("export", "--model", str(awq_model_dir), "--quant", "awq", "--calib_dataset", "arith",
                 "--calib_samples", "16", "--output_dir", str(tmp_path / "awq"))
    assert result.stdout == f"{tmp_path / 'awq'}\n" and "calibration data: arith" in result.stderr
    out = tmp_path / "awq"
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "awq" and config["bits"] == 4 and config["version"] == "gemm"
    assert config["zero_point"] is True and config["group_size"] == 64
    source = AutoModelForCausalLM.from_pretrained(awq_model_dir, dtype=torch.float32).eval()
    reloaded = AutoModelForCausalLM.from_pretrained(out).eval()
    assert relative_error(reloaded, source, tiny_tokenizer) < 0.15  # measured 0.061 (it reloads in bf16)
    written = record(out)["quantization"]
    assert written["backend"].startswith("gptqmodel ") and written["calibration_examples"] == 16
    assert abs(record(out)["perplexity"]["change_pct"]) < 10
    answer = cli("infer", "--model", str(out), "--prompt", "hi", "--max_new_tokens", "4")
    assert answer.returncode == 0 and "model: local directory" in answer.stderr


@pytest.mark.skipif(not has["gptqmodel"], reason="gptqmodel is not installed (pip install 'tunestack[gptq]')")
def test_awq_refuses_output_widths_it_cannot_search_in_one_line(tiny_model_dir, tmp_path):
    result = cli("export", "--model", str(tiny_model_dir), "--quant", "awq", "--output_dir", str(tmp_path / "o"),
                 check=False)
    assert result.returncode == 2 and "output width to be a multiple of 64" in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("quant", "package", "extra"), [
    ("int8", "torchao", "torchao"), ("gptq", "gptqmodel", "gptq"), ("hqq", "optimum.quanto", "quanto"),
    pytest.param("fp8", "torchao", "torchao", marks=pytest.mark.skipif(fp8_capable, reason="no torchao on fp8 GPUs")),
])
def test_missing_library_names_the_extra(quant, package, extra, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, package, None)
    with pytest.raises(MissingExtraError, match=rf"--quant {quant} export needs {package}.*tunestack\[{extra}\]"):
        export(tiny_model_dir, tmp_path / "o", quant=quant)
    assert not (tmp_path / "o").exists()


def test_model_card_describes_the_run(trained_run, tmp_path):
    out = export(trained_run, tmp_path / "card", eval_ppl=False)
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers") and "- tunestack" in card
    assert "| data | `" in card and "lora" in card and "| size |" in card
    assert f'AutoModelForCausalLM.from_pretrained("{out.name}")' in card


@pytest.mark.parametrize(("flags", "env", "expected"), [
    (["--push_to_hub", "my-org/model"], {"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE is set"),
    (["--push_to_hub", "not a repo"], {}, "expected a repository name such as my-org/my-model"),
    (["--push_to_hub", "my-org/model"], {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9",
                                         "HF_TOKEN": "hf_test"}, "cannot reach the Hugging Face Hub"),
], ids=["offline", "bad name", "unreachable"])
def test_push_to_hub_fails_before_any_work(flags, env, expected, tiny_model_dir, tmp_path):
    result = cli("export", "--model", str(tiny_model_dir), "--quant", "bnb8", *flags,
                 "--output_dir", str(tmp_path / "o"), check=False, env=env)
    assert result.returncode != 0 and expected in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "o").exists()


def test_model_card_carries_the_runs_eval_scores(tiny_model_dir, tmp_path):
    from helpers import CHAT_ROWS, write_jsonl

    run = tmp_path / "run"
    cli("sft", "--model", str(tiny_model_dir), "--dataset", str(write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)),
        "--max_steps", "1", "--output_dir", str(run), "--eval_tasks", "arith", "--eval_limit", "3")
    report = json.loads((run / "eval" / "report.json").read_text())["tasks"]["arith"]
    card = (export(run, tmp_path / "card", eval_ppl=False) / "README.md").read_text()
    for name, metric in report["metrics"].items():
        assert f"| eval: arith {name} (n=3) | {metric['value']:.4f}" in card


@pytest.mark.skipif(not has["torchao"], reason="torchao is not installed (pip install 'tunestack[torchao]')")
def test_serve_takes_a_quantized_export_as_model(tiny_model_dir, tiny_tokenizer, tmp_path):
    import openai
    from torchao.quantization import Int8Tensor

    from server_helpers import make_serving, running_server
    from tunestack.serve.app import build_app

    out = export(tiny_model_dir, tmp_path / "int8", quant="int8", eval_ppl=False)
    serving = make_serving(out)
    assert isinstance(serving.engine.model.model.layers[0].mlp.down_proj.weight, Int8Tensor)
    prompt = [{"role": "user", "content": "What is 12 + 30?"}]
    with running_server(build_app(serving)) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)
        answer = client.chat.completions.create(model="tiny", messages=prompt, max_tokens=6, temperature=0)
    serving.engine.close()
    ids = tiny_tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    from transformers import AutoModelForCausalLM

    with torch.no_grad():
        expected = AutoModelForCausalLM.from_pretrained(out).generate(**ids, max_new_tokens=6, do_sample=False)
    expected_ids = expected[0, ids["input_ids"].shape[1]:].tolist()
    assert answer.usage.completion_tokens == len(expected_ids)
    assert answer.choices[0].message.content == tiny_tokenizer.decode(expected_ids, skip_special_tokens=True)
