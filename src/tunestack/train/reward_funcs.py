"""What --reward_funcs names for grpo and rloo, loaded and checked before a model loads: the built-ins
(train/rewards.py), your own Python functions and reward-model runs, each checked to give one number per completion.

Your function is called once per batch of completions, with keyword arguments, as TRL calls reward functions:

    def my_reward(prompts, completions, answer, **kwargs) -> list[float]:
        return [1.0 if "please" in c[0]["content"] else 0.0 for c in completions]

- `prompts`: the conversation each completion answers, a list of messages ending with the user's turn
  (`[{"role": "user", "content": "What is 2 + 3?"}]`, led by the system message when there is one);
- `completions`: the sampled answers, each a list of one assistant message (`[{"role": "assistant", "content": ...}]`);
- `answer`: each prompt's gold answer as a string (the row's `answer` or `solution` field), or None;
- `source`: where each prompt came from (`data.jsonl, line 7`);
- `completion_ids` (the sampled token ids), `trainer_state` (TRL's TrainerState: step, epoch), `log_metric(name,
  value)` and `log_extra(column, values)`: TRL's own additions. Accept `**kwargs` for any you do not use.

It returns one float per completion, or None where this reward does not apply. A function that raises, or returns
anything else, stops training with one line naming the function and the sample.
"""

from __future__ import annotations

import functools
import math
import numbers
import re
from collections.abc import Callable
from pathlib import Path

from tunestack.data.readers import describe
from tunestack.errors import TunestackError
from tunestack.train.rewards import (
    BUILTINS,
    accuracy,
    boxed,
    completion_text,
    format_match,
    json_valid,
    length,
)


class RewardFunction:
    """One reward source as the trainer calls it, with its result checked: one finite number (or None) each."""

    def __init__(self, name: str, function: Callable):
        self.__name__ = name  # TRL logs rewards/NAME/mean and rewards/NAME/std
        self.function = function

    def __call__(self, prompts, completions, **kwargs) -> list:
        try:
            rewards = self.function(prompts=prompts, completions=completions, **kwargs)
        except Exception as exc:
            culprit = _sample(_first_failing(self.function, prompts, completions, kwargs), kwargs, completions)
            message = str(exc).splitlines()[0] if str(exc) else ""
            raise TunestackError(f"reward function {self.__name__} raised {type(exc).__name__}: {message} (on "
                                 f"{culprit})") from exc
        if hasattr(rewards, "tolist"):  # a numpy array or a tensor
            rewards = rewards.tolist()
        if not isinstance(rewards, list | tuple):
            raise TunestackError(f"reward function {self.__name__} returned {describe(rewards)}; expected a list of "
                                 f"{len(completions)} numbers, one per completion")
        if len(rewards) != len(completions):
            raise TunestackError(f"reward function {self.__name__} returned {len(rewards)} rewards for "
                                 f"{len(completions)} completions; expected one per completion")
        for i, value in enumerate(rewards):
            if value is not None and not (isinstance(value, numbers.Real) and math.isfinite(value)):
                raise TunestackError(f"reward function {self.__name__} returned {describe(value)} for "
                                     f"{_sample(i, kwargs, completions)}; expected a finite number or None")
        return list(rewards)


def _first_failing(function: Callable, prompts, completions, kwargs) -> int | None:
    """The index of the first completion the function raises on when called with it alone (None: only batches)."""
    for i in range(len(completions)):
        alone = {k: v[i:i + 1] if isinstance(v, list) and len(v) == len(completions) else v for k, v in kwargs.items()}
        try:
            function(prompts=prompts[i:i + 1], completions=completions[i:i + 1], **alone)
        except Exception:
            return i
    return None


def _sample(i: int | None, kwargs: dict, completions) -> str:
    if i is None:
        return f"a batch of {len(completions)} completions"
    where = kwargs["source"][i] if "source" in kwargs else "a prompt"
    return f"{where}, completion {i + 1} of {len(completions)}: {describe(completion_text(completions[i]))}"


