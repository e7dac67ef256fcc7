"""The llama.cpp backend end to end on a GGUF written by `tunestack export --to gguf`: same greedy tokens as
transformers, through the real server and the openai client. Skips where llama-cpp-python is not installed."""

from __future__ import annotations

import importlib.util

import pytest

from helpers import cli
from server_helpers import running_server


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                    reason="needs llama-cpp-python (pip install 'tunestack[llamacpp]')")
def test_llama_cpp_serves_an_exported_gguf_like_transformers(tiny_model_dir, tmp_path):
    import openai
    import torch
    from transformers import AutoModelForCausalLM

    from tunestack.config import ModelArgs
    from tunestack.inference.backends import EngineOptions, create_engine
    from tunestack.serve.app import build_app
    from tunestack.serve.serving import ServeLimits, Serving

    cli("export", "--model", str(tiny_model_dir), "--to", "gguf", "--gguf_type", "f32", "--output_dir",
        str(tmp_path / "out"), "--eval_ppl", "false")
    engine, tokenizer = create_engine(ModelArgs(model=str(tmp_path / "out" / "model-f32.gguf")), "llama.cpp",
                                      EngineOptions(max_context=256))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    ids = tokenizer("The quick brown fox")["input_ids"]
    expected = model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False, eos_token_id=None,
                              pad_token_id=0)[0, len(ids):].tolist()
    serving = Serving(engine, tokenizer, "gguf", ServeLimits(2, 4, 16))
    try:
        with running_server(build_app(serving)) as url:
            client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=120)
            reply = client.completions.create(model="gguf", prompt=[ids], max_tokens=8, temperature=0,
                                              extra_body={"ignore_eos": True})
            assert reply.choices[0].text == tokenizer.decode(expected, skip_special_tokens=True)
            assert reply.usage.completion_tokens == 8
            chat = client.chat.completions.create(model="gguf", messages=[{"role": "user", "content": "hi"}],
                                                  max_tokens=5, temperature=0, stream=True)
            assert all(c.choices[0].finish_reason in (None, "stop", "length") for c in chat if c.choices)
            with pytest.raises(openai.BadRequestError, match="logprobs"):
                client.completions.create(model="gguf", prompt="hi", max_tokens=2, logprobs=1)
    finally:
        engine.close()
