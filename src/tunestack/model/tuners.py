"""Attach the chosen tuner: LoRA, DoRA or QLoRA adapters through peft, or full fine-tuning."""

from __future__ import annotations

import dataclasses
import re

import torch

from tunestack.config import TunerArgs
from tunestack.errors import TunestackError


def linear_module_names(model) -> list[str]:
    """Short names of the linear layers an adapter can target (the output head excluded)."""
    output = model.get_output_embeddings()
    names = set()
    for name, module in model.named_modules():
        is_linear = isinstance(module, torch.nn.Linear) or type(module).__name__ in ("Linear4bit", "Linear8bitLt")
        if is_linear and module is not output:
            names.add(name.rsplit(".", 1)[-1])
    return sorted(names)


def _is_regex(targets: list[str]) -> bool:
    r"""A single --target_modules value that is not a plain module name is a regular expression (peft fullmatches
    it against each module's full name, e.g. `.*layers\.[0-3]\..*(q|v)_proj`)."""
    return len(targets) == 1 and targets[0] != "all-linear" and re.fullmatch(r"[\w.]+", targets[0]) is None


def _check_targets(model, targets: list[str]) -> None:
    if targets == ["all-linear"]:
        return
    if _is_regex(targets):
        if not any(re.fullmatch(targets[0], name) for name, _ in model.named_modules()):
            raise TunestackError(f"--target_modules {targets[0]!r}: the regular expression matches no module name; "
                                 f"its linear layers are {', '.join(linear_module_names(model))}")
        return
    available = linear_module_names(model)
    missing = [t for t in targets if t not in available]
    if missing:
        raise TunestackError(
            f"--target_modules: {', '.join(missing)} not found in the model; its linear layers are "
            f"{', '.join(available)} (or use all-linear)"
        )


def set_use_cache(model, on: bool) -> None:
    """`use_cache` on the model's config and on each sub-config (a vision-language model's language model reads its
    own `text_config`). Off while training: a KV cache is useless there, and its presence stops transformers from
    reading restarting position_ids as packed-sequence boundaries (so packed examples would attend to each other)."""
    model.config.use_cache = on
    for key in getattr(model.config, "sub_configs", {}) or {}:
        if (sub := getattr(model.config, key, None)) is not None and hasattr(sub, "use_cache"):
            sub.use_cache = on


def attach_tuner(model, args: TunerArgs, gradient_checkpointing: bool = False):
    """Return the model ready to train: a PeftModel for adapters, the model itself for full fine-tuning."""
    set_use_cache(model, False)
    train_routers(model)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    from tunestack.model.vision import is_multimodal

    vision = is_multimodal(model.config)
    if args.tuner == "full":
        model.requires_grad_(True)
        if vision:
            from tunestack.model.vision import freeze_parts

            freeze_parts(model, args)
        return model
    from tunestack.compat import import_gptqmodel_quietly

    import_gptqmodel_quietly()
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    _check_targets(model, args.target_modules)
    if _is_classifier(model):  # the fresh reward head trains in full beside the adapter
        args = dataclasses.replace(args, modules_to_save=sorted({*args.modules_to_save, "score"}))
    if args.tuner == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    elif gradient_checkpointing:
        model.enable_input_require_grads()
    if vision and args.target_modules == ["all-linear"]:
        from tunestack.model.vision import adapter_fields

        targets = adapter_fields(model, args)
    else:
        targets = {**lora_targets(model, args.target_modules, args.lora_experts),
                   "modules_to_save": args.modules_to_save or None}
    config = LoraConfig(
        r=args.lora_rank,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        **targets,
        use_dora=args.tuner == "dora",
        task_type="SEQ_CLS" if _is_classifier(model) else "CAUSAL_LM",
    )
    return get_peft_model(model, config)


_ROUTERS = ("gate", "router", "shared_expert_gate")
"""Short names of an MoE block's routing layers, which adapters never target."""


def train_routers(model) -> None:
    """MoE models (Qwen3-MoE, Mixtral, ...) return their router logits while training, so that the model's
    load-balancing loss (router_aux_loss_coef) is part of the loss, as in their pre-training."""
    if hasattr(model.config, "output_router_logits"):
        model.config.output_router_logits = True


