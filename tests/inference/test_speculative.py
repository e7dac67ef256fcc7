"""Speculative decoding in the pt engine: prompt lookup and a draft model give exactly the greedy output of plain
decoding, sampling keeps its distribution (chi-square tests with fixed seeds), a draft model with another tokenizer
is refused, and through the CLI `infer` answers as without it while `serve` reports the acceptance in /metrics."""

from __future__ import annotations

import re

import pytest
import torch

from helpers import build_model, cli
from tunestack.errors import TunestackError
from tunestack.inference.engine import SamplingParams
from tunestack.inference.pt import PtEngine
from tunestack.inference.sampler import RowState, verify_draft
from tunestack.inference.speculative import DraftModel, PromptLookup, check_same_tokenizer

PROMPTS = ["a b c d a b c d a b c", "the cat sat on the mat and the cat sat", "hello world", "1 2 3 4 5 1 2 3"]


@pytest.fixture(scope="module")
def models(tiny_tokenizer):
    return build_model(tiny_tokenizer).eval(), build_model(tiny_tokenizer, seed=1).eval()


def generate(model, tokenizer, prompts, params, speculator=None):
    engine = PtEngine(model, tokenizer.pad_token_id, [tokenizer.eos_token_id], speculator=speculator)
    try:
        answers = [engine.generate([tokenizer(p, add_special_tokens=False)["input_ids"]], params)[0] for p in prompts]
    finally:
        engine.close()
    return answers, engine.speculation


@pytest.mark.parametrize("drafter, settings", [
    ("prompt lookup", {}), ("prompt lookup", {"repetition_penalty": 1.3}), ("prompt lookup", {"max_new_tokens": 7}),
    ("same model", {}), ("other model", {}), ("other model", {"repetition_penalty": 1.3}),
])
def test_greedy_output_is_exactly_plain_decoding(models, tiny_tokenizer, drafter, settings):
    model, other = models
    params = SamplingParams(**{"max_new_tokens": 30, "ignore_eos": True, **settings})
    speculator = {"prompt lookup": PromptLookup(5, min_ngram=1), "same model": DraftModel(model, 4),
                  "other model": DraftModel(other, 3)}[drafter]
    plain, _ = generate(model, tiny_tokenizer, PROMPTS, params)
    fast, stats = generate(model, tiny_tokenizer, PROMPTS, params, speculator)
    assert fast == plain
    assert all(len(a) == params.max_new_tokens for a in fast)
    assert stats.proposed > 0
    if drafter == "same model":
        assert stats.accepted == stats.proposed  # the model agrees with its own greedy drafts


def test_logprobs_and_stop_tokens_match_plain_decoding(models, tiny_tokenizer):
    model, _ = models
    plain_ids, _ = generate(model, tiny_tokenizer, PROMPTS[:1], SamplingParams(max_new_tokens=20, ignore_eos=True))
    stop = plain_ids[0][9]  # a token the answer reaches: it must end the answer there, with or without drafting
    params = SamplingParams(max_new_tokens=20, ignore_eos=True, logprobs=2, stop_token_ids=[stop])

    def steps(speculator):
        engine = PtEngine(model, tiny_tokenizer.pad_token_id, [tiny_tokenizer.eos_token_id], speculator=speculator)
        try:
            prompt = tiny_tokenizer(PROMPTS[0], add_special_tokens=False)["input_ids"]
            return [(s.token_id, s.finish_reason, s.logprob and (s.logprob.token_id, round(s.logprob.logprob, 4),
                     [t for t, _ in s.logprob.top])) for s in engine.stream_steps(prompt, params)]
        finally:
            engine.close()

    plain = steps(None)
    assert plain[-1][1] == "stop" and len(plain) <= 10
    assert steps(PromptLookup(4)) == plain
    assert steps(DraftModel(model, 4)) == plain


def test_the_acceptance_rule_draws_from_the_sampling_distribution():
    """verify_draft's token, over many draws, is distributed as the row's own distribution, whatever the draft."""
    from scipy.stats import chisquare

    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -30.0])
    params = SamplingParams(temperature=0.8, top_k=5, seed=3)
    row = RowState(params, [], len(logits), "cpu")
    expected = (logits / 0.8).masked_fill(torch.arange(6) >= 5, float("-inf")).softmax(-1)
    for draft in (0, 3, 5):  # the likeliest token, an unlikely one, one top-k excludes
        draws = 6000
        counts = torch.zeros(6)
        for _ in range(draws):
            counts[verify_draft(logits, row, draft)[0]] += 1
        assert counts[5] == 0
        assert chisquare(counts[:5].numpy(), (expected[:5] * draws).numpy()).pvalue > 0.001, (draft, counts)


