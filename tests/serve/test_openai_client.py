"""The server driven by the official openai client: chat, streaming, completions, models, usage, logprobs."""

from __future__ import annotations

import torch

MESSAGES = [{"role": "user", "content": "What is 12 + 30?"}]


def reference_greedy(model_dir, prompt_ids, max_new_tokens, adapter=None):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    out = model.generate(torch.tensor([prompt_ids]), max_new_tokens=max_new_tokens, do_sample=False,
                         pad_token_id=0)
    return out[0, len(prompt_ids):].tolist()


def prompt_ids(tokenizer, messages):
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_models_lists_base_and_adapters(client):
    assert sorted(m.id for m in client.models.list().data) == ["alpha", "beta", "tiny"]


def test_chat_greedy_equals_model_generate(client, tiny_model_dir, tiny_tokenizer):
    reply = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=12, temperature=0)
    ids = prompt_ids(tiny_tokenizer, MESSAGES)
    expected_tokens = reference_greedy(tiny_model_dir, ids, 12)
    eos = tiny_tokenizer.eos_token_id
    expected_tokens = expected_tokens[:expected_tokens.index(eos)] if eos in expected_tokens else expected_tokens
    assert reply.choices[0].message.content == tiny_tokenizer.decode(expected_tokens, skip_special_tokens=True)
    assert reply.choices[0].message.role == "assistant"
    assert reply.usage.prompt_tokens == len(ids)
    assert reply.usage.completion_tokens == len(expected_tokens)
    assert reply.usage.total_tokens == len(ids) + len(expected_tokens)
    assert reply.choices[0].finish_reason == ("length" if len(expected_tokens) == 12 else "stop")


def test_stream_matches_non_stream_and_reports_usage(client):
    whole = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=10, temperature=0)
    chunks = list(client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=10, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == whole.usage.total_tokens


def test_seeded_sampling_repeats_and_n_differs(client):
    kwargs = dict(model="tiny", messages=MESSAGES, max_tokens=8, temperature=1.0, seed=7, n=3)
    first, second = client.chat.completions.create(**kwargs), client.chat.completions.create(**kwargs)
    texts = [c.message.content for c in first.choices]
    assert texts == [c.message.content for c in second.choices]
    assert len(set(texts)) > 1
    assert [c.index for c in first.choices] == [0, 1, 2]


def test_stop_string_cuts_the_text(client):
    whole = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=16, temperature=0)
    text = whole.choices[0].message.content
    stop = text[5:8]
    cut = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=16, temperature=0, stop=[stop])
    assert cut.choices[0].message.content == text[:text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    streamed = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=16, temperature=0,
                                              stop=stop, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == text[:text.index(stop)]


def test_chat_logprobs(client):
    reply = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=4, temperature=0,
                                           logprobs=True, top_logprobs=3)
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens
    for entry in content:
        assert len(entry.top_logprobs) == 3
        assert entry.logprob == max(t.logprob for t in entry.top_logprobs)  # greedy picks the most likely
        assert entry.logprob <= 0


def test_max_completion_tokens_and_top_k(client):
    reply = client.chat.completions.create(model="tiny", messages=MESSAGES, max_completion_tokens=3, temperature=1,
                                           top_p=0.5, seed=2, extra_body={"top_k": 5, "ignore_eos": True})
    assert reply.usage.completion_tokens == 3 and reply.choices[0].finish_reason == "length"


def test_penalties_change_output(client):
    plain = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=24, temperature=0)
    penalized = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=24, temperature=0,
                                               frequency_penalty=2.0, presence_penalty=2.0)
    assert plain.choices[0].message.content != penalized.choices[0].message.content


def test_completions_text_and_token_prompts(client, tiny_tokenizer):
    ids = tiny_tokenizer("The quick brown fox")["input_ids"]
    by_text = client.completions.create(model="tiny", prompt="The quick brown fox", max_tokens=6, temperature=0)
    by_ids = client.completions.create(model="tiny", prompt=[ids, ids], max_tokens=6, temperature=0)
    assert [c.text for c in by_ids.choices] == [by_text.choices[0].text] * 2
    assert by_ids.usage.prompt_tokens == 2 * len(ids)
    streamed = client.completions.create(model="tiny", prompt="The quick brown fox", max_tokens=6, temperature=0,
                                         stream=True)
    assert "".join(c.choices[0].text for c in streamed) == by_text.choices[0].text


def test_adapters_are_chosen_per_request(client, tiny_model_dir, tiny_tokenizer, adapters):
    ids = prompt_ids(tiny_tokenizer, MESSAGES)
    outputs = {}
    for name in ("tiny", "alpha", "beta"):
        reply = client.chat.completions.create(model=name, messages=MESSAGES, max_tokens=8, temperature=0,
                                               extra_body={"ignore_eos": True})  # a vLLM extension the server supports
        outputs[name] = reply.choices[0].message.content
    assert len(set(outputs.values())) == 3
    expected = reference_greedy(tiny_model_dir, ids, 8, adapter=adapters["alpha"])
    eos = tiny_tokenizer.eos_token_id
    expected = expected[:expected.index(eos)] if eos in expected else expected
    assert outputs["alpha"].startswith(tiny_tokenizer.decode(expected, skip_special_tokens=True))


def test_concurrent_requests_for_different_adapters_share_batches_and_match(client, server):
    """Requests for base and adapters running together give what each gives alone."""
    from concurrent.futures import ThreadPoolExecutor

    def ask(name, words):
        reply = client.chat.completions.create(model=name, messages=[{"role": "user", "content": words}],
                                               max_tokens=20, temperature=0, extra_body={"ignore_eos": True})
        return reply.choices[0].message.content

    jobs = [(name, words) for name in ("tiny", "alpha", "beta") for words in ("hello", "What is 1 + 2?", "fox")]
    alone = [ask(*job) for job in jobs]
    engine = server[1].engine
    widest = []
    original = engine._decode

    def watching_decode():
        widest.append(len(engine._running))
        original()

    engine._decode = watching_decode
    try:
        with ThreadPoolExecutor(len(jobs)) as pool:
            together = list(pool.map(lambda job: ask(*job), jobs))
    finally:
        del engine._decode
    assert together == alone
    assert max(widest) > 3  # sequences of several adapters were decoded in one forward pass


def test_json_mode_returns_one_json_object(client):
    import json

    for temperature in (0, 1.0):
        reply = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=60, seed=1,
                                               temperature=temperature, response_format={"type": "json_object"})
        choice = reply.choices[0]
        text = choice.message.content
        assert text.lstrip().startswith("{")
        if choice.finish_reason == "stop":
            assert isinstance(json.loads(text), dict)
        else:  # cut by max_tokens: still a valid beginning of an object
            from tunestack.inference.json_mode import JsonPrefix

            assert JsonPrefix().feed(text) is not None
