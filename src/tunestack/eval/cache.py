"""The answer cache of an evaluation (OUTPUT_DIR/cache.jsonl): every answer a backend gives is appended, keyed by
the model and the exact request, so that `tunestack eval --resume` after a kill asks nothing twice."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

CACHE_FILE = "cache.jsonl"


class CachedBackend:
    """A backend whose answers come from the cache where it has them. Questions go to the backend in chunks of fixed
    boundaries in the task's own order, each appended to the cache once answered, so that a resumed run batches its
    questions exactly as an uninterrupted one and gets the same numbers."""

    def __init__(self, backend, folder: Path, model_key: str, resume: bool, chunk: int):
        self.backend = backend
        self.path = Path(folder) / CACHE_FILE
        self.model_key = model_key
        self.chunk = chunk
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.answers = _read(self.path) if resume else {}
        if not resume:
            self.path.write_text("")
        self.reused = 0
        self.supports_loglikelihood = backend.supports_loglikelihood

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def notes(self) -> list[str]:
        return self.backend.notes

    @property
    def errors(self) -> list[str]:
        return getattr(self.backend, "errors", [])

    def loglikelihood(self, pairs: list[tuple[str, str]], progress: Callable[[int], None]) -> list:
        return self._answer("loglikelihood", pairs, {}, self.backend.loglikelihood, progress)

    def generate(self, prompts: list[str], until: list[str], max_new_tokens: int, progress) -> list:
        settings = {"until": until, "max_new_tokens": max_new_tokens}
        return self._answer("generate", prompts, settings,
                            lambda items, advance: self.backend.generate(items, until, max_new_tokens, advance),
                            progress)

    def chat(self, conversations: list[list[dict]], max_new_tokens: int, progress) -> list:
        return self._answer("chat", conversations, {"max_new_tokens": max_new_tokens},
                            lambda items, advance: self.backend.chat(items, max_new_tokens, advance), progress)

    def _answer(self, kind: str, items: list, settings: dict, ask: Callable, progress) -> list:
        keys = [self._key(kind, item, settings) for item in items]
        results: list = [None] * len(items)
        for start in range(0, len(items), self.chunk):
            span = range(start, min(start + self.chunk, len(items)))
            if all(keys[i] in self.answers for i in span):
                for i in span:
                    results[i] = self.answers[keys[i]]
                self.reused += len(span)
                progress(len(span))
                continue
            lines = []
            for i, answer in zip(span, ask([items[i] for i in span], progress)):
                results[i] = _plain(answer)  # as read back from the cache: tuples become lists
                if answer is not None:  # a failed request is asked again on --resume
                    self.answers[keys[i]] = results[i]
                    lines.append(json.dumps({"key": keys[i], "answer": results[i]}, ensure_ascii=False) + "\n")
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write("".join(lines))
        return results

    def _key(self, kind: str, item, settings: dict) -> str:
        request = json.dumps([self.model_key, kind, settings, item], ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(request.encode("utf-8", "surrogatepass")).hexdigest()


def _plain(answer):
    return None if answer is None else json.loads(json.dumps(answer))


def _read(path: Path) -> dict:
    """Key -> answer from the cache file; a line cut short by a kill is skipped."""
    answers = {}
    if not path.is_file():
        return answers
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
            answers[entry["key"]] = entry["answer"]
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return answers
