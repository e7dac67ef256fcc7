"""`tunestack rm` on a tiny model through the real CLI: the loss falls, only the adapter and the score head train,
`infer --score` ranks chosen above rejected, the reward model follows its run chain, kill -9 then --resume matches
an uninterrupted run, and a model of the wrong kind is refused with one line."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time

import pytest

from helpers import cli, cli_env, make_adapter, write_jsonl

PAIRS = [{"prompt": f"What is {a} + {b}?", "chosen": f"{a} + {b} = {a + b}.", "rejected": "hello world hello world"}
         for a in range(1, 9) for b in range(1, 5)]
FLAGS = ["--max_steps", "12", "--save_steps", "4", "--logging_steps", "1", "--per_device_train_batch_size", "4",
         "--learning_rate", "5e-3", "--seed", "7", "--val_ratio", "0.25", "--dtype", "fp32"]


def metrics(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def losses(run) -> dict[int, tuple]:
    return {r["step"]: (r["loss"], r["grad_norm"]) for r in metrics(run) if "loss" in r}


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tmp_path_factory):
    """A reward model trained on top of an (adapter) run of the tiny model, on trivially separable pairs."""
    root = tmp_path_factory.mktemp("rm")
    parent = root / "parent"
    make_adapter(tiny_model_dir, parent / "final", seed=3)
    (parent / "run.json").write_text(json.dumps({"command": "sft", "status": "completed", "chain": [],
                                                 "base_model": str(tiny_model_dir)}))
    data = write_jsonl(root / "pairs.jsonl", PAIRS)
    run = root / "rm"
    cli("rm", "--model", str(parent), "--dataset", str(data), "--output_dir", str(run), *FLAGS)
    return parent, data, run


def test_rm_loss_falls_and_validation_accuracy_is_recorded(setup):
    parent, _, run = setup
    train = losses(run)
    assert all(math.isfinite(loss) for loss, _ in train.values())
    assert train[12][0] < 0.3 * train[1][0]
    evals = [r for r in metrics(run) if "eval_accuracy" in r]
    assert [r["step"] for r in evals] == [4, 8, 12]
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["command"] == "rm" and manifest["status"] == "completed"
    assert manifest["final_eval_accuracy"] == evals[-1]["eval_accuracy"] == 1.0
    assert [link["run"] for link in manifest["chain"]] == [str(parent.absolute())]


def test_rm_trains_only_the_adapter_and_the_score_head(setup):
    from safetensors.torch import load_file

    _, _, run = setup
    final = load_file(run / "final" / "adapter_model.safetensors")
    assert all("lora_" in key or ".score." in key for key in final), sorted(final)
    assert any(key.endswith("score.weight") for key in final)
    assert all(value.abs().sum() > 0 for key, value in final.items() if "lora_B" in key)  # lora_B starts at zero
    earlier = load_file(run / "checkpoints" / "checkpoint-8" / "adapter_model.safetensors")
    score = next(key for key in final if key.endswith("score.weight"))
    assert not earlier[score].equal(final[score])  # the fresh head trains


def test_infer_score_ranks_chosen_above_rejected(setup, tmp_path, capsys):
    from tunestack.config import InferArgs, ModelArgs
    from tunestack.inference.chat import run_infer

    _, data, run = setup
    out = tmp_path / "scored.jsonl"
    result = cli("infer", "--score", "--model", str(run), "--input", str(data), "--output", str(out))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == len(PAIRS) and all(row["chosen_wins"] for row in rows)
    assert rows[0]["prompt"] == PAIRS[0]["prompt"] and "chosen_reward" in rows[0]
    assert f"in {len(PAIRS)} of {len(PAIRS)} pairs" in result.stderr
    rewards = {}
    for answer in ("1 + 2 = 3.", "hello world hello world"):
        run_infer(ModelArgs(model=str(run)), InferArgs(score=True, prompt="What is 1 + 2?", response=answer))
        rewards[answer] = float(capsys.readouterr().out)
    assert rewards["1 + 2 = 3."] > rewards["hello world hello world"]
    assert rewards["1 + 2 = 3."] == pytest.approx(rows[1]["chosen_reward"], abs=1e-4)


def test_reward_model_merges_the_chain_and_is_frozen(setup, tiny_model_dir, tiny_tokenizer):
    """load_reward_model's rewards equal a plain transformers + peft rebuild: base, parent adapter merged, the rm
    adapter (with its score head) on top, scoring what apply_chat_template renders."""
    import torch
    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForSequenceClassification

    from tunestack.config import ModelArgs
    from tunestack.train.reward_model import load_reward_model

    parent, _, run = setup
    reward = load_reward_model(str(run), tiny_tokenizer, ModelArgs(dtype="fp32"))
    assert not any(p.requires_grad for p in reward.model.parameters())
    prompts = [[{"role": "user", "content": "What is 2 + 3?"}], "What is 2 + 3?"]
    completions = [[{"role": "assistant", "content": "2 + 3 = 5."}], "hello world hello world"]
    got = reward(prompts=prompts, completions=completions, answer=["5", "5"])

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tiny_tokenizer.pad_token_id
    parent_config = PeftConfig.from_pretrained(str(parent / "final"))
    parent_config.task_type = None  # a causal-LM adapter on the classifier's backbone
    model = PeftModel.from_pretrained(model, str(parent / "final"), config=parent_config).merge_and_unload()
    model = PeftModel.from_pretrained(model, str(run / "final")).eval()
    expected = []
    for answer in ("2 + 3 = 5.", "hello world hello world"):
        messages = [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": answer}]
        ids = tiny_tokenizer.apply_chat_template(messages, return_tensors="pt", return_dict=True)["input_ids"]
        with torch.no_grad():
            expected.append(model(input_ids=ids).logits[0, 0].item())
    assert got == pytest.approx(expected, abs=1e-5)
    assert got[0] > got[1]


def test_reward_model_with_another_tokenizer_fails_before_loading(setup, tiny_tokenizer, monkeypatch):
    from tunestack.config import ModelArgs
    from tunestack.errors import ConfigError
    from tunestack.train.reward_model import load_reward_model

    def never(*args, **kwargs):
        raise AssertionError("the reward model's weights were loaded")

    monkeypatch.setattr("tunestack.inference.score.load_scorer", never)
    other = tiny_tokenizer.__class__.from_pretrained(tiny_tokenizer.name_or_path)
    other.add_tokens(["<extra>"])
    _, _, run = setup
    with pytest.raises(ConfigError) as error:
        load_reward_model(str(run), other, ModelArgs(), flag="--reward_funcs")
    assert len(error.value.problems) == 1
    assert error.value.problems[0].startswith(f"--reward_funcs {run}: its tokenizer differs from the policy's")


def test_a_model_of_the_wrong_kind_is_refused(setup, tiny_model_dir, tiny_tokenizer, tmp_path):
    from tunestack.config import DataArgs, ExportArgs, InferArgs, ModelArgs, TrainArgs, TunerArgs
    from tunestack.errors import ConfigError
    from tunestack.export.sources import plan_export
    from tunestack.inference.chat import run_infer
    from tunestack.train.dpo import DPO
    from tunestack.train.lifecycle import run_training
    from tunestack.train.reward_model import load_reward_model

    _, data, run = setup
    cases = {
        "does not generate": lambda: run_infer(ModelArgs(model=str(run)), InferArgs(prompt="hi")),
        "not a reward model: scoring": lambda: run_infer(ModelArgs(model=str(tiny_model_dir)),
                                                         InferArgs(score=True, prompt="hi")),
        "--reward_model": lambda: load_reward_model(str(tiny_model_dir), tiny_tokenizer, ModelArgs()),
        "export writes causal": lambda: plan_export(ModelArgs(model=str(run)),
                                                    ExportArgs(output_dir=str(tmp_path / "export"))),
        "cannot be trained to generate": lambda: run_training(
            DPO, ModelArgs(model=str(run)), DataArgs(dataset=[str(data)]), TunerArgs(),
            TrainArgs(output_dir=str(tmp_path / "dpo"), max_steps=1)),
    }
    for expected, call in cases.items():
        with pytest.raises(ConfigError) as error:
            call()
        assert len(error.value.problems) == 1 and expected in error.value.problems[0], error.value.problems
    assert not (tmp_path / "export").exists() and not (tmp_path / "dpo" / "checkpoints").exists()


def test_rm_resume_after_kill_matches_uninterrupted_run(setup, tmp_path):
    parent, data, reference = setup
    run = tmp_path / "run"
    args = [sys.executable, "-m", "tunestack", "rm", "--model", str(parent), "--dataset", str(data),
            "--output_dir", str(run), *FLAGS]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=cli_env())
    sealed = run / "checkpoints" / "checkpoint-4" / "tunestack_complete.json"
    deadline = time.time() + 300
    while not sealed.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert sealed.exists() and not (run / "final").exists()  # the kill landed mid-run
    assert json.loads((run / "run.json").read_text())["status"] == "running"
    cli("rm", "--output_dir", str(run), "--resume")
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    expected, resumed = losses(reference), losses(run)
    assert sorted(resumed) == sorted(expected)
    for step in expected:
        assert resumed[step] == pytest.approx(expected[step], rel=1e-5, abs=1e-7), f"step {step}"
