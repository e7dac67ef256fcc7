"""Verifiable arithmetic questions, generated deterministically, as instruction rows, preference pairs and prompts
with gold answers."""

from __future__ import annotations

import random
from dataclasses import dataclass

ROWS = 1000
SEED = 20240601
_PHRASINGS = ("What is {q}?", "Calculate {q}.", "Compute {q}.", "What does {q} equal?")


@dataclass(frozen=True)
class Problem:
    """One question `a op b` with its answer and a plausible wrong answer."""

    a: int
    op: str
    b: int
    question: str
    answer: int
    wrong: int

    @property
    def expression(self) -> str:
        return f"{self.a} {self.op} {self.b}"

    def reply(self, value: int) -> str:
        """The answer sentence for `value`: `37 + 58 = 95.`"""
        return f"{self.expression} = {value}."


def arith_problems(n: int = ROWS, seed: int = SEED) -> list[Problem]:
    """`n` problems (add and subtract up to 999, multiply up to 99 x 99), the same for the same seed."""
    rng = random.Random(seed)
    return [_problem(rng) for _ in range(n)]


def _problem(rng: random.Random) -> Problem:
    op = rng.choice("+-*")
    if op == "*":
        a, b = rng.randint(2, 99), rng.randint(2, 99)
    else:
        a, b = rng.randint(0, 999), rng.randint(0, 999)
    if op == "-" and b > a:
        a, b = b, a
    answer = {"+": a + b, "-": a - b, "*": a * b}[op]
    question = rng.choice(_PHRASINGS).format(q=f"{a} {op} {b}")
    wrong = answer + rng.choice([-1, 1]) * rng.choice([1, 2, 10, 11, 100 if answer >= 100 else 3])
    return Problem(a, op, b, question, answer, wrong)


def arith_rows() -> list[dict]:
    """Instruction rows: the question and the worked answer."""
    return [
        {"messages": [{"role": "user", "content": p.question}, {"role": "assistant", "content": p.reply(p.answer)}]}
        for p in arith_problems()
    ]


def arith_prompt_rows() -> list[dict]:
    """Prompts with gold answers, for reward functions: the question and its result."""
    return [{"prompt": p.question, "answer": p.answer} for p in arith_problems()]


def arith_preference_rows() -> list[dict]:
    """Preference pairs: the correct answer chosen, a wrong one rejected."""
    return [
        {"prompt": p.question, "chosen": p.reply(p.answer), "rejected": p.reply(p.wrong)} for p in arith_problems()
    ]


def arith_kto_rows() -> list[dict]:
    """Labelled completions: each problem once, alternately with its correct and a wrong answer."""
    return [
        {"prompt": p.question, "completion": p.reply(p.answer if i % 2 == 0 else p.wrong), "label": i % 2 == 0}
        for i, p in enumerate(arith_problems())
    ]
