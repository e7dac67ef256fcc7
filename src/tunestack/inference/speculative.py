"""Speculative decoding for the pt engine: a cheap drafter proposes the next few tokens, one forward pass of the
model checks them all, and every proposed token the model agrees with is emitted without a forward pass of its own.

Two drafters: prompt lookup (the continuation of the latest earlier occurrence of the last few tokens, in the
prompt or the answer so far: free, and strong when answers quote their input) and a small draft model sharing the
target's tokenizer (its greedy continuation). Both propose deterministically, so the acceptance rule in
`sampler.verify_draft` keeps greedy output identical to plain decoding and sampled tokens distributed as plain
sampling draws them; identical up to rounding: in bf16 the check pass computes several positions at once, and a
near-tie can fall the other way than in a one-position pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tunestack.errors import TunestackError
from tunestack.inference.kv_batch import cache_argument
from tunestack.model.precision import cpu_matvec


@dataclass
class SpeculationStats:
    """Draft tokens proposed and accepted since the engine started (the server's /metrics shows them)."""

    proposed: int = 0
    accepted: int = 0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.proposed if self.proposed else 0.0


class PromptLookup:
    """Drafts by n-gram lookup: find the latest earlier place where the last `n` tokens occurred (n from
    `max_ngram` down to `min_ngram`) and propose the tokens that followed it there. A single matching token is too
    weak a clue: its drafts are mostly wrong, and a rejected draft costs a wider forward pass for nothing."""

    def __init__(self, num_tokens: int, max_ngram: int = 3, min_ngram: int = 2):
        self.num_tokens = num_tokens
        self.max_ngram = max_ngram
        self.min_ngram = min_ngram

    def propose(self, key: int, tokens: list[int], limit: int) -> list[int]:
        limit = min(limit, self.num_tokens)
        if limit <= 0:
            return []
        for n in range(min(self.max_ngram, len(tokens) - 1), self.min_ngram - 1, -1):
            tail = tokens[-n:]
            for start in range(len(tokens) - n - 1, -1, -1):
                if tokens[start:start + n] == tail:
                    return tokens[start + n:start + n + limit]
        return []

    def settle(self, key: int, valid: int) -> None:
        pass

    def forget(self, key: int) -> None:
        pass


class DraftModel:
    """Drafts with a small model's greedy continuation. It keeps a KV cache for the one sequence it drafts for,
    catching up on the tokens it has not seen (the target's corrections, or a whole prompt when the sequence
    changes) in one forward pass, and cut back to the tokens the target kept."""

    def __init__(self, model, num_tokens: int):
        self.model = model.eval()
        self._cache_argument = cache_argument(model)
        self.num_tokens = num_tokens
        self.key: int | None = None
        self.cache = None
        self.length = 0  # tokens in the cache

    def propose(self, key: int, tokens: list[int], limit: int) -> list[int]:
        from transformers import DynamicCache

        limit = min(limit, self.num_tokens)
        if limit <= 0:
            return []
        if key != self.key or self.length > len(tokens) - 1:
            self.key, self.cache, self.length = key, DynamicCache(config=self.model.config), 0
        device = self.model.device
        feed = tokens[self.length:]
        drafts: list[int] = []
        with torch.no_grad():
            while True:
                with cpu_matvec(self.model, len(feed)):
                    out = self.model(input_ids=torch.tensor([feed], device=device), use_cache=True,
                                     logits_to_keep=1, **{self._cache_argument: self.cache})
                self.length += len(feed)
                drafts.append(int(out.logits[0, -1].argmax()))
                if len(drafts) == limit:
                    return drafts
                feed = drafts[-1:]

    def settle(self, key: int, valid: int) -> None:
        """The target kept the first `valid` tokens of what this drafter has cached; drop the rest."""
        if key == self.key and self.length > valid:
            cut_cache(self.cache, valid)
            self.length = valid

    def forget(self, key: int) -> None:
        if key == self.key:
            self.key, self.cache, self.length = None, None, 0


def cut_cache(cache, length: int) -> None:
    """Keep the first `length` positions of a transformers cache (its `crop` takes how many to remove)."""
    extra = int(cache.get_seq_length()) - length  # a static cache gives a tensor
    if extra > 0:
        cache.crop(-extra)


def check_same_tokenizer(target, draft, draft_name: str) -> None:
    """A draft model must number tokens as the target does; otherwise its drafts are other words."""
    if target.get_vocab() != draft.get_vocab():
        raise TunestackError(f"--draft_model {draft_name}: its tokenizer differs from the target model's "
                             f"({len(draft)} tokens against {len(target)}, or the same tokens numbered otherwise); "
                             "a draft model must share the target's tokenizer (pick one of its family)")
