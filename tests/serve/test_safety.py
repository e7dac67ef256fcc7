"""Keys, bad input, overload and disconnects: OpenAI-shaped errors, never a 500, and slots freed at once."""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest

from server_helpers import FakeEngine, running_server

MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def keyed(server):
    from tunestack.serve.app import build_app

    with running_server(build_app(server[1], ["key-one", "key-two"])) as url:
        yield url


def test_api_keys(keyed):
    for key in ("key-one", "key-two"):
        client = openai.OpenAI(base_url=keyed + "/v1", api_key=key, max_retries=0)
        assert [m.id for m in client.models.list().data][0] == "tiny"
    with pytest.raises(openai.AuthenticationError) as wrong:
        openai.OpenAI(base_url=keyed + "/v1", api_key="key-three", max_retries=0).models.list()
    assert wrong.value.status_code == 401
    assert wrong.value.body["type"] == "authentication_error"
    for path in ("/v1/models", "/metrics"):
        assert httpx.get(keyed + path).status_code == 401
    assert httpx.post(keyed + "/v1/chat/completions", json={"model": "tiny", "messages": MESSAGES}).status_code == 401
    assert httpx.get(keyed + "/health").json() == {"status": "ok"}


@pytest.mark.parametrize("body, status, words", [
    ('{"model": "tiny", "messages": [', 400, "not valid JSON"),
    (b'\xff\xfe{"model"', 400, "not valid JSON"),
    ({"model": "nope", "messages": MESSAGES}, 404, "does not exist"),
    ({"model": "tiny", "messages": []}, 400, "messages"),
    ({"model": "tiny", "messages": MESSAGES, "temperature": -1}, 400, "temperature"),
    ({"model": "tiny", "messages": MESSAGES, "top_p": 0}, 400, "top_p"),
    ({"model": "tiny", "messages": MESSAGES, "n": 0}, 400, "n"),
    ({"model": "tiny", "messages": MESSAGES, "max_tokens": 100000}, 400, "maximum context length"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "fox " * 600}]}, 400, "maximum context length"),
    ({"model": "tiny", "messages": [{"role": "wizard", "content": "x"}]}, 400, "role"),
    ({"model": "tiny", "messages": MESSAGES, "top_logprobs": 2}, 400, "logprobs"),
    ({"model": "tiny", "messages": MESSAGES, "presence_penalty": 5}, 400, "presence_penalty"),
    ({"model": "tiny", "messages": MESSAGES, "seed": 2**70}, 400, "seed"),
    ({"model": "tiny", "messages": MESSAGES, "max_tokens": 0}, 400, "max_tokens"),
    ({"model": "tiny", "messages": MESSAGES, "response_format": {"type": "yaml"}}, 400, "response_format"),
    ([1, 2, 3], 400, "body"),
    ('{"model": "tiny", "messages": [{"role": "user", "content": "a\\ud800b"}]}', 400, "messages.0.content"),
    ('{"model": "tiny", "messages": [{"role": "user", "content": [{"type": "text", "text": "\\udfff"}]}]}', 400,
     "messages.0.content.0.text"),
])
def test_bad_chat_requests(server, body, status, words):
    content = body if isinstance(body, (str, bytes)) else json.dumps(body)
    response = httpx.post(server[0] + "/v1/chat/completions", content=content,
                          headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert words in error["message"] and error["type"]
    assert error["param"] is None or error["param"] in words or error["param"] in str(body)


@pytest.mark.parametrize("body, param, words", [
    ({"model": "tiny", "prompt": []}, "prompt", "prompt"),
    ({"model": "tiny", "prompt": [[1, 2], []]}, "prompt", "prompt"),
    ({"model": "tiny", "prompt": [1, 99999]}, "prompt", "token ids"),
    ({"model": "tiny", "prompt": [[-1, 99999999]]}, "prompt", "token ids"),
    ({"model": "tiny", "prompt": [2**70]}, "prompt", "token ids"),
    ({"model": "tiny", "prompt": ""}, "prompt", "empty"),
    ({"model": "tiny", "prompt": ["a"] * 13, "n": 2}, "prompt", "needs 26 sequences"),  # never fits: not a 429
    ({"model": "tiny", "prompt": "hi", "max_tokens": 0}, "max_tokens", "echo"),
    ({"model": "tiny", "prompt": "hi", "logprobs": 21}, "logprobs", "logprobs"),
])
def test_bad_completion_requests(server, body, param, words):
    response = httpx.post(server[0] + "/v1/completions", json=body)
    error = response.json()["error"]
    assert response.status_code == 400 and words in error["message"] and error["param"] == param, response.text


def test_unknown_route_is_openai_shaped(server):
    response = httpx.get(server[0] + "/v1/nothing")
    assert response.status_code == 404 and "error" in response.json()


def test_health_and_metrics(server, client):
    assert httpx.get(server[0] + "/health").json() == {"status": "ok"}
    client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=5, temperature=0, stream=True)
    client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=5, temperature=0)
    text = httpx.get(server[0] + "/metrics").text
    for name in ("tunestack_requests_total", "tunestack_generation_tokens_total", "tunestack_prompt_tokens_total",
                 "tunestack_queue_depth", "tunestack_time_to_first_token_seconds_bucket",
                 "tunestack_inter_token_latency_seconds_bucket", "tunestack_request_latency_seconds_count"):
        assert name in text
    line = next(l for l in text.splitlines() if l.startswith('tunestack_requests_total{endpoint="/v1/chat/completions"'
                                                            ',status="200"}'))
    assert float(line.split()[-1]) >= 2


