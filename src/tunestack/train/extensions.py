"""The user's own pieces of a training run, named as PATH.py:NAME: a loss (--loss_func), evaluation metrics
(--metrics) and Trainer callbacks (--callbacks), loaded from their files and checked before a model loads."""

from __future__ import annotations

from tunestack.config import TrainArgs
from tunestack.errors import TunestackError
from tunestack.user_code import load_object

OWN_LOSS_METHODS = ("sft", "pt")
"""Methods whose trainer takes --loss_func and --metrics (the others' losses and metrics are the method)."""


def extension_problems(train: TrainArgs, method_name: str | None = None) -> list[str]:
    """One line per flag whose file or name is wrong, or that `method_name` cannot use."""
    problems = []
    for flag in ("loss_func", "metrics"):
        if getattr(train, flag) and method_name is not None and method_name not in OWN_LOSS_METHODS:
            problems.append(f"--{flag}: {method_name} computes its own loss and metrics; --{flag} applies to "
                            f"{' and '.join(OWN_LOSS_METHODS)}")
    for load in (loss_function, metrics_function, callback_classes):
        try:
            load(train)
        except TunestackError as exc:
            problems.append(str(exc))
    return problems


def loss_function(train: TrainArgs):
    """--loss_func: `fn(outputs, labels, num_items_in_batch) -> loss`, or None for the built-in cross-entropy."""
    return load_object("--loss_func", train.loss_func) if train.loss_func else None


def metrics_function(train: TrainArgs):
    """--metrics: `fn(eval_prediction) -> {name: number}`, or None."""
    return load_object("--metrics", train.metrics) if train.metrics else None


def callback_classes(train: TrainArgs) -> list[type]:
    """--callbacks: the named classes, each checked to be a transformers TrainerCallback subclass."""
    from transformers import TrainerCallback

    classes = []
    for spec in train.callbacks:
        cls = load_object("--callbacks", spec, kind="class")
        if not (isinstance(cls, type) and issubclass(cls, TrainerCallback)):
            raise TunestackError(f"--callbacks {spec}: {cls!r} is not a subclass of transformers.TrainerCallback")
        classes.append(cls)
    return classes


def user_callbacks(train: TrainArgs) -> list:
    """--callbacks: one instance of each named class, constructed with no arguments."""
    made = []
    for spec, cls in zip(train.callbacks, callback_classes(train)):
        try:
            made.append(cls())
        except Exception as exc:
            raise TunestackError(f"--callbacks {spec}: {cls.__name__}() failed ({type(exc).__name__}: {exc}); "
                                 "callbacks are constructed with no arguments") from None
    return made
