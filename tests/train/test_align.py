"""dpo, kto, orpo, simpo and cpo on the tiny model: through the real CLI the loss falls, only the adapter trains and
each method's figures reach metrics.jsonl; built in-process, the flags reach TRL and DPO's reference is the policy
with its adapter disabled (or the model --ref_model names), and kill -9 then --resume continues exactly."""

import hashlib
import json
import math
import signal
import subprocess
import sys
import time

import pytest
import torch

from helpers import KTO_ROWS, PREFERENCE_ROWS, build_model, build_tokenizer, cli, cli_env, method_trainer, write_jsonl

STEPS = ["--max_steps", "8", "--save_steps", "3", "--logging_steps", "1", "--per_device_train_batch_size", "4",
         "--max_length", "64", "--seed", "7"]
REWARDS = ["rewards/chosen", "rewards/rejected", "rewards/margins"]
RUNS = {  # name: (command, flags, figures every logged step carries, figures that rise from the first step)
    "dpo": ("dpo", ["--learning_rate", "5e-3"], REWARDS + ["rewards/accuracies"], ["rewards/margins"]),
    "dpo-full": ("dpo", ["--tuner", "full", "--learning_rate", "1e-3"], REWARDS + ["rewards/accuracies"],
                 ["rewards/margins"]),
    "kto": ("kto", ["--learning_rate", "5e-3"], REWARDS + ["kl"], ["rewards/margins"]),
    "orpo": ("orpo", ["--learning_rate", "5e-3"], REWARDS + ["rewards/accuracies", "log_odds_ratio", "nll_loss"],
             ["rewards/margins"]),
    "simpo": ("simpo", ["--learning_rate", "5e-3"], REWARDS + ["rewards/accuracies"], ["rewards/margins"]),
    "cpo": ("cpo", ["--learning_rate", "5e-3"], REWARDS + ["rewards/accuracies", "nll_loss"], []),
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("align-data")
    return {"preference": write_jsonl(root / "pairs.jsonl", PREFERENCE_ROWS),
            "kto": write_jsonl(root / "kto.jsonl", KTO_ROWS)}


def command_line(name: str, model, data, run) -> list[str]:
    command, flags, _, _ = RUNS[name]
    dataset = data["kto" if command == "kto" else "preference"]
    return [command, "--model", str(model), "--dataset", str(dataset), "--output_dir", str(run), *STEPS, *flags]


@pytest.fixture(scope="module")
def trained(tiny_model_dir, data, tmp_path_factory):
    """Each method's run, trained once through the CLI when a test first asks for it."""
    runs = {}

    def train(name):
        if name not in runs:
            runs[name] = tmp_path_factory.mktemp("align") / name
            cli(*command_line(name, tiny_model_dir, data, runs[name]))
        return runs[name]

    return train


def logged(run) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [row for row in rows if "loss" in row]


def tensors(path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def digest(folder) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file())).hexdigest()


@pytest.mark.parametrize("name", list(RUNS))
def test_method_learns_and_trains_only_what_it_should(name, trained, tiny_model_dir):
    base = digest(tiny_model_dir)
    run = trained(name)
    command, flags, figures, rising = RUNS[name]
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["status"] == "completed" and manifest["command"] == command
    assert manifest["kernels"]["output_head"] == "every position"  # TRL's trainers compute the head everywhere
    assert manifest["kernels"]["attention"] in ("tunestack_eager", "sdpa")
    steps = logged(run)
    assert [s["step"] for s in steps] == list(range(1, 9))
    losses = [s["loss"] for s in steps]
    assert all(math.isfinite(loss) for loss in losses)
    assert max(losses[-2:]) < 0.97 * losses[0], losses
    for figure in figures:
        assert all(math.isfinite(s[figure]) for s in steps), figure
    for figure in rising:
        assert steps[-1][figure] > steps[0][figure] + 0.01, (figure, [s[figure] for s in steps])
    assert digest(tiny_model_dir) == base
    if "full" in flags:
        start, final = tensors(tiny_model_dir / "model.safetensors"), tensors(run / "final" / "model.safetensors")
        unchanged = [key for key in start if torch.equal(start[key], final[key]) and "norm" not in key]
        assert not unchanged, unchanged
        return
    adapter = tensors(run / "final" / "adapter_model.safetensors")
    assert adapter and all(".lora_A." in key or ".lora_B." in key for key in adapter)
    untrained = [key for key, value in adapter.items() if ".lora_B." in key and not value.abs().sum() > 0]
    assert not untrained, untrained  # lora_B starts at zero: each one moved
    assert not (run / "final" / "ref").exists()  # no copy of the adapter as a reference


