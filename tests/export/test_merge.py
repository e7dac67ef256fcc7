"""`tunestack export`: merged weights equal base + adapter, load with transformers alone; weights, errors, atomicity."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import build_model, cli, cli_env, make_adapter
from tunestack.config import ExportArgs, ModelArgs
from tunestack.errors import TunestackError
from tunestack.export.merge import run_export
from tunestack.progress import read_events

PROMPT = [{"role": "user", "content": "What is 12 + 30?"}]


def load(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def with_adapters(base_dir, *adapters, merge: bool = False):
    """The reference, by peft directly: the base with one adapter applied, or several merged one after another."""
    from peft import PeftModel

    model = load(base_dir)
    for adapter in adapters:
        model = PeftModel.from_pretrained(model, str(adapter))
        model = model.merge_and_unload() if merge or len(adapters) > 1 else model.eval()
    return model


def logits(model, tokenizer):
    ids = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        return model(**ids).logits


def export(model, out, *adapters, weights=(), eval_ppl=True, **flags):
    export_args = ExportArgs(adapter=[str(a) for a in adapters], adapter_weights=list(weights), output_dir=str(out),
                             eval_ppl=eval_ppl)
    return run_export(ModelArgs(model=str(model), **flags), export_args)


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return {"lora": make_adapter(tiny_model_dir, root / "lora", seed=1),
            "lora2": make_adapter(tiny_model_dir, root / "lora2", seed=2, rank=2),
            "dora": make_adapter(tiny_model_dir, root / "dora", seed=3, dora=True)}


@pytest.mark.parametrize("kind", ["lora", "dora"])
def test_merged_logits_equal_base_plus_adapter(kind, adapters, tiny_model_dir, tiny_tokenizer, tmp_path):
    out = export(tiny_model_dir, tmp_path / "merged", adapters[kind])
    expected = logits(with_adapters(tiny_model_dir, adapters[kind]), tiny_tokenizer)
    assert (expected - logits(load(tiny_model_dir), tiny_tokenizer)).abs().max() > 1e-2  # the adapter does something
    assert (logits(load(out), tiny_tokenizer) - expected).abs().max() < 1e-4
    config = (out / "config.json").read_text()
    assert not any(marker in config for marker in ("peft", "adapter", "tunestack"))
    assert not (out / "adapter_config.json").exists() and (out / "chat_template.jinja").is_file()
    record = json.loads((out / "export.json").read_text())
    assert record["method"] == "merge" and record["settings"]["dtype"] == "fp32"
    assert record["source"]["adapters"][0]["type"] == kind and record["versions"]["peft"]
    assert record["sizes"]["weights_bytes"] == (out / "model.safetensors").stat().st_size


def test_cli_export_prints_only_the_path(adapters, tiny_model_dir, tiny_tokenizer, tmp_path):
    out = tmp_path / "merged"
    result = cli("export", "--model", str(tiny_model_dir), "--adapter", str(adapters["dora"]), "--output_dir",
                 str(out))
    assert result.stdout == f"{out}\n" and "merging DoRA adapter" in result.stderr
    expected = logits(with_adapters(tiny_model_dir, adapters["dora"]), tiny_tokenizer)
    assert (logits(load(out), tiny_tokenizer) - expected).abs().max() < 1e-4
    assert not list(tmp_path.glob("merged.*"))


PLAIN_LOAD = """
import json, sys
sys.modules["peft"] = None
sys.modules["tunestack"] = None
from transformers import AutoModelForCausalLM, AutoTokenizer
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
model = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
ids = tokenizer.apply_chat_template(json.loads(sys.argv[2]), add_generation_prompt=True, return_tensors="pt",
                                    return_dict=True)
