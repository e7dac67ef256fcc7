"""Flag parsing: types, lists, YAML, and every problem reported at once."""

import pytest

from tunestack.config import DataArgs, ModelArgs, TrainArgs, TunerArgs, parse_groups
from tunestack.errors import ConfigError

GROUPS = [ModelArgs, DataArgs, TunerArgs, TrainArgs]


def test_lists_booleans_dashes_and_types():
    model, data, tuner, train = parse_groups(GROUPS, [
        "--dataset", "a.jsonl,b.jsonl", "c.jsonl", "--packing", "--max-length", "256",
        "--target_modules", "q_proj,v_proj", "--bf16", "false", "--learning_rate", "3e-4",
    ])
    assert data.dataset == ["a.jsonl", "b.jsonl", "c.jsonl"] and data.packing is True and data.max_length == 256
    assert tuner.target_modules == ["q_proj", "v_proj"]
    assert train.bf16 is False and train.learning_rate == 3e-4
    assert model.model == "smollm2-135m-instruct"


def test_every_problem_is_listed_at_once():
    with pytest.raises(ConfigError) as caught:
        parse_groups(GROUPS, ["--learning_rate", "fast", "--tuner", "lorax", "--lora_rnak", "8", "--packing", "maybe",
                              "--val_ratio", "1.5", "--max_length", "0"])
    problems = caught.value.problems
    assert len(problems) == 6
    text = "\n".join(problems)
    assert "--learning_rate: expected a number, got 'fast'" in text
    assert "--tuner: expected one of lora, dora, qlora, full, got 'lorax'" in text
    assert "--lora_rnak: unknown flag (did you mean --lora_rank?)" in text
    assert "--packing: expected true or false, got 'maybe'" in text
    assert "--val_ratio: expected a fraction in [0, 1), got 1.5" in text
    assert "--max_length: expected a positive number, got 0" in text


def test_yaml_supplies_flags_and_the_command_line_wins(tmp_path):
    config = tmp_path / "recipe.yaml"
    config.write_text("dataset: [x.jsonl, y.jsonl]\nlora_rank: 16\nlearning_rate: 1.0e-4\nmax-length: 64\n")
    from tunestack.config import RuntimeArgs

    _, data, tuner, train, _ = parse_groups(GROUPS + [RuntimeArgs], ["--config", str(config), "--lora_rank", "4"])
    assert data.dataset == ["x.jsonl", "y.jsonl"] and data.max_length == 64
    assert tuner.lora_rank == 4 and train.learning_rate == 1e-4


def test_yaml_unknown_key_is_named(tmp_path):
    config = tmp_path / "recipe.yaml"
    config.write_text("lora_rnak: 16\n")
    from tunestack.config import RuntimeArgs

    with pytest.raises(ConfigError, match="unknown key 'lora_rnak' \\(did you mean lora_rank\\?\\)"):
        parse_groups(GROUPS + [RuntimeArgs], ["--config", str(config)])


def test_repeated_list_flags_accumulate():
    _, data, _, _ = parse_groups(GROUPS, ["--dataset", "a.jsonl", "--dataset", "b.jsonl,c.jsonl", "--dataset", "d"])
    assert data.dataset == ["a.jsonl", "b.jsonl", "c.jsonl", "d"]
