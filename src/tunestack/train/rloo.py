"""REINFORCE leave-one-out (TRL's RLOOTrainer): sample --num_generations completions per prompt, score them with
--reward_funcs, and use the mean reward of the other completions of the same prompt as each one's baseline.

Sampling, reward sources and checks are GRPO's (train/grpo.py), the adapter-disabled KL reference DPO's
(train/policy.py); RLOO folds the KL penalty (--beta) into the reward instead of adding it to the loss."""

from __future__ import annotations

from tunestack.config.align import RlooArgs
from tunestack.train import grpo
from tunestack.train.lifecycle import Method, Prepared
from tunestack.train.reward_funcs import reward_functions
from tunestack.train.rewards import check_gold_answers


def trainer(prepared: Prepared):
    from trl import RLOOConfig, RLOOTrainer

    from tunestack.train.policy import without_adapter_copy

    rloo = prepared.method_args
    config = prepared.training_args(RLOOConfig, **grpo.sampling(prepared),
                                    normalize_advantages=rloo.normalize_advantages)
    return without_adapter_copy(RLOOTrainer(
        model=prepared.model,
        reward_funcs=reward_functions(rloo, grpo.reward_model_loader(prepared)),
        args=config,
        train_dataset=prepared.train,
        eval_dataset=prepared.val,
        processing_class=prepared.tokenizer,
    ), prepared.tuner)


RLOO = Method("rloo", "prompts", trainer, learning_rate=(1e-5, 1e-6), check=grpo.check,
              check_data=check_gold_answers, args=RlooArgs, generates=True)
