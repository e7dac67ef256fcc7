"""grpo and rloo on the tiny model through the real CLI: they train the adapter alone on built-in and user rewards,
log each reward's mean and spread, resume exactly after kill -9, score the reference with the adapter disabled, and
refuse bad input with one line."""

import json
import math
import signal
import subprocess
import sys
import time

import pytest

from helpers import cli, cli_env, write_jsonl

PROMPTS = [{"prompt": f"What is {a} + {b}?", "answer": a + b} for a in range(1, 9) for b in range(1, 5)]
USER_REWARDS = '''
import json, os


def short(prompts, completions, answer, source, completion_ids, trainer_state, **kwargs):
    """Shorter answers score higher; records what it was called with once."""
    if not os.path.exists(os.environ["SEEN"]):
        with open(os.environ["SEEN"], "w") as f:
            json.dump({"kwargs": sorted(["prompts", "completions", "answer", "source", "completion_ids",
                                         "trainer_state", *kwargs]), "prompt": prompts[0], "completion": completions[0],
                       "answer": answer[0], "source": source[0], "step": trainer_state.global_step}, f)
    return [1.0 / (1 + len(c[0]["content"])) for c in completions]


def fails_on_sums(prompts, completions, **kwargs):
    if any("+" in p[-1]["content"] for p in prompts):
        raise ValueError("no sums")
    return [0.0] * len(completions)
'''
FLAGS = ["--max_steps", "4", "--save_steps", "2", "--logging_steps", "1", "--per_device_train_batch_size", "4",
         "--num_generations", "4", "--max_completion_length", "8", "--learning_rate", "1e-3", "--beta", "0.05",
         "--seed", "7"]


def metrics(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def by_step(run, keys=("loss", "reward", "reward_std", "kl")) -> dict:
    return {m["step"]: tuple(m[k] for k in keys) for m in metrics(run) if "loss" in m}


def error_line(result) -> str:
    """The line the CLI printed for the error (the progress bar shares stderr, separated by carriage returns)."""
    lines = [part for line in result.stderr.split("\n") for part in line.split("\r")]
    return next(line[line.index("tunestack grpo"):] for line in lines if "tunestack grpo" in line)


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("grpo")
    data = write_jsonl(root / "prompts.jsonl", PROMPTS)
    (root / "mine.py").write_text(USER_REWARDS)
    reward_funcs = f"accuracy,{root / 'mine.py'}:short"
    run = root / "grpo"
    cli("grpo", "--model", str(tiny_model_dir), "--dataset", str(data), "--reward_funcs", reward_funcs,
        "--output_dir", str(run), *FLAGS, env={"SEEN": str(root / "seen.json")})
    return root, data, reward_funcs, run


def test_grpo_trains_the_adapter_alone_and_logs_each_reward(setup, tiny_model_dir):
    root, _, _, run = setup
    logged = [m for m in metrics(run) if "loss" in m]
    assert [m["step"] for m in logged] == [1, 2, 3, 4] and all(math.isfinite(m["loss"]) for m in logged)
    for key in ("reward", "reward_std", "rewards/accuracy/mean", "rewards/accuracy/std", "rewards/short/mean",
                "rewards/short/std", "kl", "clip_ratio/region_mean", "completions/mean_length"):
        assert all(key in m for m in logged), key
    assert logged[0]["kl"] == 0.0 and logged[-1]["kl"] > 0  # the first step's policy is the reference itself
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["status"] == "completed" and manifest["final_reward"] == logged[-1]["reward"]

    from safetensors.torch import load_file

    adapter = load_file(run / "final" / "adapter_model.safetensors")
    assert adapter and all(".lora_A." in k or ".lora_B." in k for k in adapter)
    assert any(t.abs().sum() > 0 for k, t in adapter.items() if ".lora_B." in k)  # B starts at zero: it trained
    assert not (run / "final" / "ref").exists()  # no reference copy of the adapter

    seen = json.loads((root / "seen.json").read_text())
    assert seen["kwargs"] == ["answer", "completion_ids", "completions", "log_extra", "log_metric", "prompts",
                              "source", "trainer_state"]
    assert seen["prompt"][-1]["role"] == "user" and seen["completion"][0]["role"] == "assistant"
    question = seen["prompt"][-1]["content"]
    assert PROMPTS[int(seen["source"].rsplit(" ", 1)[1]) - 1] == {"prompt": question, "answer": int(seen["answer"])}


def test_kill_then_resume_continues_exactly(setup, tiny_model_dir, tmp_path):
    root, data, reward_funcs, reference = setup
    run = tmp_path / "run"
    args = [sys.executable, "-m", "tunestack", "grpo", "--model", str(tiny_model_dir), "--dataset", str(data),
            "--reward_funcs", reward_funcs, "--output_dir", str(run), *FLAGS]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=cli_env({"SEEN": str(tmp_path / "seen.json")}))
    sealed = run / "checkpoints" / "checkpoint-2" / "tunestack_complete.json"
    deadline = time.time() + 300
    while not sealed.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert sealed.exists() and not (run / "final").exists(), "the kill must land between step 2 and the end"
    assert json.loads((run / "run.json").read_text())["status"] == "running"

    cli("grpo", "--output_dir", str(run), "--resume", env={"SEEN": str(tmp_path / "seen.json")})
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    expected, resumed = by_step(reference), by_step(run)
    assert sorted(resumed) == sorted(expected) == [1, 2, 3, 4]
    for step in expected:
        assert resumed[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-7), f"step {step}"


