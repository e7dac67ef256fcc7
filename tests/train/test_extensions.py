"""Your own loss, metrics, callbacks and experiment trackers, through the real CLI on the tiny model."""

import json
import textwrap

import pytest

from helpers import CHAT_ROWS, cli, write_jsonl
from tunestack.config import DataArgs, TrainArgs, TunerArgs
from tunestack.errors import ConfigError
from tunestack.train.lifecycle import validate_training

USER_CODE = '''
import json, os
from transformers import TrainerCallback

LOG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "calls.jsonl")


def _record(kind, **fields):
    with open(LOG, "a") as f:
        f.write(json.dumps({"kind": kind, **fields}) + "\\n")


def zero_loss(outputs, labels, num_items_in_batch=None):
    _record("loss", logits=list(outputs.logits.shape), labels=list(labels.shape),
            items=None if num_items_in_batch is None else int(num_items_in_batch))
    return outputs.logits.float().sum() * 0.0


def token_accuracy(eval_prediction):
    import numpy as np

    predictions, labels = eval_prediction.predictions, eval_prediction.label_ids
    _record("metrics", predictions=list(predictions.shape), labels=list(labels.shape))
    mask = labels != -100
    return {"token_accuracy": float((predictions[mask] == labels[mask]).mean()), "answer_tokens": int(mask.sum())}


class StepCounter(TrainerCallback):
    def __init__(self):
        self.steps = 0

    def on_step_end(self, args, state, control, **kwargs):
        self.steps += 1
        _record("step", step=state.global_step, counted=self.steps)
'''


@pytest.fixture()
def user_code(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text(USER_CODE)
    return path


def _calls(user_code, kind):
    lines = (user_code.parent / "calls.jsonl").read_text().splitlines()
    return [c for c in map(json.loads, lines) if c["kind"] == kind]


def _metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_custom_loss_replaces_cross_entropy(tiny_model_dir, tmp_path, user_code):
    data = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    run = tmp_path / "run"
    cli("sft", "--model", str(tiny_model_dir), "--dataset", str(data), "--output_dir", str(run), "--max_steps", "3",
        "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "2", "--logging_steps", "1",
        "--loss_func", f"{user_code}:zero_loss", "--report_to", "none")
    losses = [m["loss"] for m in _metrics(run) if "loss" in m]
    assert losses and all(loss == 0.0 for loss in losses)
    calls = _calls(user_code, "loss")
    assert len(calls) == 3 * 2  # every micro-batch of every step
    assert all(c["logits"][:2] == c["labels"] and c["items"] > 0 for c in calls)  # whole sequence, unshifted
    assert not (run / "tensorboard").exists()


def test_metrics_and_callbacks_reach_the_run(tiny_model_dir, tmp_path, user_code):
    data = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    val = write_jsonl(tmp_path / "val.jsonl", CHAT_ROWS[:6])
    run = tmp_path / "run"
    cli("sft", "--model", str(tiny_model_dir), "--dataset", str(data), "--val_dataset", str(val),
        "--output_dir", str(run), "--max_steps", "4", "--eval_steps", "2", "--logging_steps", "1",
        "--per_device_eval_batch_size", "4", "--learning_rate", "1e-2",
        "--metrics", f"{user_code}:token_accuracy", "--callbacks", f"{user_code}:StepCounter")
    evals = [m for m in _metrics(run) if "eval_loss" in m]
    assert [m["step"] for m in evals] == [2, 4]
    assert all(0.0 <= m["eval_token_accuracy"] <= 1.0 for m in evals)
    assert all(m["eval_answer_tokens"] > 0 for m in evals)
    metric_calls = _calls(user_code, "metrics")
    assert len(metric_calls) == 2
    assert all(c["predictions"] == c["labels"] and c["labels"][0] == 6 for c in metric_calls)  # ids, not logits
    steps = _calls(user_code, "step")
    assert [s["step"] for s in steps] == [1, 2, 3, 4] and steps[-1]["counted"] == 4
    assert any((run / "tensorboard").iterdir())  # the default tracker is still there


def test_extension_flags_name_the_flag_and_the_path(tmp_path, user_code):
    broken = tmp_path / "broken.py"
    broken.write_text("def f(:\n")
    train = TrainArgs(loss_func=f"{tmp_path}/gone.py:f", metrics=f"{user_code}:nope",
                      callbacks=[f"{user_code}:zero_loss", f"{broken}:C", "mine:Cls"], report_to=["none", "wandb"])
    with pytest.raises(ConfigError) as caught:
        validate_training(DataArgs(dataset=["arith"]), TunerArgs(), train)
    problems = caught.value.problems
    assert f"--loss_func {tmp_path}/gone.py:f: file {tmp_path}/gone.py not found" in problems
    assert f"--metrics {user_code}:nope: {user_code} defines no function nope" in problems
    text = "\n".join(problems)
    assert f"--callbacks {user_code}:zero_loss: <function zero_loss" in text and "not a subclass" in text
    assert "--report_to none,wandb: none excludes the trackers named with it" in problems
    assert any(p.startswith("--metrics: computed at evaluation steps, which need validation data") for p in problems)
    # One problem per flag: the first bad callback stops that flag's checks.
    assert sum(p.startswith("--callbacks") for p in problems) == 1


def test_loss_func_is_refused_for_methods_with_their_own_loss(user_code):
    from tunestack.config import DpoArgs
    from tunestack.train.dpo import DPO

    with pytest.raises(ConfigError) as caught:
        validate_training(DataArgs(dataset=["arith-pref"]), TunerArgs(),
                          TrainArgs(loss_func=f"{user_code}:zero_loss"), DpoArgs(), method=DPO)
    assert any(p.startswith("--loss_func: dpo computes its own loss") for p in caught.value.problems)


def test_missing_tracker_names_the_extra(monkeypatch):
    import importlib.util

    from tunestack.train.tracking import tracker_problems, trackers

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "swanlab" else real(name, *a))
    assert tracker_problems(["swanlab"]) == ["--report_to swanlab: swanlab is not installed: "
                                             "pip install 'tunestack[tracking]'"]
    assert "swanlab" not in trackers(["all"]) and "tensorboard" in trackers(["all"])
    assert trackers(["none"]) == []


