"""`tunestack ppo` on a tiny model with a tiny reward model, through the real CLI: the loss is finite, only the
adapter and the value head train, each figure is logged, the reference is the policy with its adapter disabled,
kill -9 then --resume continues exactly; and GAE against a hand-computed example."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time

import pytest
import torch

from helpers import cli, cli_env, write_jsonl

PROMPTS = [{"prompt": f"What is {a} + {b}?"} for a in range(1, 9) for b in range(1, 3)]
FLAGS = ["--max_steps", "4", "--save_steps", "2", "--logging_steps", "1", "--per_device_train_batch_size", "4",
         "--max_completion_length", "8", "--ppo_epochs", "2", "--learning_rate", "1e-3", "--seed", "7",
         "--dtype", "fp32"]
FIGURES = ("reward", "reward_std", "kl", "policy_loss", "value_loss", "clip_ratio", "approx_kl", "completion_length")


def test_gae_matches_a_hand_computed_example():
    from tunestack.train.ppo import gae

    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.5, 7.0, 7.0]])
    values = torch.tensor([[0.1, 0.2, 0.3], [0.4, 9.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])  # the second completion is one token long
    advantages, returns = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    # Row 1, backwards: d2 = 1 - 0.3 = 0.7; d1 = 0.9 * 0.3 - 0.2 = 0.07, A1 = 0.07 + 0.72 * 0.7 = 0.574;
    # d0 = 0.9 * 0.2 - 0.1 = 0.08, A0 = 0.08 + 0.72 * 0.574 = 0.49328. Row 2: A0 = 0.5 - 0.4; the rest is masked.
    assert torch.allclose(advantages, torch.tensor([[0.49328, 0.574, 0.7], [0.1, 0.0, 0.0]]), atol=1e-6)
    assert torch.allclose(returns, torch.tensor([[0.59328, 0.774, 1.0], [0.5, 0.0, 0.0]]), atol=1e-6)
    # gamma = lam = 1: Monte Carlo, the sum of the rewards still to come minus the value.
    advantages, _ = gae(rewards[:1], values[:1], mask[:1], gamma=1.0, lam=1.0)
    assert torch.allclose(advantages, torch.tensor([[0.9, 0.8, 0.7]]), atol=1e-6)


def reward_model_run(tiny_model_dir, path):
    """A fully fine-tuned reward-model run as `tunestack rm --tuner full` leaves it (its head random)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = AutoTokenizer.from_pretrained(tiny_model_dir).pad_token_id
    model.save_pretrained(path / "final")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(path / "final")
    (path / "run.json").write_text(json.dumps({"command": "rm", "status": "completed", "tuner": "full",
                                               "base_model": str(tiny_model_dir)}))
    return path