KNOBS = [  # command, flags, what the TRL trainer holds
    ("dpo", ["--loss_type", "ipo,hinge", "--beta", "0.1"], {"loss_types": ["ipo", "hinge"], "beta": 0.1}),
    ("dpo", ["--rpo_alpha", "0.5", "--label_smoothing", "0.2"],
     {"loss_types": ["sigmoid", "sft"], "loss_weights": [1.0, 0.5], "label_smoothing": 0.2}),
    ("kto", ["--desirable_weight", "1.5", "--undesirable_weight", "0.5", "--beta", "0.2"],
     {"desirable_weight": 1.5, "undesirable_weight": 0.5, "beta": 0.2}),
    ("orpo", ["--beta", "0.25"], {"beta": 0.25}),
    ("simpo", ["--simpo_gamma", "0.7", "--cpo_alpha", "0.2", "--beta", "2.5"],
     {"loss_type": "simpo", "simpo_gamma": 0.7, "cpo_alpha": 0.2, "beta": 2.5}),
    ("cpo", ["--loss_type", "hinge", "--cpo_alpha", "0.4", "--label_smoothing", "0.1"],
     {"loss_type": "hinge", "cpo_alpha": 0.4, "label_smoothing": 0.1}),
]


@pytest.mark.parametrize("command,flags,expected", KNOBS, ids=[f"{k[0]}-{k[1][1]}" for k in KNOBS])
def test_flags_reach_the_trainer(command, flags, expected, tiny_model_dir, data, tmp_path):
    dataset = data["kto" if command == "kto" else "preference"]
    trainer = method_trainer(command, ["--model", str(tiny_model_dir), "--dataset", str(dataset), *flags],
                             tmp_path / "run")
    assert {key: getattr(trainer, key) for key in expected} == expected
    if expected.get("loss_types") == ["ipo", "hinge"]:
        # Observable too: with the policy equal to its reference, IPO's loss is (1 / 2 beta)^2 and hinge's is 1.
        batch = next(iter(trainer.get_train_dataloader()))
        with torch.no_grad():
            assert trainer.compute_loss(trainer.model, batch).item() == pytest.approx(25 + 1, rel=1e-5)


def completion_logps(model, batch) -> torch.Tensor:
    """Sum of each sequence's completion-token log-probabilities, by plain transformers: the check on TRL."""
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    targets = batch["input_ids"][:, 1:]
    per_token = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (per_token * batch["completion_mask"][:, 1:]).sum(dim=1)


def dpo_loss(policy: torch.Tensor, reference: torch.Tensor, beta: float) -> torch.Tensor:
    """The sigmoid DPO loss of a [chosen..., rejected...] batch from its policy and reference log-probabilities."""
    chosen, rejected = (policy - reference).chunk(2)
    return -torch.nn.functional.logsigmoid(beta * (chosen - rejected)).mean()


def check_reference(trainer, reference_model):
    """TRL's reference log-probabilities, and the loss it trains on, equal those computed with `reference_model`."""
    torch.manual_seed(0)
    for name, parameter in trainer.model.named_parameters():  # a trained adapter: not zero any more
        if ".lora_B." in name:
            parameter.data.normal_(0, 0.05)
    trainer.model.eval()
    batch = next(iter(trainer.get_train_dataloader()))
    expected = completion_logps(reference_model, batch)
    found = torch.cat(trainer.compute_ref_log_probs(trainer.ref_model or trainer.model, batch))
    assert torch.allclose(found, expected, atol=1e-4), (found, expected)
    policy = completion_logps(trainer.model, batch)
    assert (policy - expected).abs().max() > 0.1  # the adapter changes the policy: the check can fail
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)
    assert loss.item() == pytest.approx(dpo_loss(policy, expected, trainer.beta).item(), abs=1e-5)


