"""Pick each row's next token under its own sampling settings, and report log-probabilities when asked."""

from __future__ import annotations

import torch

from tunestack.inference.engine import SamplingParams, TokenLogprob
from tunestack.inference.json_mode import JsonPrefix

_JSON_CANDIDATES = 64  # JSON mode samples among the most likely tokens that keep the JSON valid


class RowState:
    """What sampling needs to remember about one sequence: its random generator and the tokens seen so far."""

    def __init__(self, params: SamplingParams, prompt: list[int], vocab_size: int, device,
                 token_texts: list[str] | None = None):
        self.params = params
        self.json = JsonPrefix() if params.json_object else None
        self.token_texts = token_texts
        self.generator = None
        if not params.greedy:
            self.generator = torch.Generator(device=device)
            if params.seed is not None:
                self.generator.manual_seed(params.seed)
            else:
                self.generator.seed()
        self.penalized = params.presence_penalty != 0 or params.frequency_penalty != 0 or \
            params.repetition_penalty != 1.0
        self.counts = torch.zeros(vocab_size, device=device) if self.penalized else None
        self.seen = torch.zeros(vocab_size, dtype=torch.bool, device=device) if self.penalized else None
        if self.penalized and prompt:
            self.seen[torch.tensor(prompt, device=device)] = True

    def record(self, token: int) -> None:
        if self.json is not None:
            self.json = self.json.feed(self.token_texts[token]) or self.json
        if self.penalized:
            self.counts[token] += 1
            self.seen[token] = True


def sample(logits: torch.Tensor, rows: list[RowState], end_token: int | None = None) -> list[int]:
    """One token per row of `logits` ([rows, vocab], float32); `end_token` ends a finished JSON object."""
    tokens = logits.argmax(dim=-1).tolist()
    for index, row in enumerate(rows):
        if row.params.greedy and not row.penalized and row.json is None:
            continue
        scores = _penalize(logits[index], row) if row.penalized else logits[index]
        if row.json is not None:
            if row.json.done and end_token is not None:
                tokens[index] = end_token
                continue
            scores = _json_only(scores, row, 1 if row.params.greedy else _JSON_CANDIDATES)
        tokens[index] = int(scores.argmax()) if row.params.greedy else _draw(scores, row)
    return tokens


def _json_only(scores: torch.Tensor, row: RowState, wanted: int) -> torch.Tensor:
    """`scores` with every token masked but the `wanted` most likely ones that keep the JSON valid."""
    allowed = []
    for token in scores.argsort(descending=True).tolist():
        text = row.token_texts[token]
        if text and row.json.feed(text) is not None:
            allowed.append(token)
            if len(allowed) == wanted:
                break
    masked = torch.full_like(scores, float("-inf"))
    if allowed:
        index = torch.tensor(allowed, device=scores.device)
        masked[index] = scores[index]
    return masked


def _penalize(scores: torch.Tensor, row: RowState) -> torch.Tensor:
    p = row.params
    scores = scores.clone()
    if p.repetition_penalty != 1.0:
        seen = scores[row.seen]
        scores[row.seen] = torch.where(seen > 0, seen / p.repetition_penalty, seen * p.repetition_penalty)
    if p.frequency_penalty:
        scores -= p.frequency_penalty * row.counts
    if p.presence_penalty:
        scores -= p.presence_penalty * (row.counts > 0).float()
    return scores


def _draw(scores: torch.Tensor, row: RowState) -> int:
    probs = _probabilities(scores, row)
    if probs is None:
        return int(scores.argmax())
    return int(torch.multinomial(probs, 1, generator=row.generator))


def _probabilities(scores: torch.Tensor, row: RowState) -> torch.Tensor | None:
    """The distribution `row` samples from (temperature, top-k, top-p applied); None when no token is possible."""
    p = row.params
    # Extreme penalties or temperatures overflow float32; +inf scores would turn the softmax into NaN.
    scores = torch.nan_to_num(scores / p.temperature, nan=float("-inf"), posinf=torch.finfo(scores.dtype).max)
    if torch.isneginf(scores).all():
        return None
    if 0 < p.top_k < scores.numel():
        kth = torch.topk(scores, p.top_k).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if p.top_p < 1.0:
        ordered, order = torch.sort(scores, descending=True)
        cumulative = ordered.softmax(-1).cumsum(-1)
        drop = cumulative - ordered.softmax(-1) >= p.top_p  # keep the smallest head reaching top_p
        drop[0] = False  # and always the most likely token (rounding can put it past a tiny top_p)
        scores = scores.clone()
        scores[order[drop]] = float("-inf")
    return scores.softmax(-1)


def verify_draft(logits: torch.Tensor, row: RowState, draft: int) -> tuple[int, bool]:
    """The token `row` emits at a position where a drafter proposed `draft`, and whether that is the draft.

    Greedy: the most likely token. Sampling: the draft with probability p(draft) under the row's own distribution,
    else a token drawn from p with the draft taken out (renormalised): the rule of speculative sampling for a
    deterministic drafter (its distribution q is all on the draft), which leaves each emitted token distributed
    exactly as plain sampling would have drawn it. Penalties see the tokens recorded so far, as in `sample`."""
    scores = _penalize(logits, row) if row.penalized else logits
    if row.params.greedy:
        token = int(scores.argmax())
        return token, token == draft
    probs = _probabilities(scores, row)
    if probs is None:
        return int(scores.argmax()), False
    if float(torch.rand((), generator=row.generator, device=probs.device)) < float(probs[draft]):
        return draft, True
    rest = probs.clone()
    rest[draft] = 0
    if float(rest.sum()) <= 0:
        return draft, True
    return int(torch.multinomial(rest, 1, generator=row.generator)), False


def token_logprobs(logits: torch.Tensor, chosen: list[int], top: list[int | None]) -> list[TokenLogprob | None]:
    """The chosen token's logprob and the `top[i]` most likely tokens for each row asking for them (raw model
    distribution, before temperature and penalties, as OpenAI reports it)."""
    wanted = [i for i, k in enumerate(top) if k is not None]
    results: list[TokenLogprob | None] = [None] * len(chosen)
    if not wanted:
        return results
    index = torch.tensor(wanted, device=logits.device)
    logprobs = logits[index].float().log_softmax(-1)
    widest = max(top[i] for i in wanted)
    top_values, top_ids = logprobs.topk(max(widest, 1), dim=-1) if widest else (None, None)
    for position, row in enumerate(wanted):
        k = top[row]
        pairs = list(zip(top_ids[position, :k].tolist(), top_values[position, :k].tolist())) if k else []
        results[row] = TokenLogprob(chosen[row], float(logprobs[position, chosen[row]]), pairs)
    return results