def reward_problems(args) -> list[str]:
    """Problems with --reward_funcs and the flags its built-ins read, one line each, before a model loads."""
    if not args.reward_funcs:
        return [f"--reward_funcs: required; built-ins {', '.join(BUILTINS)}, PATH.py:FUNCTION or a reward-model run "
                "directory, e.g. --reward_funcs accuracy"]
    problems = []
    for spec in args.reward_funcs:
        try:
            if spec not in BUILTINS and not is_reward_model(spec):
                user_function(spec)
        except TunestackError as exc:
            problems.append(str(exc))
    if "length" in args.reward_funcs and args.length_target is None:
        problems.append("--reward_funcs length: needs --length_target (the completion length, in tokens, it rewards)")
    if "format" in args.reward_funcs:
        problems += _regex_problems(args.format_regex)
    if args.reward_weights and len(args.reward_weights) != len(args.reward_funcs):
        problems.append(f"--reward_weights: {len(args.reward_weights)} weights for {len(args.reward_funcs)} reward "
                        f"sources ({', '.join(args.reward_funcs)}); give one per source")
    return problems


def _regex_problems(regex: str | None) -> list[str]:
    if regex is None:
        return ["--reward_funcs format: needs --format_regex (what a well-formed completion matches)"]
    try:
        re.compile(regex)
        return []
    except re.error as exc:
        return [f"--format_regex {regex!r}: not a valid regular expression ({exc})"]


def is_reward_model(spec: str) -> bool:
    """Whether `spec` names a folder (a reward-model run) rather than a built-in or a PATH.py:FUNCTION."""
    return ".py:" not in spec and not spec.startswith("python:") and Path(spec).expanduser().is_dir()


PYTHON_OBJECTS: dict[str, Callable] = {}
"""Reward functions the Python API was given as objects, under the names `python:NAME` it put in --reward_funcs."""


def register_object(function: Callable) -> str:
    """Name a reward function object for --reward_funcs (this process only)."""
    name = f"python:{getattr(function, '__name__', type(function).__name__)}:{id(function)}"
    PYTHON_OBJECTS[name] = function
    return name


def user_function(spec: str) -> Callable:
    """The function FUNCTION of the file PATH.py named by `spec`, imported once (or an object the API gave)."""
    if spec.startswith("python:"):
        if spec not in PYTHON_OBJECTS:
            raise TunestackError(f"--reward_funcs {spec}: a Python function object exists only in the process that "
                                 "was given it; pass PATH.py:FUNCTION to train in several processes")
        return PYTHON_OBJECTS[spec]
    path, _, name = spec.rpartition(":")
    if ".py:" not in spec and ("/" in spec or spec.startswith(".")):
        raise TunestackError(f"--reward_funcs {spec}: no such reward-model run directory")
    if not path.endswith(".py") or not name:
        raise TunestackError(f"--reward_funcs {spec}: not a built-in ({', '.join(BUILTINS)}), a PATH.py:FUNCTION or "
                             "a reward-model run directory")
    from tunestack.user_code import load_object

    return load_object("--reward_funcs", spec)


def reward_functions(args, load_model: Callable | None = None) -> list:
    """The reward sources for the trainer, in --reward_funcs order; `load_model(path)` loads reward-model runs."""
    builtins = {"accuracy": accuracy, "boxed": boxed, "json": json_valid,
                "length": functools.partial(length, target=args.length_target),
                "format": functools.partial(format_match, pattern=re.compile(args.format_regex or "", re.DOTALL))}
    sources = []
    for spec in args.reward_funcs:
        if spec in builtins:
            sources.append(RewardFunction(spec, builtins[spec]))
        elif is_reward_model(spec):
            model = load_model(spec)
            sources.append(RewardFunction(model.__name__, model))
        else:
            name = spec.split(":")[1] if spec.startswith("python:") else spec.rpartition(":")[2]
            sources.append(RewardFunction(name, user_function(spec)))
    return sources