out = model.generate(**ids, max_new_tokens=8, do_sample=False)
print(json.dumps(out[0, ids["input_ids"].shape[1]:].tolist()))
"""


def test_run_directory_exports_to_a_model_plain_transformers_loads(trained_run, tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    out = tmp_path / "merged"
    cli("export", "--model", str(trained_run), "--output_dir", str(out), "--max_shard_size", "200KB")
    shards = sorted(out.glob("*.safetensors"))
    assert len(shards) > 1 and (out / "model.safetensors.index.json").is_file()
    record = json.loads((out / "export.json").read_text())
    assert record["source"]["run_dir"] == str(trained_run)
    manifest = json.loads((trained_run / "run.json").read_text())
    assert record["source"]["adapters"][0]["base_model_fingerprint"] == manifest["base_model_fingerprint"]
    assert record["sizes"]["weights_bytes"] == sum(p.stat().st_size for p in shards)

    plain = subprocess.run([sys.executable, "-c", PLAIN_LOAD, str(out), json.dumps(PROMPT)], capture_output=True,
                           text=True, timeout=300, env=cli_env())
    assert plain.returncode == 0, plain.stderr[-2000:]
    tokenizer = AutoTokenizer.from_pretrained(trained_run / "final")
    model = with_adapters(tiny_model_dir, trained_run / "final")
    ids = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    expected = model.generate(**ids, max_new_tokens=8, do_sample=False)[0, ids["input_ids"].shape[1]:].tolist()
    assert json.loads(plain.stdout.strip().splitlines()[-1]) == expected


def test_weighted_adapters_combine_into_the_weighted_sum(adapters, tiny_model_dir, tiny_tokenizer, tmp_path):
    first = export(tiny_model_dir, tmp_path / "first", adapters["lora"], adapters["lora2"], weights=[1, 0])
    expected = logits(with_adapters(tiny_model_dir, adapters["lora"]), tiny_tokenizer)
    assert (logits(load(first), tiny_tokenizer) - expected).abs().max() < 1e-4

    mixed = export(tiny_model_dir, tmp_path / "mixed", adapters["lora"], adapters["lora2"], weights=[0.5, -1.0])
    base = load(tiny_model_dir).state_dict()
    deltas = [{k: v - base[k] for k, v in with_adapters(tiny_model_dir, a, merge=True).state_dict().items()}
              for a in (adapters["lora"], adapters["lora2"])]
    reference = load(tiny_model_dir)
    reference.load_state_dict({k: v + 0.5 * deltas[0][k] - 1.0 * deltas[1][k] for k, v in base.items()})
    assert (logits(load(mixed), tiny_tokenizer) - logits(reference, tiny_tokenizer)).abs().max() < 1e-4

    both = export(tiny_model_dir, tmp_path / "both", adapters["lora"], adapters["dora"])
    expected = logits(with_adapters(tiny_model_dir, adapters["lora"], adapters["dora"]), tiny_tokenizer)
    assert (logits(load(both), tiny_tokenizer) - expected).abs().max() < 1e-4


@pytest.mark.parametrize(("saved", "requested", "written"), [("bf16", "auto", "bf16"), ("fp32", "auto", "fp32"),
                                                          ("fp32", "bf16", "bf16"), ("bf16", "fp32", "fp32")])
def test_dtype_keeps_the_saved_one_or_casts(saved, requested, written, tiny_tokenizer, tmp_path):
    base = tmp_path / "base"
    model = build_model(tiny_tokenizer)
    model.to(torch.bfloat16 if saved == "bf16" else torch.float32).save_pretrained(base)
    tiny_tokenizer.save_pretrained(base)
    out = export(base, tmp_path / "out", make_adapter(base, tmp_path / "adapter", seed=1), dtype=requested)
    names = {"bf16": "bfloat16", "fp32": "float32"}
    assert json.loads((out / "config.json").read_text())["dtype"] == names[written]
    assert json.loads((out / "export.json").read_text())["settings"]["dtype"] == written
    from safetensors import safe_open

    with safe_open(out / "model.safetensors", "pt") as weights:
        assert {weights.get_tensor(k).dtype for k in weights.keys()} == {getattr(torch, names[written])}


@pytest.fixture(scope="module")
def other_model_dir(tiny_tokenizer, tmp_path_factory):
    """Same shapes as the tiny model, different weights and config: a base the adapters were not trained on."""
    path = tmp_path_factory.mktemp("other-llama")
    model = build_model(tiny_tokenizer, seed=7)
    model.config.rms_norm_eps = 1e-5
    model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


def error_cases(tmp, base, run, adapters, other):
    (tmp / "full").mkdir()
    (tmp / "full" / "old.txt").write_text("keep me")
    (tmp / "no-config").mkdir()
    (tmp / "no-config" / "adapter_model.safetensors").write_bytes(b"")
    return {
        "output not empty": (["--model", run, "--output_dir", tmp / "full"], ["full is not empty", "--overwrite"]),
        "no adapter_config": (["--model", base, "--adapter", tmp / "no-config", "--output_dir", tmp / "o"],
                              ["no-config has no adapter_config.json"]),
        "run on other base": (["--model", other, "--adapter", run, "--output_dir", tmp / "o"], ["fingerprint"]),
        "adapter on other base": (["--model", other, "--adapter", adapters["lora"], "--output_dir", tmp / "o"],
                                  ["base_model_name_or_path"]),
        "nothing to merge": (["--model", base, "--output_dir", tmp / "o"], ["nothing to merge"]),
        "nothing to merge, alias": (["--output_dir", tmp / "o"], ["smollm2-135m-instruct carries no adapter"]),
        "into the adapter": (["--model", base, "--adapter", adapters["lora"], "--output_dir", adapters["lora"],
                              "--overwrite"], ["holds the model or adapter being exported"]),
        "dora weighted": (["--model", base, "--adapter", adapters["lora"], adapters["dora"], "--adapter_weights",
                           "1,1", "--output_dir", tmp / "o"], ["is DoRA"]),
    }


@pytest.mark.parametrize("case", ["output not empty", "no adapter_config", "run on other base",
                                  "adapter on other base", "nothing to merge", "nothing to merge, alias",
                                  "into the adapter", "dora weighted"])
def test_errors_are_one_line_before_loading(case, trained_run, adapters, tiny_model_dir, other_model_dir, tmp_path):
    args, expected = error_cases(tmp_path, tiny_model_dir, trained_run, adapters, other_model_dir)[case]
    result = cli("export", *map(str, args), check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert all(text in result.stderr for text in expected), result.stderr
    if case.endswith("other base"):
        from tunestack.run.manifest import model_fingerprint

        assert all(model_fingerprint(m) in result.stderr for m in (tiny_model_dir, other_model_dir))
    assert (tmp_path / "full" / "old.txt").read_text() == "keep me" and not (tmp_path / "o").exists()


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyboardInterrupt()],
                         ids=["disk-full", "interrupted"])
@pytest.mark.parametrize("existing", [False, True], ids=["fresh", "overwrite"])
def test_a_failed_write_leaves_no_half_export(failure, existing, adapters, tiny_model_dir, tmp_path, monkeypatch):
    import safetensors.torch
    import transformers.modeling_utils

    def fail_after_writing(tensors, filename, metadata=None):
        safetensors.torch.save_file(tensors, filename, metadata=metadata)
        raise failure

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", fail_after_writing)
    out = tmp_path / "merged"
    if existing:
        out.mkdir()
        (out / "old.txt").write_text("previous export")
    with pytest.raises(TunestackError if isinstance(failure, OSError) else KeyboardInterrupt):
        run_export(ModelArgs(model=str(tiny_model_dir)),
                   ExportArgs(adapter=[str(adapters["lora"])], output_dir=str(out), overwrite=existing))
    # Nothing of the new model: the old contents, and the events saying how the export ended.
    assert [p.name for p in tmp_path.iterdir()] == ["merged"]
    assert sorted(p.name for p in out.iterdir()) == (["events.jsonl", "old.txt"] if existing else ["events.jsonl"])
    end = read_events(out)[-1]
    assert end["kind"] == "end" and end["status"] == ("failed" if isinstance(failure, OSError) else "interrupted")
    assert isinstance(failure, KeyboardInterrupt) or "No space left on device" in end["message"]


@pytest.mark.slow
def test_embedded_model_merges_as_exactly_as_fp32_allows(tmp_path):
    """On 30 layers fp32 rounding alone moves the logits by about 1e-4, so the merged model is held to the exact
    result (base + adapter in float64): no further from it than base + adapter computed in fp32 itself."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunestack.hub import resolve_model

    base = resolve_model("smollm2-135m-instruct").path
    tokenizer = AutoTokenizer.from_pretrained(base)
    plain = logits(load(base), tokenizer)
    for kind in ("lora", "dora"):
        adapter = make_adapter(base, tmp_path / kind, seed=5, dora=kind == "dora")
        out = export(base, tmp_path / f"merged-{kind}", adapter, eval_ppl=False)
        fp32 = logits(with_adapters(base, adapter), tokenizer)
        exact_model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float64)
        exact = logits(PeftModel.from_pretrained(exact_model, str(adapter)).eval(), tokenizer).float()
        assert (fp32 - plain).abs().max() > 1e-2  # the adapter does something
        merged = logits(load(out), tokenizer)
        error, reference_error = ((merged - exact).abs().max().item(), (fp32 - exact).abs().max().item())
        print(f"smollm2 {kind}: max |merged - exact| = {error:.2e}, |base + adapter in fp32 - exact| = "
              f"{reference_error:.2e}, |merged - base + adapter in fp32| = {(merged - fp32).abs().max():.2e}")
        assert error < max(1e-4, 1.5 * reference_error)


