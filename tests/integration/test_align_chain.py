"""Runs built on runs: sft, then dpo --model SFT_RUN; export, infer and serve follow the chain, a changed or deleted
parent is refused, --continue_adapter keeps training the parent's adapter, and sft on an sft run keeps the first."""

import json
import shutil

import pytest
import torch

from helpers import CHAT_ROWS, PREFERENCE_ROWS, cli, method_trainer, write_jsonl

STEPS = ["--max_steps", "3", "--save_steps", "3", "--logging_steps", "1", "--per_device_train_batch_size", "4",
         "--max_length", "64", "--learning_rate", "1e-2"]
PROMPT = [{"role": "user", "content": "What is 2 + 3?"}]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("chain")
    write_jsonl(root / "chat.jsonl", CHAT_ROWS)
    write_jsonl(root / "pairs.jsonl", PREFERENCE_ROWS)
    return root


@pytest.fixture(scope="module")
def sft_run(tiny_model_dir, root):
    cli("sft", "--model", str(tiny_model_dir), "--dataset", str(root / "chat.jsonl"), "--output_dir",
        str(root / "sft"), "--lora_rank", "4", *STEPS)
    return root / "sft"


@pytest.fixture(scope="module")
def dpo_run(sft_run, root):
    cli("dpo", "--model", str(sft_run), "--dataset", str(root / "pairs.jsonl"), "--output_dir", str(root / "dpo"),
        *STEPS)
    return root / "dpo"


