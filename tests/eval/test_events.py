"""`tunestack eval` writes its progress as events into the output folder: per task a start counted in questions,
progress no more than a few times a second (the last always), the task's metrics, then the end."""

import pytest

from tunestack.config import EvalArgs, ModelArgs
from tunestack.errors import TunestackError
from tunestack.eval import runner
from tunestack.eval.command import run_eval
from tunestack.progress import Progress, read_events


def test_eval_writes_a_phase_per_task_into_its_folder(tiny_model_dir, mmlu_file, gsm8k_file, tmp_path):
    out = tmp_path / "out"
    args = EvalArgs(tasks=["mmlu", "gsm8k"], task_data=[f"mmlu={mmlu_file}", f"gsm8k={gsm8k_file}"], limit=2,
                    max_new_tokens=4, batch_size=2)
    summary = run_eval(ModelArgs(model=str(tiny_model_dir), dtype="fp32"), args, out)
    events = read_events(out)
    assert events[0] == {**events[0], "phase": "evaluate", "kind": "start"} and "total" not in events[0]
    starts = [i for i, e in enumerate(events) if e["kind"] == "start" and "task" in e]
    assert [(events[i]["task"], events[i]["total"], events[i]["unit"]) for i in starts] == \
        [("mmlu", 4, "q"), ("gsm8k", 2, "q")]
    for begin, end in zip(starts, starts[1:] + [len(events) - 1]):
        task, total = events[begin]["task"], events[begin]["total"]
        steps = [e["step"] for e in events[begin + 1:end] if e["kind"] == "progress" and not e.get("figures")]
        assert steps == sorted(set(steps)) and steps[-1] == total, (task, steps)
        (scored,) = [e for e in events[begin + 1:end] if e.get("figures")]
        metrics = summary["tasks"][task]["metrics"]
        assert scored["figures"] == {name: m["value"] for name, m in metrics.items() if m["value"] is not None}
    assert all(e["phase"] == "evaluate" for e in events)
    assert events[-1]["kind"] == "end" and events[-1]["status"] == "completed"

    again = EvalArgs(**{**vars(args), "tasks": ["gsm8k"], "task_data": [f"gsm8k={gsm8k_file}"]})
    run_eval(ModelArgs(model=str(tiny_model_dir), dtype="fp32"), again, out)
    assert [e.get("task") for e in read_events(out) if e["kind"] == "start"] == [None, "gsm8k"]  # started over


def test_a_failed_eval_ends_its_events_failed(tmp_path, monkeypatch):
    args = EvalArgs(tasks=["arith"], url="http://127.0.0.1:9", max_retries=0)
    with pytest.raises(TunestackError):
        run_eval(ModelArgs(), args, tmp_path / "out")
    end = read_events(tmp_path / "out")[-1]
    assert end["kind"] == "end" and end["status"] == "failed" and "cannot be reached" in end["message"]
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TunestackError):  # no folder named: no events, and no evals/TIME folder left behind
        run_eval(ModelArgs(), args)
    assert not (tmp_path / "evals").exists()


def test_task_progress_writes_at_most_a_few_times_a_second_and_always_the_last(tmp_path, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(runner.time, "monotonic", lambda: clock[0])
    progress = Progress(tmp_path)
    with runner.task_progress(progress, "mmlu", total=10, per_question=4) as advance:
        for _ in range(40):  # 4 choices a question, each scored 10 ms apart
            advance(1)
            clock[0] += 0.01
    steps = [e["step"] for e in read_events(tmp_path) if e["kind"] == "progress"]
    # 0.4 s in all: the first question at once, then once the quarter second has passed, and the last
    assert steps == [1, 7, 10]
    with runner.task_progress(progress, "arith", total=3) as advance:
        advance(2)  # stopped short of the total: what was done is still written
    assert [e["step"] for e in read_events(tmp_path) if e["kind"] == "progress"][-1] == 2
