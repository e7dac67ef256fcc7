"""The web UI under test: one `tunestack ui` subprocess for the session, and headless Chromium driving it.

Browser tests skip, saying why, where playwright or a Chromium binary is missing (scripts/setup.sh test installs
both). Screenshots go to $TEST_ARTIFACTS/ui when it is set, else into the test's temporary folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from helpers import CHAT_ROWS, write_jsonl
from ui_helpers import UiServer, chromium_binary


@pytest.fixture(scope="session")
def ui_workdir(tmp_path_factory, tiny_model_dir) -> Path:
    """The UI's working folder: a copy of the tiny model under ./tiny and a small chat data set ./chat.jsonl."""
    workdir = tmp_path_factory.mktemp("ui-work")
    shutil.copytree(tiny_model_dir, workdir / "tiny")
    write_jsonl(workdir / "chat.jsonl", CHAT_ROWS)
    return workdir


@pytest.fixture(scope="session")
def ui_server(ui_workdir):
    """One `tunestack ui` for the browser tests of the session, reading only its working folder and runs."""
    server = UiServer(ui_workdir, ui_workdir / "runs")
    try:
        server.wait_ready()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed: bash scripts/setup.sh test (or pip install playwright)")
    binary = chromium_binary()
    if binary is None:
        pytest.skip("no Chromium binary on PATH: bash scripts/setup.sh test installs Debian's chromium")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=binary, headless=True,
                                              args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield chromium
        chromium.close()


@pytest.fixture()
def page(browser, ui_server):
    context = browser.new_context(viewport={"width": 1400, "height": 1300})
    opened = context.new_page()
    opened.set_default_timeout(60_000)
    yield opened
    context.close()


@pytest.fixture()
def artifacts(tmp_path) -> Path:
    """Where screenshots go: $TEST_ARTIFACTS/ui when set (CI keeps it), else the test's temporary folder."""
    folder = Path(os.environ["TEST_ARTIFACTS"]) / "ui" if os.environ.get("TEST_ARTIFACTS") else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return folder

