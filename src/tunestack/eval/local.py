"""The local backend: a loaded model scores continuations by its forward pass and generates through PtEngine."""

from __future__ import annotations

from collections.abc import Callable

from tunestack.eval.extract import truncate_at
from tunestack.eval.loglik import LoglikScorer, encode


class LocalBackend:
    """Evaluation on a model in this process (a local directory, run directory, hub id or alias)."""

    supports_loglikelihood = True

    def __init__(self, loaded, batch_size: int, seed: int, compile_decode: bool = False):
        from tunestack.inference.pt import PtEngine

        self.name = loaded.source
        self.tokenizer = loaded.tokenizer
        self.processor = getattr(loaded, "processor", None)
        self.scorer = LoglikScorer(loaded.model, loaded.tokenizer, batch_size)
        self.engine = PtEngine(loaded.model, loaded.tokenizer.pad_token_id, loaded.eos_token_ids,
                               max_batch=batch_size, compile_decode=compile_decode)
        self.batch_size = batch_size
        self.seed = seed
        self.notes: list[str] = []

    def loglikelihood(self, pairs: list[tuple[str, str]], progress: Callable[[int], None]):
        return self.scorer.score(pairs, progress)

    def generate(self, prompts: list[str], until: list[str], max_new_tokens: int,
                 progress: Callable[[int], None]) -> list[str]:
        """Greedy completions of raw prompts, cut at the first stop string (the harness's generate_until)."""
        max_new_tokens = min(max_new_tokens, self.scorer.max_length - 1)
        keep = self.scorer.max_length - max_new_tokens  # the prompt is cut on the left to leave room to answer
        ids = [encode(self.tokenizer, p)[-keep:] for p in prompts]
        return self._run(ids, until, max_new_tokens, progress)

    def chat(self, conversations: list[list[dict]], max_new_tokens: int, progress: Callable[[int], None]) -> list[str]:
        """Greedy answers to conversations, rendered with the chat template (a vision-language model's processor
        renders them, and reads their images)."""
        from tunestack.inference.chat_prompt import chat_prompt_ids, has_media, vision_prompt

        if self.processor is None:
            if any(has_media(messages) for messages in conversations):
                from tunestack.errors import ConfigError

                raise ConfigError([f"--model {self.name} is a text-only model and the task asks about images; "
                                   "evaluate a vision-language model"])
            ids, media = [chat_prompt_ids(self.tokenizer, messages) for messages in conversations], None
        else:
            ids, media = map(list, zip(*(vision_prompt(self.processor, messages) for messages in conversations)))
        return [text.strip() for text in self._run(ids, [], max_new_tokens, progress, media)]

    def _run(self, ids: list[list[int]], until: list[str], max_new_tokens: int, progress,
             media: list[dict | None] | None = None) -> list[str]:
        from tunestack.inference.engine import SamplingParams

        params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, seed=self.seed,
                                stop_token_ids=self._single_token_stops(until))
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))  # similar lengths together: less padding
        outputs: list[str] = [""] * len(ids)
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            pictures = [media[i] for i in batch] if media else None
            for index, tokens in zip(batch, self.engine.generate([ids[i] for i in batch], params, media=pictures)):
                outputs[index] = truncate_at(self.tokenizer.decode(tokens, skip_special_tokens=True), until)
            progress(len(batch))
        return outputs

    def _single_token_stops(self, until: list[str]) -> list[int]:
        """Stop strings that are one token of this vocabulary end generation early; the rest cut the text after."""
        stops = []
        for text in until:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) == 1 and self.tokenizer.decode(ids) == text:
                stops.append(ids[0])
        return stops
