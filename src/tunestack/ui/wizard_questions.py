"""The wizard's questions before training, in order. Each stores its answer in `Answers`, or returns BACK (q: go back
one question) or SKIP (it does not apply to the answers so far). Answers are checked with the functions the commands
themselves use, so a bad one shows the command's own error message and is asked again."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from tunestack.errors import ConfigError, TunestackError
from tunestack.ui.menu import BACK, Option, Terminal

SKIP = object()
TYPED = object()
"""The menu option that asks for a typed value instead."""
TUNERS = [Option("lora", "lora", "low-rank adapters"), Option("dora", "dora", "LoRA with a learned magnitude"),
          Option("qlora", "qlora", "LoRA over a 4-bit base; needs a CUDA GPU"),
          Option("full", "full", "every weight trains; the most memory")]
SETTINGS = [("max_steps", "max steps (-1: train for epochs)"), ("num_train_epochs", "epochs"),
            ("learning_rate", "learning rate"), ("per_device_train_batch_size", "batch size")]


@dataclass
class Answers:
    """What the questions decided: enough to write the training command."""

    model: str
    method: str
    tuner: str
    dataset: str
    model_name: str
    model_author: str
    folder: str
    """The run goes to FOLDER/run, its evaluation to FOLDER/eval, its export to FOLDER/export."""
    settings: dict[str, str] = field(default_factory=dict)
    """Flags whose answer differs from the command's own default, as typed."""
    more: list[str] = field(default_factory=list)
    """Any other flags of the command, as typed (--reward_model for ppo, --lora_rank, ...)."""

    @property
    def run(self) -> str:
        return str(Path(self.folder) / "run")

    def self_cognition(self) -> bool:
        return self.dataset.split("#")[0] == "self-cognition"

    def flags(self) -> list[str]:
        flags = ["--model", self.model, "--dataset", self.dataset, "--tuner", self.tuner]
        if self.self_cognition():
            flags += ["--model_name", self.model_name, "--model_author", self.model_author]
        return flags + [f for name, value in self.settings.items() for f in (f"--{name}", value)] + self.more

    def train_command(self) -> list[str]:
        return ["tunestack", self.method, *self.flags(), "--output_dir", self.run]


def questions(answers: Answers, term: Terminal) -> list:
    """The questions in order, each a function of no arguments."""
    asked = [ask_model, ask_method, ask_tuner, ask_dataset, ask_model_name, ask_model_author,
             *[partial(ask_setting, flag=flag, title=title) for flag, title in SETTINGS], ask_more, ask_folder]
    return [partial(question, answers, term) for question in asked]


def ask_model(answers: Answers, term: Terminal):
    from tunestack.hub import list_models

    models = sorted(list_models(), key=lambda m: m.get("kind") != "embedded")
    options = [Option(m["alias"], m["alias"], _model_note(m)) for m in models[:1]]
    options += [Option(run, run, "earlier run") for run in _recent_runs()]
    options += [Option("another model: local directory, .gguf file, run directory or hub id", TYPED)]
    options += [Option(m["alias"], m["alias"], _model_note(m)) for m in models[1:]]
    values = [o.value for o in options]
    typed = answers.model not in values
    while True:
        choice = term.choose("Model", options, values.index(TYPED if typed else answers.model))
        if choice is BACK:
            return BACK
        if choice is TYPED:
            choice = _ask_checked(term, "model (path or hub id)", answers.model if typed else None, _check_model)
        elif not _check_model(choice, term):
            continue
        if choice is not BACK:  # q at the typed model goes back to the menu
            answers.model = choice
            return


def ask_method(answers: Answers, term: Terminal):
    from tunestack.cli.commands import COMMANDS

    options = [Option(c.name, c.name, c.summary) for c in COMMANDS.values() if c.training]
    default = [o.value for o in options].index(answers.method)
    return _pick(answers, "method", term.choose("Training method", options, default))


def ask_tuner(answers: Answers, term: Terminal):
    return _pick(answers, "tuner", term.choose("Tuner", TUNERS, [o.value for o in TUNERS].index(answers.tuner)))


def ask_dataset(answers: Answers, term: Terminal):
    from tunestack.data import list_datasets
    from tunestack.data.builtin import BUILTIN_TASKS

    task = method_of(answers.method).task
    vision = takes_images(answers.model)
    builtins = [d for d in list_datasets() if task in BUILTIN_TASKS[d["name"]] and d.get("images", False) == vision]
    names = [d["name"] for d in builtins]
    options = [Option(d["name"], d["name"], f"{d['rows']} rows; {d['description']}") for d in builtins]
    options.append(Option("a file or folder (.jsonl, .json, .csv, .parquet, .txt) or a hub id", TYPED))
    current = answers.dataset
    if current in BUILTIN_TASKS and current not in names:  # a built-in default this method cannot use
        current = names[0] if names else ""
    while True:
        choice = term.choose("Data set", options, names.index(current) if current in names else len(names))
        if choice is BACK:
            return BACK
        if choice is TYPED:
            choice = _ask_checked(term, "data file, folder or hub id", None if current in names else current or None,
                                  partial(_check_dataset, task=task))
        elif not _check_dataset(choice, term, task):
            continue
        if choice is not BACK:
            answers.dataset = choice
            return


