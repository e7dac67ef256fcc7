"""The Train tab's form without the page: its fields (defaults and help from the CLI's own dataclasses), the command
line it stands for, and the pickers' choices."""

from __future__ import annotations

import shlex
from dataclasses import MISSING, Field, fields
from importlib import import_module
from pathlib import Path

from tunestack.cli.commands import COMMANDS
from tunestack.ui.paths import find_files

TRAINING_COMMANDS = [name for name, command in COMMANDS.items() if command.training]
FIELDS = ("model", "dataset", "tuner", "lora_rank", "learning_rate", "num_train_epochs", "max_steps",
          "per_device_train_batch_size", "max_length", "output_dir", "logging_steps", "save_steps")
"""The settings the form shows, in order; every other flag goes in its free-text "more flags" box."""
ALWAYS = ("model", "dataset", "output_dir")
"""Flags written into the command even at their default, so that the command says what it trains on."""


def flag(name: str) -> Field:
    """The dataclass field behind `--name` among the training commands' groups."""
    for group in COMMANDS["sft"].groups:
        for f in fields(group):
            if f.name == name:
                return f
    raise KeyError(name)


def default(name: str):
    f = flag(name)
    return f.default_factory() if f.default is MISSING else f.default


def help_text(name: str) -> str:
    """The flag's `--help` line, as `tunestack sft --help` prints it."""
    text = flag(name).metadata.get("help", "").removeprefix(f"{name}: ")
    value = default(name)
    if value not in (None, [], False):
        text += f" (default: {','.join(value) if isinstance(value, list) else value})"
    return f"--{name}: {text}"


def choices(name: str) -> tuple:
    return flag(name).metadata.get("choices", ())


def build_argv(task: str, values: dict, more: str = "", always: tuple = ALWAYS) -> list[str]:
    """The training command's arguments for the form's values: `[task, --flag value, ...]`, leaving out empty
    fields and settings at their default (so a built-in data set's recommended settings still apply), except
    those named in `always`."""
    argv = [task]
    for name, value in values.items():
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        value = _typed(name, value)
        if name in always or value != default(name):
            argv += [f"--{name}", ",".join(value) if isinstance(value, list) else str(value)]
    return argv + shlex.split(more or "")


def _typed(name: str, value):
    """Number boxes give floats; an integer flag gets 8, not 8.0."""
    if isinstance(value, float) and value.is_integer() and isinstance(default(name), int):
        return int(value)
    return value.strip() if isinstance(value, str) else value


def form_values(argv: list[str]) -> tuple[str, dict, str]:
    """(task, form field values, more flags) of a training command's arguments: the form that stands for it."""
    values: dict = {}
    more: list[str] = []
    tokens = list(argv[1:])
    while tokens:
        token = tokens.pop(0)
        name, eq, inline = token.partition("=")
        name = name.removeprefix("--").replace("-", "_")
        value = inline if eq else (tokens.pop(0) if tokens and not tokens[0].startswith("--") else None)
        if token.startswith("--") and name in FIELDS and value is not None:
            values[name] = value
        elif name != "resume" or not token.startswith("--"):
            more += [token] + ([value] if value is not None and not eq else [])
    return argv[0], values, shlex.join(more)


def resume_argv(argv: list[str]) -> list[str]:
    """The same command continuing its run: --resume on, --overwrite_output_dir off."""
    kept, skip = [], False
    for token in argv:
        name = token.split("=", 1)[0].replace("-", "_")
        if skip and not token.startswith("--"):
            skip = False
            continue
        skip = False
        if name in ("__resume", "__overwrite_output_dir"):
            skip = "=" not in token
            continue
        kept.append(token)
    return kept + ["--resume"]


def method(task: str):
    """The training method object of `task` (train/TASK.py's Method): its data task and checks."""
    return getattr(import_module(f"tunestack.train.{task}"), task.upper())


def model_choices(ctx) -> list[str]:
    """Runs under the runs folder, model folders in the allowed folders, then the registry's aliases."""
    from tunestack.hub import list_models
    from tunestack.ui.runs import find_runs

    runs = [_shown(p) for p in find_runs(ctx.runs_root)]
    folders = [str(Path(p).parent) for p in find_files(ctx.allowed_paths, suffixes=(".json",), max_depth=3)
               if Path(p).name == "config.json" and (Path(p).parent / "tokenizer_config.json").is_file()]
    return list(dict.fromkeys(runs + sorted(folders) + [row["alias"] for row in list_models()]))


def dataset_choices(ctx) -> list[str]:
    """The built-in data sets, then data files in the allowed folders (run folders' own files aside)."""
    from tunestack.data import BUILTIN_DATASETS

    files = [p for p in find_files(ctx.allowed_paths)
             if not Path(p).name.endswith(("config.json", "run.json", "metrics.jsonl", "events.jsonl"))
             and not Path(p).name.startswith(("tokenizer", "special_tokens", "generation_config", "adapter_",
                                              "trainer_state", "tunestack_complete", "chat_template"))]
    return list(BUILTIN_DATASETS) + files


def _shown(path: Path) -> str:
    cwd = Path.cwd().resolve()
    return str(path.relative_to(cwd)) if path.is_relative_to(cwd) else str(path)
