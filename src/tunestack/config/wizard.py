"""Argument group of `tunestack wizard`: the answers it starts from, which `--yes` takes without asking."""

from __future__ import annotations

from dataclasses import dataclass

from tunestack.config.args import PORT, POSITIVE, arg

WIZARD_METHODS = ("sft", "pt", "dpo", "kto", "orpo", "simpo", "cpo", "grpo", "rloo", "rm", "ppo")


@dataclass
class WizardArgs:
    """The terminal wizard: each flag is the default answer of one question."""

    yes: bool = arg(False, "take every default without asking: train, evaluate, export (and serve with --serve)")
    model: str = arg("smollm2-135m-instruct", "model to start from: alias, local directory, run directory or hub id")
    method: str = arg("sft", "training command", choices=WIZARD_METHODS)
    tuner: str = arg("lora", "which parameters train", choices=("lora", "dora", "qlora", "full"))
    dataset: str = arg("self-cognition", "data set: built-in name, file, folder or hub id")
    model_name: str = arg("Nova", "with self-cognition data: the name the model learns to give")
    model_author: str = arg("Acme Labs", "with self-cognition data: the author the model learns to give")
    max_steps: int = arg(-1, "stop after this many optimizer steps; -1 trains for the data set's epochs")
    output_dir: str | None = arg(
        None, "folder D of the run (D/run), its evaluation (D/eval) and export (D/export); default: "
        "runs/wizard-TIMESTAMP")
    tasks: list[str] = arg(
        [], "evaluation tasks after training (any `tunestack eval --tasks`); default: self-cognition when training "
        "on it, else arith")
    limit: int = arg(20, "questions per evaluation task", check=POSITIVE)
    max_new_tokens: int | None = arg(None, "tokens generated per chat answer (default: tunestack infer's)",
                                     check=POSITIVE)
    serve: bool = arg(False, "with --yes: serve the trained model at the end, until interrupted")
    port: int = arg(8000, "port the server listens on", check=PORT)
