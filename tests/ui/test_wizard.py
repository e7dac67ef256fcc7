"""`tunestack wizard` driven through a pseudo-terminal: arrow keys, numbers, typed values, q, errors that re-ask; and
`--yes` end to end on the tiny model."""

from __future__ import annotations

import json
import sys

import pytest

from helpers import CHAT_ROWS, cli, cli_env, write_jsonl

pexpect = pytest.importorskip("pexpect")

DOWN, ENTER = "\x1b[B", "\r"


def spawn(*args: str, cwd, timeout: float = 240):
    return pexpect.spawn(sys.executable, ["-m", "tunestack", "wizard", *args], env=cli_env(), cwd=str(cwd),
                         encoding="utf-8", codec_errors="replace", timeout=timeout, dimensions=(40, 160))


def answer(child, prompt: str, keys: str) -> None:
    child.expect_exact(prompt)
    child.send(keys)


def status(run) -> str:
    return json.loads((run / "run.json").read_text())["status"]


def test_menus_train_and_chat_on_a_tiny_model(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "What is 2 + 3?"}])
    child = spawn("--max_new_tokens", "16", cwd=tmp_path)
    answer(child, "Model", DOWN + ENTER)  # the option below the embedded default: type a model
    answer(child, "model (path or hub id)", "/no/such/model" + ENTER)
    child.expect_exact("error: model '/no/such/model': no such file or directory")
    answer(child, "model (path or hub id)", "q" + ENTER)  # back to the menu
    answer(child, "Model", "2" + ENTER)
    answer(child, "model (path or hub id)", f"{tiny_model_dir}{ENTER}")
    answer(child, "Training", ENTER)
    answer(child, "Tuner", "q")  # back one question
    answer(child, "Training", ENTER)
    answer(child, "Tuner", ENTER)
    answer(child, "Data set", "3" + ENTER)
    answer(child, "data file, folder or hub id", f"{prompts}{ENTER}")
    child.expect_exact("error: ")  # prompt-only rows are grpo data, and the CLI's own message says so
    child.expect_exact("grpo")
    answer(child, "data file, folder or hub id", f"{data}{ENTER}")
    answer(child, "max steps", "2" + ENTER)
    answer(child, "learning rate", ENTER)
    answer(child, "batch size", ENTER)
    answer(child, "more flags", "--lora_rnk 4" + ENTER)
    child.expect_exact("error: --lora_rnk: unknown flag (did you mean --lora_rank?)")
    answer(child, "more flags", "--lora_rank 4" + ENTER)
    answer(child, "output folder", "out" + ENTER)
    child.expect_exact(f"tunestack sft --model {tiny_model_dir} --dataset {data} --tuner lora --max_steps 2 "
                       "--lora_rank 4 --output_dir out/run")
    child.expect_exact("memory estimate: ")
    answer(child, "Start training?", ENTER)
    answer(child, "What next", ENTER)  # chat: one prompt
    answer(child, "prompt", "What is 2 + 3?" + ENTER)
    child.expect_exact("--max_new_tokens 16 --prompt 'What is 2 + 3?'")
    child.expect(r"done in \d+ s")
    chat_answer = child.before.replace("\r\n", "\n").strip()
    answer(child, "What next", "q")
    child.expect_exact("bye")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0

    run = tmp_path / "out" / "run"
    assert status(run) == "completed" and (run / "wizard.log").is_file()
    reference = cli("infer", "--model", str(run), "--prompt", "What is 2 + 3?", "--temperature", "0",
                    "--max_new_tokens", "16")
    assert chat_answer == reference.stdout.strip()


def test_yes_trains_evaluates_and_exports_unattended(tiny_model_dir, tmp_path):
    quiz = write_jsonl(tmp_path / "quiz.jsonl", [
        {"question": "What is your name?", "choices": ["Nova", "Rex"], "answer": "A"},
        {"question": "Who made you?", "choices": ["Acme Labs", "Nobody"], "answer": "A"},
    ])
    child = spawn("--yes", "--model", str(tiny_model_dir), "--output_dir", "D", "--max_steps", "3",
                  "--tasks", f"custom_mcq:{quiz}", cwd=tmp_path)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before[-3000:]
    out = tmp_path / "D"
    assert status(out / "run") == "completed"
    assert json.loads((out / "eval" / "report.json").read_text())["tasks"]["custom_mcq:quiz"]["n"] == 2
    assert {"config.json", "model.safetensors"} <= {p.name for p in (out / "export").iterdir()}
    manifest = json.loads((out / "run" / "run.json").read_text())
    assert manifest["config"]["data"]["model_name"] == "Nova"


def test_q_at_the_first_question_quits_and_piped_answers_use_numbers(tmp_path):
    result = cli("wizard", input="q\n")
    assert "number (q: back)" in result.stdout and result.stdout.rstrip().endswith("bye")


def test_the_method_choices_are_the_training_commands():
    from tunestack.cli.commands import COMMANDS
    from tunestack.config.wizard import WIZARD_METHODS

    assert list(WIZARD_METHODS) == [name for name, command in COMMANDS.items() if command.training]