@pytest.fixture()
def narrow(tiny_tokenizer):
    """A server over a paced fake engine running one sequence at a time with one queued."""
    from tunestack.serve.app import build_app
    from tunestack.serve.serving import ServeLimits, Serving

    ids = tiny_tokenizer("hello world")["input_ids"]
    serving = Serving(FakeEngine(ids, delay=0.02), tiny_tokenizer, "tiny", ServeLimits(1, 1, 64))
    with running_server(build_app(serving)) as url:
        yield url, serving
    serving.engine.close()


def _long_stream(url):
    return httpx.stream("POST", url + "/v1/chat/completions", timeout=60, json={
        "model": "tiny", "messages": MESSAGES, "max_tokens": 2000, "temperature": 0, "stream": True})  # 40 s at the fake pace


def test_overload_gets_429_with_retry_after(narrow):
    url, serving = narrow
    with _long_stream(url) as first, _long_stream(url) as second:
        lines = first.iter_lines(), second.iter_lines()  # kept: a dropped iterator closes its response
        next(lines[0]), next(lines[1])
        assert serving.admitted == 2
        refused = httpx.post(url + "/v1/chat/completions", json={"model": "tiny", "messages": MESSAGES})
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["type"] == "rate_limit_error"
    with pytest.raises(openai.RateLimitError):  # the same through the client (which would retry by default)
        with _long_stream(url) as a, _long_stream(url) as b:
            lines = a.iter_lines(), b.iter_lines()
            next(lines[0]), next(lines[1])
            openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0).chat.completions.create(
                model="tiny", messages=MESSAGES)


def test_disconnect_frees_the_slot(narrow):
    url, serving = narrow
    with _long_stream(url) as stream:
        lines = stream.iter_lines()
        while '"delta": {"content"' not in next(lines):  # until tokens flow
            pass
        assert serving.admitted == 1 and serving.engine.running() == 1
    deadline = time.time() + 5
    while (serving.admitted or serving.engine.running()) and time.time() < deadline:
        time.sleep(0.01)
    assert serving.admitted == 0 and serving.engine.running() == 0
    reply = httpx.post(url + "/v1/chat/completions", json={"model": "tiny", "messages": MESSAGES, "max_tokens": 3})
    assert reply.status_code == 200


def test_disconnect_without_streaming_frees_the_slot(narrow):
    url, serving = narrow
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url + "/v1/chat/completions", timeout=0.5,
                   json={"model": "tiny", "messages": MESSAGES, "max_tokens": 2000})
    deadline = time.time() + 5
    while (serving.admitted or serving.engine.running()) and time.time() < deadline:
        time.sleep(0.01)
    assert serving.admitted == 0 and serving.engine.running() == 0


def test_soak_mixed_good_and_bad_requests(server):
    """A few hundred requests from several clients; every answer is the right one and the server stays up."""
    url = server[0]
    good = {"model": "tiny", "messages": MESSAGES, "max_tokens": 4, "temperature": 0}
    cases = [(good, 200), ({**good, "model": "alpha"}, 200), ({**good, "stream": True}, 200),
             ({**good, "temperature": 9}, 400), ({**good, "model": "ghost"}, 404), ("{broken", 400),
             ({**good, "temperature": 1e-9, "n": 2}, 200), ({**good, "seed": -1}, 400),
             ({"model": "tiny", "prompt": [5, 6, 7], "max_tokens": 0, "echo": True, "logprobs": 1}, 200)]
    failures, count = [], [0]

    def worker(offset):
        with httpx.Client(timeout=60) as http:
            for i in range(40):
                body, status = cases[(offset + i) % len(cases)]
                path = "/v1/completions" if "prompt" in body else "/v1/chat/completions"
                content = body if isinstance(body, str) else json.dumps(body)
                response = http.post(url + path, content=content, headers={"content-type": "application/json"})
                count[0] += 1
                if response.status_code != status:
                    failures.append((body, response.status_code, response.text[:200]))

    started = time.time()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    [t.start() for t in threads]
    [t.join(timeout=120) for t in threads]
    assert count[0] == 240 and not failures, failures[:3]
    assert time.time() - started < 120
    assert httpx.get(url + "/health").status_code == 200
