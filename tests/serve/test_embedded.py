"""The embedded SmolLM2 behind the server: greedy answers equal `model.generate`, alone and batched."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from server_helpers import running_server

QUESTIONS = ["What is the capital of France?", "Name three primary colors.", "Why is the sky blue?"]


@pytest.mark.slow
def test_embedded_model_greedy_through_the_server_equals_generate():
    import openai
    from transformers import AutoModelForCausalLM

    from tunestack.config import ModelArgs
    from tunestack.hub import resolve_model
    from tunestack.inference.backends import EngineOptions, create_engine
    from tunestack.serve.app import build_app
    from tunestack.serve.serving import ServeLimits, Serving

    engine, tokenizer = create_engine(ModelArgs(model="smollm2-135m-instruct", dtype="fp32"), "pt",
                                      EngineOptions(max_batch=8))
    model = AutoModelForCausalLM.from_pretrained(resolve_model("smollm2-135m-instruct").path, dtype=torch.float32)
    expected = []
    for question in QUESTIONS:
        text = tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                             add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        out = model.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False)
        expected.append(tokenizer.decode(out[0, len(ids):], skip_special_tokens=True))
    serving = Serving(engine, tokenizer, "smollm2-135m-instruct", ServeLimits(8, 8, 64))
    try:
        with running_server(build_app(serving)) as url:
            client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=300)

            def ask(question):
                reply = client.chat.completions.create(model="smollm2-135m-instruct", max_tokens=24, temperature=0,
                                                       messages=[{"role": "user", "content": question}])
                return reply.choices[0].message.content

            assert [ask(q) for q in QUESTIONS] == expected
            with ThreadPoolExecutor(3) as pool:
                together = list(pool.map(ask, QUESTIONS))
            assert [t.split()[:6] for t in together] == [e.split()[:6] for e in expected]
    finally:
        engine.close()
