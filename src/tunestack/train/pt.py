"""Continued pre-training on raw text: the SFT trainer with every token trained on."""

from __future__ import annotations

from functools import partial

from tunestack.config import DataArgs, ModelArgs, TrainArgs, TunerArgs
from tunestack.run import RunDir
from tunestack.train import sft
from tunestack.train.lifecycle import Method, run_training

PT = Method("pt", "pt", sft.trainer, encode=partial(sft.encode, task="pt"))


def run_pt(model_args: ModelArgs, data_args: DataArgs, tuner_args: TunerArgs, train_args: TrainArgs) -> RunDir:
    """Train on `text` rows (or .txt files); the loss falls on every token and an EOS closes each document."""
    return run_training(PT, model_args, data_args, tuner_args, train_args)
