"""SIGTERM to a real `tunestack serve` process: it drains (running requests finish, new ones get 503, /health says
draining), ends the stream still open after --drain_timeout with a final error event, and exits 0. The API key comes
from TUNESTACK_API_KEY and appears nowhere in what the server prints, even with --debug."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx

from server_helpers import free_port

KEY = "sk-test-4f9c2a77e1"
AUTH = {"Authorization": f"Bearer {KEY}"}
MESSAGES = [{"role": "user", "content": "hello"}]


def _wait_until_up(url: str, process) -> None:
    deadline = time.time() + 180
    while True:
        assert process.poll() is None, process.communicate()[1]
        try:
            if httpx.get(url + "/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.time() < deadline, "server did not come up"
        time.sleep(0.2)


def _admitted(url: str) -> float:
    metrics = httpx.get(url + "/metrics", headers=AUTH).text
    return float(next(line.split()[-1] for line in metrics.splitlines()
                      if line.startswith("tunestack_admitted_sequences ")))


def test_sigterm_drains_ends_open_streams_with_an_error_event_and_exits_0(tiny_model_dir):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tunestack", "serve", "--model", str(tiny_model_dir), "--port", str(port),
         "--served_model_name", "tiny", "--dtype", "fp32", "--drain_timeout", "2", "--debug"],
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TUNESTACK_API_KEY": KEY}, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url, process)
        assert httpx.get(url + "/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        events, short = [], {}

        def long_stream():  # 4 x 480 tokens: seconds on any CPU, longer than --drain_timeout
            body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 480, "n": 4, "ignore_eos": True,
                    "stream": True}
            with httpx.stream("POST", url + "/v1/chat/completions", json=body, headers=AUTH, timeout=120) as stream:
                events.extend(line[6:] for line in stream.iter_lines() if line.startswith("data: "))

        reader = threading.Thread(target=long_stream)
        reader.start()
        while not any('"content": "' in e for e in events[4:]):  # past the four role chunks: tokens flow
            assert reader.is_alive() and process.poll() is None
            time.sleep(0.02)
        quick = threading.Thread(target=lambda: short.update(reply=httpx.post(
            url + "/v1/chat/completions", headers=AUTH, timeout=120,
            json={"model": "tiny", "messages": MESSAGES, "max_tokens": 4, "ignore_eos": True})))
        quick.start()
        while _admitted(url) < 5:  # the short request is admitted beside the stream's four sequences
            assert quick.is_alive()
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        quick.join(timeout=60)
        assert short["reply"].status_code == 200  # running requests finish
        assert short["reply"].json()["choices"][0]["finish_reason"] == "length"
        health = httpx.get(url + "/health")
        assert health.status_code == 503 and health.json() == {"status": "draining"}
        refused = httpx.post(url + "/v1/chat/completions", headers=AUTH, json={"model": "tiny", "messages": MESSAGES})
        assert refused.status_code == 503
        reader.join(timeout=60)
        assert not reader.is_alive()
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
        stderr = process.communicate()[1]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["type"] == "service_unavailable_error"  # the final event
    chunks = [json.loads(e) for e in events[:-2]]
    assert not any(c["choices"][0]["finish_reason"] for c in chunks)  # cut off before the end
    assert "draining: 1 requests running" in stderr or "draining: 2 requests running" in stderr
    assert KEY not in stderr
