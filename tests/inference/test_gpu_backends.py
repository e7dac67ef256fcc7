"""GPU backends end to end: the same greedy answer as the pt engine through the real server and openai client (and
for vLLM, with an image).

These need a CUDA GPU and the backend installed; elsewhere each test skips and says which is missing.
"""

from __future__ import annotations

import importlib.util

import pytest

from server_helpers import running_server

MODULES = {"vllm": "vllm", "sglang": "sglang", "lmdeploy": "lmdeploy"}


def _skip_reason(backend: str) -> str | None:
    try:
        import torch

        if not torch.cuda.is_available():
            return "needs a CUDA GPU (none on this machine)"
    except ImportError:
        return "needs torch with CUDA"
    if importlib.util.find_spec(MODULES[backend]) is None:
        return f"needs {backend} installed (pip install 'tunestack[{backend}]')"
    return None


@pytest.mark.gpu
@pytest.mark.parametrize("backend", sorted(MODULES))
def test_backend_greedy_matches_pt_through_the_server(backend):
    reason = _skip_reason(backend)
    if reason:
        pytest.skip(reason)
    import openai

    from tunestack.config import ModelArgs
    from tunestack.inference.backends import EngineOptions, create_engine
    from tunestack.serve.app import build_app
    from tunestack.serve.serving import ServeLimits, Serving

    model_args = ModelArgs(model="smollm2-135m-instruct", dtype="fp32")
    messages = [{"role": "user", "content": "Name three primary colors."}]
    answers = {}
    for name in ("pt", backend):
        engine, tokenizer = create_engine(model_args, name, EngineOptions(max_batch=4, max_context=2048))
        serving = Serving(engine, tokenizer, "m", ServeLimits(4, 8, 64))
        try:
            with running_server(build_app(serving)) as url:
                client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
                reply = client.chat.completions.create(model="m", messages=messages, max_tokens=16, temperature=0,
                                                       logprobs=True, top_logprobs=2)
                streamed = client.chat.completions.create(model="m", messages=messages, max_tokens=16,
                                                          temperature=0, stream=True)
                answers[name] = reply.choices[0].message.content
                assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == answers[name]
                assert len(reply.choices[0].logprobs.content) == reply.usage.completion_tokens
        finally:
            engine.close()
    assert answers[backend].split()[:4] == answers["pt"].split()[:4]


@pytest.mark.gpu
def test_vllm_reads_images_as_the_pt_engine_does(llava_dir):
    """An image request through `serve --backend vllm` (the picture handed to vLLM as read, its placeholder
    expanded by vLLM) answers as the pt engine does."""
    reason = _skip_reason("vllm")
    if reason:
        pytest.skip(reason)
    import openai
    from tiny_vlms import image, png_data_url

    from tunestack.config import ModelArgs
    from tunestack.inference.backends import EngineOptions, build_engine
    from tunestack.serve.app import build_app
    from tunestack.serve.serving import ServeLimits, Serving

    content = [{"type": "image_url", "image_url": {"url": png_data_url(image())}}, {"type": "text", "text": "Hi?"}]
    answers = {}
    for name in ("pt", "vllm"):
        parts = build_engine(ModelArgs(model=str(llava_dir), dtype="fp32"), name, EngineOptions(max_batch=2))
        assert parts.processor is not None
        serving = Serving(parts.engine, parts.tokenizer, "m", ServeLimits(2, 8, 64), processor=parts.processor)
        try:
            with running_server(build_app(serving)) as url:
                client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
                reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": content}],
                                                       max_tokens=8, temperature=0)
                answers[name] = reply.choices[0].message.content
        finally:
            parts.engine.close()
    assert answers["vllm"] == answers["pt"]
