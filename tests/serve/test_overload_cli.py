"""`tunestack serve` on the tiny model over loopback: a full queue answers 429 from the engine's admission (its
/metrics counter moves), and a client that disconnects mid-stream frees its slot and stops its generation."""

from __future__ import annotations

import re
import threading
import time

import httpx
import pytest

from server_helpers import serve_subprocess

LONG = 8000
"""Tokens the long stream asks for: far more than the 20 it reads before disconnecting."""
READ = 20
pytestmark = pytest.mark.serial  # the disconnect is timed against the stream's pace


def metrics(url) -> dict[str, float]:
    text = httpx.get(url + "/metrics").text
    return {m[1]: float(m[2]) for m in re.finditer(r"^(tunestack_\w+?)(?:_total)? ([0-9.e+-]+)$", text, re.M)}


def wait_for(url, name, value, timeout=30):
    deadline = time.time() + timeout
    while (seen := metrics(url).get(name)) != value:
        assert time.time() < deadline, f"{name} stayed {seen}, expected {value}"
        time.sleep(0.02)


def body(max_tokens: int, stream: bool = False) -> dict:
    return {"model": "tiny", "messages": [{"role": "user", "content": "hello"}], "max_tokens": max_tokens,
            "ignore_eos": True, "stream": stream, "temperature": 0}


def test_full_queue_is_a_429_from_admission_and_a_disconnect_frees_its_slot(long_context_model_dir):
    with serve_subprocess(long_context_model_dir, "--max_concurrency", "1", "--max_queue", "1") as (url, _):
        assert metrics(url)["tunestack_rejected_overload"] == 0
        queued: list[httpx.Response] = []
        with httpx.Client(timeout=60) as client:
            with client.stream("POST", url + "/v1/chat/completions", json=body(LONG, stream=True)) as long:
                chunks = (line for line in long.iter_lines() if line.startswith("data: "))
                next(chunks)  # running: the one slot is taken
                waiting = threading.Thread(target=lambda: queued.append(
                    httpx.post(url + "/v1/chat/completions", json=body(4), timeout=120)))
                waiting.start()
                wait_for(url, "tunestack_admitted_sequences", 2)  # one running, one queued: the bound
                refused = httpx.post(url + "/v1/chat/completions", json=body(4), timeout=60)
                assert refused.status_code == 429, refused.text
                assert metrics(url)["tunestack_rejected_overload"] == 1  # the engine's queue refused it
                start = time.perf_counter()
                for _ in range(READ):
                    next(chunks)
                per_token = (time.perf_counter() - start) / READ
            disconnected = time.perf_counter()  # the long stream's connection closes after about 22 of its tokens
        waiting.join(120)
        waited = time.perf_counter() - disconnected
        assert queued[0].status_code == 200 and queued[0].json()["usage"]["completion_tokens"] == 4
        # The queued request ran as soon as the stream went, not after the LONG tokens it asked for.
        assert waited < per_token * LONG / 4, (waited, per_token)
        wait_for(url, "tunestack_running_sequences", 0)
        wait_for(url, "tunestack_admitted_sequences", 0)
        assert metrics(url)["tunestack_generation_tokens"] < LONG / 10  # the long stream stopped early
        ok = httpx.post(url + "/v1/chat/completions", json=body(3), timeout=60)  # its slot is free again
        assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 3
