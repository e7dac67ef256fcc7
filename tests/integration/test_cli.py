"""The real `tunestack` CLI in a subprocess: help, errors, a tiny fine-tune and chatting with its result."""

import json
import subprocess
import sys

import pytest

from helpers import CHAT_ROWS, cli, cli_env, write_jsonl
from tunestack.model.attention import flash_from

TRAIN = ["--per_device_train_batch_size", "4", "--logging_steps", "1", "--learning_rate", "1e-2"]


def test_help_lists_commands_without_importing_torch():
    code = "import sys; from tunestack.cli import main; main(['--help']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=cli_env()).stdout
    assert "sft" in out and "infer" in out and out.strip().endswith("False")
    assert "--lora_rank" in cli("sft", "--help").stdout


def test_bad_flags_are_all_reported_at_once_without_a_traceback():
    result = cli("sft", "--dataset", "x.jsonl", "--learning_rate", "fast", "--tuner", "lorax", "--max_steps",
                 "1.5", "--lora_rnak", "3", check=False)
    assert result.returncode == 2
    assert "4 problems" in result.stderr and "Traceback" not in result.stderr
    for text in ("--learning_rate", "--tuner", "--max_steps", "did you mean --lora_rank"):
        assert text in result.stderr


def test_cross_field_problems_are_all_reported(tmp_path, chat_file):
    result = cli("sft", "--dataset", str(chat_file), "--val_ratio", "1.5", "--lora_rank", "0", check=False)
    assert result.returncode == 2
    assert "--val_ratio" in result.stderr and "--lora_rank" in result.stderr and "Traceback" not in result.stderr


