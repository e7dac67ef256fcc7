"""Attach the chosen tuner: LoRA, DoRA or QLoRA adapters through peft, or full fine-tuning."""

from __future__ import annotations

import dataclasses

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


def _check_targets(model, targets: list[str]) -> None:
    if targets == ["all-linear"]:
        return
    available = linear_module_names(model)
    missing = [t for t in targets if t not in available]
    if missing:
        raise TunestackError(
            f"--target_modules: {', '.join(missing)} not found in the model; its linear layers are "
            f"{', '.join(available)} (or use all-linear)"
        )


def attach_tuner(model, args: TunerArgs, gradient_checkpointing: bool = False):
    """Return the model ready to train: a PeftModel for adapters, the model itself for full fine-tuning."""
    # No KV cache while training: it is useless there, and its presence stops transformers from reading
    # restarting position_ids as packed-sequence boundaries (so packed examples would attend to each other).
    model.config.use_cache = False
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if args.tuner == "full":
        model.requires_grad_(True)
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
    config = LoraConfig(
        r=args.lora_rank,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules="all-linear" if args.target_modules == ["all-linear"] else args.target_modules,
        modules_to_save=args.modules_to_save or None,
        use_dora=args.tuner == "dora",
        task_type="SEQ_CLS" if _is_classifier(model) else "CAUSAL_LM",
    )
    return _ready(get_peft_model(model, config))


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
    model.config.use_cache = False
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    from tunestack.compat import import_gptqmodel_quietly

    import_gptqmodel_quietly()
    from peft import PeftModel

    return _ready(PeftModel.from_pretrained(model, str(adapter), is_trainable=True))


def _task_type(adapter) -> str | None:
    import json
    from pathlib import Path

    return json.loads((Path(adapter) / "adapter_config.json").read_text()).get("task_type")


def _is_classifier(model) -> bool:
    return type(model).__name__.endswith("ForSequenceClassification")


def _ready(model):
    """A PeftModel as training wants it."""
    if model.dtype in (torch.bfloat16, torch.float16):
        # Half-precision bases train under autocast, which casts at each matmul; peft's own cast of every
        # activation to the fp32 adapter dtype would only add two large copies per adapted layer.
        for module in model.modules():
            if hasattr(module, "cast_input_dtype_enabled"):
                module.cast_input_dtype_enabled = False
    return model


def trainable_summary(model) -> str:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return f"{trainable:,} trainable parameters of {total:,} ({100 * trainable / max(total, 1):.2f}%)"
