"""The Train tab's logic without a browser: the command a form stands for, the checks that put each problem next
to its field, the data preview's loss marks, and where a failed run's last error goes."""

from __future__ import annotations

import pytest

from helpers import CHAT_ROWS, PREFERENCE_ROWS, write_jsonl
from tunestack.ui.context import UiContext
from tunestack.ui.train_actions import failure_problems
from tunestack.ui.train_checks import check
from tunestack.ui.train_form import build_argv, form_values, help_text, resume_argv


@pytest.fixture()
def ctx(tmp_path, monkeypatch, tiny_model_dir):
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    write_jsonl(tmp_path / "pref.jsonl", PREFERENCE_ROWS)
    return UiContext(runs_root=tmp_path / "runs", allowed_paths=[tmp_path, tiny_model_dir])


def test_the_command_leaves_out_defaults_and_keeps_what_it_trains_on():
    values = {"model": "smollm2-135m-instruct", "dataset": "chat.jsonl", "tuner": "lora", "lora_rank": 16.0,
              "learning_rate": "", "num_train_epochs": 3.0, "max_steps": -1.0, "output_dir": "runs/a"}
    argv = build_argv("sft", values, "--packing --val_ratio 0.1")
    assert argv == ["sft", "--model", "smollm2-135m-instruct", "--dataset", "chat.jsonl", "--lora_rank", "16",
                    "--output_dir", "runs/a", "--packing", "--val_ratio", "0.1"]
    assert form_values(argv) == ("sft", {"model": "smollm2-135m-instruct", "dataset": "chat.jsonl",
                                         "lora_rank": "16", "output_dir": "runs/a"}, "--packing --val_ratio 0.1")
    assert resume_argv(argv + ["--overwrite_output_dir"])[-3:] == ["--val_ratio", "0.1", "--resume"]
    assert help_text("lora_rank") == "--lora_rank: LoRA rank (default: 8)"


def test_each_problem_goes_next_to_the_field_it_names(ctx, tiny_model_dir):
    model = str(tiny_model_dir)
    assert check(ctx, ["sft", "--model", model, "--dataset", "chat.jsonl", "--max_steps", "2"]) == {}
    found = check(ctx, ["sft", "--model", "./nothing", "--dataset", "missing.jsonl"])
    assert found["model"][0].startswith("model './nothing': no such file or directory")
    assert found["dataset"][0].startswith("file not found: missing.jsonl")
    found = check(ctx, ["sft", "--model", model, "--dataset", "chat.jsonl", "--lora_rank", "0", "--bogus", "1"])
    assert found["lora_rank"] == ["--lora_rank: expected a positive number, got 0"]
    assert found[""] == ["--bogus: unknown flag"]
    found = check(ctx, ["dpo", "--model", model, "--dataset", "chat.jsonl"])
    assert "preference" in found["dataset"][0]
    assert check(ctx, ["sft", "--model", "/etc", "--dataset", "chat.jsonl"])["model"][0].startswith(
        "--model /etc: outside the folders this UI may read")
    (ctx.runs_root / "taken").mkdir(parents=True)
    (ctx.runs_root / "taken" / "notes.txt").write_text("mine")
    found = check(ctx, ["sft", "--model", model, "--dataset", "chat.jsonl", "--output_dir", "runs/taken"])
    assert found["output_dir"][0].startswith("--output_dir runs/taken is not empty")


def test_the_preview_marks_the_tokens_the_loss_falls_on(ctx, tiny_model_dir):
    from tunestack.ui.preview import preview

    segments = preview(ctx, "sft", str(tiny_model_dir), "chat.jsonl", rows=2)
    assert [text for text, mark in segments if mark] == ["1 + 1 = 2.<|im_end|>\n", "1 + 2 = 3.<|im_end|>\n"]
    assert "<|im_start|>user\nWhat is 1 + 1?<|im_end|>" in "".join(text for text, _ in segments)
    marks = [mark for _, mark in preview(ctx, "dpo", str(tiny_model_dir), "pref.jsonl", rows=1) if mark]
    assert marks == ["chosen", "rejected"]


def test_a_failed_runs_last_error_goes_next_to_its_field():
    log = "loading...\ntunestack sft: error: model 'org/missing': not found on the hub; check the name\n"
    assert failure_problems(log, "sft") == {"model": ["model 'org/missing': not found on the hub; check the name"]}
    log = "tunestack sft: 2 problems:\n  --lora_rank: expected a positive number, got 0\n  --bogus: unknown flag\n"
    assert failure_problems(log, "sft") == {"lora_rank": ["--lora_rank: expected a positive number, got 0"],
                                            "": ["--bogus: unknown flag"]}
    assert failure_problems("Traceback ...\nRuntimeError: out of memory", "sft") == {
        "": ["RuntimeError: out of memory"]}


def test_every_path_among_the_flags_is_checked_before_parsing_reads_it(ctx, tiny_model_dir):
    for flag, value in [("--config", "/etc/passwd"), ("--loss_func", "/etc/x.py:loss"), ("--dataset", "/etc/a.jsonl#5"),
                        ("--eval_task_data", "mmlu=/etc/mmlu"), ("--output_dir", "/tmp/elsewhere")]:
        found = check(ctx, ["sft", "--model", str(tiny_model_dir), "--dataset", "chat.jsonl", flag, value])
        problems = [p for ps in found.values() for p in ps]
        assert problems and "outside the folders this UI may read" in problems[0], (flag, found)
