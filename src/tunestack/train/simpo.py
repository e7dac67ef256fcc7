"""Simple preference optimisation: length-normalised log-probabilities as rewards with a target margin
(`--simpo_gamma`), through TRL's CPOTrainer with its SimPO loss; no reference model."""

from __future__ import annotations

from tunestack.config.align import SimpoArgs
from tunestack.train import cpo
from tunestack.train.lifecycle import Method, Prepared


def trainer(prepared: Prepared):
    return cpo.trainer(prepared, loss_type="simpo", simpo_gamma=prepared.method_args.simpo_gamma)


SIMPO = Method("simpo", "preference", trainer, learning_rate=(5e-5, 1e-6), args=SimpoArgs)
