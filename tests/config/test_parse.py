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


def test_flag_names_and_values_from_transformers_ms_swift_and_llama_factory(tmp_path):
    argv = ["--model_name_or_path", "m", "--torch_dtype", "bfloat16", "--cutoff_len", "64", "--lora_target", "all",
            "--finetuning_type", "full", "--lora_r", "4", "--val_size", "0.1", "--default_system", "Be brief."]
    model, data, tuner, _ = parse_groups(GROUPS, argv)
    assert (model.model, model.dtype, data.max_length, data.val_ratio, data.system) == ("m", "bf16", 64, 0.1,
                                                                                        "Be brief.")
    assert (tuner.tuner, tuner.lora_rank, tuner.target_modules) == ("full", 4, ["all-linear"])
    media = ["--image_max_pixels", "50176", "--image_min_pixels", "784", "--video_fps", "1.5", "--video_maxlen", "16"]
    model = parse_groups(GROUPS, ["--model", "m", *media])[0]  # LLaMA-Factory's multimodal flags
    assert (model.max_pixels, model.min_pixels, model.fps, model.max_frames) == (50176, 784, 1.5, 16)
    config = tmp_path / "llama_factory.yaml"
    config.write_text("model_name_or_path: m\ntorch_dtype: float32\ntrain_type: lora\nmax_seq_length: 128\n")
    from tunestack.config import RuntimeArgs

    model, data, tuner, _, _ = parse_groups(GROUPS + [RuntimeArgs], ["--config", str(config)])
    assert (model.dtype, tuner.tuner, data.max_length) == ("fp32", "lora", 128)
    assert parse_groups([ModelArgs], [], config={"dtype": "float16"}, source="argument")[0].dtype == "fp16"
    with pytest.raises(ConfigError) as caught:
        parse_groups(GROUPS, ["--torch_dtype", "float64"])
    assert caught.value.problems == ["--dtype: expected one of auto, bf16, fp16, fp32, got 'float64'"]
