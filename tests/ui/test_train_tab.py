"""The Train tab in headless Chromium: errors next to their fields in the command's own words, and a tiny run
started, followed (loss plot, progress), found again after the page closes, stopped, resumed and completed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ui_helpers import choose, open_ui, set_number


def _status(page) -> str:
    return page.locator("#train-status").inner_text()


def _wait_status(page, pattern: str, timeout_s: float = 120) -> str:
    """Wait until the progress line matches `pattern` (a regular expression)."""
    page.wait_for_function(
        "([pattern]) => new RegExp(pattern).test(document.querySelector('#train-status').innerText)",
        arg=[pattern], timeout=timeout_s * 1000)
    return _status(page)


def _loader_error(dataset: str) -> str:
    """What the data loader that `tunestack sft` calls says about `dataset`: the CLI's own message."""
    from tunestack.config import DataArgs
    from tunestack.data import load_datasets
    from tunestack.errors import DataError

    with pytest.raises(DataError) as raised:
        load_datasets(DataArgs(dataset=[dataset]))
    return str(raised.value)


def test_bad_input_shows_the_commands_own_message_next_to_its_field(page, ui_server, artifacts):
    jobs_before = set((ui_server.runs / ".ui-jobs").glob("*.json"))
    open_ui(page, ui_server)
    choose(page, "train-model", "./tiny")
    choose(page, "train-dataset", "missing.jsonl")
    page.click("#train-start")
    error = page.locator("#train-dataset-error")
    error.wait_for()
    expected = _loader_error("missing.jsonl")
    assert expected.startswith("file not found: missing.jsonl")
    assert expected in error.inner_text()
    page.screenshot(path=artifacts / "train-bad-dataset.png", full_page=True)

    choose(page, "train-dataset", "/etc/hostname.jsonl")  # outside the folders the UI may read
    page.click("#train-start")
    page.locator("#train-dataset-error", has_text="outside the folders").wait_for()
    set_number(page, "train-lora_rank", -1)
    choose(page, "train-dataset", "chat.jsonl")
    page.click("#train-start")
    page.locator("#train-lora_rank-error", has_text="--lora_rank: expected a positive number, got -1").wait_for()
    assert not page.locator("#train-dataset-error").is_visible()
    assert set((ui_server.runs / ".ui-jobs").glob("*.json")) == jobs_before, "nothing starts on a problem"


def test_a_run_is_followed_found_again_stopped_resumed_and_listed(browser, ui_server, artifacts):
    context = browser.new_context(viewport={"width": 1400, "height": 1300})
    page = context.new_page()
    page.set_default_timeout(120_000)
    open_ui(page, ui_server)
    choose(page, "train-model", "./tiny")
    choose(page, "train-dataset", "chat.jsonl")
    for field, value in [("max_steps", 400), ("per_device_train_batch_size", 2), ("max_length", 64)]:
        set_number(page, f"train-{field}", value)
    page.click("text=More settings")
    set_number(page, "train-logging_steps", 1)
    set_number(page, "train-save_steps", 2)
    page.locator("#train-command", has_text="--save_steps 2").wait_for()
    page.click("#train-start")

    line = _wait_status(page, r"^running .*step \d+/400 .*tokens/s.*loss")
    assert "ETA" in line
    page.locator("#train-loss canvas, #train-loss svg").first.wait_for()
    output_dir = Path(page.locator("#train-output_dir input, #train-output_dir textarea").first.input_value())
    assert output_dir.parent == ui_server.runs.resolve()
    command = page.locator("#train-command").inner_text()
    assert "tunestack sft --model ./tiny --dataset chat.jsonl --max_steps 400" in command
    assert f"--output_dir {output_dir}" in command
    page.screenshot(path=artifacts / "train-running.png", full_page=True)

    page.close()  # closing the page leaves the run going; a new page follows it
    page = context.new_page()
    page.set_default_timeout(120_000)
    open_ui(page, ui_server)
    _wait_status(page, r"^running")
    page.locator("#train-command", has_text=str(output_dir)).wait_for()
    assert page.locator("#train-model input").input_value() == "./tiny"

    page.click("#train-stop")
    line = _wait_status(page, r"^interrupted .*step \d+")
    manifest = json.loads((output_dir / "run.json").read_text())
    assert manifest["status"] == "interrupted"
    stopped_at = int(re.search(r"step (\d+)", line).group(1))
    assert stopped_at < 400

    set_number(page, "train-max_steps", stopped_at + 3)  # resume, and finish soon after
    page.click("#train-resume")
    page.locator("#train-command", has_text="--resume").wait_for()
    _wait_status(page, rf"^completed .*step {stopped_at + 3}/{stopped_at + 3}", timeout_s=180)
    manifest = json.loads((output_dir / "run.json").read_text())
    assert manifest["status"] == "completed" and manifest["final_step"] == stopped_at + 3
    assert (output_dir / "final").is_dir()
    page.screenshot(path=artifacts / "train-completed.png", full_page=True)

    page.click("button[role=tab]:has-text('Runs')")
    page.locator("#runs-table [role=row]", has_text=output_dir.name).filter(has_text="completed").wait_for()
    context.close()
