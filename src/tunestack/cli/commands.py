"""The command table: each entry names its argument groups and the function it calls."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

from tunestack.config import (
    CpoArgs,
    DpoArgs,
    GrpoArgs,
    KtoArgs,
    OrpoArgs,
    PpoArgs,
    RlooArgs,
    RmArgs,
    SimpoArgs,
    DataArgs,
    DownloadArgs,
    ModelsArgs,
    EvalArgs,
    ExportArgs,
    InferArgs,
    ModelArgs,
    ParallelArgs,
    PlanArgs,
    RuntimeArgs,
    ServeArgs,
    TrainArgs,
    TunerArgs,
    UiArgs,
    WizardArgs,
    parse_groups,
)


@dataclass
class Command:
    """A subcommand: its one-line summary, argument groups and the function taking the parsed groups."""

    name: str
    summary: str
    groups: list[type]
    function: Callable
    training: bool = False
    """A training command: --resume reads the run's recorded flags as the base."""

    def run(self, argv: list[str]):
        if "-h" in argv or "--help" in argv:
            from tunestack.config.parse import build_parser

            build_parser(f"tunestack {self.name}", self.summary, self.groups + [RuntimeArgs]).print_help()
            return 0
        parsed = self.parse(argv)
        if not parsed[-1].debug:
            _quiet_libraries()
        return self.function(*parsed[:-1])

    def parse(self, argv: list[str]) -> list:
        """The argument groups `argv` gives this command (RuntimeArgs last); raises ConfigError listing every
        problem. The web UI checks a form with it before starting the command."""
        return parse_groups(self.groups + [RuntimeArgs], argv, prog=f"tunestack {self.name}",
                            config=_resumed_config(argv) if self.training else None, elsewhere=_elsewhere(self),
                            presets=training_presets(self.name))


def training_presets(command: str):
    """Parsing presets for `command`: sft (and estimate, which plans an sft run) take a built-in data set's
    recommended settings for the flags not given."""
    from tunestack.data.builtin import recommended_presets

    return recommended_presets if command in ("sft", "estimate") else None


_MISSING_ON_PURPOSE = {"ref_model": "{command} uses no reference model"}
"""Why a command lacks a flag that other commands take, where there is more to say than where the flag belongs."""


def _elsewhere(command: Command) -> dict[str, str]:
    """For each flag `command` lacks but other commands take: which commands those are (and why it is missing)."""
    from dataclasses import fields

    own = {f.name for group in command.groups + [RuntimeArgs] for f in fields(group)}
    owners: dict[str, list[str]] = {}
    for other in COMMANDS.values():
        for name in dict.fromkeys(f.name for group in other.groups for f in fields(group)):
            if name not in own:
                owners.setdefault(name, []).append(other.name)
    said = {}
    for name, commands in owners.items():
        why = _MISSING_ON_PURPOSE.get(name, "tunestack {command} has no such flag").format(command=command.name)
        said[name] = f"{why}; --{name} is a flag of tunestack {', '.join(commands)}"
    return said


