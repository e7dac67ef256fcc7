"""Every shipped YAML recipe parses into valid arguments and names data that resolves."""

from pathlib import Path

import pytest

from tunestack.config import DataArgs, ModelArgs, RuntimeArgs, TrainArgs, TunerArgs, parse_groups
from tunestack.data import load_datasets
from tunestack.hub import lookup_alias
from tunestack.train.lifecycle import validate_training

RECIPES = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))


def test_recipes_exist():
    assert RECIPES


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_is_valid(recipe):
    argv = ["--config", str(recipe), "--model_name", "Nova", "--model_author", "Acme"]
    model, data, tuner, train, _ = parse_groups([ModelArgs, DataArgs, TunerArgs, TrainArgs, RuntimeArgs], argv)
    validate_training(data, tuner, train)
    assert lookup_alias(model.model) is not None or Path(model.model).exists()
    splits = load_datasets(data, task="sft")
    assert len(splits.train) > 0
