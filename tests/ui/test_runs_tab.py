"""The Runs tab in headless Chromium: the runs under the runs folder, two loss curves side by side, settings."""

from __future__ import annotations

import json

from ui_helpers import open_ui


def _fake_run(folder, status: str, losses: list[float], learning_rate: float) -> None:
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({
        "command": "sft", "status": status, "created": "2026-01-02T03:04:05+0000", "base_model": "tiny-llama",
        "tuner": "lora", "final_step": len(losses) if status == "completed" else None,
        "config": {"train": {"learning_rate": learning_rate, "max_steps": len(losses)}}}))
    (folder / "metrics.jsonl").write_text("".join(json.dumps({"step": i + 1, "loss": loss}) + "\n"
                                                  for i, loss in enumerate(losses)))


def test_runs_are_listed_compared_and_their_settings_shown(page, ui_server, artifacts):
    _fake_run(ui_server.runs / "compare-a", "completed", [3.0, 2.5, 2.1, 1.9], 1e-4)
    _fake_run(ui_server.runs / "compare-b", "interrupted", [3.1, 2.9, 2.8], 3e-4)
    open_ui(page, ui_server)
    page.click("button[role=tab]:has-text('Runs')")
    a = page.locator("#runs-table [role=row]", has_text="compare-a")
    b = page.locator("#runs-table [role=row]", has_text="compare-b")
    a.wait_for()
    assert "completed" in a.inner_text() and "1.9" in a.inner_text()
    assert "interrupted" in b.inner_text() and "2.8" in b.inner_text()

    b.locator("[role=gridcell]").first.click()
    page.locator("#runs-settings", has_text="0.0003").wait_for()
    a.locator("[role=gridcell]").first.click()
    page.locator("#runs-settings", has_text="0.0001").wait_for()
    compared = page.locator("#runs-compare")
    assert "compare-a" in compared.inner_text() and "compare-b" in compared.inner_text()
    for name in ("compare-a", "compare-b"):  # a line per run, each in the legend
        page.locator(f"#runs-loss [aria-roledescription='line mark'][aria-label*='run: {name}']").wait_for()
        page.locator("#runs-loss [aria-roledescription='legend']", has_text=name).wait_for()
    page.screenshot(path=artifacts / "runs.png", full_page=True)
