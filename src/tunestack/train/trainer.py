"""The transformers Trainer, counting real (non-padding) tokens, and its arguments built from ours."""

from __future__ import annotations

import torch
from transformers import Trainer, TrainingArguments

from tunestack.config import TrainArgs
from tunestack.data.tokenize import IGNORE_INDEX
from tunestack.model.families import LOSS_CHUNK_FROM_BYTES, PLAIN_HEAD_FAMILIES
from tunestack.model.families import LOSS_CHUNK_ROWS as CHUNK_ROWS
from tunestack.train.tracking import RunConfigToTrackers, trackers


class TokenCountingCollator:
    """Wraps a collator and adds `num_tokens`, the real tokens of each row, for throughput reporting."""

    def __init__(self, collator):
        self.collator = collator

    def __call__(self, features: list[dict]) -> dict:
        batch = self.collator(features)
        batch["num_tokens"] = torch.tensor([len(f["input_ids"]) for f in features])
        return batch




class TunestackTrainer(Trainer):
    """Trainer that counts real (non-padding) tokens (packed rows included) and computes logits only where there
    are targets.

    The output head and the loss over a 50k-word vocabulary are a large share of a small model's step; prompt
    tokens carry no loss, so their logits are never needed. The loss equals the model's own causal-LM loss.

    For the families whose head is plain (PLAIN_HEAD_FAMILIES), in a single process, the model runs without its
    head and the head is applied to the target tokens alone (not to every row at every position where some row has
    a target). Where those logits would still be large (`chunk_from_bytes` of fp32 or more: long supervised rows,
    a big vocabulary), the head and the loss run in chunks of CHUNK_ROWS tokens, each recomputed in the backward
    pass (activation checkpointing), so that one chunk's logits exist at a time instead of all of them, with their
    fp32 copy and gradient.
    """

    chunk_from_bytes = LOSS_CHUNK_FROM_BYTES

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.compute_loss_func is not None:  # --loss_func: the user's loss over the whole sequence's logits
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs.pop("labels")
        targets = labels[:, 1:]
        keep = (targets != IGNORE_INDEX).any(dim=0).nonzero().squeeze(-1)
        if return_outputs and self.compute_metrics is not None:  # --metrics: a prediction for every position
            keep = torch.arange(targets.shape[1], device=labels.device)
        if keep.numel() == 0:
            keep = torch.tensor([targets.shape[1] - 1], device=labels.device)
        picked = targets[:, keep]
        base = None if return_outputs else self._plain_head_model(model)
        if base is not None:
            loss, outputs = self._loss_at_targets(model, base, inputs, keep, picked)
        else:
            outputs = model(**inputs, logits_to_keep=keep)
            logits = outputs.logits
            if logits.shape[1] != keep.numel():  # a model whose forward ignores logits_to_keep (Qwen2-Audio) gives all
                logits = logits[:, keep]
            logits = logits.float()
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), picked.reshape(-1),
                                                     ignore_index=IGNORE_INDEX, reduction="sum")
        if num_items_in_batch is None:
            loss = loss / (picked != IGNORE_INDEX).sum().clamp(min=1)
        else:
            loss = loss / num_items_in_batch
            if self.args.average_tokens_across_devices:
                loss = loss * self.accelerator.num_processes  # num_items_in_batch is summed over processes
        if getattr(outputs, "aux_loss", None) is not None:
            loss = loss + self._router_loss(outputs.aux_loss, num_items_in_batch)
        return (loss, outputs) if return_outputs else loss

    def _plain_head_model(self, model):
        """The causal LM under `model` when its loss may run in chunks (a plain head, one process, not compiled)."""
        if self.args.world_size != 1 or self.args.torch_compile:
            return None
        base = self.accelerator.unwrap_model(model)
        base = base.get_base_model() if hasattr(base, "get_base_model") else base
        plain = getattr(base.config, "model_type", None) in PLAIN_HEAD_FAMILIES and hasattr(base, "lm_head")
        return base if plain else None

    def _loss_at_targets(self, model, base, inputs, keep, picked):
        """The summed cross-entropy at the target tokens, the head applied to them alone, CHUNK_ROWS at a time where
        their logits are large (see the class docstring): the model's forward runs with the head taken out, so its
        `logits` are the final hidden states."""
        from torch.utils.checkpoint import checkpoint

        head = base.get_output_embeddings()
        base.set_output_embeddings(torch.nn.Identity())
        try:
            outputs = model(**inputs, logits_to_keep=keep)
        finally:
            base.set_output_embeddings(head)
        hidden = outputs.logits
        rows = picked.reshape(-1) != IGNORE_INDEX
        hidden = hidden.reshape(-1, hidden.shape[-1])[rows]
        wanted = picked.reshape(-1)[rows]
        loss = hidden.sum().float() * 0  # part of the graph even with no target in the batch
        with self.accelerator.autocast():  # as the model's forward ran (the Accelerator gives its outputs in fp32)
            if len(wanted) * head.weight.shape[0] * 4 < self.chunk_from_bytes:
                return loss + _head_loss(head, hidden, wanted), outputs
            for start in range(0, len(wanted), CHUNK_ROWS):
                part = slice(start, start + CHUNK_ROWS)
                loss = loss + checkpoint(_head_loss, head, hidden[part], wanted[part], use_reentrant=False)
        return loss, outputs

    def _router_loss(self, aux_loss: torch.Tensor, num_items_in_batch) -> torch.Tensor:
        """An MoE model's load-balancing loss (output_router_logits) weighted by its router_aux_loss_coef, as its
        own loss adds it; per micro-batch, so divided by the accumulation steps when the Trainer does not divide.
        Its mean over the logging interval goes to the metrics as `aux_loss`."""
        if self.model.training:
            self._aux_losses = [*getattr(self, "_aux_losses", []), aux_loss.detach().item()]
        term = getattr(self.model.config, "router_aux_loss_coef", 0.0) * aux_loss
        return term / self.args.gradient_accumulation_steps if num_items_in_batch is not None else term

    def log(self, logs: dict, *args, **kwargs):
        aux = getattr(self, "_aux_losses", None)
        if aux and "loss" in logs:
            logs["aux_loss"] = round(sum(aux) / len(aux), 6)
            self._aux_losses = []
        super().log(logs, *args, **kwargs)

    def training_step(self, model, inputs, num_items_in_batch=None):
        counts = inputs.pop("num_tokens", None)
        if counts is not None:  # every process's tokens: throughput is that of the global batch
            total = counts.sum().to(self.accelerator.device)
            self.state.num_input_tokens_seen += int(self.accelerator.reduce(total, "sum")) \
                if self.accelerator.num_processes > 1 else int(total)
        return super().training_step(model, inputs, num_items_in_batch)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs.pop("num_tokens", None)
        # Without --metrics nothing reads the logits: evaluation keeps the loss only.
        return super().prediction_step(model, inputs, prediction_loss_only or self.compute_metrics is None,
                                       ignore_keys)