def test_dpo_reference_is_the_policy_with_its_adapter_disabled(tiny_model_dir, data, tmp_path):
    from transformers import AutoModelForCausalLM

    # fp32: the check is exact; on a CPU with AMX --dtype auto would hold the frozen base in bf16
    trainer = method_trainer("dpo", ["--model", str(tiny_model_dir), "--dataset", str(data["preference"]),
                                     "--dtype", "fp32"], tmp_path / "run")
    assert trainer.ref_model is None and list(trainer.model.peft_config) == ["default"]  # no second copy
    assert "quick_disable_adapter" in trainer.model.disable_adapter.__qualname__  # what the check below goes through
    check_reference(trainer, AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval())


@pytest.mark.parametrize("dora", [False, True], ids=["lora", "dora"])
def test_quick_disable_adapter_gives_peft_s_own_reference(tiny_model, dora):
    from peft import LoraConfig, get_peft_model

    from tunestack.train.policy import quick_disable_adapter

    model = get_peft_model(tiny_model, LoraConfig(r=4, target_modules="all-linear", use_dora=dora,
                                                  modules_to_save=["lm_head"]))
    torch.manual_seed(0)
    for name, parameter in model.named_parameters():
        if ".lora_B." in name or "modules_to_save" in name:
            parameter.data.normal_(0, 0.05)
    ids = torch.tensor([[1, 5, 9, 14, 3, 7]])
    with torch.no_grad():
        adapted = model(input_ids=ids).logits
        with model.disable_adapter():  # PEFT's own
            expected = model(input_ids=ids).logits
    grads = {name: p.requires_grad for name, p in model.named_parameters()}
    quick_disable_adapter(model)
    with torch.no_grad():
        with model.disable_adapter():
            assert torch.equal(model(input_ids=ids).logits, expected)
        assert torch.equal(model(input_ids=ids).logits, adapted)
        with pytest.raises(RuntimeError), model.disable_adapter():
            raise RuntimeError("in the reference forward")
        assert torch.equal(model(input_ids=ids).logits, adapted)  # enabled again after the error
    assert not torch.equal(adapted, expected)  # the adapter matters: the checks above can fail
    assert {name: p.requires_grad for name, p in model.named_parameters()} == grads


@pytest.fixture(scope="module")
def other_model(tmp_path_factory):
    """Another tiny model with the same tokenizer (different weights), to serve as --ref_model."""
    path = tmp_path_factory.mktemp("other-model")
    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(path)
    build_model(tokenizer, seed=1).save_pretrained(path)
    return path


def test_dpo_ref_model_loads_the_named_model(tiny_model_dir, other_model, data, tmp_path):
    from transformers import AutoModelForCausalLM

    trainer = method_trainer("dpo", ["--model", str(tiny_model_dir), "--dataset", str(data["preference"]),
                                     "--ref_model", str(other_model), "--dtype", "fp32"], tmp_path / "run")
    assert trainer.ref_model is not None
    check_reference(trainer, AutoModelForCausalLM.from_pretrained(other_model, dtype=torch.float32).eval())


def test_kill_then_resume_continues_dpo_exactly(trained, tiny_model_dir, data, tmp_path):
    reference = trained("dpo")
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "tunestack", *command_line("dpo", tiny_model_dir, data, run)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=cli_env())
    sealed = run / "checkpoints" / "checkpoint-3" / "tunestack_complete.json"
    deadline = time.time() + 300
    while not sealed.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert sealed.exists() and not (run / "final").exists()  # the kill landed mid-training
    assert max(s["step"] for s in logged(run)) < 8
    cli("dpo", "--output_dir", str(run), "--resume")
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    expected, resumed = logged(reference), logged(run)
    assert [s["step"] for s in resumed] == [s["step"] for s in expected]
    skip = {"tokens_per_s", "memory_mb", "epoch"}
    for want, got in zip(expected, resumed):
        for key in set(want) - skip:
            assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-5), (want["step"], key)
    want, got = (tensors(r / "final" / "adapter_model.safetensors") for r in (reference, run))
    assert want.keys() == got.keys() and all(torch.allclose(want[k], got[k], atol=1e-6) for k in want)
