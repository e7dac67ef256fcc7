"""Answers pulled out of generated text the way lm-evaluation-harness's filters and exact_match do it."""

from __future__ import annotations

import re

INVALID = "[invalid]"
GSM8K_STRICT = r"#### (\-?[0-9\.\,]+)"
GSM8K_FLEXIBLE = r"(-?[$0-9.,]{2,})|(-?[0-9]+)"
GSM8K_IGNORE = [",", "\\$", "(?s).*#### ", "\\.$"]
BBH_IGNORE = ["\\.$", ",", "\n", "\\\\", '"']


def regex_extract(text: str, pattern: str, group_select: int = 0) -> str:
    """The harness's `regex` filter: the `group_select`-th match (its first non-empty group), or [invalid]."""
    matches = re.findall(pattern, text)
    if not matches:
        return INVALID
    match = matches[group_select]
    if isinstance(match, tuple):
        match = next((m for m in match if m), INVALID)
    return match.strip()


def exact_match(prediction: str, reference: str, ignore: list[str] = (), ignore_case: bool = False) -> bool:
    """The harness's exact_match: the `ignore` regexes removed from both sides, optionally case-folded."""
    for pattern in ignore:
        prediction = re.sub(pattern, "", prediction)
        reference = re.sub(pattern, "", reference)
    if ignore_case:
        prediction, reference = prediction.lower(), reference.lower()
    return prediction == reference


def truncate_at(text: str, stops: list[str]) -> str:
    """`text` up to the first of the stop strings (generation's `until`)."""
    cut = len(text)
    for stop in stops:
        index = text.find(stop)
        if index != -1:
            cut = min(cut, index)
    return text[:cut]


def gsm8k_scores(output: str, gold: str) -> tuple[dict[str, float], dict[str, str]]:
    """strict-match (`#### N`) and flexible-extract (the last number) exact matches, with what each extracted."""
    strict = regex_extract(output, GSM8K_STRICT)
    flexible = regex_extract(output, GSM8K_FLEXIBLE, group_select=-1)
    scores = {name: float(exact_match(value, gold, GSM8K_IGNORE, ignore_case=True))
              for name, value in (("exact_match,strict-match", strict), ("exact_match,flexible-extract", flexible))}
    return scores, {"strict-match": strict, "flexible-extract": flexible}


def bbh_scores(output: str, gold: str) -> tuple[dict[str, float], dict[str, str]]:
    """bbh zero-shot: the whole answer, and the first True/False word (flexible-extract), matched case-free."""
    flexible = regex_extract(output, r"\b(True|False)\b")
    scores = {name: float(exact_match(value, gold, BBH_IGNORE, ignore_case=True))
              for name, value in (("exact_match,strict-match", output), ("exact_match,flexible-extract", flexible))}
    return scores, {"strict-match": output, "flexible-extract": flexible}


def last_number(text: str) -> str | None:
    """The last integer or decimal in `text` (thousands separators removed), for the arith check."""
    numbers = re.findall(r"-?\d[\d,]*(?:\.\d+)?", text)
    return numbers[-1].replace(",", "").rstrip(".") if numbers else None


def choice_letter(text: str, count: int) -> int | None:
    """The index of the first standalone choice letter (A, B, ...) in a generated answer, or None."""
    letters = "".join(chr(ord("A") + i) for i in range(count))
    match = re.search(rf"\b([{letters}])\b", text)
    return ord(match.group(1)) - ord("A") if match else None
