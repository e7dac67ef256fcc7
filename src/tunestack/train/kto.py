"""Kahneman-Tversky optimisation (TRL's KTOTrainer) on prompt/completion/label rows: no pairs needed.

As with DPO, the reference model is the policy with its adapter disabled (a frozen copy of the starting weights for
--tuner full) unless --ref_model names another."""

from __future__ import annotations

from tunestack.config.align import KtoArgs
from tunestack.train.lifecycle import Method, Prepared


def trainer(prepared: Prepared):
    from trl import KTOConfig, KTOTrainer

    from tunestack.train.policy import reference_model, without_adapter_copy

    kto = prepared.method_args
    config = prepared.training_args(KTOConfig, beta=kto.beta, desirable_weight=kto.desirable_weight,
                                    undesirable_weight=kto.undesirable_weight, max_length=prepared.data.max_length,
                                    include_num_input_tokens_seen="non_padding")  # a count --resume keeps
    kto_trainer = KTOTrainer(
        model=prepared.model,
        ref_model=reference_model(kto.ref_model, prepared),
        args=config,
        train_dataset=prepared.train,
        eval_dataset=prepared.val,
        processing_class=prepared.tokenizer,
    )
    return without_adapter_copy(kto_trainer, prepared.tuner)


KTO = Method("kto", "kto", trainer, learning_rate=(5e-5, 1e-6), args=KtoArgs)