def test_sampled_answers_keep_their_distribution(models, tiny_tokenizer):
    """The first three tokens of sampled answers (top-k 3, so that the outcomes are few) follow the same
    distribution with and without drafting: a chi-square test of homogeneity on their counts. The drafter is the
    model itself, greedy: its drafts are always among the top 3, kept or rejected by chance."""
    from collections import Counter

    from scipy.stats import chi2_contingency

    model, _ = models
    prompt = tiny_tokenizer(PROMPTS[0], add_special_tokens=False)["input_ids"]

    def counts(speculator, seed0):
        engine = PtEngine(model, tiny_tokenizer.pad_token_id, [tiny_tokenizer.eos_token_id], speculator=speculator)
        try:
            found = Counter(tuple(engine.generate([prompt], SamplingParams(
                max_new_tokens=3, temperature=1.0, top_k=3, seed=seed0 + i, ignore_eos=True))[0]) for i in range(300))
        finally:
            engine.close()
        return found, engine.speculation

    plain, _ = counts(None, 0)
    fast, stats = counts(DraftModel(model, 2), 10_000)
    assert stats.accepted > 0 and stats.accepted < stats.proposed  # drafts both kept and rejected
    outcomes = [o for o in plain if plain[o] + fast[o] >= 10]
    table = [[plain[o] for o in outcomes], [fast[o] for o in outcomes]]
    assert len(outcomes) >= 4
    assert chi2_contingency(table).pvalue > 0.001, table


def test_a_draft_model_with_another_tokenizer_is_refused(tiny_tokenizer):
    from transformers import AutoTokenizer

    other = AutoTokenizer.from_pretrained(tiny_tokenizer.name_or_path)
    other.add_tokens(["<extra>"])
    check_same_tokenizer(tiny_tokenizer, AutoTokenizer.from_pretrained(tiny_tokenizer.name_or_path), "same")
    with pytest.raises(TunestackError, match="--draft_model other: its tokenizer differs"):
        check_same_tokenizer(tiny_tokenizer, other, "other")


def test_infer_answers_the_same_with_either_drafter(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    prompt = "say a b c d a b c d a b c d"
    base = ["infer", "--model", str(tiny_model_dir), "--prompt", prompt, "--max_new_tokens", "24"]
    plain = cli(*base).stdout
    assert cli(*base, "--prompt_lookup_num_tokens", "4").stdout == plain  # transformers' name for it
    assert cli(*base, "--draft_model", str(tiny_model_dir), "--num_speculative_tokens", "3").stdout == plain
    other = tmp_path / "other"
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.add_tokens(["<extra>"])
    tokenizer.save_pretrained(other)
    build_model(tokenizer).save_pretrained(other)
    refused = cli(*base, "--draft_model", str(other), check=False)
    assert refused.returncode != 0 and "tokenizer differs from the target model's" in refused.stderr


@pytest.mark.parametrize("backend, flags, message", [
    ("pt", {"prompt_lookup_tokens": 2, "draft_model": "x"}, "pick one drafter"),
    ("vllm", {"prompt_lookup_tokens": 2}, "runs on --backend pt"),
])
def test_conflicting_speculation_flags_are_refused_before_loading(backend, flags, message):
    from tunestack.config import ModelArgs, DecodingArgs
    from tunestack.inference.backends import EngineOptions, build_engine

    with pytest.raises(TunestackError, match=message):
        build_engine(ModelArgs(model="/nonexistent"), backend, EngineOptions(decoding=DecodingArgs(**flags)))


def test_serve_reports_the_acceptance_rate(tiny_model_dir):
    import httpx
    from openai import OpenAI

    from server_helpers import serve_subprocess

    with serve_subprocess(tiny_model_dir, "--prompt_lookup_tokens", "4") as (url, _):
        client = OpenAI(base_url=url + "/v1", api_key="none")
        answer = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "a b c d a b c d a b c d"}], max_tokens=24,
            temperature=0)
        assert answer.usage.completion_tokens > 0
        text = httpx.get(url + "/metrics").text
    figures = dict(re.findall(r"^(tunestack_speculative_\w+) ([0-9.e+-]+)$", text, re.M))
    proposed, accepted = float(figures["tunestack_speculative_draft_tokens"]), float(
        figures["tunestack_speculative_accepted_tokens"])
    assert proposed > 0 and 0 <= accepted <= proposed
    assert float(figures["tunestack_speculative_acceptance_rate"]) == pytest.approx(accepted / proposed)