def lora_targets(model, targets: list[str], experts: bool = False) -> dict:
    """LoraConfig's target fields for --target_modules (all-linear, names or one regex) and --lora_experts.

    On a mixture of experts, all-linear means the linear layers outside the experts and routers; `experts` adds the
    experts: their fused 3-D weights (transformers 5 stores Qwen3-MoE and Mixtral experts as `experts.gate_up_proj`
    and `experts.down_proj` parameters) through peft's target_parameters, or their linear layers where they are
    modules. Routers are never adapted.
    """
    single = targets[0] if len(targets) == 1 and (targets == ["all-linear"] or _is_regex(targets)) else targets
    fused = _fused_experts(model)
    output = model.get_output_embeddings()
    linear = {name: module for name, module in model.named_modules()
              if isinstance(module, torch.nn.Linear) and module is not output}
    expert_layers = [name for name in linear if ".experts." in name]
    if not (fused or expert_layers):
        return {"target_modules": single}
    fields = {"target_modules": single}
    if targets == ["all-linear"]:
        # peft 0.21 reads these names on a transformers-5 MoE as the v4 experts and router, and would retarget
        # them to the fused expert weights; they are left out (a dense or shared MLP of such a model stays as it is).
        remapped = _peft_remapped_names(model)
        names = {name.rsplit(".", 1)[-1] for name in linear if name not in expert_layers or experts}
        fields["target_modules"] = sorted(names - set(_ROUTERS) - remapped)
    elif _is_regex(targets):  # peft would reduce a regex to leaf names on these models: give it the full names
        fields["target_modules"] = [name for name in linear if re.fullmatch(targets[0], name)
                                    and (experts or name not in expert_layers)]
    elif not experts:
        fields["exclude_modules"] = expert_layers or None
    if experts and fused:
        fields["target_parameters"] = fused
    return fields


def _fused_experts(model) -> list[str]:
    """Suffixes (`experts.gate_up_proj`) of the experts' fused 3-D weights, as peft's target_parameters takes them."""
    return sorted({".".join(name.split(".")[-2:]) for name, param in model.named_parameters()
                   if param.dim() == 3 and name.split(".")[-2] == "experts"})


def _peft_remapped_names(model) -> set[str]:
    """Module names that peft retargets on this MoE architecture (its transformers v4 -> v5 conversion table)."""
    try:
        from peft.utils.transformers_weight_conversion import _MODEL_TO_CONVERSION_PATTERN, _MOE_TARGET_MODULE_MAPPING
    except ImportError:  # a peft without the conversion retargets nothing
        return set()
    pattern = _MODEL_TO_CONVERSION_PATTERN.get(getattr(model.config, "model_type", None))
    return set(_MOE_TARGET_MODULE_MAPPING.get(pattern, {}))


def merge_adapter(model, adapter):
    """`model` with the saved adapter merged into its weights. A causal-LM adapter (an earlier sft or dpo run)
    merges into a reward model's backbone as well: the layers it adapts are the same, only the head differs."""
    from tunestack.compat import import_gptqmodel_quietly

    import_gptqmodel_quietly()
    from peft import PeftConfig, PeftModel

    config = PeftConfig.from_pretrained(str(adapter))
    if _is_classifier(model) and config.task_type != "SEQ_CLS":
        config.task_type = None  # a plain PeftModel: the causal-LM wrapper expects generation methods
    return PeftModel.from_pretrained(model, str(adapter), config=config).merge_and_unload()


def continue_adapter(model, adapter, gradient_checkpointing: bool = False):
    """Reopen a saved adapter on `model` with its weights trainable, as it was configured (rank, targets)."""
    if _is_classifier(model) and _task_type(adapter) != "SEQ_CLS":
        raise TunestackError(f"--continue_adapter: {adapter} is a language-model adapter, which has no reward head "
                             "to train; drop --continue_adapter (it is then merged and a new adapter trains on top)")
    set_use_cache(model, False)
    train_routers(model)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    from tunestack.compat import import_gptqmodel_quietly

    import_gptqmodel_quietly()
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(adapter), is_trainable=True)


def _task_type(adapter) -> str | None:
    import json
    from pathlib import Path

    return json.loads((Path(adapter) / "adapter_config.json").read_text()).get("task_type")


def _is_classifier(model) -> bool:
    return type(model).__name__.endswith("ForSequenceClassification")


def training_input_casts(model, generating: bool = False):
    """The context `trainer.train()` runs in: over a half-precision base, peft's own `disable_input_dtype_casting`.

    Half-precision bases train under autocast, which casts at each matmul; peft's cast of every activation to the
    fp32 adapter dtype would only add two large copies per adapted layer. Outside training (inference on the same
    model without autocast) peft's cast is back in place, and so it stays for methods that sample completions
    during training (GRPO, RLOO, PPO): their trainers generate outside autocast.
    """
    from peft.helpers import disable_input_dtype_casting

    half = getattr(model, "dtype", None) in (torch.bfloat16, torch.float16)
    return disable_input_dtype_casting(model, active=half and not generating)


def trainable_summary(model) -> str:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return f"{trainable:,} trainable parameters of {total:,} ({100 * trainable / max(total, 1):.2f}%)"
