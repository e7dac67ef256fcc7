"""Tasks answered in chat form: the built-in arith and self-cognition checks and the user's custom QA and
generation files, each question with its scoring function."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from tunestack.arith import arith_problems
from tunestack.errors import ConfigError, DataError
from tunestack.eval.extract import last_number
from tunestack.eval.loading import LOCATION

ARITH_SEED = 777
"""A seed other than the training built-in's, so the check asks questions the model was not trained on."""
ARITH_QUESTIONS = 200
SELF_COGNITION = [
    ("What is your name?", "name"), ("Who are you?", "name"), ("Please introduce yourself.", "name"),
    ("What should I call you?", "name"), ("Who made you?", "author"), ("Who created you?", "author"),
    ("Which company or team developed you?", "author"), ("你叫什么名字？", "name"), ("你是谁？", "name"),
    ("请介绍一下你自己。", "name"), ("谁开发了你？", "author"), ("你是由谁创造的？", "author"),
]


@dataclass
class ChatItem:
    """One chat question, its gold answer (as shown in the samples) and how an answer is scored."""

    messages: list[dict]
    gold: str
    score: Callable[[str], dict[str, float]]
    extract: Callable[[str], str] = lambda output: output


def arith_items() -> list[ChatItem]:
    """Add, subtract and multiply questions from the training built-in's generator (with its own seed); an answer is
    right when its last number is the result."""
    items = []
    for problem in arith_problems(ARITH_QUESTIONS, ARITH_SEED):
        gold = str(problem.answer)
        items.append(ChatItem([{"role": "user", "content": problem.question}], gold,
                              lambda out, gold=gold: {"exact_match": float(last_number(out) == gold)},
                              lambda out: last_number(out) or ""))
    return items


def self_cognition_items(name: str | None, author: str | None) -> list[ChatItem]:
    """Who-are-you questions in English and Chinese; right when the answer names the expected name or author."""
    if not name or not author:
        raise ConfigError(["--tasks self-cognition: needs --model_name and --model_author (what the model should "
                           "call itself and its maker)"])
    items = []
    for question, expected in SELF_COGNITION:
        gold = name if expected == "name" else author
        items.append(ChatItem([{"role": "user", "content": question}], gold,
                              lambda out, gold=gold: {"acc": float(gold.lower() in out.lower())}))
    return items


def custom_qa_items(rows: list[dict], regex: str | None = None) -> list[ChatItem]:
    """Open questions: right when the answer equals `answer` (case and surrounding space ignored; a list gives
    several accepted answers) or, for rows with a `regex` (or a task-wide one), when the regex matches it."""
    items = []
    for row in rows:
        pattern = row.get("regex", regex)
        if "answer" not in row and pattern is None:
            raise DataError(f"{row.get(LOCATION, 'a row')}: missing field 'answer' (or 'regex'), found "
                            f"{', '.join(sorted(k for k in row if not k.startswith('_')))}")
        if pattern is not None:
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise DataError(f"{row.get(LOCATION, 'a row')}: field 'regex' is not a valid regex ({exc})") from None
            score = (lambda out, c=compiled: {"exact_match": float(c.search(out) is not None)})
            gold = pattern
        else:
            answers = row["answer"] if isinstance(row["answer"], list) else [row["answer"]]
            accepted = {str(a).strip().lower() for a in answers}
            score = (lambda out, accepted=accepted: {"exact_match": float(out.strip().lower() in accepted)})
            gold = " | ".join(map(str, answers))
        items.append(ChatItem(_messages(row, "question"), gold, score))
    return items


def custom_vqa_items(rows: list[dict], base_dir) -> list[ChatItem]:
    """Questions about an image (`image`, a path relative to `base_dir`, a URL or a data URL; or `images`): scored
    by exact match (case and surrounding space and a final full stop ignored) and ANLS, the average normalised
    Levenshtein similarity of DocVQA (0 below 0.5), each the best over the accepted answers."""
    from tunestack.media import image_reference

    items = []
    for row in rows:
        where = row.get(LOCATION, "a row")
        refs = row.get("images") or ([row["image"]] if row.get("image") else [])
        if isinstance(refs, str):
            refs = [refs]
        if not refs or not all(isinstance(r, str) and r.strip() for r in refs):
            raise DataError(f"{where}: field 'image' must be an image path or URL (or 'images', a list of them)")
        answers = [str(a) for a in (row["answer"] if isinstance(row["answer"], list) else [row["answer"]])]
        content = [{"type": "image", "image": image_reference(r.strip(), base_dir)} for r in refs]
        content.append({"type": "text", "text": str(row["question"])})
        items.append(ChatItem([{"role": "user", "content": content}], " | ".join(answers),
                              lambda out, answers=answers: {"exact_match": max(float(_vqa_norm(out) == _vqa_norm(a))
                                                                               for a in answers),
                                                            "anls": max(anls(out, a) for a in answers)}))
    return items


def _vqa_norm(text: str) -> str:
    return text.strip().lower().rstrip(".").strip()


def anls(prediction: str, answer: str, threshold: float = 0.5) -> float:
    """1 - the Levenshtein distance over the longer length (case and surrounding space ignored), or 0 when that
    distance is `threshold` or more."""
    a, b = _vqa_norm(prediction), _vqa_norm(answer)
    if not a and not b:
        return 1.0
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    distance = previous[-1] / max(len(a), len(b))
    return 1.0 - distance if distance < threshold else 0.0


def custom_gen_items(rows: list[dict]) -> list[ChatItem]:
    """Free generation scored against `reference` (BLEU, ROUGE-L and chrF are computed over the whole set)."""
    for row in rows:
        if not isinstance(row.get("reference"), str):
            raise DataError(f"{row.get(LOCATION, 'a row')}: field 'reference' must be the reference text")
    return [ChatItem(_messages(row, "prompt", "question"), row["reference"], lambda out: {}) for row in rows]


def _messages(row: dict, *keys: str) -> list[dict]:
    if isinstance(row.get("messages"), list):
        return row["messages"]
    for key in keys:
        if isinstance(row.get(key), str):
            return [{"role": "user", "content": row[key]}]
    raise DataError(f"{row.get(LOCATION, 'a row')}: missing field '{keys[0]}' (the text the model answers), found "
                    f"{', '.join(sorted(k for k in row if not k.startswith('_')))}")
