"""Contrastive preference optimisation (TRL's CPOTrainer): a preference loss on the policy alone plus NLL on the
chosen answers; no reference model."""

from __future__ import annotations

from tunestack.config.align import CpoArgs
from tunestack.train.lifecycle import Method, Prepared


def trainer(prepared: Prepared, **loss):
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    args = prepared.method_args
    loss = loss or {"loss_type": args.loss_type}
    config = prepared.training_args(CPOConfig, beta=args.beta, cpo_alpha=args.cpo_alpha,
                                    label_smoothing=args.label_smoothing, max_length=prepared.data.max_length, **loss)
    return CPOTrainer(model=prepared.model, args=config, train_dataset=prepared.train, eval_dataset=prepared.val,
                      processing_class=prepared.tokenizer)


CPO = Method("cpo", "preference", trainer, learning_rate=(5e-5, 1e-6), args=CpoArgs)