def _head_loss(head, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(head(hidden).float(), targets, reduction="sum")


def fuse_modules(trainer: Trainer, mlp: bool = True, lora: bool = True, rmsnorm: bool = True) -> None:
    """Run the LoRA-adapted gated SiLU MLPs of Llama-like models, the other plain LoRA layers and the RMSNorms of
    Llama-like models as one fused function each (model/fused.py: the same results to rounding, half the MLP's
    activation memory, fewer passes over the activations), in a single process without torch.compile (which fuses
    on its own) or Liger (whose kernels replace these)."""
    args = trainer.args
    if args.world_size != 1 or args.torch_compile or args.use_liger_kernel or args.deepspeed:
        return
    from tunestack.model.fused import fuse_lora_linears, fuse_lora_mlps, fuse_rms_norms

    model = trainer.accelerator.unwrap_model(trainer.model)
    if mlp:
        fuse_lora_mlps(model)
    if lora:
        fuse_lora_linears(model)
    if rmsnorm:
        fuse_rms_norms(model)


def kernels_of(trainer: Trainer) -> dict:
    """The kernels a run trains with, as chosen for this machine, model and data (run.json's `kernels`): the
    attention implementation (`--attn_implementation auto` picks it), where the output head runs (only at the
    positions with targets, unless `--loss_func` needs every position or the method's trainer is TRL's), how the
    MLPs, LoRA layers and RMSNorms run (fused where fuse_modules applies), Liger's fused kernels, and whether
    torch.compile is on (after the check that inductor can compile here); for the packed-row and grouped eager
    kernels, which kernel attends which examples or rows (model/attention.flash_from)."""
    from tunestack.model.attention import GROUPED, flash_from
    from tunestack.model.attention import NAME as PACKED
    from tunestack.model.fused import FusedLoraMLP, FusedRMSNorm, fused_lora_linears

    head = "target positions" if isinstance(trainer, TunestackTrainer) and trainer.compute_loss_func is None \
        else "every position"
    if head == "target positions" and trainer._plain_head_model(trainer.model) is not None:
        head = f"target tokens, in chunks of {CHUNK_ROWS} where their logits pass {trainer.chunk_from_bytes >> 20} MB"
    config = getattr(trainer.model, "config", None)  # a peft model answers with its base model's
    fused = sum(isinstance(module, FusedLoraMLP) for module in trainer.model.modules())
    mlp = f"fused LoRA SwiGLU in {fused} layers (activation recomputed in the backward pass)" if fused \
        else "module by module"
    linears = fused_lora_linears(trainer.model)
    lora = f"adapter terms accumulated into the matrix products in {linears} other layers" if linears \
        else "module by module"
    norms = sum(isinstance(module, FusedRMSNorm) for module in trainer.model.modules())
    rmsnorm = f"fused RMSNorm in {norms} places" if norms else "as the model defines it"
    kernels = {"attention": getattr(config, "_attn_implementation", None), "output_head": head, "mlp": mlp,
               "lora": lora, "rmsnorm": rmsnorm, "liger": bool(trainer.args.use_liger_kernel),
               "torch_compile": bool(trainer.args.torch_compile)}
    half = trainer.args.bf16 or trainer.args.fp16 or getattr(trainer.model, "dtype", None) in \
        (torch.bfloat16, torch.float16)
    if kernels["attention"] == PACKED:
        flash = flash_from(2 if half else 4)
        kernels["attention_groups"] = f"examples under {flash} tokens: grouped operations; from {flash} tokens: " \
                                      "sdpa's causal kernel"
    elif kernels["attention"] == GROUPED:
        flash = flash_from(2 if half else 4, masked=True)
        kernels["attention_groups"] = f"rows under {flash} tokens: grouped operations; from {flash} tokens: " \
                                      "sdpa's kernel under the same mask"
    return kernels


def predicted_ids(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """`preprocess_logits_for_metrics` for --metrics: the most likely token at each position, shifted so that
    `predictions[:, t]` is the guess for `label_ids[:, t]` (IGNORE_INDEX at position 0); ids, not logits, are
    gathered, so memory stays small."""
    if isinstance(logits, tuple):
        logits = logits[0]
    ids = logits.argmax(dim=-1)
    first = torch.full_like(ids[:, :1], IGNORE_INDEX)
    return torch.cat([first, ids], dim=1)[:, : labels.shape[1]]


def training_arguments(args: TrainArgs, checkpoints_dir: str, compute: torch.dtype, learning_rate: float,
                       has_eval: bool, config_class: type = TrainingArguments, run_name: str | None = None,
                       **method) -> TrainingArguments:
    """transformers TrainingArguments (or a TRL config, `config_class`, with the method's own `method` fields, which
    win over ours) from TrainArgs; checkpoint rotation is ours (only sealed ones count). Tokens are counted by
    TunestackTrainer unless the method asks the Trainer to (`include_num_input_tokens_seen`), which keeps the count
    in every checkpoint."""
    from tunestack.model.compile import use_torch_compile
    from tunestack.train.lifecycle import say

    method = {"include_num_input_tokens_seen": "no", **method}
    eval_steps = args.eval_steps or args.save_steps
    base = dict(
        output_dir=checkpoints_dir,
        learning_rate=learning_rate,
        num_train_epochs=args.num_train_epochs,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.per_device_train_batch_size,
        per_device_eval_batch_size=args.per_device_eval_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        lr_scheduler_type=args.lr_scheduler_type,
        warmup_steps=args.warmup_ratio,
        weight_decay=args.weight_decay,
        max_grad_norm=args.max_grad_norm,
        seed=args.seed,
        data_seed=args.seed,
        bf16=compute == torch.bfloat16,
        fp16=compute == torch.float16,  # CUDA only: mixed precision with loss scaling
        logging_steps=args.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=args.save_steps,
        save_total_limit=None,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=eval_steps if has_eval else None,
        # tensorboard is attached by run_callbacks, writing into the run directory; the others through transformers
        report_to=[name for name in trackers(args.report_to) if name != "tensorboard"] or "none",
        run_name=run_name,
        remove_unused_columns=False,
        dataloader_num_workers=args.dataloader_num_workers,
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
        gradient_checkpointing=False,  # attach_tuner enables it when asked (TRL's configs would turn it on)
        optim=args.optim,
        neftune_noise_alpha=args.neftune_noise_alpha,
        use_liger_kernel=args.use_liger_kernel,
        torch_compile=use_torch_compile(args.torch_compile, say),
    )
    return config_class(**{**base, **method})  # a method's own value wins


def run_callbacks(run, keep: int, report_to: list[str] = ("tensorboard",), progress=None, stop=None) -> list:
    """Callbacks every training method uses: run-directory bookkeeping, progress events into the run directory (which
    the terminal bar draws), the stop on SIGTERM when `stop` (a StopRequest) is given, TensorBoard events (into the
    run directory, unless --report_to leaves tensorboard out)."""
    from tunestack.progress import Progress, TerminalBar
    from tunestack.run.callbacks import ProgressEvents, RunDirCallback, StopAtStepEnd
    from tunestack.train.distributed import is_main
    from tunestack.train.lifecycle import say

    if progress is None:
        progress = Progress(run.path, enabled=is_main(), listeners=[TerminalBar()])
    # Sealing before the event that says a checkpoint is saved; the stop request read after every other step-end.
    callbacks = [RunDirCallback(run, keep), ProgressEvents(progress), RunConfigToTrackers(run)]
    if "tensorboard" in trackers(list(report_to)):
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        callbacks.append(TensorBoardCallback(SummaryWriter(log_dir=str(run.tensorboard))))
    if stop is not None:
        callbacks.append(StopAtStepEnd(stop, say))
    return callbacks