def takes_images(model: str | None) -> bool:
    """Whether the model is a vision-language one: the vision default, or a local folder with a vision config (a
    hub id is not fetched to find out)."""
    from pathlib import Path

    from tunestack.hub.registry import VISION_DEFAULT
    from tunestack.model.vision import is_multimodal

    if not model:
        return False
    return model == VISION_DEFAULT or is_multimodal(Path(model).expanduser())


def ask_model_name(answers: Answers, term: Terminal):
    return _pick(answers, "model_name", term.ask("name the model learns", answers.model_name)) \
        if answers.self_cognition() else SKIP


def ask_model_author(answers: Answers, term: Terminal):
    return _pick(answers, "model_author", term.ask("author the model learns", answers.model_author)) \
        if answers.self_cognition() else SKIP


def ask_setting(answers: Answers, term: Terminal, flag: str, title: str):
    """One training flag, its default the value the command would take (a built-in data set's presets included)."""
    if flag == "num_train_epochs" and int(answers.settings.get("max_steps", -1)) > 0:
        return SKIP
    given = answers.settings.pop(flag, None)
    default = _default(answers, flag)
    while True:
        text = term.ask(title, given or default)
        if text is BACK:
            if given is not None:
                answers.settings[flag] = given
            return BACK
        try:
            _parse(answers, [f"--{flag}", text])
        except ConfigError as exc:
            term.error(str(exc))
            continue
        if text != default:
            answers.settings[flag] = text
        return


def ask_more(answers: Answers, term: Terminal):
    """Other flags of the command, checked as the command parses them."""
    import shlex

    while True:
        text = term.ask(f"more flags for tunestack {answers.method} (e.g. --lora_rank 32; - for none)",
                        shlex.join(answers.more) or "-")
        if text is BACK:
            return BACK
        try:
            more = [] if text.strip() == "-" else shlex.split(text)
            answers.more = []
            _parse(answers, more)
        except (ConfigError, ValueError) as exc:
            term.error(str(exc))
            continue
        answers.more = more
        return


def ask_folder(answers: Answers, term: Terminal):
    while True:
        folder = term.ask("output folder (the run goes to FOLDER/run, evaluation to /eval, export to /export)",
                          answers.folder)
        if folder is BACK:
            return BACK
        run = Path(folder) / "run"
        if run.is_dir() and any(run.iterdir()):
            term.error(f"--output_dir {run} is not empty (status: {_status(run) or 'not a run'}); choose another "
                       "folder")
            continue
        answers.folder = folder
        return


def method_of(command: str):
    """The training method of `command` (its data task and default learning rates); imports no torch."""
    from importlib import import_module

    return getattr(import_module(f"tunestack.train.{command}"), command.upper())


def _pick(answers: Answers, attribute: str, choice):
    if choice is not BACK:
        setattr(answers, attribute, choice)
    return choice


def _ask_checked(term: Terminal, title: str, default: str | None, check):
    """A typed value, asked again until `check(value, term)` accepts it; BACK on q."""
    while True:
        value = term.ask(title, default)
        if value is BACK or check(value, term):
            return value


def _check_model(name: str, term: Terminal) -> bool:
    from tunestack.hub import resolve_model

    try:
        resolve_model(name)
        return True
    except TunestackError as exc:
        term.error(str(exc))
        return False


def _check_dataset(spec: str, term: Terminal, task: str) -> bool:
    from tunestack.config import DataArgs
    from tunestack.data import load_datasets

    try:  # self-cognition is checked with stand-in names: the real ones are asked next
        load_datasets(DataArgs(dataset=[spec], model_name="name", model_author="author"), task)
        return True
    except TunestackError as exc:
        term.error(str(exc))
        return False


def _parse(answers: Answers, extra: list[str]) -> list:
    from tunestack.cli.commands import COMMANDS, training_presets
    from tunestack.config import parse_groups

    return parse_groups(COMMANDS[answers.method].groups, [*answers.flags(), *extra],
                        presets=training_presets(answers.method))


def _default(answers: Answers, flag: str) -> str:
    value = next(getattr(g, flag) for g in _parse(answers, []) if hasattr(g, flag))
    if value is None and flag == "learning_rate":
        adapter, full = method_of(answers.method).learning_rate
        value = full if answers.tuner == "full" else adapter
    return str(value)


def _model_note(model: dict) -> str:
    where = "embedded" if model.get("kind") == "embedded" else \
        "download needed" if "not downloaded" in str(model.get("resolves_to")) else "downloaded"
    return f"{model.get('params', '?')}, {where}"


def _recent_runs(limit: int = 5) -> list[str]:
    """Completed runs under ./runs, newest first."""
    found = [p.parent for pattern in ("*/run.json", "*/run/run.json") for p in Path("runs").glob(pattern)]
    found.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return [str(p) for p in found if _status(p) == "completed"][:limit]


def _status(run: Path) -> str | None:
    from tunestack.run import RunDir

    try:
        return RunDir(run).read_manifest().get("status") if RunDir(run).exists() else None
    except (OSError, ValueError):
        return None
