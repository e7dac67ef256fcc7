"""Argument groups of the preference-alignment methods, under TRL's names (each method receives only its own)."""

from __future__ import annotations

from dataclasses import dataclass

from tunestack.config.args import FRACTION, NON_NEGATIVE, POSITIVE, arg

DPO_LOSSES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
              "aot_unpaired", "apo_zero", "apo_down", "discopop", "sigmoid_norm")


@dataclass
class DpoArgs:
    """Direct preference optimisation on prompt/chosen/rejected pairs."""

    beta: float = arg(0.1, "strength of the pull towards the reference model (higher: stay closer)", check=POSITIVE)
    loss_type: list[str] = arg(["sigmoid"], "DPO loss variant(s); several are summed", choices=DPO_LOSSES)
    label_smoothing: float = arg(0.0, "assumed probability that a pair's preference label is flipped (cDPO, "
                                 "robust)", check=(lambda v: 0 <= v < 0.5, "a number in [0, 0.5)"))
    rpo_alpha: float | None = arg(None, "weight of an added negative log-likelihood loss on the chosen answers "
                                  "(RPO); off by default", check=NON_NEGATIVE)
    ref_model: str | None = arg(None, "reference model (default: the policy with its adapter disabled, or a frozen "
                                "copy of the starting weights for --tuner full)")


@dataclass
class KtoArgs:
    """Kahneman-Tversky optimisation on prompt/completion/label rows (no pairs needed)."""

    beta: float = arg(0.1, "strength of the pull towards the reference model", check=POSITIVE)
    desirable_weight: float = arg(1.0, "loss weight of completions labelled true", check=POSITIVE)
    undesirable_weight: float = arg(1.0, "loss weight of completions labelled false", check=POSITIVE)
    ref_model: str | None = arg(None, "reference model (default: the policy with its adapter disabled)")


@dataclass
class OrpoArgs:
    """Odds-ratio preference optimisation: SFT on the chosen answers plus an odds-ratio term; no reference model."""

    beta: float = arg(0.1, "weight of the odds-ratio term (lambda in the paper)", check=POSITIVE)


@dataclass
class SimpoArgs:
    """Simple preference optimisation: length-normalised rewards with a target margin; no reference model."""

    beta: float = arg(2.0, "reward scale", check=POSITIVE)
    simpo_gamma: float = arg(0.5, "target reward margin between chosen and rejected", check=NON_NEGATIVE)
    cpo_alpha: float = arg(0.0, "weight of an added negative log-likelihood loss on the chosen answers",
                           check=NON_NEGATIVE)
    label_smoothing: float = arg(0.0, "assumed probability that a pair's preference label is flipped",
                                 check=FRACTION)


@dataclass
class CpoArgs:
    """Contrastive preference optimisation: a preference loss plus NLL on the chosen answers; no reference model."""

    beta: float = arg(0.1, "strength of the preference term", check=POSITIVE)
    cpo_alpha: float = arg(1.0, "weight of the negative log-likelihood loss on the chosen answers",
                           check=NON_NEGATIVE)
    loss_type: str = arg("sigmoid", "preference loss", choices=("sigmoid", "hinge", "ipo"))
    label_smoothing: float = arg(0.0, "assumed probability that a pair's preference label is flipped",
                                 check=FRACTION)


GRPO_LOSSES = ("dapo", "grpo", "dr_grpo", "bnpo", "cispo", "sapo", "vespo")