def _quiet_libraries() -> None:
    """Keep the libraries' own chatter (weight-loading bars, deprecation notes, import banners) off the user's
    terminal."""
    import logging
    import warnings

    from tunestack.compat import hide_library_banners

    hide_library_banners()

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    for name in ("bitsandbytes", "transformers", "peft", "accelerate", "datasets", "torch", "torch.utils._pytree", "torchao", "gptqmodel"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    try:  # the trainers' own dataset tokenization bars
        import datasets

        datasets.disable_progress_bars()
    except ImportError:
        pass


def _resumed_config(argv: list[str]) -> dict | None:
    """With --resume, the run's recorded flags are the base; flags given now win."""
    import argparse

    peek = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    peek.add_argument("--resume", nargs="?", const="true")
    peek.add_argument("--output_dir", "--output-dir")
    known, _ = peek.parse_known_args(argv)
    if str(known.resume).lower() not in ("true", "1", "yes", "on") or not known.output_dir:
        return None
    from tunestack.run import RunDir

    run = RunDir(known.output_dir)
    if not run.exists():
        return None
    recorded = run.read_manifest().get("config", {})
    return {k: v for group in recorded.values() for k, v in group.items()}


def _training(name: str) -> Callable:
    """The function a training command calls: the Python API's, over the method in train/NAME.py."""

    def train(*groups):
        from tunestack.api import train_parsed

        train_parsed(name, *groups)

    return train


def _infer(model, infer):
    from tunestack.inference.chat import run_infer

    run_infer(model, infer)


def _serve(model, serve):
    from tunestack.serve.server import run_serve

    run_serve(model, serve)


def _export(model, export):
    from tunestack.export.merge import run_export

    run_export(model, export)


def _eval(model, evaluation):
    from tunestack.eval.command import run_eval

    run_eval(model, evaluation)


def _models(args: ModelsArgs):
    import json

    from tunestack.hub import list_models
    from tunestack.hub.catalog import models_table

    rows = list_models()
    print(json.dumps({"models": rows}, indent=2) if args.json else models_table(rows), flush=True)


def _datasets():
    from tunestack.data import list_datasets

    _print_table(list_datasets(), ["name", "task", "rows", "description"])


def _download(args: DownloadArgs):
    from tunestack.errors import ConfigError

    if not args.model and not args.dataset:
        raise ConfigError(["--model or --dataset: say what to download"])
    from tunestack.hub import download_dataset, download_model

    if args.model:
        print(download_model(args.model, hub=args.hub, revision=args.revision))
    if args.dataset:
        print(download_dataset(args.dataset, revision=args.revision))


def _estimate(model, data, tuner, train, parallel, plan):
    from tunestack.plan.estimate import run_estimate

    run_estimate(model, data, tuner, train, parallel, plan)


def _ui(args: UiArgs):
    from tunestack.ui.app import run_ui

    run_ui(args)


def _wizard(args: WizardArgs):
    from tunestack.ui.wizard import run_wizard

    return run_wizard(args)


def _print_table(rows: list[dict], columns: list[str]) -> None:
    columns = [c for c in columns if any(c in r for r in rows)]
    widths = {c: max([len(c)] + [len(str(r.get(c, ""))) for r in rows]) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        print("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns).rstrip())
    sys.stdout.flush()


_TRAIN = [ModelArgs, DataArgs, TunerArgs, TrainArgs, ParallelArgs]
_METHODS = [  # name, summary, the method's own argument group
    ("sft", "supervised fine-tuning on chat / instruction data (LoRA, DoRA, QLoRA, full)", None),
    ("pt", "continued pre-training on raw text", None),
    ("dpo", "direct preference optimisation on chosen/rejected pairs", DpoArgs),
    ("kto", "Kahneman-Tversky optimisation on completions labelled good or bad", KtoArgs),
    ("orpo", "odds-ratio preference optimisation (SFT and preference in one, no reference model)", OrpoArgs),
    ("simpo", "simple preference optimisation (length-normalised, no reference model)", SimpoArgs),
    ("cpo", "contrastive preference optimisation (no reference model)", CpoArgs),
    ("grpo", "group relative policy optimisation: sampled completions scored by --reward_funcs", GrpoArgs),
    ("rloo", "REINFORCE leave-one-out: sampled completions scored by --reward_funcs", RlooArgs),
    ("rm", "reward model: a scalar head trained to score chosen above rejected answers", RmArgs),
    ("ppo", "proximal policy optimisation against a reward model (--reward_model), with a value head", PpoArgs),
]
COMMANDS = {
    c.name: c
    for c in [
        *[Command(name, summary, _TRAIN + ([group] if group else []), _training(name), training=True)
          for name, summary, group in _METHODS],
        Command("estimate", "memory and time of an sft run before it starts; recommends a plan that fits",
                _TRAIN + [PlanArgs], _estimate),
        Command("infer", "chat in the terminal, answer one --prompt, or a JSONL --input file", [ModelArgs, InferArgs],
                _infer),
        Command("serve", "OpenAI-compatible HTTP server for a model and its LoRA adapters", [ModelArgs, ServeArgs],
                _serve),
        Command("export", "merge adapters, quantize (int8, int4, bnb, hqq, gptq, ...), write GGUF, upload to a hub",
                [ModelArgs, ExportArgs], _export),
        Command("eval", "benchmarks (mmlu, gsm8k, ...) and your own tasks on a model, run directory or --url server",
                [ModelArgs, EvalArgs], _eval),
        Command("models", "list model aliases by family: size, licence, gating, Hugging Face and ModelScope ids",
                [ModelsArgs], _models),
        Command("datasets", "list built-in datasets", [], _datasets),
        Command("download", "fetch a model or dataset into the cache", [DownloadArgs], _download),
        Command("ui", "web UI on 127.0.0.1: train, chat, evaluate, export, serve and compare runs; every action shows "
                "the command it runs", [UiArgs], _ui),
        Command("wizard", "terminal menu: pick a model, data and settings, train, then chat, evaluate, export or serve; "
                "prints each command it runs", [WizardArgs], _wizard),
    ]
}
