"""What an estimate reads: the scale-out flags, a model's config without its weights, the rows of --dataset."""

from __future__ import annotations

import json
import shutil

import pytest

from tunestack.config import ModelArgs, ParallelArgs
from tunestack.errors import ModelNotFoundError
from tunestack.plan.parallel import Sharding, parallel_problems, sharding
from tunestack.plan.rows import Rows
from tunestack.plan.source import model_source


def test_scale_out_flag_problems_are_all_named(tmp_path):
    bad_stage = tmp_path / "ds.json"
    bad_stage.write_text(json.dumps({"zero_optimization": {"stage": 4}}))
    problems = parallel_problems(ParallelArgs(deepspeed=str(bad_stage), fsdp=True))
    assert any("exclude each other" in p for p in problems) and any("stage is 4" in p for p in problems)
    assert parallel_problems(ParallelArgs(fsdp_offload=True)) == ["--fsdp_offload: needs --fsdp"]
    assert "no such file" in parallel_problems(ParallelArgs(deepspeed="missing.json"))[0]


def test_sharding_from_flags_and_from_a_deepspeed_file(tmp_path):
    assert sharding(ParallelArgs(nproc=4, deepspeed="zero2")) == Sharding(4, "deepspeed", 2)
    assert sharding(ParallelArgs(nproc=2, deepspeed="zero3_offload")) == Sharding(2, "deepspeed", 3, True, True)
    assert sharding(ParallelArgs(nproc=8, fsdp=True, fsdp_offload=True)) == Sharding(8, "fsdp", 3, True, True)
    config = tmp_path / "ds.json"
    config.write_text(json.dumps({"zero_optimization": {"stage": 3, "offload_optimizer": {"device": "cpu"}}}))
    assert sharding(ParallelArgs(nproc=2, deepspeed=str(config))) == Sharding(2, "deepspeed", 3, True, False)


def test_hub_id_offline_without_its_config_is_one_clear_error(empty_hub_cache):
    with pytest.raises(ModelNotFoundError) as error:
        model_source(ModelArgs(model="org/big-model"))
    message = str(error.value)
    assert "config.json" in message and "HF_HUB_OFFLINE=1" in message and "\n" not in message


def test_hub_id_is_estimated_from_its_cached_config_alone(empty_hub_cache, tiny_model_dir):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = empty_hub_cache / "models--org--big-model"
    (repo / "snapshots" / commit).mkdir(parents=True)
    shutil.copy(tiny_model_dir / "config.json", repo / "snapshots" / commit / "config.json")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    source = model_source(ModelArgs(model="org/big-model"))
    assert source.config["hidden_size"] == 64 and source.local is None and "config.json only" in source.where


def test_only_config_json_is_asked_of_the_hub(monkeypatch, tmp_path):
    asked = []

    def snapshot(repo, revision=None, patterns=None, **kw):
        asked.append((repo, patterns))
        (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 8}))
        return tmp_path, False

    monkeypatch.setattr("tunestack.hub.fetch.hf_snapshot", snapshot)
    assert model_source(ModelArgs(model="qwen2.5-7b-instruct")).template == "qwen"
    assert asked == [("Qwen/Qwen2.5-7B-Instruct", ["config.json"])]


def test_run_and_adapter_directories_lead_to_the_base_config(tmp_path, tiny_model_dir):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny_model_dir)}))
    assert model_source(ModelArgs(model=str(adapter))).local == tiny_model_dir
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"base_model": "gone", "base_model_path": str(tiny_model_dir),
                                              "template": "chatml"}))
    source = model_source(ModelArgs(model=str(run)))
    assert source.local == tiny_model_dir and source.template == "chatml"


def rows_of(lengths_and_prompts):
    return Rows.from_encoded([{"input_ids": [1] * n, "labels": [-100] * p + [1] * (n - p)}
                              for n, p in lengths_and_prompts])


def test_worst_micro_batch_of_a_short_run_is_the_expected_longest_row_drawn():
    rows = rows_of([(n, 10) for n in range(20, 120)])  # 100 rows of 20 to 119 tokens
    every = rows.micro_batch(4)  # every row is drawn at some point
    assert (every.length, every.kept) == (119, 119 - 10)  # logits from the first target to the end
    assert rows.micro_batch(4, drawn=100).length == 119
    few = rows.micro_batch(4, drawn=9)
    assert few.length == 110  # rank (100 + 1) / (9 + 1) from the top
    assert few.kept < 119 - 10


def test_packed_rows_compute_logits_where_any_row_has_a_target():
    def packed(pattern):
        labels = [-100 if c == "p" else 1 for c in pattern]
        return {"input_ids": [1] * len(labels), "labels": labels, "position_ids": list(range(len(labels)))}

    rows = Rows.from_encoded([packed("ppaappaa"), packed("appaappa")])
    assert rows.micro_batch(1).kept == 4  # columns 1, 2, 5, 6 of the first row (column j predicts label j + 1)
    assert rows.micro_batch(2).kept == 5  # and columns 2, 3, 6 of the second
