"""The reward model an RL method trains against (ppo --reward_model, grpo/rloo --reward_funcs): a `tunestack rm`
run or a sequence-classification checkpoint, frozen, reading the same token ids as the policy."""

from __future__ import annotations

from tunestack.config import ModelArgs
from tunestack.errors import ConfigError


class RewardModel:
    """A frozen reward model, scoring conversations, and callable as a TRL reward function:
    `fn(prompts, completions, **columns) -> list[float]` with prompts and completions as strings or messages."""

    def __init__(self, scorer, name: str):
        self.scorer = scorer
        self.model = scorer.model
        self.tokenizer = scorer.tokenizer
        self.__name__ = name  # how TRL's trainers name this reward in their logs

    def score(self, conversations: list[list[dict]], batch_size: int = 8) -> list[float]:
        """The reward of each whole conversation (prompt and answer messages), rendered as `tunestack rm` trained."""
        return self.scorer.score(conversations, batch_size)

    def __call__(self, prompts: list, completions: list, **columns) -> list[float]:
        return self.score([_messages(p, "user") + _messages(c, "assistant") for p, c in zip(prompts, completions)])


def _messages(value, role: str) -> list[dict]:
    return [{"role": role, "content": value}] if isinstance(value, str) else list(value)


def load_reward_model(name: str, policy_tokenizer, model_args: ModelArgs,
                      flag: str = "--reward_model") -> RewardModel:
    """The reward model `name` (a run of `tunestack rm`, its chain of adapters merged, or a full one), frozen.

    Its tokenizer must be the policy's (the same vocabulary): checked before the weights load. `model_args` are the
    policy's, whose hub, precision and trust settings the reward model shares; `flag` names it in errors."""
    from pathlib import Path

    from tunestack.hub import resolve_model
    from tunestack.inference.loading import resolve_for_inference
    from tunestack.inference.score import load_scorer

    args = ModelArgs(model=name, hub=model_args.hub, dtype=model_args.dtype,
                     attn_implementation=model_args.attn_implementation,
                     trust_remote_code=model_args.trust_remote_code)
    if resolve_model(name, hub=args.hub).head != "reward":
        raise ConfigError([f"{flag} {name}: not a reward model (no sequence-classification head); train one with "
                           "`tunestack rm --model POLICY_BASE --dataset PAIRS` and pass its run directory"])
    _, _, tokenizer = resolve_for_inference(args, head="reward")
    if tokenizer.get_vocab() != policy_tokenizer.get_vocab():
        raise ConfigError([f"{flag} {name}: its tokenizer differs from the policy's ({len(tokenizer)} vs "
                           f"{len(policy_tokenizer)} tokens); train the reward model from the policy's base model"])
    scorer = load_scorer(args)
    scorer.model.requires_grad_(False)
    return RewardModel(scorer, Path(name).name or name)