def test_bad_row_is_named_before_any_model_loads(tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", [json.dumps(CHAT_ROWS[0]), json.dumps(CHAT_ROWS[1]), '{"prompt": 1}'])
    result = cli("sft", "--model", "no/such-model", "--dataset", str(data), check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "data.jsonl, line 3" in result.stderr
    missing = cli("sft", "--model", "no/such-model", "--dataset", str(tmp_path / "nope.jsonl"), check=False)
    assert missing.returncode == 2 and "nope.jsonl" in missing.stderr and "Traceback" not in missing.stderr


def test_unknown_model_is_one_line_with_what_was_tried(chat_file):
    result = cli("sft", "--model", "no-such-org/no-such-model", "--dataset", str(chat_file), check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(error) == 1 and "no-such-org/no-such-model" in error[0]


@pytest.fixture(scope="module")
def trained_run(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-run")
    data = write_jsonl(root / "chat.jsonl", CHAT_ROWS)
    run = root / "run"
    cli("sft", "--model", str(tiny_model_dir), "--dataset", str(data), "--output_dir", str(run), "--max_steps", "8",
        "--save_steps", "4", "--val_ratio", "0.125", "--eval_steps", "4", *TRAIN)
    return run


def test_run_directory_holds_everything(trained_run):
    manifest = json.loads((trained_run / "run.json").read_text())
    assert manifest["status"] == "completed" and manifest["tuner"] == "lora"
    assert manifest["base_model_fingerprint"] and manifest["versions"]["transformers"]
    startup = manifest["startup_seconds"]  # process start to the first step, where it went
    assert startup["imports"] > 0 and startup["model"] > 0 and startup["data"] >= 0
    assert startup["total"] == pytest.approx(startup["imports"] + startup["data"] + startup["model"], abs=0.05)
    # Chosen for a CPU and short unpacked rows of a Llama: each micro-batch's rows joined without padding, attended
    # per example, the output head only on the target tokens, and the LoRA-adapted MLPs, the other LoRA layers and
    # the RMSNorms fused.
    assert manifest["config"]["data"]["padding_free"] is True
    flash = flash_from(4 if manifest["precision"] == "fp32" else 2)  # long examples: sdpa's kernel
    assert manifest["kernels"] == {
        "attention": "tunestack_packed", "liger": False, "torch_compile": False,
        "output_head": "target tokens, in chunks of 1024 where their logits pass 256 MB",
        "mlp": "fused LoRA SwiGLU in 2 layers (activation recomputed in the backward pass)",
        "lora": "adapter terms accumulated into the matrix products in 8 other layers",
        "rmsnorm": "fused RMSNorm in 5 places",
        "attention_groups": f"examples under {flash} tokens: grouped operations; from {flash} tokens: sdpa's causal "
                            "kernel"}
    metrics = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    train = [m for m in metrics if "loss" in m]
    assert [m["step"] for m in train] == list(range(1, 9))
    assert all(m["tokens_per_s"] > 0 and m["memory_mb"] > 0 for m in train[1:])
    assert any("eval_loss" in m for m in metrics)
    assert train[-1]["loss"] < train[0]["loss"]
    assert (trained_run / "final" / "adapter_config.json").is_file()
    assert (trained_run / "final" / "tokenizer_config.json").is_file()
    assert (trained_run / "loss.png").stat().st_size > 1000
    assert list((trained_run / "tensorboard").glob("events.out.tfevents.*"))
    assert [p.name for p in (trained_run / "checkpoints").iterdir()] == ["checkpoint-8", "checkpoint-4"] or \
        sorted(p.name for p in (trained_run / "checkpoints").iterdir()) == ["checkpoint-4", "checkpoint-8"]


@pytest.fixture(scope="module")
def reference(trained_run, tiny_model_dir):
    """The trained run as plain transformers and peft load it, with its tokenizer."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    return PeftModel.from_pretrained(base, trained_run / "final").eval(), AutoTokenizer.from_pretrained(
        trained_run / "final")


def greedy(reference, messages: list[dict], max_new_tokens: int) -> str:
    """What `model.generate` answers greedily to `messages`, decoded as the CLI prints it."""
    model, tokenizer = reference
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def test_infer_prompt_prints_only_the_answer_equal_to_plain_generate(trained_run, reference):
    result = cli("infer", "--model", str(trained_run), "--prompt", "What is 3 + 4?", "--max_new_tokens", "12",
                 "--dtype", "fp32")
    assert result.stdout == greedy(reference, [{"role": "user", "content": "What is 3 + 4?"}], 12) + "\n"


@pytest.fixture(scope="module")
def base_reference(tiny_model_dir):
    """The random base model, whose greedy answers differ from prompt to prompt, with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def test_infer_answers_a_file_each_prompt_as_plain_generate_does(tiny_model_dir, base_reference, tmp_path):
    rows = [{"prompt": "The quick brown fox"}, CHAT_ROWS[5], {"query": "hello"}, {"instruction": "Who made you?"}]
    asked = [[{"role": "user", "content": "The quick brown fox"}], CHAT_ROWS[5]["messages"][:1],
             [{"role": "user", "content": "hello"}], [{"role": "user", "content": "Who made you?"}]]
    out = tmp_path / "out.jsonl"
    cli("infer", "--model", str(tiny_model_dir), "--input", str(write_jsonl(tmp_path / "in.jsonl", rows)),
        "--output", str(out), "--max_new_tokens", "8", "--dtype", "fp32", "--batch_size", "3")
    answered = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["messages"] for row in answered] == asked
    expected = [greedy(base_reference, messages, 8) for messages in asked]
    assert [row["response"] for row in answered] == expected
    assert len(set(expected)) == len(expected)  # so an answer written beside another prompt would show


def test_interactive_chat_streams_multi_turn_and_remembers_the_first_turn(tiny_model_dir, base_reference):
    """On the random base model, whose answers depend on every token before them."""
    model = base_reference
    first, second = "What is 1 + 2?", "And 2 + 2?"
    proc = cli("infer", "--model", str(tiny_model_dir), "--max_new_tokens", "8", "--dtype", "fp32",
               input=f"{first}\n{second}\n/exit\n", timeout=300)
    answers = [part.split("\n")[0].strip() for part in proc.stdout.split("assistant> ")[1:]]
    history = [{"role": "user", "content": first}]
    assert len(answers) == 2 and answers[0] == greedy(model, history, 8)
    history += [{"role": "assistant", "content": answers[0]}, {"role": "user", "content": second}]
    assert answers[1] == greedy(model, history, 8)  # the second turn is answered with the first in its prompt
    assert answers[1] != greedy(model, history[-1:], 8)  # ... which changes the answer


def probe_logits(model):
    import torch

    with torch.no_grad():
        return model(input_ids=torch.arange(3, 40).unsqueeze(0)).logits


def with_adapter(base_dir, adapter_dir):
    """The base in fp32 with `adapter_dir` loaded by plain peft (which fails on a malformed adapter)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    return PeftModel.from_pretrained(base, adapter_dir).eval()


def test_full_fine_tune_and_pretraining(tiny_model_dir, base_reference, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    data = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    full = tmp_path / "full"
    cli("sft", "--model", str(tiny_model_dir), "--dataset", str(data), "--output_dir", str(full), "--tuner", "full",
        "--max_steps", "3", "--packing", *TRAIN)
    assert (full / "final" / "config.json").is_file() and not (full / "final" / "adapter_config.json").exists()
    tuned = AutoModelForCausalLM.from_pretrained(full / "final", dtype=torch.float32).eval()
    assert not torch.allclose(probe_logits(tuned), probe_logits(base_reference[0]), atol=1e-3)
    answer = cli("infer", "--model", str(full), "--prompt", "hi", "--max_new_tokens", "4", "--dtype", "fp32").stdout
    assert answer == greedy((tuned, base_reference[1]), [{"role": "user", "content": "hi"}], 4) + "\n"
    text = tmp_path / "corpus.txt"
    text.write_text("The quick brown fox jumps over the lazy dog.\nWhat is your name?\n" * 10)
    pt = tmp_path / "pt"
    cli("pt", "--model", str(tiny_model_dir), "--dataset", str(text), "--output_dir", str(pt), "--max_steps", "2",
        *TRAIN)
    assert json.loads((pt / "run.json").read_text())["command"] == "pt"
    losses = [json.loads(line)["loss"] for line in (pt / "metrics.jsonl").read_text().splitlines() if "loss" in line]
    assert len(losses) == 2 and all(loss > 0 for loss in losses)
    pretrained = probe_logits(with_adapter(tiny_model_dir, pt / "final"))
    assert not torch.allclose(pretrained, probe_logits(base_reference[0]), atol=1e-3)  # final/ moved off the base


@pytest.mark.parametrize("flags", [["--tuner", "dora", "--gradient_checkpointing"], ["--tuner", "qlora"]],
                         ids=["dora-checkpointing", "qlora"])
def test_other_tuners_train_and_chat(tiny_model_dir, base_reference, tmp_path, flags):
    import torch

    if "qlora" in flags:
        pytest.importorskip("bitsandbytes", reason="QLoRA needs bitsandbytes")
    data = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    run = tmp_path / "run"
    cli("sft", "--model", str(tiny_model_dir), "--dataset", str(data), "--output_dir", str(run), "--max_steps", "3",
        *flags, *TRAIN)
    config = json.loads((run / "final" / "adapter_config.json").read_text())
    assert config["use_dora"] == ("dora" in flags)
    tuned = probe_logits(with_adapter(tiny_model_dir, run / "final"))  # a plain peft adapter for the fp32 base
    assert not torch.allclose(tuned, probe_logits(base_reference[0]), atol=1e-3)  # ... that changes its logits
    answer = cli("infer", "--model", str(run), "--prompt", "hi", "--max_new_tokens", "3").stdout
    assert answer.strip(), "infer printed no answer"