@pytest.mark.parametrize("method", ["grpo", "rloo"])
def test_sampling_over_a_bf16_base_trains(method, setup, tiny_model_dir, tmp_path):
    """The trainer samples outside autocast: peft must keep casting activations to the fp32 adapter there."""
    _, data, _, _ = setup
    run = tmp_path / method
    cli(method, "--model", str(tiny_model_dir), "--dataset", str(data), "--reward_funcs", "accuracy",
        "--output_dir", str(run), "--dtype", "bf16", "--max_steps", "2", *FLAGS[2:])
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["status"] == "completed" and manifest["precision"] == "bf16"
    assert [m["step"] for m in metrics(run) if "loss" in m] == [1, 2]


def reward_model_dir(tiny_model_dir, path):
    """A sequence-classification checkpoint with one output on the tiny model's tokenizer: a reward model."""
    from transformers import AutoConfig, AutoTokenizer, LlamaForSequenceClassification

    config = AutoConfig.from_pretrained(tiny_model_dir, num_labels=1)
    LlamaForSequenceClassification(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(path)
    return path


def test_rloo_trains_with_a_built_in_a_user_function_and_a_reward_model(setup, tiny_model_dir, tmp_path):
    root, data, _, _ = setup
    scorer = reward_model_dir(tiny_model_dir, tmp_path / "scorer")
    run = tmp_path / "rloo"
    cli("rloo", "--model", str(tiny_model_dir), "--dataset", str(data), "--reward_funcs",
        f"json,{root / 'mine.py'}:short,{scorer}", "--reward_weights", "1,1,0.5", "--output_dir", str(run), *FLAGS,
        "--max_steps", "2", env={"SEEN": str(tmp_path / "seen.json")})
    logged = [m for m in metrics(run) if "loss" in m]
    assert [m["step"] for m in logged] == [1, 2] and all(math.isfinite(m["loss"]) for m in logged)
    for m in logged:
        assert {"rewards/json/mean", "rewards/short/std", "rewards/scorer/mean", "reward", "kl"} <= set(m)
        assert m["rewards/scorer/std"] > 0  # the reward model scored each completion
        weighted = m["rewards/json/mean"] + m["rewards/short/mean"] + 0.5 * m["rewards/scorer/mean"]
        assert m["reward"] == pytest.approx(weighted, abs=1e-5)
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    assert sorted(p.name for p in (run / "final").glob("adapter_*")) == ["adapter_config.json",
                                                                        "adapter_model.safetensors"]


def test_a_failing_reward_function_stops_the_run_with_one_line(setup, tiny_model_dir, tmp_path):
    root, data, _, _ = setup
    run = tmp_path / "run"
    result = cli("grpo", "--model", str(tiny_model_dir), "--dataset", str(data), "--reward_funcs",
                 f"{root / 'mine.py'}:fails_on_sums", "--output_dir", str(run), *FLAGS, check=False)
    assert result.returncode == 2
    assert error_line(result).startswith("tunestack grpo: error: reward function fails_on_sums raised ValueError: "
                                         f"no sums (on {data}, line ")
    assert json.loads((run / "run.json").read_text())["status"] == "failed"


def test_flag_problems_are_reported_together_before_a_model_loads(setup, tmp_path):
    _, data, _, _ = setup
    result = cli("grpo", "--model", str(tmp_path / "no-model"), "--dataset", str(data), "--reward_funcs",
                 "accurracy,length", "--num_generations", "3", "--use_vllm", "--vllm_server_url", "http://x:8000",
                 check=False)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-6:] == [
        "tunestack grpo: 5 problems:",
        "  --reward_funcs accurracy: not a built-in (accuracy, boxed, json, length, format), a PATH.py:FUNCTION or a "
        "reward-model run directory",
        "  --reward_funcs length: needs --length_target (the completion length, in tokens, it rewards)",
        "  --num_generations 3: a step's completions (--per_device_train_batch_size 4 x --gradient_accumulation_steps "
        "1 = 4) must be a multiple of it; e.g. --per_device_train_batch_size 3",
        "  --use_vllm: vLLM is not installed: pip install 'tunestack[vllm]' (on a machine with a GPU)",
        "  --vllm_server_url: used only with --use_vllm --vllm_mode server; add them or drop the URL",
    ]