def test_base_fingerprint_ignores_the_transformers_version(trained_run, tiny_model_dir, tmp_path):
    import shutil

    from tunestack.run.manifest import model_fingerprint

    resaved = tmp_path / "resaved"
    shutil.copytree(tiny_model_dir, resaved)
    config = json.loads((resaved / "config.json").read_text())
    (resaved / "config.json").write_text(json.dumps({**config, "transformers_version": "9.9.9"}, indent=4))
    assert model_fingerprint(resaved) == model_fingerprint(tiny_model_dir)
    assert model_fingerprint(resaved, legacy=True) != model_fingerprint(tiny_model_dir, legacy=True)
    # a run recorded with the earlier fingerprint (the config file's bytes) still exports
    old_run = tmp_path / "old-run"
    shutil.copytree(trained_run, old_run)
    manifest = json.loads((old_run / "run.json").read_text())
    base = json.loads((old_run / "run.json").read_text())["config"]["model"]["model"]
    manifest["base_model_fingerprint"] = model_fingerprint(Path(base), legacy=True)
    (old_run / "run.json").write_text(json.dumps(manifest))
    assert (export(old_run, tmp_path / "out", eval_ppl=False) / "config.json").is_file()


def test_a_full_fine_tune_run_exports_as_it_is(tiny_model_dir, tiny_tokenizer, tmp_path):
    from helpers import CHAT_ROWS, write_jsonl

    run = tmp_path / "full-run"
    cli("sft", "--model", str(tiny_model_dir), "--dataset", str(write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)),
        "--tuner", "full", "--max_steps", "2", "--learning_rate", "1e-3", "--output_dir", str(run))
    out = tmp_path / "exported"
    cli("export", "--model", str(run), "--output_dir", str(out))
    record = json.loads((out / "export.json").read_text())
    assert record["method"] == "convert" and record["source"]["adapters"] == []
    assert record["source"]["run_dir"] == str(run)
    trained = logits(load(run / "final"), tiny_tokenizer)
    assert torch.equal(logits(load(out), tiny_tokenizer), trained)
    assert not torch.allclose(logits(load(tiny_model_dir), tiny_tokenizer), trained)  # it trained: not the base