def _tracked_run(tiny_model_dir, tmp_path, tracker: str, env: dict):
    data = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    run = tmp_path / f"tracked-{tracker}"
    cli("sft", "--model", str(tiny_model_dir), "--dataset", str(data), "--output_dir", str(run), "--max_steps", "2",
        "--logging_steps", "1", "--report_to", f"tensorboard,{tracker}", env=env)
    return run


def test_mlflow_run_carries_the_loss_and_the_run_name(tiny_model_dir, tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="mlflow is optional (tunestack[tracking]); not installed here")
    store = tmp_path / "mlruns"
    _tracked_run(tiny_model_dir, tmp_path, "mlflow", {"MLFLOW_TRACKING_URI": store.as_uri(),
                                                      "MLFLOW_EXPERIMENT_NAME": "tunestack-test",
                                                      "MLFLOW_ALLOW_FILE_STORE": "true"})  # mlflow 3.17: opt in
    import mlflow

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = mlflow.MlflowClient(tracking_uri=store.as_uri())
    experiment = client.get_experiment_by_name("tunestack-test")
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.run_name == "tracked-mlflow"
    assert [m.step for m in client.get_metric_history(found.info.run_id, "loss")] == [1, 2]
    assert found.data.params["learning_rate"] == "0.0001"  # the training arguments, by transformers
    logged = mlflow.artifacts.load_dict(f"{found.info.artifact_uri}/tunestack_config.json")
    assert logged["tunestack"]["data"]["dataset"] == [str(tmp_path / "chat.jsonl")]  # the run's own config


def _wandb_log_records(data: bytes):
    """The protobuf records of a .wandb file: a 7-byte header, then LevelDB log blocks of 32 KiB whose chunks carry
    a 7-byte header (crc, length, kind: 1 full, 2 first, 3 middle, 4 last); wandb 0.31 has no Python reader."""
    import struct

    position, pending = 7, b""
    while position + 7 <= len(data):
        if 32768 - position % 32768 < 7:  # a block's tail too short for a chunk header is padding
            position += 32768 - position % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):
            yield pending
            pending = b""


def test_wandb_offline_run_carries_the_loss_and_the_run_name(tiny_model_dir, tmp_path):
    pytest.importorskip("wandb", reason="wandb is optional (tunestack[tracking]); not installed here")
    _tracked_run(tiny_model_dir, tmp_path, "wandb", {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path),
                                                     "WANDB_SILENT": "true"})
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    (records,) = run_dir.glob("*.wandb")
    from wandb.proto import wandb_internal_pb2

    names, losses, config = set(), [], {}
    for data in _wandb_log_records(records.read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        if record.WhichOneof("record_type") == "run":
            names.add(record.run.display_name)
        if record.WhichOneof("record_type") == "config":
            config.update({item.key: item.value_json for item in record.config.update})
        if record.WhichOneof("record_type") == "history":
            items = {item.key or "/".join(item.nested_key): item.value_json for item in record.history.item}
            if "train/loss" in items:
                losses.append(float(items["train/loss"]))
    assert names == {"tracked-wandb"}
    assert json.loads(config["tunestack"])["data"]["dataset"] == [str(tmp_path / "chat.jsonl")]
    assert len(losses) == 2 and all(loss > 0 for loss in losses)


def test_user_code_errors_read_like_the_reward_functions(tmp_path):
    from tunestack.errors import TunestackError
    from tunestack.user_code import load_object

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "prep.py").write_text(textwrap.dedent("""
        def prep(row):
            return row
    """))
    assert load_object("x", "prep.py:prep", relative_to=tmp_path / "data")({"a": 1}) == {"a": 1}
    with pytest.raises(TunestackError, match="expected PATH.py:FUNCTION"):
        load_object("--loss_func", "prep")


def test_trackers_reach_the_training_arguments_without_tensorboard(tmp_path):
    import torch

    from tunestack.train.trainer import training_arguments

    made = training_arguments(TrainArgs(report_to=["tensorboard", "wandb"]), str(tmp_path), torch.float32, 1e-4,
                              has_eval=False, run_name="my-run")
    assert made.report_to == ["wandb"] and made.run_name == "my-run"  # tensorboard is the run directory's own
    assert training_arguments(TrainArgs(), str(tmp_path), torch.float32, 1e-4, has_eval=False).report_to in ([], "none")


def test_padding_free_is_refused_for_methods_that_batch_their_own_rows():
    from tunestack.config.align import DpoArgs
    from tunestack.train.dpo import DPO

    with pytest.raises(ConfigError) as caught:
        validate_training(DataArgs(dataset=["arith-pref"], padding_free=True), TunerArgs(), TrainArgs(), DpoArgs(),
                          method=DPO)
    assert "--padding_free: dpo batches its own rows; drop --padding_free" in caught.value.problems