@dataclass
class OnlineArgs:
    """What GRPO and RLOO share: the reward sources, how completions are sampled, and the clipped update."""

    reward_funcs: list[str] = arg([], "reward sources, comma-separated: built-ins accuracy (the last number equals "
                                  "the gold answer), boxed (the \\boxed{} answer equals it), json, length, format; "
                                  "PATH.py:FUNCTION (your own function); or a reward-model run directory")
    reward_weights: list[float] = arg([], "one weight per reward source (default: 1 each)")
    length_target: int | None = arg(None, "the `length` reward's target completion length in tokens (reward 1 at "
                                    "the target, falling linearly to 0 at 0 and twice the target)", check=POSITIVE)
    format_regex: str | None = arg(None, "the `format` reward: 1 when the whole completion matches this regular "
                                   "expression (`.` matches newlines too), else 0")
    num_generations: int = arg(4, "completions sampled per prompt; a step's batch (--per_device_train_batch_size x "
                               "--gradient_accumulation_steps) must be a multiple of it", check=(lambda v: v >= 2,
                                                                                                  "an integer >= 2"))
    max_completion_length: int = arg(256, "most tokens sampled per completion", check=POSITIVE)
    temperature: float = arg(1.0, "sampling temperature of the completions", check=POSITIVE)
    epsilon: float = arg(0.2, "clipping range of the policy ratio", check=POSITIVE)
    use_vllm: bool = arg(False, "sample completions with vLLM (needs a GPU and `pip install 'tunestack[vllm]'`)")
    vllm_mode: str = arg("colocate", "with --use_vllm: colocate (vLLM shares the training GPU) or server (a running "
                         "`trl vllm-serve`, see --vllm_server_url)", choices=("colocate", "server"))
    vllm_server_url: str | None = arg(None, "with --vllm_mode server: the server's base URL, e.g. "
                                      "http://localhost:8000")


@dataclass
class GrpoArgs(OnlineArgs):
    """Group relative policy optimisation: each completion's advantage is its reward against its group's mean."""

    beta: float = arg(0.0, "KL penalty towards the reference model, the policy with its adapter disabled (0: no "
                      "penalty and no reference pass; DeepSeek-R1 used 0.001)", check=NON_NEGATIVE)
    loss_type: str = arg("dapo", "how token losses are averaged: dapo (over the tokens of the whole batch), grpo "
                         "(per sequence, then over sequences), dr_grpo (by a constant), bnpo (over the local "
                         "batch's tokens), cispo, sapo, vespo (as TRL documents them)", choices=GRPO_LOSSES)
    scale_rewards: str = arg("group", "divide advantages by the reward std of the group, the batch, or not at all "
                             "(none: Dr. GRPO's recommendation)", choices=("group", "batch", "none"))


@dataclass
class RlooArgs(OnlineArgs):
    """REINFORCE leave-one-out: each completion's baseline is the mean reward of the other completions."""

    beta: float = arg(0.05, "KL penalty towards the reference model, the policy with its adapter disabled (0: no "
                      "penalty and no reference pass)", check=NON_NEGATIVE)
    normalize_advantages: bool = arg(False, "scale the advantages of each batch to mean 0 and std 1")


@dataclass
class RmArgs:
    """Reward modelling on prompt/chosen/rejected pairs: a scalar head scores chosen above rejected."""

    center_rewards_coefficient: float | None = arg(None, "weight of a penalty on the squared mean reward, keeping "
                                                   "rewards centred on zero (0.01 is typical); off by default",
                                                   check=NON_NEGATIVE)


@dataclass
class PpoArgs:
    """Proximal policy optimisation against a reward model: a value head beside the policy, GAE advantages, the
    clipped objective and a per-token KL penalty towards the reference (the policy with its adapter disabled)."""

    reward_model: str | None = arg(None, "the reward model: a `tunestack rm` run directory (required)")
    max_completion_length: int = arg(64, "most tokens sampled per completion", check=POSITIVE)
    temperature: float = arg(0.7, "sampling temperature of the completions", check=POSITIVE)
    kl_coef: float = arg(0.05, "weight of the per-token KL penalty towards the reference", check=NON_NEGATIVE)
    gamma: float = arg(1.0, "discount factor of GAE", check=(lambda v: 0 <= v <= 1, "a number in [0, 1]"))
    lam: float = arg(0.95, "lambda of GAE (0: one-step TD, 1: Monte Carlo)",
                     check=(lambda v: 0 <= v <= 1, "a number in [0, 1]"))
    cliprange: float = arg(0.2, "clipping range of the policy ratio", check=POSITIVE)
    cliprange_value: float = arg(0.2, "clipping range of the value prediction around its rollout value",
                                 check=POSITIVE)
    vf_coef: float = arg(0.1, "weight of the value loss", check=NON_NEGATIVE)
    ppo_epochs: int = arg(4, "updates over each batch of rollouts", check=POSITIVE)
