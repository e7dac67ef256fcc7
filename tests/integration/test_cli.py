"""The real `tunestack` CLI in a subprocess: help, errors, a tiny fine-tune and chatting with its result."""

import json
import subprocess
import sys

import pytest

from helpers import CHAT_ROWS, cli, write_jsonl

TRAIN = ["--per_device_train_batch_size", "4", "--logging_steps", "1", "--learning_rate", "1e-2"]


def test_help_lists_commands_without_importing_torch():
    code = "import sys; from tunestack.cli import main; main(['--help']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
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


def test_infer_prompt_prints_only_the_answer_equal_to_plain_generate(trained_run, tiny_model_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = cli("infer", "--model", str(trained_run), "--prompt", "What is 3 + 4?", "--max_new_tokens", "12",
                 "--dtype", "fp32")
    tokenizer = AutoTokenizer.from_pretrained(trained_run / "final")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, trained_run / "final").eval()
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "What is 3 + 4?"}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    expected = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    assert result.stdout == expected + "\n"


def test_infer_answers_a_file(trained_run, tmp_path):
    prompts = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "What is 1 + 2?"}, CHAT_ROWS[5], {"query": "hello"}])
    out = tmp_path / "out.jsonl"
    cli("infer", "--model", str(trained_run), "--input", str(prompts), "--output", str(out), "--max_new_tokens", "8")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3 and all(isinstance(r["response"], str) for r in rows)
    assert rows[1]["messages"] == CHAT_ROWS[5]["messages"][:1]


def test_interactive_chat_streams_multi_turn(trained_run):
    proc = subprocess.run([sys.executable, "-m", "tunestack", "infer", "--model", str(trained_run),
                           "--max_new_tokens", "6"], input="What is 1 + 2?\nAnd 2 + 2?\n/exit\n",
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("assistant> ") == 2


def test_full_fine_tune_and_pretraining(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    full = tmp_path / "full"
    cli("sft", "--model", str(tiny_model_dir), "--dataset", str(data), "--output_dir", str(full), "--tuner", "full",
        "--max_steps", "3", "--packing", *TRAIN)
    assert (full / "final" / "config.json").is_file() and not (full / "final" / "adapter_config.json").exists()
    assert cli("infer", "--model", str(full), "--prompt", "hi", "--max_new_tokens", "4").returncode == 0
    text = tmp_path / "corpus.txt"
    text.write_text("The quick brown fox jumps over the lazy dog.\nWhat is your name?\n" * 10)
    pt = tmp_path / "pt"
    cli("pt", "--model", str(tiny_model_dir), "--dataset", str(text), "--output_dir", str(pt), "--max_steps", "2",
        *TRAIN)
    assert json.loads((pt / "run.json").read_text())["command"] == "pt"


@pytest.mark.parametrize("flags", [["--tuner", "dora", "--gradient_checkpointing"], ["--tuner", "qlora"]],
                         ids=["dora-checkpointing", "qlora"])
def test_other_tuners_train_and_chat(tiny_model_dir, tmp_path, flags):
    if "qlora" in flags:
        pytest.importorskip("bitsandbytes", reason="QLoRA needs bitsandbytes")
    data = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    run = tmp_path / "run"
    cli("sft", "--model", str(tiny_model_dir), "--dataset", str(data), "--output_dir", str(run), "--max_steps", "3",
        *flags, *TRAIN)
    config = json.loads((run / "final" / "adapter_config.json").read_text())
    assert config["use_dora"] == ("dora" in flags)
    assert cli("infer", "--model", str(run), "--prompt", "hi", "--max_new_tokens", "3").returncode == 0
