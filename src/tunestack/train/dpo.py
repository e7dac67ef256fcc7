"""Direct preference optimisation (TRL's DPOTrainer) on prompt/chosen/rejected pairs.

With an adapter, the reference model is the same weights with the adapter disabled: no second copy in memory.
For --tuner full, the reference is a frozen copy of the starting weights; --ref_model names another model."""

from __future__ import annotations

from tunestack.config.align import DpoArgs
from tunestack.train.lifecycle import Method, Prepared


def trainer(prepared: Prepared):
    from trl import DPOConfig, DPOTrainer

    from tunestack.train.policy import reference_model, without_adapter_copy

    dpo = prepared.method_args
    losses, weights = list(dpo.loss_type), None
    if dpo.rpo_alpha:  # RPO: DPO plus NLL on the chosen answers, weighted by alpha
        losses, weights = losses + ["sft"], [1.0] * len(losses) + [dpo.rpo_alpha]
    config = prepared.training_args(DPOConfig, beta=dpo.beta, loss_type=losses, loss_weights=weights,
                                    label_smoothing=dpo.label_smoothing, max_length=prepared.data.max_length,
                                    include_num_input_tokens_seen="non_padding",  # a count --resume keeps
                                    truncation_mode="keep_start", dataset_num_proc=None)
    dpo_trainer = DPOTrainer(
        model=prepared.model,
        ref_model=reference_model(dpo.ref_model, prepared),
        args=config,
        train_dataset=prepared.train,
        eval_dataset=prepared.val,
        processing_class=prepared.tokenizer,
    )
    return without_adapter_copy(dpo_trainer, prepared.tuner)


def check(dpo, tuner, train) -> list[str]:
    """Combinations TRL would refuse only after the model has loaded."""
    if "exo_pair" in dpo.loss_type and dpo.label_smoothing == 0:
        return ["--loss_type exo_pair: needs --label_smoothing above 0 (the EXO paper uses 1e-3)"]
    return []


DPO = Method("dpo", "preference", trainer, learning_rate=(5e-5, 1e-6), check=check, args=DpoArgs)
