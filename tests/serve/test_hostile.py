"""Request bodies generated from the protocol models' own JSON schemas, valid and invalid: every answer is a 200 or
an OpenAI-shaped 4xx, and the server answers as before afterwards."""

from __future__ import annotations

import json
import time

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunestack.serve.protocol import ChatCompletionRequest, CompletionRequest

SMALL = st.integers(0, 8)
JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.sampled_from([0, -1, 2**31, 2**63, -2**63, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.sampled_from(["\ud800", "a\udfffb", "\x00", "\u202e", "😀" * 5, " " * 50, "<|im_end|>", "{{ raise }}"]),
    st.lists(st.integers(-5, 500), max_size=5), st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)
"""Values of the wrong type or out of range, and strings a tokenizer or an encoder may choke on."""

OVERRIDES = {
    "model": st.sampled_from(["tiny", "tiny", "alpha", "beta", "ghost", ""]),
    "max_tokens": st.one_of(st.none(), SMALL, st.integers(-3, 10**6)),
    "max_completion_tokens": st.one_of(st.none(), SMALL, st.integers(-3, 10**6)),
    "prompt": st.one_of(st.text(max_size=40), st.lists(st.text(max_size=20), min_size=1, max_size=3),
                        st.lists(st.integers(0, 419), min_size=1, max_size=12),
                        st.lists(st.lists(st.integers(-2, 430), min_size=1, max_size=8), min_size=1, max_size=3)),
}
"""Fields where the schema alone would give almost only refusals (any model name, any prompt id, huge limits)."""


def mostly(strategy: st.SearchStrategy) -> st.SearchStrategy:
    """`strategy`, and junk one time in eight."""
    return st.integers(0, 7).flatmap(lambda i: JUNK if i == 0 else strategy)


def from_schema(schema: dict, defs: dict, name: str | None = None) -> st.SearchStrategy:
    """Values of one JSON schema node: what it allows, around its bounds, and a little beyond them."""
    if name in OVERRIDES:
        return OVERRIDES[name]
    if "$ref" in schema:
        return from_schema(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    if "anyOf" in schema:
        return st.one_of(*[from_schema(option, defs) for option in schema["anyOf"]])
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"] + ["wizard"])
    kind = schema.get("type")
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    if kind == "integer":
        low = -2**40 if low is None else int(low)
        return st.one_of(st.integers(low, low + 8), st.integers(low - 2, high + 2 if high is not None else 2**64))
    if kind == "number":
        low = -1e6 if low is None else low
        return st.one_of(st.floats(low, high if high is not None else low + 10), st.sampled_from([low, high or 1e300]))
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "string":
        return st.text(max_size=30)
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {}), defs), min_size=schema.get("minItems", 0), max_size=3)
    if kind == "object":
        return objects(schema, defs)
    return JUNK


def objects(schema: dict, defs: dict) -> st.SearchStrategy:
    """Objects with the required fields (now and then one missing), some optional ones, and an unknown one."""
    properties = schema.get("properties", {})
    fields = {key: mostly(from_schema(value, defs, key)) for key, value in properties.items()}
    required = [key for key in schema.get("required", []) if key in fields]
    optional = [key for key in fields if key not in required]

    @st.composite
    def build(draw):
        body = {key: draw(fields[key]) for key in required if draw(st.integers(0, 19))}  # 1 in 20 left out
        for key in draw(st.lists(st.sampled_from(optional), max_size=6, unique=True)) if optional else []:
            body[key] = draw(fields[key])
        if draw(st.integers(0, 9)) == 0:
            body[draw(st.text(min_size=1, max_size=8))] = draw(JUNK)
        return body

    return build()


def _model_bodies(model) -> st.SearchStrategy:
    schema = model.model_json_schema()
    return objects(schema, schema.get("$defs", {}))


BODIES = st.one_of(
    st.tuples(st.just("/v1/chat/completions"), _model_bodies(ChatCompletionRequest)),
    st.tuples(st.just("/v1/completions"), _model_bodies(CompletionRequest)),
    st.tuples(st.sampled_from(["/v1/chat/completions", "/v1/completions"]), JUNK),
)


def _check_answer(response: httpx.Response, body) -> None:
    status = response.status_code
    assert status == 200 or 400 <= status < 500, (status, body, response.text[:500])
    if status != 200:
        error = response.json()["error"]
        assert isinstance(error["message"], str) and error["message"] and isinstance(error["type"], str), error
        return
    if not response.headers["content-type"].startswith("text/event-stream"):
        assert response.json()["choices"], response.text[:500]
        return
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]", response.text[-500:]
    for event in events[:-1]:
        assert "error" not in json.loads(event), (body, event)  # an error event is a server fault mid-stream


def _greedy(http: httpx.Client, url: str) -> str:
    reply = http.post(url + "/v1/chat/completions", json={"model": "alpha", "temperature": 0, "max_tokens": 8,
                                                          "messages": [{"role": "user", "content": "What is 2 + 2?"}]})
    assert reply.status_code == 200, reply.text
    return reply.json()["choices"][0]["message"]["content"]


def test_generated_requests_get_a_200_or_an_openai_shaped_4xx(server):
    url, serving = server
    serving.limits.default_max_tokens = 8  # requests without max_tokens: n=16 in JSON mode stays quick
    with httpx.Client(timeout=120) as http:
        before = _greedy(http, url)

        @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
        @given(BODIES)
        def answered(case):
            path, body = case
            content = json.dumps(body, allow_nan=True)  # the server's JSON parser accepts NaN and Infinity
            _check_answer(http.post(url + path, content=content, headers={"content-type": "application/json"}),
                          body)

        answered()
        assert _greedy(http, url) == before
    # The engine hands a sequence its last token and then retires it: the reply can arrive in between.
    deadline = time.monotonic() + 10
    while serving.engine.running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert serving.admitted == 0 and serving.engine.running() == 0 and serving.engine.waiting() == 0
