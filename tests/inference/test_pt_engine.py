"""The continuous-batching pt engine against plain transformers: same greedy tokens whatever joins or leaves."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from tunestack.inference.engine import SamplingParams
from tunestack.inference.pt import PtEngine

PROMPTS = ["What is 12 + 30?", "hello", "The quick brown fox jumps over the lazy dog", "你好"]


@pytest.fixture()
def engine(tiny_model, tiny_tokenizer):
    engine = PtEngine(tiny_model, tiny_tokenizer.pad_token_id, [tiny_tokenizer.eos_token_id], max_batch=4)
    yield engine
    engine.close()


def reference(model, ids, n):
    out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0)
    return out[0, len(ids):].tolist()


def test_batched_and_staggered_greedy_equals_generate(engine, tiny_model, tiny_tokenizer):
    prompts = [tiny_tokenizer(p)["input_ids"] for p in PROMPTS]
    params = SamplingParams(max_new_tokens=16, ignore_eos=True)
    expected = [reference(tiny_model, p, 16) for p in prompts]
    assert engine.generate(prompts, params) == expected
    results = {}

    def ask(i):  # more requests than batch slots, arriving while others run
        results[i] = engine.generate([prompts[i % 4]], SamplingParams(max_new_tokens=8 + i, ignore_eos=True))[0]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
        time.sleep(0.005)
    for thread in threads:
        thread.join()
    for i, tokens in results.items():
        assert len(tokens) == 8 + i
        assert tokens[:16] == expected[i % 4][:8 + i]


def test_prompt_logprobs_match_a_forward_pass(engine, tiny_model, tiny_tokenizer):
    ids = tiny_tokenizer("The quick brown fox")["input_ids"]
    out = next(engine.stream_steps(ids, SamplingParams(max_new_tokens=0, prompt_logprobs=3)))
    with torch.no_grad():
        logits = tiny_model(torch.tensor([ids])).logits[0].log_softmax(-1)
    assert out.finish_reason == "length"
    assert [p.token_id for p in out.prompt_logprobs] == ids[1:]
    for i, scored in enumerate(out.prompt_logprobs):
        assert scored.logprob == pytest.approx(float(logits[i, ids[i + 1]]), abs=1e-4)
        assert [t for t, _ in scored.top] == logits[i].topk(3).indices.tolist()


def test_cancel_frees_the_slot(engine, tiny_tokenizer):
    ids = tiny_tokenizer("hello")["input_ids"]
    steps = engine.stream_steps(ids, SamplingParams(max_new_tokens=400, ignore_eos=True))
    next(steps), next(steps)
    assert engine.running() == 1
    steps.close()
    deadline = time.time() + 5
    while engine.running() and time.time() < deadline:
        time.sleep(0.01)
    assert engine.running() == 0


def test_stop_token_and_seeded_sampling(engine, tiny_model, tiny_tokenizer):
    ids = tiny_tokenizer("hello")["input_ids"]
    greedy = reference(tiny_model, ids, 10)
    stopped = engine.generate([ids], SamplingParams(max_new_tokens=10, stop_token_ids=[greedy[3]], ignore_eos=True))
    assert stopped[0] == greedy[:greedy.index(greedy[3])]
    params = SamplingParams(max_new_tokens=12, temperature=1.0, top_k=20, top_p=0.9, seed=5, ignore_eos=True)
    assert engine.generate([ids], params) == engine.generate([ids], params)
    other = SamplingParams(max_new_tokens=12, temperature=1.0, top_k=20, top_p=0.9, seed=6, ignore_eos=True)
    assert engine.generate([ids], params) != engine.generate([ids], other)


def test_a_failing_newcomer_does_not_end_the_running_batch(engine, tiny_model, tiny_tokenizer):
    ids = tiny_tokenizer("hello")["input_ids"]
    steps = engine.stream_steps(ids, SamplingParams(max_new_tokens=30, ignore_eos=True))
    first = [next(steps).token_id for _ in range(3)]
    with pytest.raises(IndexError):
        engine.generate([[10**6]], SamplingParams(max_new_tokens=2))  # no such token: its prefill fails
    rest = [out.token_id for out in steps]
    assert first + rest == reference(tiny_model, ids, 30)


def test_sliding_window_models_run_one_sequence_at_a_time_and_stay_exact():
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    model = MistralForCausalLM(MistralConfig(vocab_size=120, hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                             sliding_window=8)).eval()
    engine = PtEngine(model, 0, [], max_batch=8)
    try:
        prompts = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15]]
        got = engine.generate(prompts, SamplingParams(max_new_tokens=12))
        assert got == [reference(model, p, 12) for p in prompts]
    finally:
        engine.close()


@pytest.mark.parametrize("settings", [dict(repetition_penalty=1e-300), dict(top_p=5e-324), dict(top_p=1e-300),
                                      dict(temperature=2.0, repetition_penalty=1e300, frequency_penalty=-2.0)])
def test_extreme_sampling_settings_still_draw_the_likely_token(settings):
    """Penalties and temperatures that overflow float32, and a top_p below the head's own probability, still draw a
    token (these reached `torch.multinomial` as NaN); a vanishing top_p keeps exactly the most likely token."""
    from tunestack.inference.sampler import RowState, sample

    logits = torch.tensor([[1.0, 3.0, 2.0, 0.5]])
    params = SamplingParams(**{"temperature": 1.0, "seed": 0, **settings})
    row = RowState(params, [1, 2], vocab_size=4, device="cpu")
    tokens = [sample(logits, [row])[0] for _ in range(20)]
    assert all(0 <= t < 4 for t in tokens)
    if "top_p" in settings:
        assert set(tokens) == {1}


def test_decoding_passes_the_cache_under_the_model_s_own_name(engine, tiny_tokenizer):
    """transformers renamed `past_key_values` to `cache`: the old name warns (a FutureWarning that it goes in 5.40)."""
    import logging
    import warnings

    from transformers.utils import logging as hf_logging

    from tunestack.inference.kv_batch import cache_argument

    assert cache_argument(engine.model) == "cache"  # this transformers has the new name: the check below can fail
    logging.Logger.warning_once.cache_clear()  # a warning another test already printed would print again
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    hf_logging.get_logger("transformers").addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            engine.generate([tiny_tokenizer("hello")["input_ids"]], SamplingParams(max_new_tokens=4, ignore_eos=True))
    finally:
        hf_logging.get_logger("transformers").removeHandler(handler)
    messages = seen + [str(w.message) for w in caught]
    assert not [m for m in messages if "past_key_values" in m], messages
