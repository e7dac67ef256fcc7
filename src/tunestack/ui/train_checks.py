"""The checks a training command makes before it loads a model, run in the UI on the form's command line so that
each problem shows next to the field it names, in the command's own words: flag values, paths outside the allowed
folders, an --output_dir that holds files, a local model folder that does not resolve, and the data, read and
validated as the run reads it."""

from __future__ import annotations

import re
from pathlib import Path

from tunestack.cli.commands import COMMANDS
from tunestack.errors import ConfigError, TunestackError
from tunestack.ui.paths import is_path_like
from tunestack.ui.train_form import FIELDS, method


def check(ctx, argv: list[str]) -> dict[str, list[str]]:
    """What the command would reject before loading a model, per form field ("" for the rest): flag values,
    paths outside the allowed folders, a local model folder that is not a model, and the data, read and
    validated as the run reads it (hub data sets are left to the run)."""
    task, rest = argv[0], argv[1:]
    try:
        check_paths(ctx, argv)  # first: parsing reads --config, and --resume reads the run's run.json
        model, data, tuner, train, parallel, *method_args = COMMANDS[task].parse(rest)[:-1]
        if train.output_dir:
            ctx.check_path(train.output_dir, must_exist=False, what="--output_dir")
    except TunestackError as exc:
        return route(exc, "")
    from tunestack.train.lifecycle import validate_training

    trainer = method(task)
    own = method_args[0] if method_args else (trainer.args() if trainer.args else None)
    found: dict[str, list[str]] = {}
    for fallback, stage in [("", lambda: validate_training(data, tuner, train, own, trainer, parallel)),
                            ("output_dir", lambda: check_output(train.output_dir, train.resume,
                                                                train.overwrite_output_dir)),
                            ("model", lambda: _check_model(model)),
                            ("dataset", lambda: _check_data(data, trainer, own, train.seed))]:
        try:
            stage()
        except TunestackError as exc:
            for name, problems in route(exc, fallback).items():
                found.setdefault(name, []).extend(problems)
            if fallback == "":
                return found  # the later stages would read what these checks refuse
    return found


def check_paths(ctx, argv: list[str]) -> None:
    """Raise PathNotAllowedError for any path among the flag values of `argv` outside the folders the UI may read:
    --model, --dataset, --config, --dataset_info, PATH.py:FUNCTION, TASK=PATH, NAME#N, ..."""
    flag = None
    for token in argv[1:]:
        if token.startswith("--"):
            flag, given, value = token[2:].partition("=")
            if not given:
                continue
        else:
            value = token
        for part in value.split(","):
            part = re.sub(r"#\d+$", "", part.strip().split("=", 1)[-1])
            part = part.split(".py:", 1)[0] + ".py" if ".py:" in part else part
            if part and is_path_like(part):
                ctx.check_path(part, must_exist=False, what=f"--{flag}" if flag else "path")


def check_output(output: str | None, resume: bool, overwrite: bool) -> None:
    """A fresh run refuses an --output_dir holding files, with the run's own message (nothing is touched here)."""
    path = Path(output).expanduser() if output else None
    if path is not None and not (resume or overwrite) and path.is_dir() and any(path.iterdir()):
        from tunestack.run import RunDir

        RunDir(path).prepare(resume=False, overwrite=False)


def _check_model(model) -> None:
    """A local model folder or path resolves (aliases and hub ids are left to the run: resolving them may download
    or convert a model)."""
    if Path(model.model).expanduser().is_dir() or (is_path_like(model.model)
                                                   and not model.model.lower().endswith(".gguf")):
        from tunestack.hub import resolve_model

        resolve_model(model.model, hub=model.hub, revision=model.revision)


def _check_data(data, trainer, method_args, seed: int) -> None:
    if data.dataset_info or not all(_local_data(spec) for spec in data.dataset):
        return
    from tunestack.data import load_datasets

    splits = load_datasets(data, task=trainer.task, seed=seed)
    if trainer.check_data is not None:
        trainer.check_data(splits, method_args)


def _local_data(spec: str) -> bool:
    from tunestack.data import BUILTIN_DATASETS

    name = spec.split("#")[0]
    return name in BUILTIN_DATASETS or is_path_like(name)


def route(error: TunestackError, fallback: str) -> dict[str, list[str]]:
    """Each problem of `error` under the form field it names (`--lora_rank: ...` goes to lora_rank), else under
    `fallback`."""
    problems = error.problems if isinstance(error, ConfigError) else [str(error)]
    routed: dict[str, list[str]] = {}
    for problem in problems:
        named = re.match(r"--(\w+)", problem)
        name = named.group(1).replace("-", "_") if named else fallback
        routed.setdefault(name if name in FIELDS else fallback if not named else "", []).append(problem)
    return routed
