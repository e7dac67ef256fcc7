"""The Export and Evaluate tabs in headless Chromium over the real `tunestack ui`: exporting a run writes the merged
folder and shows its size and perplexity change; a tiny custom task's report table appears, `--compare` shows the
model's and the run's evaluations side by side, and an unknown task shows the CLI's own message."""

from __future__ import annotations

import json

import pytest

from helpers import cli, write_jsonl
from ui_helpers import choose, open_ui, set_number


@pytest.fixture(scope="module")
def quiz_task(ui_workdir):
    """A two-question multiple-choice task: scored by log-likelihood, so it generates nothing and takes a moment."""
    data = write_jsonl(ui_workdir / "quiz.jsonl", [
        {"question": "Capital of France?", "choices": ["Paris", "Rome", "Oslo"], "answer": "Paris"},
        {"question": "2 + 2?", "choices": ["3", "4"], "answer": "B"}])
    return f"custom_mcq:{data}"


@pytest.fixture(scope="module")
def tiny_run(ui_server, ui_workdir, quiz_task):
    """A LoRA run of two steps on the tiny model in the UI's runs folder, evaluated on `quiz_task` after training."""
    run = ui_server.runs / "tiny-sft"
    cli("sft", "--model", str(ui_workdir / "tiny"), "--dataset", str(ui_workdir / "chat.jsonl"), "--max_steps", "2",
        "--per_device_train_batch_size", "4", "--logging_steps", "1", "--output_dir", str(run),
        "--eval_tasks", quiz_task)
    return run


def _command(page) -> str:
    return page.locator(".command textarea, .command input").filter(visible=True).input_value()


def test_export_of_a_run_writes_the_merged_folder_and_shows_its_size(page, ui_server, ui_workdir, tiny_run, artifacts):
    out = ui_workdir / "exported"
    open_ui(page, ui_server)
    page.click("button[role=tab]:has-text('Export')")
    choose(page, "export-model", str(tiny_run))
    page.locator("#export-output textarea, #export-output input").fill(str(out))
    page.click("#export-start")
    result = page.locator("#export-result")
    result.filter(has_text="on disk").wait_for(timeout=180_000)
    assert _command(page).startswith(f"tunestack export --model {tiny_run} --output_dir {out}")
    assert (out / "config.json").is_file() and list(out.glob("*.safetensors"))
    record = json.loads((out / "export.json").read_text())
    assert record["method"] == "merge" and record["source"]["adapters"]
    assert f"in {sum(1 for p in out.rglob('*') if p.is_file())} files" in result.inner_text()
    assert f"({record['perplexity']['change_pct']:+.2f}%)" in result.inner_text()
    page.screenshot(path=artifacts / "export.png", full_page=True)


def test_evaluate_shows_the_report_table_then_a_comparison(page, ui_server, ui_workdir, tiny_run, quiz_task,
                                                           artifacts):
    first = ui_workdir / "eval-tiny"
    open_ui(page, ui_server)
    page.click("button[role=tab]:has-text('Evaluate')")
    choose(page, "eval-model", str(ui_workdir / "tiny"))
    choose(page, "eval-tasks", quiz_task)
    set_number(page, "eval-limit", 2)
    page.locator("#eval-output textarea, #eval-output input").fill(str(first))
    page.click("#eval-start")
    table = page.locator("#eval-report")
    table.filter(has_text="custom_mcq:quiz").wait_for(timeout=180_000)
    metrics = json.loads((first / "report.json").read_text())["tasks"]["custom_mcq:quiz"]["metrics"]
    assert set(metrics) == {"acc", "acc_norm"}
    assert all(f"{metric['value']:.4f}" in table.inner_text() for metric in metrics.values())
    assert _command(page) == f"tunestack eval --model {ui_workdir / 'tiny'} --tasks {quiz_task} --limit 2 " \
                             f"--output_dir {first}"
    page.screenshot(path=artifacts / "eval-report.png", full_page=True)

    choose(page, "eval-model", str(first))  # two earlier evaluations: the model's and the run's after training
    choose(page, "eval-compare", str(tiny_run / "eval"))
    page.locator("#eval-output textarea, #eval-output input").fill(str(ui_workdir / "eval-compare"))
    page.click("#eval-start")
    table.filter(has_text="B - A").wait_for(timeout=180_000)
    comparison = json.loads((ui_workdir / "eval-compare" / "compare.json").read_text())
    row = comparison["rows"][0]
    assert f"{row['a']:.4f}" in table.inner_text() and f"{row['b']:.4f}" in table.inner_text()
    assert str(tiny_run) in page.locator("#eval-heading").inner_text()  # B: the run
    page.screenshot(path=artifacts / "eval-compare.png", full_page=True)


def test_an_unknown_task_is_refused_with_the_clis_own_message(page, ui_server, ui_workdir):
    open_ui(page, ui_server)
    page.click("button[role=tab]:has-text('Evaluate')")
    choose(page, "eval-model", str(ui_workdir / "tiny"))
    choose(page, "eval-tasks", "arithmetic")
    page.click("#eval-start")
    page.locator("#eval-status", has_text="--tasks: unknown task 'arithmetic' (did you mean arith?)").wait_for()
    assert not any("arithmetic" in record.read_text() for record in (ui_server.runs / ".ui-jobs").glob("*.json"))


def test_a_running_jobs_status_line_comes_from_its_events(tmp_path):
    from tunestack.progress import Progress, latest, read_events
    from tunestack.ui.widgets import progress_line

    progress = Progress(tmp_path)
    progress.start("evaluate", total=4)
    progress.step(1, exact_match=0.5)
    assert progress_line(latest(read_events(tmp_path))).startswith("evaluate · 1/4 (25%) · ETA ")
    assert progress_line(latest(read_events(tmp_path))).endswith(" · exact_match 0.5")
