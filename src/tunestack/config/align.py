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


@dataclass
class RmArgs:
    """Reward modelling on prompt/chosen/rejected pairs: a scalar head scores chosen above rejected."""

    center_rewards_coefficient: float | None = arg(None, "weight of a penalty on the squared mean reward, keeping "
                                                   "rewards centred on zero (0.01 is typical); off by default",
                                                   check=NON_NEGATIVE)
