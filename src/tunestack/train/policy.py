"""The model a training method starts from: a base, or an earlier run's result (its adapters merged in memory, or
its adapter trained further), with the method's tuner attached."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from tunestack.config import ModelArgs, TunerArgs
from tunestack.errors import ConfigError


@dataclass
class StartingPoint:
    """What `--model` resolved to, seen from training: the base to load and the adapters that come with it."""

    resolved: object
    """The ResolvedModel of --model."""
    base_name: str
    """The base model recorded as run.json's `base_model` (the original base when --model is an adapter run)."""
    chain: list[dict] = field(default_factory=list)
    """Parent adapters merged into the base before this run's tuner: run, adapter folder, fingerprint, oldest first."""
    continue_from: Path | None = None
    """With --continue_adapter: the adapter that keeps training."""

    @property
    def merged(self) -> list[Path]:
        return [Path(link["adapter"]) for link in self.chain]


def starting_point(model_args: ModelArgs, tuner_args: TunerArgs) -> StartingPoint:
    """Resolve --model and decide what training starts from (recorded in run.json as the run's chain)."""
    from tunestack.hub import resolve_model
    from tunestack.jsonfile import read_json_object
    from tunestack.run.manifest import adapter_fingerprint

    from tunestack.model.load import refuse_pickle

    resolved = resolve_model(model_args.model, hub=model_args.hub, revision=model_args.revision)
    for folder in [resolved.path, *resolved.adapters]:
        refuse_pickle(folder, model_args.allow_pickle)
    if resolved.adapter is None:
        if resolved.run_dir is not None:  # a fully fine-tuned run: its final/ is the base
            return StartingPoint(resolved, str(resolved.run_dir))
        return StartingPoint(resolved, model_args.model)
    meta = read_json_object(resolved.run_dir / "run.json") if resolved.run_dir else {}
    base_name = meta.get("base_model") or model_args.model
    chain = list(meta.get("chain") or [])
    own = {"run": str(resolved.run_dir or resolved.adapter), "adapter": str(resolved.adapter),
           "fingerprint": adapter_fingerprint(resolved.adapter)}
    if tuner_args.tuner == "qlora":
        raise ConfigError([f"--tuner qlora with --model {model_args.model}: that run's adapter cannot be merged into "
                           "a 4-bit base; export it first (`tunestack export --model RUN --output_dir DIR`) and "
                           "train on DIR"])
    if tuner_args.continue_adapter:
        if tuner_args.tuner == "full":
            raise ConfigError(["--continue_adapter with --tuner full: a full fine-tune has no adapter to continue"])
        return StartingPoint(resolved, base_name, chain, continue_from=resolved.adapter)
    return StartingPoint(resolved, base_name, chain + [own])


def build_policy(start: StartingPoint, tuner_args: TunerArgs, gradient_checkpointing: bool, seed: int, **load):
    """Load the base, merge the chain's adapters, then attach the tuner (or reopen the continued adapter).

    The seed is set before loading, where a fresh head (a reward model's score layer) is initialised, and again
    right before the adapter is made, so its initial weights do not depend on how loading went (DeepSpeed ZeRO-3
    initialises weights while sharding them, drawing from the global generator)."""
    from tunestack.model.load import load_model
    from tunestack.model.tuners import attach_tuner, continue_adapter

    if start.resolved.head == "reward" and load.get("head", "causal") != "reward":
        raise ConfigError([f"--model {start.resolved.name}: a reward model scores text and cannot be trained to "
                           "generate; start from the policy model and pass the reward model to ppo --reward_model or "
                           "grpo/rloo --reward_funcs"])
    from transformers import set_seed

    set_seed(seed)
    model = load_model(start.resolved.path, **load)
    if start.merged:
        from tunestack.model.tuners import merge_adapter

        for adapter in start.merged:
            model = merge_adapter(model, adapter)
        say(f"merged {len(start.merged)} earlier adapter(s) into the base: {', '.join(map(str, start.merged))}")
    set_seed(seed)
    if start.continue_from is not None:
        say(f"continuing to train the adapter {start.continue_from} (its rank and targets are kept)")
        return continue_adapter(model, start.continue_from, gradient_checkpointing)
    return attach_tuner(model, tuner_args, gradient_checkpointing)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def reference_problem(name: str, tokenizer, model_args: ModelArgs) -> str | None:
    """Why the model --ref_model names cannot be the reference (its tokenizer differs), read before any weights load."""
    from tunestack.inference.loading import resolve_for_inference

    _, _, theirs = resolve_for_inference(ModelArgs(model=name, hub=model_args.hub,
                                                   trust_remote_code=model_args.trust_remote_code))
    if theirs.get_vocab() == tokenizer.get_vocab():
        return None
    return (f"--ref_model {name}: its tokenizer differs from the policy's ({len(theirs)} vs {len(tokenizer)} tokens); "
            "the reference must score the same token ids: pass a model of the same family")


def reference_model(name: str | None, prepared) -> object | None:
    """The reference a TRL trainer compares against: the model --ref_model names; for --tuner full a frozen copy of
    the starting weights (TRL would reload the bare base from disk, without the parent adapters merged into it);
    otherwise None, the policy with its adapter disabled."""
    if name:
        from tunestack.inference.loading import load_for_inference

        model_args = prepared.extra["model_args"]
        loaded = load_for_inference(ModelArgs(model=name, hub=model_args.hub, dtype=model_args.dtype,
                                              trust_remote_code=model_args.trust_remote_code))
        return loaded.model.requires_grad_(False).eval()
    if prepared.tuner.tuner == "full":
        import copy

        return copy.deepcopy(prepared.model).requires_grad_(False).eval()
    return None


def without_adapter_copy(trainer, tuner_args: TunerArgs):
    """Undo TRL's copy of a PEFT policy's adapter as its "ref" adapter, when that copy adds nothing.

    A fresh adapter changes nothing at the start, so the policy with its adapter disabled is the same reference
    without a second adapter in memory and in every checkpoint (TRL disables the adapter when there is no "ref").
    With --continue_adapter the copy is the adapter as this run found it, the right reference, and it stays."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if not tuner_args.continue_adapter and "ref" in getattr(model, "peft_config", {}):
        model.delete_adapter("ref")
    if hasattr(model, "disable_adapter"):
        quick_disable_adapter(model)
    return trainer


def quick_disable_adapter(model) -> None:
    """Make `model.disable_adapter()` flip the flag each adapter layer's forward reads, and nothing more.

    PEFT's own context walks every module three times per call, to check the layers agree and to turn their
    parameters' requires_grad off and on again: about 80 ms on a 135M model, paid at every reference forward (a
    separate reference copy pays nothing). The flag alone gives the same forward; a disabled layer's parameters take
    no part in it, so they get no gradient whatever their requires_grad."""
    from contextlib import contextmanager

    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import AuxiliaryTrainingWrapper

    if any(config.is_prompt_learning or config.is_adaption_prompt for config in model.peft_config.values()):
        return  # these disable by swapping forward methods, which PEFT's context does
    layers = [m for m in model.modules() if isinstance(m, (BaseTunerLayer, AuxiliaryTrainingWrapper))]

    @contextmanager
    def disable_adapter():
        before = [layer._disable_adapters for layer in layers], model._adapters_disabled
        for layer in layers:
            layer._disable_adapters = True
        model._adapters_disabled = True
        try:
            yield
        finally:
            for layer, disabled in zip(layers, before[0], strict=True):
                layer._disable_adapters = disabled
            model._adapters_disabled = before[1]

    model.disable_adapter = disable_adapter
