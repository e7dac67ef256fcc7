"""Prompt scoring through `/v1/completions` with `echo` (lm-evaluation-harness's `local-completions` protocol)."""

from __future__ import annotations

import httpx
import pytest
import torch


def model_logprobs(model_dir, ids):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].log_softmax(-1)
    return [float(logits[i - 1, ids[i]]) for i in range(1, len(ids))], logits


@pytest.mark.parametrize("max_tokens", [0, 1])
def test_echo_returns_prompt_logprobs(server, tiny_model_dir, tiny_tokenizer, max_tokens):
    ids = tiny_tokenizer("What is 12 + 30? 12 + 30 = 42.")["input_ids"]
    body = httpx.post(server[0] + "/v1/completions", timeout=60, json={
        "model": "tiny", "prompt": [ids, ids[:5]], "max_tokens": max_tokens, "echo": True, "logprobs": 2,
        "temperature": 0}).json()
    expected, logits = model_logprobs(tiny_model_dir, ids)
    first = body["choices"][0]["logprobs"]
    assert first["token_logprobs"][0] is None and first["top_logprobs"][0] is None
    assert first["token_logprobs"][1:len(ids)] == pytest.approx(expected, abs=1e-4)
    assert len(first["tokens"]) == len(ids) + max_tokens
    assert first["tokens"][:len(ids)] == [tiny_tokenizer.decode([t]) for t in ids]
    best = logits[2].topk(2)
    assert set(first["top_logprobs"][3]) >= {tiny_tokenizer.decode([t]) for t in best.indices.tolist()}
    assert len(body["choices"][1]["logprobs"]["tokens"]) == 5 + max_tokens
    assert body["usage"]["prompt_tokens"] == len(ids) + 5


def test_lm_eval_local_completions_payload_scores_like_the_model(server, tiny_model_dir, tiny_tokenizer):
    """lm_eval's own request builder and response parser for log-likelihoods, over HTTP to the server."""
    from types import SimpleNamespace

    from lm_eval.models.openai_completions import LocalCompletionsAPI

    pairs = [("What is 12 + 30?", " 12 + 30 = 42."), ("The quick brown fox", " jumps over the lazy dog.")]
    contexts = [tiny_tokenizer(c)["input_ids"] for c, _ in pairs]
    wholes = [ids + tiny_tokenizer(cont, add_special_tokens=False)["input_ids"] for ids, (_, cont) in
              zip(contexts, pairs)]
    payload = LocalCompletionsAPI._create_payload(SimpleNamespace(model="tiny"), wholes, generate=False)
    response = httpx.post(server[0] + "/v1/completions", json=payload, timeout=60)
    assert response.status_code == 200, response.text
    scores = LocalCompletionsAPI.parse_logprobs(response.json(), wholes, [len(c) for c in contexts])
    for context_ids, whole, (score, is_greedy) in zip(contexts, wholes, scores):
        expected, logits = model_logprobs(tiny_model_dir, whole)
        assert score == pytest.approx(sum(expected[len(context_ids) - 1:]), abs=1e-3)
        greedy = all(logits[i - 1].argmax() == whole[i] for i in range(len(context_ids), len(whole)))
        assert is_greedy == greedy
