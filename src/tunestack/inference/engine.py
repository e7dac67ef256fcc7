"""The engine interface on token ids and its transformers (pt) backend; tokenization stays outside."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass
class SamplingParams:
    """How to pick tokens; temperature 0 is greedy."""

    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop_token_ids: list[int] = field(default_factory=list)


class PtEngine:
    """Generation with transformers' `generate` on a loaded model; prompts and outputs are token ids."""

    def __init__(self, model, pad_token_id: int, eos_token_ids: list[int]):
        self.model = model.eval()
        self.pad_token_id = pad_token_id
        self.eos_token_ids = list(eos_token_ids)
        self._lock = threading.Lock()

    def _generate_kwargs(self, params: SamplingParams) -> dict:
        from transformers import GenerationConfig

        sample = params.temperature > 0
        config = GenerationConfig(
            max_new_tokens=params.max_new_tokens,
            do_sample=sample,
            temperature=params.temperature if sample else None,
            top_p=params.top_p if sample else None,
            top_k=(params.top_k or None) if sample else None,
            repetition_penalty=params.repetition_penalty,
            eos_token_id=self.eos_token_ids + list(params.stop_token_ids),
            pad_token_id=self.pad_token_id,
        )
        return {"generation_config": config}

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[int]]:
        """Completions (token ids, stop token excluded) for a batch of prompts, generated together."""
        import torch

        width = max(len(p) for p in prompts)
        ids = torch.tensor([[self.pad_token_id] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        device = self.model.device
        # no_grad, not inference_mode: optimum-quanto's int4 weights fail inside inference mode.
        with self._lock, torch.no_grad():
            if params.seed is not None:
                torch.manual_seed(params.seed)
            out = self.model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                      **self._generate_kwargs(params))
        return [self._trim(row[width:].tolist(), params) for row in out]

    def stream(self, prompt: list[int], params: SamplingParams) -> Iterator[int]:
        """Yield completion token ids one at a time as they are generated."""
        import queue

        import torch
        from transformers.generation.streamers import BaseStreamer

        tokens: queue.Queue = queue.Queue()
        done = object()

        class _Streamer(BaseStreamer):
            first = True

            def put(self, value):
                if self.first:  # generate() first hands over the prompt itself
                    self.first = False
                    return
                for token in value.reshape(-1).tolist():
                    tokens.put(token)

            def end(self):
                tokens.put(done)

        def work():
            try:
                with self._lock, torch.no_grad():
                    if params.seed is not None:
                        torch.manual_seed(params.seed)
                    ids = torch.tensor([prompt], device=self.model.device)
                    self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), streamer=_Streamer(),
                                        **self._generate_kwargs(params))
            except BaseException as exc:  # surfaced to the consumer below
                tokens.put(exc)
                tokens.put(done)

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        stops = set(self.eos_token_ids) | set(params.stop_token_ids)
        while (item := tokens.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            if item in stops:
                continue
            yield item
        thread.join()

    def _trim(self, tokens: list[int], params: SamplingParams) -> list[int]:
        stops = set(self.eos_token_ids) | set(params.stop_token_ids)
        for index, token in enumerate(tokens):
            if token in stops:
                return tokens[:index]
        return tokens
