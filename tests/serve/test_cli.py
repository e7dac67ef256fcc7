"""`tunestack serve` as a user runs it: a real subprocess, flags checked before loading, one-line errors."""

from __future__ import annotations

import httpx
import openai

from helpers import cli
from server_helpers import serve_subprocess


def test_serve_subprocess_with_key_and_adapter(tiny_model_dir, adapters, tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text("first-key\nsecond-key\n")
    with serve_subprocess(tiny_model_dir, "--api_key_file", str(keys), "--adapter",
                          f"alpha={adapters['alpha']}") as (url, process):
        client = openai.OpenAI(base_url=url + "/v1", api_key="second-key", max_retries=0)
        assert [m.id for m in client.models.list().data] == ["tiny", "alpha"]
        reply = client.chat.completions.create(model="alpha", messages=[{"role": "user", "content": "hi"}],
                                               max_tokens=3)
        assert reply.usage.completion_tokens <= 3
        assert httpx.get(url + "/v1/models").status_code == 401
    assert "serving tiny, alpha on http://127.0.0.1" in process.stderr.read()


def test_bad_flags_fail_in_one_line_each_before_loading(tmp_path):
    result = cli("serve", "--model", "nowhere", "--adapter", "noequals", "--adapter", f"x={tmp_path}/missing",
                 "--api_key_file", str(tmp_path / "none.txt"), check=False)
    assert result.returncode == 2 and "3 problems" in result.stderr
    for words in ("--adapter noequals: expected NAME=PATH", f"x={tmp_path}/missing: {tmp_path}/missing does not",
                  "--api_key_file: file"):
        assert words in result.stderr
    port = cli("serve", "--port", "70000", "--backend", "tgi", check=False)
    assert port.returncode == 2 and "--port: expected a port number" in port.stderr and "--backend" in port.stderr
    assert "Traceback" not in result.stderr + port.stderr


def test_help_lists_serve_without_torch():
    assert "serve" in cli("--help").stdout
    out = cli("serve", "--help").stdout
    assert "--adapter" in out and "--max_queue" in out and "--api_key" in out and "TUNESTACK_API_KEY" in out
    for flag in ("--max_request_bytes", "--request_timeout", "--drain_timeout", "--allow_pickle"):
        assert flag in out
