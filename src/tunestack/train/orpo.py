"""Odds-ratio preference optimisation (TRL's ORPOTrainer): SFT on the chosen answer plus an odds-ratio term that
pushes the rejected one down, in one stage and without a reference model."""

from __future__ import annotations

from tunestack.config.align import OrpoArgs
from tunestack.train.lifecycle import Method, Prepared


def trainer(prepared: Prepared):
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    config = prepared.training_args(ORPOConfig, beta=prepared.method_args.beta, max_length=prepared.data.max_length)
    return ORPOTrainer(model=prepared.model, args=config, train_dataset=prepared.train, eval_dataset=prepared.val,
                       processing_class=prepared.tokenizer)


ORPO = Method("orpo", "preference", trainer, learning_rate=(5e-5, 1e-6), args=OrpoArgs)
