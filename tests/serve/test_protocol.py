"""Protocol logic without a model: incremental detokenizing, stop strings, echo scoring and chunk shapes."""

from __future__ import annotations

import asyncio

import pytest

from server_helpers import FakeEngine
from tunestack.inference.detokenize import Detokenizer, StopScanner


def test_detokenizer_rebuilds_text_with_multibyte_characters(tiny_tokenizer):
    text = "The quick brown fox. 你好，世界。"
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    detokenizer = Detokenizer(tiny_tokenizer)
    pieces = [detokenizer.add(t) for t in ids] + [detokenizer.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


@pytest.mark.parametrize("pieces, stops, shown, stopped", [
    (["Hel", "lo wo", "rld"], ["lo w"], "Hel", True),
    (["ab", "c", "STO", "P", "xyz"], ["STOP"], "abc", True),
    (["ab", "c"], ["STOP"], "abc", False),
    (["one two", " three"], ["two", "one"], "", True),
    (["x" * 10], [], "x" * 10, False),
])
def test_stop_scanner(pieces, stops, shown, stopped):
    scanner = StopScanner(stops)
    out = "".join(scanner.push(p, final=i == len(pieces) - 1) for i, p in enumerate(pieces))
    assert out == shown and scanner.stopped == stopped


def test_stop_scanner_never_shows_a_stop_prefix_early():
    scanner = StopScanner(["END"])
    assert scanner.push("abcE") == "ab"  # "cE" could still become ...END
    assert scanner.push("N") == "c"
    assert scanner.push("D and more") == ""
    assert scanner.stopped


def _serving(tokenizer, tokens, **limits):
    from tunestack.serve.serving import ServeLimits, Serving

    return Serving(FakeEngine(tokens, delay=0.001, max_batch=8), tokenizer, "fake", ServeLimits(**limits))


def test_completion_echo_scoring_shape(tiny_tokenizer):
    from tunestack.inference.engine import TokenLogprob
    from tunestack.serve.completions import Completion
    from tunestack.serve.protocol import CompletionRequest

    serving = _serving(tiny_tokenizer, [5])
    engine = serving.engine
    submit = engine.submit  # the fake computes no prompt logprobs: attach made-up ones to the first output

    def submit_with_prompt_logprobs(request):
        prompt = request.prompt
        lps = [TokenLogprob(t, -1.0 * i, [(t, -0.5)]) for i, t in enumerate(prompt[1:], 1)]
        inner = request.emit

        def emit(out, first=[True]):
            if first[0]:
                out.prompt_logprobs, first[0] = lps, False
            inner(out)
        request.emit = emit
        submit(request)

    engine.submit = submit_with_prompt_logprobs
    request = CompletionRequest(model="fake", prompt=[[7, 8, 9]], max_tokens=0, echo=True, logprobs=1)
    body = asyncio.run(Completion(serving, request).response())
    logprobs = body["choices"][0]["logprobs"]
    assert logprobs["token_logprobs"] == [None, -1.0, -2.0]
    assert logprobs["top_logprobs"][0] is None and len(logprobs["top_logprobs"]) == 3
    assert logprobs["tokens"] == [tiny_tokenizer.decode([t]) for t in (7, 8, 9)]
    assert logprobs["text_offset"][0] == 0
    assert logprobs["text_offset"][2] == len(logprobs["tokens"][0]) + len(logprobs["tokens"][1])
    assert body["choices"][0]["text"] == tiny_tokenizer.decode([7, 8, 9])
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 0, "total_tokens": 3}


def test_unknown_fields_are_logged(caplog):
    from tunestack.serve.protocol import ChatCompletionRequest

    ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "x"}], tool_choice="auto")
    assert "tool_choice" in caplog.text


def test_content_parts_are_joined_by_newlines_as_in_training():
    from tunestack.serve.protocol import ChatMessage

    message = ChatMessage(role="user", content=[{"type": "text", "text": "a"}, {"type": "text", "text": "b"}])
    assert message.text() == "a\nb"


def test_an_engine_failure_mid_stream_arrives_as_an_error_event(tiny_tokenizer):
    import json

    from tunestack.inference.engine import StepOutput
    from tunestack.serve.chat import ChatCompletion
    from tunestack.serve.protocol import ChatCompletionRequest

    serving = _serving(tiny_tokenizer, [5], max_concurrency=2, max_queue=0)

    def failing_submit(request):
        request.emit(StepOutput(token_id=5))
        request.emit(StepOutput(error=RuntimeError("device lost")))

    serving.engine.submit = failing_submit
    request = ChatCompletionRequest(model="fake", messages=[{"role": "user", "content": "x"}], stream=True)

    async def collect():
        return [event async for event in ChatCompletion(serving, request).stream()]

    events = asyncio.run(collect())
    assert events[-1] == "data: [DONE]\n\n"
    error = json.loads(events[-2].removeprefix("data: "))["error"]
    assert "device lost" in error["message"] and error["type"] == "server_error"
    assert serving.admitted == 0