def test_a_prompt_without_gold_answer_is_named_before_a_model_loads(tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", [{"prompt": "What is 1 + 1?", "answer": 2}, {"prompt": "2 + 2?"}])
    result = cli("rloo", "--model", str(tmp_path / "no-model"), "--dataset", str(data), "--reward_funcs", "accuracy",
                 check=False)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (f'tunestack rloo: error: {data}, line 2: no gold answer (an "answer" '
                                              'or "solution" field); --reward_funcs accuracy compares each completion '
                                              "with it")


def test_reference_log_probabilities_are_the_policy_with_its_adapter_disabled(tiny_model_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from tunestack.config import DataArgs, GrpoArgs, ModelArgs, TrainArgs, TunerArgs
    from tunestack.run import RunDir
    from tunestack.train.grpo import GRPO
    from tunestack.train.lifecycle import build_trainer

    data = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    trainer = build_trainer(GRPO, ModelArgs(model=str(tiny_model_dir), dtype="fp32"), DataArgs(dataset=[str(data)]),
                            TunerArgs(), TrainArgs(output_dir=str(tmp_path / "run"), max_steps=1),
                            RunDir(tmp_path / "run"), GrpoArgs(reward_funcs=["accuracy"], beta=0.1,
                                                               max_completion_length=6, temperature=0.7))
    policy = trainer.model
    assert list(policy.peft_config) == ["default"]  # no copy of the adapter kept as the reference
    torch.manual_seed(0)
    with torch.no_grad():  # an adapter that changes the output, so the policy is not the base
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    policy.train()
    batch = trainer._generate_and_score_completions([trainer.train_dataset[0]] * 4)

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    with torch.no_grad():
        logits = base(input_ids=ids, attention_mask=mask).logits / 0.7  # TRL scores at the sampling temperature
    width = batch["completion_ids"].shape[1]
    expected = logits[:, -width - 1:-1].log_softmax(-1).gather(-1, batch["completion_ids"].unsqueeze(-1)).squeeze(-1)
    kept = batch["completion_mask"].bool()
    assert torch.allclose(batch["ref_per_token_logps"][kept], expected[kept], atol=1e-4)
    with torch.no_grad(), policy.disable_adapter():
        assert torch.allclose(policy(input_ids=ids, attention_mask=mask).logits, logits * 0.7, atol=1e-4)
    with torch.no_grad():  # while the policy itself differs from its reference
        assert not torch.allclose(policy(input_ids=ids, attention_mask=mask).logits, logits * 0.7, atol=1e-2)
