"""Limits of a public endpoint, over a paced fake engine: body size (413), request time (408), prompt length (400),
and draining: /health says so, new requests get 503, cut-off streams end with a final error event."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from server_helpers import FakeEngine, running_server

MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture()
def limited(tiny_tokenizer):
    """A server over a fake engine (a token every 20 ms, context 128) with a 2,000-byte body limit and 1 s per
    request."""
    from tunestack.serve.app import build_app
    from tunestack.serve.serving import ServeLimits, Serving

    ids = tiny_tokenizer("hello world")["input_ids"]
    limits = ServeLimits(4, 4, 16, request_timeout=1.0, max_request_bytes=2000)
    serving = Serving(FakeEngine(ids, delay=0.02, max_batch=4, max_context=128), tiny_tokenizer, "tiny", limits)
    with running_server(build_app(serving)) as url:
        yield url, serving
    serving.engine.close()


def _settled(serving) -> bool:
    deadline = time.time() + 5
    while (serving.admitted or serving.engine.running() or serving.engine.waiting()) and time.time() < deadline:
        time.sleep(0.01)
    return not (serving.admitted or serving.engine.running() or serving.engine.waiting())


def _events(response) -> list:
    return [line[6:] for line in response.iter_lines() if line.startswith("data: ")]


def test_a_body_over_the_limit_gets_413_whether_its_length_is_declared_or_not(limited):
    url, _ = limited
    big = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x" * 3000}]}).encode()
    declared = httpx.post(url + "/v1/chat/completions", content=big, headers={"content-type": "application/json"})
    chunked = httpx.post(url + "/v1/chat/completions", content=iter([big[:1500], big[1500:]]),
                         headers={"content-type": "application/json"})  # a generator: sent chunked, no length
    for response in (declared, chunked):
        assert response.status_code == 413, response.text
        assert "--max_request_bytes" in response.json()["error"]["message"]
    small = httpx.post(url + "/v1/chat/completions", json={"model": "tiny", "messages": MESSAGES, "max_tokens": 2})
    assert small.status_code == 200


def test_a_request_past_its_time_ends_with_408_and_frees_its_slot(limited):
    url, serving = limited
    started = time.time()
    body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 40}  # 40 tokens at 20 ms: 0.8 s, within 1 s
    assert httpx.post(url + "/v1/chat/completions", json=body, timeout=30).status_code == 200
    slow = httpx.post(url + "/v1/completions", json={"model": "tiny", "prompt": "hi", "max_tokens": 60}, timeout=30)
    assert slow.status_code == 408 and slow.json()["error"]["type"] == "timeout_error", slow.text
    assert "--request_timeout" in slow.json()["error"]["message"]
    with httpx.stream("POST", url + "/v1/chat/completions", timeout=30,
                      json={"model": "tiny", "messages": MESSAGES, "max_tokens": 60, "stream": True}) as stream:
        events = _events(stream)
    assert events[-1] == "[DONE]" and json.loads(events[-2])["error"]["type"] == "timeout_error"
    assert any("content" in json.loads(e)["choices"][0]["delta"] for e in events[:-2] if "choices" in e)
    assert time.time() - started < 10 and _settled(serving)


def test_a_prompt_longer_than_the_context_is_a_400(limited):
    url, _ = limited
    long_chat = httpx.post(url + "/v1/chat/completions", json={"model": "tiny", "max_tokens": 1,
                                                               "messages": [{"role": "user", "content": "fox " * 200}]})
    long_ids = httpx.post(url + "/v1/completions", json={"model": "tiny", "prompt": [5] * 128, "max_tokens": 1})
    for response, param in ((long_chat, "messages"), (long_ids, "prompt")):
        error = response.json()["error"]
        assert response.status_code == 400 and "maximum context length is 128 tokens" in error["message"]
        assert "your prompt has" in error["message"] and error["param"] == param


def test_draining_refuses_new_requests_and_cut_off_streams_end_with_an_error_event(limited):
    url, serving = limited
    got: dict = {}

    def read_stream():
        with httpx.stream("POST", url + "/v1/chat/completions", timeout=30, json={
                "model": "tiny", "messages": MESSAGES, "max_tokens": 45, "stream": True}) as stream:
            got["events"] = _events(stream)

    reader = threading.Thread(target=read_stream)
    reader.start()
    while not serving.admitted:
        time.sleep(0.01)
    serving.draining = True
    health = httpx.get(url + "/health")
    assert health.status_code == 503 and health.json() == {"status": "draining"}
    refused = httpx.post(url + "/v1/chat/completions", json={"model": "tiny", "messages": MESSAGES})
    assert refused.status_code == 503 and refused.json()["error"]["type"] == "service_unavailable_error"
    deadline = time.time() + 5
    while serving.in_flight != 1 and time.time() < deadline:  # the refused request's middleware is finishing
        time.sleep(0.01)
    assert serving.in_flight == 1  # the stream, still running
    serving.cut_off()
    reader.join(timeout=10)
    events = got["events"]
    assert events[-1] == "[DONE]" and json.loads(events[-2])["error"]["type"] == "service_unavailable_error"
    finish = [json.loads(e)["choices"][0]["finish_reason"] for e in events[:-2] if "choices" in e]
    assert not any(finish)  # ended before its 45 tokens (0.9 s) were out
    assert _settled(serving) and serving.in_flight == 0
