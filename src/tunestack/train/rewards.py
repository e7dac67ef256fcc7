"""The built-in reward functions of --reward_funcs: accuracy (the last number equals the gold answer), boxed (the
`\\boxed{}` answer equals it, as MATH is scored), json (the completion parses), length (near --length_target tokens)
and format (matches --format_regex). Each takes what TRL passes (see train/reward_funcs.py) and returns one float
per completion."""

from __future__ import annotations

import json
import math
import re

from tunestack.data.readers import describe
from tunestack.errors import DataError

BUILTINS = ("accuracy", "boxed", "json", "length", "format")
NEEDS_ANSWER = ("accuracy", "boxed")


def completion_text(completion) -> str:
    """The text of a completion: a string, or a list of assistant messages."""
    return completion if isinstance(completion, str) else "".join(m["content"] for m in completion)


def accuracy(completions, answer, **_) -> list[float]:
    """1 when the last number in the completion equals the gold answer, else 0."""
    from tunestack.eval.extract import last_number

    def same(found: str | None, gold: str) -> bool:
        try:
            return found is not None and math.isclose(float(found), float(gold.replace(",", "")), abs_tol=1e-9)
        except ValueError:
            return False

    return [float(same(last_number(completion_text(c)), gold)) for c, gold in zip(completions, answer, strict=True)]


def boxed(completions, answer, **_) -> list[float]:
    """1 when the last `\\boxed{}` answer equals the gold one as MATH is scored (normalised, or sympy-equal)."""
    from tunestack.eval.math_answer import INVALID, gold_answer, is_equiv, last_boxed, normalize, remove_boxed

    def found(text: str) -> str:
        box = last_boxed(text)
        return normalize(remove_boxed(box)) if box else INVALID

    return [float(is_equiv(found(completion_text(c)), gold_answer(gold) if last_boxed(gold) else normalize(gold)))
            for c, gold in zip(completions, answer, strict=True)]


def json_valid(completions, **_) -> list[float]:
    """1 when the completion (a surrounding ``` fence ignored) parses as JSON, else 0."""
    def valid(text: str) -> bool:
        text = re.sub(r"^```(?:json)?\s*|\s*```$", "", text.strip())
        try:
            json.loads(text)
            return True
        except ValueError:
            return False

    return [float(valid(completion_text(c))) for c in completions]


def length(completions, completion_ids, target: int, **_) -> list[float]:
    """1 at `target` tokens, falling linearly to 0 at no tokens and at twice the target."""
    return [max(0.0, 1 - abs(len(ids) - target) / target) for ids in completion_ids]


def format_match(completions, pattern: re.Pattern, **_) -> list[float]:
    """1 when the whole completion matches `pattern`, else 0."""
    return [float(pattern.fullmatch(completion_text(c)) is not None) for c in completions]


def check_gold_answers(splits, args) -> None:
    """Every prompt has the gold answer that accuracy or boxed compares with (a number, for accuracy)."""
    needed = [name for name in NEEDS_ANSWER if name in args.reward_funcs]
    for rows in (splits.train, splits.val):
        if not needed or rows is None:
            continue
        for answer, where in zip(rows["answer"], rows["source"], strict=True):
            if answer is None:
                raise DataError(f"{where}: no gold answer (an \"answer\" or \"solution\" field); --reward_funcs "
                                f"{needed[0]} compares each completion with it")
            if "accuracy" in needed and not _is_number(answer):
                raise DataError(f"{where}: answer {describe(answer)} is not a number; the accuracy reward compares "
                                "the completion's last number with it (use boxed for math expressions)")


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text.replace(",", "")))
    except ValueError:
        return False