def merged(base, *adapters):
    """The base with each adapter merged in turn, by plain transformers and peft."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    for adapter in adapters:
        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    return model.eval()


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.arange(3, 40).unsqueeze(0)).logits


def manifest(run) -> dict:
    return json.loads((run / "run.json").read_text())


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """`tunestack ARGS` in this process: exit code, stdout, stderr."""
    from tunestack.cli import main

    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_dpo_on_an_sft_run_trains_a_new_adapter_and_records_the_chain(dpo_run, sft_run, tiny_model_dir):
    from tunestack.run.manifest import adapter_fingerprint

    recorded = manifest(dpo_run)
    assert recorded["status"] == "completed" and recorded["base_model"] == str(tiny_model_dir)
    assert recorded["chain"] == [{"run": str(sft_run), "adapter": str(sft_run / "final"),
                                  "fingerprint": adapter_fingerprint(sft_run / "final")}]
    config = json.loads((dpo_run / "final" / "adapter_config.json").read_text())
    assert config["r"] == 8  # a new adapter (the sft one has rank 4)


def test_export_merges_every_link(dpo_run, sft_run, tiny_model_dir, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "export"
    code, _, err = run_cli(["export", "--model", str(dpo_run), "--output_dir", str(out), "--eval_ppl", "false"], capsys)
    assert code == 0, err
    exported = logits(AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval())
    expected = logits(merged(tiny_model_dir, sft_run / "final", dpo_run / "final"))
    assert torch.allclose(exported, expected, atol=1e-4)
    assert not torch.allclose(exported, logits(merged(tiny_model_dir, dpo_run / "final")), atol=1e-2)
    from tunestack.run.manifest import adapter_fingerprint

    links = json.loads((out / "export.json").read_text())["source"]["adapters"]
    assert [(a["path"], a["fingerprint"]) for a in links] == [
        (str(run / "final"), adapter_fingerprint(run / "final")) for run in (sft_run, dpo_run)]


def test_infer_follows_the_chain(dpo_run, sft_run, tiny_model_dir, capsys):
    from transformers import AutoTokenizer

    code, out, err = run_cli(["infer", "--model", str(dpo_run), "--prompt", PROMPT[0]["content"],
                              "--max_new_tokens", "12", "--dtype", "fp32"], capsys)
    assert code == 0, err
    tokenizer = AutoTokenizer.from_pretrained(dpo_run / "final")
    ids = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    model = merged(tiny_model_dir, sft_run / "final", dpo_run / "final")
    generated = model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert out == tokenizer.decode(generated[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip() + "\n"


def test_a_changed_or_deleted_parent_adapter_is_refused(dpo_run, sft_run, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    parent, child = tmp_path / "sft", tmp_path / "dpo"
    shutil.copytree(sft_run, parent)
    shutil.copytree(dpo_run, child)
    recorded = manifest(child)
    recorded["chain"][0].update(run=str(parent), adapter=str(parent / "final"))
    (child / "run.json").write_text(json.dumps(recorded))
    weights = parent / "final" / "adapter_model.safetensors"
    save_file({name: value + 0.01 for name, value in load_file(weights).items()}, weights)  # retrained since
    code, _, err = run_cli(["infer", "--model", str(child), "--prompt", "hi"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"trained on top of the adapter {parent / 'final'}" in err and "has changed since" in err
    shutil.rmtree(parent / "final")
    code, _, err = run_cli(["export", "--model", str(child), "--output_dir", str(tmp_path / "out")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "which is gone" in err, err


def test_serve_refuses_a_chained_run_as_a_named_adapter(dpo_run, tiny_model_dir, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("tunestack.model.load.load_model", refuse)
    code, _, err = run_cli(["serve", "--model", str(tiny_model_dir), "--adapter", f"dpo={dpo_run}"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"--adapter dpo={dpo_run}: this run was trained on top of another run's adapter" in err


def test_continue_adapter_keeps_training_the_parent_adapter(sft_run, tiny_model_dir, root):
    from safetensors.torch import load_file

    from tunestack.config import ModelArgs
    from tunestack.inference.loading import load_for_inference

    run = root / "continued"
    cli("dpo", "--model", str(sft_run), "--continue_adapter", "--dataset", str(root / "pairs.jsonl"),
        "--output_dir", str(run), *STEPS)
    assert manifest(run)["chain"] == [] and manifest(run)["base_model"] == str(tiny_model_dir)
    config, parent = (json.loads((r / "final" / "adapter_config.json").read_text()) for r in (run, sft_run))
    assert (config["r"], sorted(config["target_modules"])) == (parent["r"], sorted(parent["target_modules"]))
    before, after = (load_file(r / "final" / "adapter_model.safetensors") for r in (sft_run, run))
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)
    loaded = load_for_inference(ModelArgs(model=str(run), dtype="fp32")).model
    assert torch.allclose(logits(loaded), logits(merged(tiny_model_dir, run / "final")), atol=1e-4)


def test_sft_on_an_sft_run_trains_on_top_of_its_adapter(sft_run, tiny_model_dir, root):
    from tunestack.config import ModelArgs
    from tunestack.inference.loading import load_for_inference

    run = root / "sft-again"
    cli("sft", "--model", str(sft_run), "--dataset", str(root / "chat.jsonl"), "--output_dir", str(run), *STEPS)
    assert [link["run"] for link in manifest(run)["chain"]] == [str(sft_run)]
    loaded = logits(load_for_inference(ModelArgs(model=str(run), dtype="fp32")).model)
    assert torch.allclose(loaded, logits(merged(tiny_model_dir, sft_run / "final", run / "final")), atol=1e-4)
    assert not torch.allclose(loaded, logits(merged(tiny_model_dir, run / "final")), atol=1e-2)  # not dropped


def test_full_dpo_on_an_adapter_run_compares_against_its_starting_weights(sft_run, tiny_model_dir, root, tmp_path):
    trainer = method_trainer("dpo", ["--model", str(sft_run), "--tuner", "full", "--dataset",
                                     str(root / "pairs.jsonl"), "--dtype", "fp32"], tmp_path / "run")
    expected = logits(merged(tiny_model_dir, sft_run / "final"))
    assert torch.allclose(logits(trainer.ref_model), expected, atol=1e-4)
    assert torch.allclose(logits(trainer.model), expected, atol=1e-4)


@pytest.mark.parametrize("command", ["sft", "pt"])
def test_training_on_an_adapter_run_starts_from_base_plus_its_adapter(command, sft_run, tiny_model_dir, root,
                                                                      tmp_path):
    """`sft`/`pt --model RUN_DIR` never drops the run's adapter: the untrained model answers as base + adapter."""
    data = root / "chat.jsonl"
    if command == "pt":
        data = tmp_path / "corpus.txt"
        data.write_text("The quick brown fox jumps over the lazy dog.\n" * 20)
    # fp32: the check is exact; on a CPU with AMX --dtype auto would hold the frozen base in bf16
    trainer = method_trainer(command, ["--model", str(sft_run), "--dataset", str(data), "--dtype", "fp32"],
                             tmp_path / "run")
    start = logits(trainer.model.eval())
    assert torch.allclose(start, logits(merged(tiny_model_dir, sft_run / "final")), atol=1e-4)
    assert not torch.allclose(start, logits(merged(tiny_model_dir)), atol=1e-2)  # the adapter changes the base