def metrics(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("ppo")
    reward = reward_model_run(tiny_model_dir, root / "rm")
    data = write_jsonl(root / "prompts.jsonl", PROMPTS)
    run = root / "ppo"
    cli("ppo", "--model", str(tiny_model_dir), "--reward_model", str(reward), "--dataset", str(data),
        "--output_dir", str(run), *FLAGS)
    return reward, data, run


def test_ppo_logs_its_figures_and_trains_only_the_adapter_and_value_head(setup):
    from safetensors.torch import load_file

    _, _, run = setup
    rows = [r for r in metrics(run) if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(math.isfinite(r[name]) for r in rows for name in ("loss",) + FIGURES)
    assert rows[0]["kl"] == 0.0 and rows[-1]["kl"] != 0.0  # a fresh adapter is the reference, then departs from it
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["status"] == "completed" and manifest["final_reward"] == rows[-1]["reward"]
    assert manifest["kernels"]["attention"] in ("tunestack_eager", "sdpa") and not manifest["kernels"]["torch_compile"]
    final = load_file(run / "final" / "adapter_model.safetensors")
    assert all("lora_" in key for key in final), sorted(final)
    assert all(value.abs().sum() > 0 for key, value in final.items() if "lora_B" in key)
    assert not any("value" in file.name for file in (run / "final").iterdir())
    value_head = load_file(run / "checkpoints" / "checkpoint-4" / "tunestack_value_head.safetensors")
    assert value_head["weight"].abs().sum() > 0  # it starts at zero


def test_ppo_samples_over_a_bf16_base(setup, tiny_model_dir, tmp_path):
    """Rollouts run outside autocast: peft must keep casting activations to the fp32 adapter there."""
    reward, data, _ = setup
    run = tmp_path / "ppo"
    cli("ppo", "--model", str(tiny_model_dir), "--reward_model", str(reward), "--dataset", str(data),
        "--output_dir", str(run), "--max_steps", "2", *FLAGS[2:-2], "--dtype", "bf16")
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["status"] == "completed" and manifest["precision"] == "bf16"
    assert [r["step"] for r in metrics(run) if "loss" in r] == [1, 2]


def test_ppo_reference_is_the_policy_with_its_adapter_disabled(setup, tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from tunestack.config import DataArgs, ModelArgs, ParallelArgs, PpoArgs, TrainArgs, TunerArgs
    from tunestack.run import RunDir
    from tunestack.train.lifecycle import build_trainer
    from tunestack.train.ppo import PPO

    reward, data, _ = setup
    ppo = PpoArgs(reward_model=str(reward), temperature=0.7)
    trainer = build_trainer(PPO, ModelArgs(model=str(tiny_model_dir), dtype="fp32"), DataArgs(dataset=[str(data)]),
                            TunerArgs(), TrainArgs(output_dir=str(tmp_path / "run"), max_steps=1), RunDir(tmp_path / "run"),
                            ppo, ParallelArgs())
    policy = trainer.model
    with torch.no_grad():
        for name, parameter in policy.named_parameters():
            if "lora_B" in name:
                parameter.normal_()  # an adapter that changes the output
    ids = torch.tensor([[5, 9, 30, 41, 7, 12, 3], [0, 0, 30, 41, 7, 12, 3]])
    attention = (ids != 0).long()
    got = trainer.reference_logprobs(policy, ids, attention, prompt_length=4)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    positions = (attention.cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = base(input_ids=ids, attention_mask=attention, position_ids=positions).logits[:, 3:-1] / 0.7
        adapted = policy(input_ids=ids, attention_mask=attention, position_ids=positions).logits[:, 3:-1] / 0.7
    expected = logits.log_softmax(-1).gather(-1, ids[:, 4:, None]).squeeze(-1)
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(adapted.log_softmax(-1).gather(-1, ids[:, 4:, None]).squeeze(-1), expected, atol=1e-3)


def test_ppo_flags_are_checked_before_a_model_loads(setup, tiny_model_dir, tmp_path):
    from tunestack.config import DataArgs, ModelArgs, PpoArgs, TrainArgs, TunerArgs
    from tunestack.errors import ConfigError
    from tunestack.train.lifecycle import run_training
    from tunestack.train.ppo import PPO

    reward, data, _ = setup

    def problems(ppo, data_args=DataArgs(dataset=[str(data)]), **train):
        with pytest.raises(ConfigError) as error:
            run_training(PPO, ModelArgs(model=str(tiny_model_dir)), data_args, TunerArgs(),
                         TrainArgs(output_dir=str(tmp_path / "run"), max_steps=1, **train), ppo)
        return error.value.problems

    assert problems(PpoArgs(), gradient_accumulation_steps=2) == [
        "--reward_model: required; a reward model run (train one: tunestack rm --model BASE --dataset PAIRS)",
        "--gradient_accumulation_steps 2: ppo updates once per batch of rollouts (--ppo_epochs times); raise "
        "--per_device_train_batch_size instead"]
    assert problems(PpoArgs(reward_model=str(reward)), DataArgs(dataset=[str(data)], val_ratio=0.25))[0].startswith(
        "--val_ratio / --val_dataset: ppo does not evaluate")
    assert not (tmp_path / "run").exists()
    assert problems(PpoArgs(reward_model=str(tiny_model_dir))) == [
        f"--reward_model {tiny_model_dir}: not a reward model (no sequence-classification head); train one with "
        "`tunestack rm --model POLICY_BASE --dataset PAIRS` and pass its run directory"]


def test_ppo_resume_after_kill_matches_uninterrupted_run(setup, tiny_model_dir, tmp_path):
    reward, data, reference = setup
    run = tmp_path / "run"
    args = [sys.executable, "-m", "tunestack", "ppo", "--model", str(tiny_model_dir), "--reward_model", str(reward),
            "--dataset", str(data), "--output_dir", str(run), *FLAGS]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=cli_env())
    sealed = run / "checkpoints" / "checkpoint-2" / "tunestack_complete.json"
    deadline = time.time() + 300
    while not sealed.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert sealed.exists() and not (run / "final").exists()  # the kill landed mid-run
    cli("ppo", "--output_dir", str(run), "--resume")
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    expected = {r["step"]: r for r in metrics(reference) if "loss" in r}
    resumed = {r["step"]: r for r in metrics(run) if "loss" in r}
    assert sorted(resumed) == sorted(expected)
    for step, row in expected.items():
        for name in ("loss", "grad_norm") + FIGURES:
            assert resumed[step][name] == pytest.approx(row[name], rel=1e-5, abs=1e-6), f"step {step}: {name}"
