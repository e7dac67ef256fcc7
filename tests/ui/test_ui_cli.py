"""`tunestack ui` on the command line: a port in use and a bad --auth are one-line errors, a non-loopback address
without --auth is served with a warning, and `--help` needs no Gradio import."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from helpers import cli, cli_env
from ui_helpers import free_port


def test_a_port_in_use_is_a_one_line_error(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = cli("ui", "--port", str(port), "--runs_dir", str(tmp_path / "runs"), check=False, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"tunestack ui: error: --port {port}: 127.0.0.1:{port} is already in use; stop "
                                     "what holds it or pass another --port")


def test_bad_auth_is_reported_line_by_line(tmp_path):
    result = cli("ui", "--auth", "nocolon", "--auth_file", str(tmp_path / "none.txt"), check=False, timeout=120)
    assert result.returncode == 2
    assert "--auth_file" in result.stderr and "cannot read it" in result.stderr
    (tmp_path / "users.txt").write_text("# who may open the UI\nana:secret\nbob\n")
    result = cli("ui", "--auth", "nocolon", "--auth_file", str(tmp_path / "users.txt"), check=False, timeout=120)
    assert "--auth: expected USER:PASSWORD" in result.stderr
    assert f"--auth_file {tmp_path / 'users.txt'}, line 3: expected USER:PASSWORD" in result.stderr


def test_a_non_loopback_address_without_auth_is_served_with_a_warning(tmp_path):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "tunestack", "ui", "--host", "0.0.0.0", "--port", str(port),
                                "--runs_dir", str(tmp_path / "runs")], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               stdin=subprocess.DEVNULL, text=True, env=cli_env())
    try:
        first = process.stderr.readline()  # written before the server starts
    finally:
        process.terminate()
        process.wait(timeout=60)
    assert first.startswith(f"tunestack ui: warning: serving on 0.0.0.0:{port} without --auth")
    assert "--auth USER:PASSWORD" in first


def test_help_lists_the_flags_with_their_defaults():
    result = cli("ui", "--help", timeout=120)
    for flag in ("--host", "--port", "--share", "--auth", "--auth_file", "--allowed_paths", "--runs_dir"):
        assert flag in result.stdout
    assert "(default: 127.0.0.1)" in result.stdout and "(default: 7860)" in result.stdout


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("localhost", True), ("::1", True),
                                            ("0.0.0.0", False), ("192.168.1.4", False), ("example.org", False)])
def test_loopback_addresses(host, loopback):
    from tunestack.ui.app import is_loopback

    assert is_loopback(host) is loopback


def test_auth_pairs_come_from_the_flag_and_the_file(tmp_path):
    from tunestack.ui.app import read_auth

    users = tmp_path / "users.txt"
    users.write_text("ana:pa:ss\n\n# comment\nbob:x\n")
    assert read_auth("root:toor", str(users)) == [("root", "toor"), ("ana", "pa:ss"), ("bob", "x")]
    assert read_auth(None, None) == []


def test_importing_the_command_table_loads_no_gradio():
    code = "import sys, tunestack.cli.commands; print('gradio' in sys.modules)"
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), check=True)
    assert out.stdout.strip() == "False", time.monotonic() - started
