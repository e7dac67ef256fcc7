"""Verifiable arithmetic problems, generated deterministically: the `arith` training built-ins and the `arith`
evaluation check both draw from this one generator (evaluation with its own seed, so it asks new questions).

It sits at the top of the package because `data` builds training rows from it and `eval` may not import `data`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

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


def arith_problems(n: int, seed: int) -> list[Problem]:
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
