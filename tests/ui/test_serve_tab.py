"""The Serve tab in headless Chromium over the real `tunestack ui`: the server it starts answers /v1/models at the
URL the page shows and Stop ends its process; a port in use shows the server's own error in the page."""

from __future__ import annotations

import socket

import httpx
import psutil

from tunestack.ui.jobs import Jobs
from ui_helpers import choose, open_ui, set_number


def _open_serve_tab(page, ui_server, ui_workdir) -> None:
    open_ui(page, ui_server)
    page.click("button[role=tab]:has-text('Serve')")
    choose(page, "serve-model", str(ui_workdir / "tiny"))


def test_the_server_answers_at_the_url_shown_and_stop_ends_it(page, ui_server, ui_workdir, artifacts):
    _open_serve_tab(page, ui_server, ui_workdir)
    page.click("#serve-start")
    status = page.locator("#serve-status")
    status.filter(has_text="ready").wait_for(timeout=120_000)
    url = page.locator("#serve-url input, #serve-url textarea").input_value()
    models = httpx.get(url + "/v1/models", timeout=10).json()
    assert [m["id"] for m in models["data"]] == [str((ui_workdir / "tiny").resolve())]
    job = Jobs(ui_server.runs / ".ui-jobs").list("serve")[0]
    shown = page.locator(".command textarea, .command input").filter(visible=True).input_value()
    assert shown == job.command and shown.startswith("tunestack serve --model ")
    page.get_by_text(f"{url}/v1/chat/completions").first.wait_for()  # the curl snippet
    page.screenshot(path=artifacts / "serve-ready.png", full_page=True)

    page.click("#serve-stop")
    status.filter(has_text="stopped").wait_for()
    assert not psutil.pid_exists(job.pid) or psutil.Process(job.pid).status() == psutil.STATUS_ZOMBIE
    try:
        httpx.get(url + "/health", timeout=5)
        raise AssertionError(f"{url} still answers after Stop")
    except httpx.TransportError:
        pass


def test_a_port_in_use_shows_the_servers_own_error(page, ui_server, ui_workdir, artifacts):
    _open_serve_tab(page, ui_server, ui_workdir)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        set_number(page, "serve-port", taken.getsockname()[1])
        page.click("#serve-start")
        status = page.locator("#serve-status")
        status.filter(has_text="failed").wait_for(timeout=120_000)
    assert "address already in use" in status.inner_text()
    page.screenshot(path=artifacts / "serve-port-in-use.png", full_page=True)
