"""The `arith` built-ins: the shared arithmetic problems (`tunestack.arith`) as instruction rows, preference pairs
and prompts with gold answers."""

from __future__ import annotations

from tunestack.arith import Problem, arith_problems as _problems

ROWS = 1000
SEED = 20240601


def arith_problems(n: int = ROWS, seed: int = SEED) -> list[Problem]:
    """The training built-in's problems: `n` of them from `tunestack.arith`, the same for the same seed."""
    return _problems(n, seed)


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
