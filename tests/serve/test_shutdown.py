"""SIGTERM to a real `tunestack serve` process: it drains (running requests finish, new ones get 503, /health says
draining), ends the stream still open after --drain_timeout with a final error event, and exits 0. The API key comes
from TUNESTACK_API_KEY and appears nowhere in what the server prints, even with --debug."""

from __future__ import annotations

import json
import re
import signal
import threading
import time

import httpx

from server_helpers import serve_subprocess

KEY = "sk-test-4f9c2a77e1"
AUTH = {"Authorization": f"Bearer {KEY}"}
MESSAGES = [{"role": "user", "content": "hello"}]


def _admitted(url: str) -> float:
    metrics = httpx.get(url + "/metrics", headers=AUTH).text
    return float(next(line.split()[-1] for line in metrics.splitlines()
                      if line.startswith("tunestack_admitted_sequences ")))


def test_sigterm_drains_ends_open_streams_with_an_error_event_and_exits_0(long_context_model_dir):
    events, short = [], {}
    with serve_subprocess(long_context_model_dir, "--drain_timeout", "2", "--debug",
                          env={"TUNESTACK_API_KEY": KEY}) as (url, process):
        assert httpx.get(url + "/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401

        def long_stream():  # 4 x 4000 tokens: far longer than --drain_timeout on any CPU
            body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 4000, "n": 4, "ignore_eos": True,
                    "stream": True}
            with httpx.stream("POST", url + "/v1/chat/completions", json=body, headers=AUTH, timeout=120) as stream:
                buffer = b""  # events split on the blank line only: a sampled token may hold any line separator
                for data in stream.iter_bytes():
                    *done, buffer = (buffer + data).split(b"\n\n")
                    events.extend(event.decode()[6:] for event in done if event.startswith(b"data: "))

        reader = threading.Thread(target=long_stream)
        reader.start()
        while not any('"content": "' in e for e in events[4:]):  # past the four role chunks: tokens flow
            assert reader.is_alive() and process.poll() is None
            time.sleep(0.02)
        quick = threading.Thread(target=lambda: short.update(reply=httpx.post(
            url + "/v1/chat/completions", headers=AUTH, timeout=120,
            json={"model": "tiny", "messages": MESSAGES, "max_tokens": 64, "ignore_eos": True})))
        quick.start()
        while _admitted(url) < 5:  # the short request (64 tokens: well under the drain timeout) joins the stream
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
    stderr = process.stderr.read()
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["type"] == "service_unavailable_error"  # the final event
    chunks = [json.loads(e) for e in events[:-2]]
    assert not any(c["choices"][0]["finish_reason"] for c in chunks)  # cut off before the end
    running = re.search(r"draining: (\d+) requests running", stderr)
    assert running and int(running[1]) >= 2, stderr  # the stream and the short request (a probe may be counted too)
    assert KEY not in stderr
