"""Progress events: the writer and readers round trip, a tail never sees half an event and notices a file started over,
latest() sums up the newest attempt, and the terminal bar is drawn from events alone."""

import io
import json
import os

import pytest

from tunestack.progress import (EVENTS_FILE, EventTail, Progress, TerminalBar, events_size, follow, latest,
                                read_events)


def test_events_round_trip(tmp_path):
    seen = []
    progress = Progress(tmp_path / "run", listeners=[seen.append])
    progress.start("train", total=4, step=1, unit="step")
    progress.step(2, tokens_per_s=812.34, loss=1.5, learning_rate=1e-4, note="words", nan=float("nan"), flag=True)
    progress.message("saved checkpoint-2")
    progress.end("completed")
    events = read_events(tmp_path / "run")
    assert events == seen
    assert [e["kind"] for e in events] == ["start", "progress", "message", "end"]
    assert {e["phase"] for e in events} == {"train"}
    assert events[0] == {**events[0], "step": 1, "total": 4, "unit": "step"}
    step = events[1]
    assert (step["step"], step["total"]) == (2, 4) and step["eta_s"] >= 0
    # numbers only, and only finite ones
    assert step["figures"] == {"tokens_per_s": 812.34, "loss": 1.5, "learning_rate": 1e-4}
    assert events[3]["status"] == "completed" and progress.status == "completed"
    for line in (tmp_path / "run" / EVENTS_FILE).read_text().splitlines():
        json.loads(line)  # strict JSON: no NaN


def test_a_bad_status_is_refused(tmp_path):
    with pytest.raises(ValueError, match="completed, interrupted, failed"):
        Progress(tmp_path).end("done")


def test_as_a_context_the_writer_ends_the_work_however_it_ends(tmp_path):
    with Progress(tmp_path / "ok") as progress:
        progress.start("write")
    with pytest.raises(OSError), Progress(tmp_path / "failed") as progress:
        raise OSError(28, "No space left on device")
    with pytest.raises(KeyboardInterrupt), Progress(tmp_path / "stopped"):
        raise KeyboardInterrupt
    ends = {name: read_events(tmp_path / name)[-1] for name in ("ok", "failed", "stopped")}
    assert {name: e["status"] for name, e in ends.items()} == \
        {"ok": "completed", "failed": "failed", "stopped": "interrupted"}
    assert ends["failed"]["message"] == "OSError: [Errno 28] No space left on device"


def test_a_deferred_writer_holds_its_events_until_opened_and_writes_nothing_if_never(tmp_path):
    seen = []
    held = Progress(tmp_path / "run", listeners=[seen.append], defer=True)
    held.start("data")
    held.message("32 training rows")
    assert not (tmp_path / "run").exists() and len(seen) == 2  # shown at once, written later
    held.open()
    held.start("load")
    assert [e["phase"] for e in read_events(tmp_path / "run")] == ["data", "data", "load"]
    never = Progress(tmp_path / "other", defer=True)
    never.start("data")
    never.end("failed", "bad row")
    assert not (tmp_path / "other").exists()


def test_a_disabled_writer_or_one_without_a_folder_writes_nothing(tmp_path):
    seen = []
    Progress(tmp_path / "rank1", enabled=False, listeners=[seen.append]).start("train", total=3)
    Progress(None, listeners=[seen.append]).start("evaluate", total=3)
    assert not (tmp_path / "rank1").exists() and [e["phase"] for e in seen] == ["evaluate"]


def test_tail_skips_a_half_written_line_and_picks_it_up_once_finished(tmp_path):
    path = tmp_path / EVENTS_FILE
    tail = EventTail(tmp_path)
    assert tail.read() == ([], 0)  # no file yet
    whole = json.dumps({"phase": "train", "kind": "start", "total": 3}) + "\n"
    half = json.dumps({"phase": "train", "kind": "progress", "step": 1})
    path.write_text(whole + half[:10])
    events, offset = tail.read()
    assert [e["kind"] for e in events] == ["start"] and offset == len(whole)
    assert tail.read() == ([], len(whole))
    with open(path, "a") as fh:
        fh.write(half[10:] + "\n")
    events, offset = tail.read()
    assert events == [json.loads(half)] and offset == len(whole) + len(half) + 1


def test_tail_starts_over_when_the_file_is_started_over(tmp_path):
    first = Progress(tmp_path)
    for step in range(5):
        first.start(f"phase-{step}")
    tail = EventTail(tmp_path)
    assert len(tail.read()[0]) == 5
    (tmp_path / EVENTS_FILE).unlink()  # a fresh run in the same folder, which writes more than the old one did
    second = Progress(tmp_path)
    for step in range(8):
        second.start(f"again-{step}")
    events, _ = tail.read()
    assert [e["phase"] for e in events] == [f"again-{step}" for step in range(8)]
    with open(tmp_path / EVENTS_FILE, "w"):  # cut short in place: the same file, now smaller
        pass
    Progress(tmp_path).start("third")
    assert [e["phase"] for e in tail.read()[0]] == ["third"]


def test_tail_keeps_its_place_when_the_same_file_moves_into_place(tmp_path):
    """An export carries its events file into the new folder as it swaps it in: a reader keeps reading."""
    out, new = tmp_path / "out", tmp_path / "out.tmp"
    progress = Progress(out)
    progress.start("load")
    tail = EventTail(out)
    assert len(tail.read()[0]) == 1
    new.mkdir()
    os.replace(out / EVENTS_FILE, new / EVENTS_FILE)
    os.rmdir(out)
    os.replace(new, out)
    progress.end("completed")
    assert [e["kind"] for e in tail.read()[0]] == ["end"]


def test_a_tail_from_an_offset_reads_only_what_came_after(tmp_path):
    first = Progress(tmp_path)
    first.start("train", total=3)
    first.end("interrupted")
    offset = events_size(tmp_path)
    assert offset == (tmp_path / EVENTS_FILE).stat().st_size and events_size(tmp_path / "none") == 0
    Progress(tmp_path).start("data")
    assert [e["phase"] for e in EventTail(tmp_path, offset).read()[0]] == ["data"]


def test_follow_stops_at_the_end_or_when_the_process_is_gone(tmp_path):
    progress = Progress(tmp_path)
    progress.start("train", total=2)
    progress.step(1)
    progress.end("interrupted")
    assert [e["kind"] for e in follow(tmp_path, poll_s=0.01)] == ["start", "progress", "end"]
    # A resumed run appends: with `alive`, an earlier attempt's end does not stop the reader, the process's exit does.
    polls = iter([True, True, False])
    resumed = Progress(tmp_path)

    def alive():
        running = next(polls)
        if running:
            resumed.start("data")
        return running
    kinds = [(e["phase"], e["kind"]) for e in follow(tmp_path, poll_s=0.01, alive=alive)]
    assert kinds[-2:] == [("data", "start"), ("data", "start")] and ("train", "end") in kinds
    assert [e["phase"] for e in follow(tmp_path, poll_s=0.01, alive=lambda: False, offset=events_size(tmp_path))] \
        == []


def test_latest_sums_up_the_newest_attempt():
    events = [
        {"phase": "train", "kind": "start", "step": 0, "total": 10, "time": 1.0},
        {"phase": "train", "kind": "progress", "step": 3, "total": 10, "eta_s": 7.0,
         "figures": {"loss": 2.0, "learning_rate": 1e-4, "tokens_per_s": 500.0}, "time": 2.0},
        {"phase": "train", "kind": "progress", "step": 4, "total": 10, "figures": {"loss": 1.8}, "time": 3.0},
        {"phase": "train", "kind": "end", "status": "interrupted", "message": "stopped on SIGTERM", "time": 4.0},
    ]
    state = latest(events)
    assert (state["phase"], state["step"], state["total"], state["status"]) == ("train", 4, 10, "interrupted")
    assert state["figures"] == {"loss": 1.8, "learning_rate": 1e-4, "tokens_per_s": 500.0}
    assert state["messages"] == ["stopped on SIGTERM"] and state["time"] == 4.0
    resumed = latest(events + [{"phase": "data", "kind": "start", "step": 0, "time": 5.0},
                               {"phase": "evaluate", "kind": "start", "total": 20, "task": "arith", "time": 6.0}])
    assert (resumed["phase"], resumed["task"], resumed["total"], resumed["status"]) == ("evaluate", "arith", 20, None)
    assert resumed["figures"] == {} and resumed["messages"] == []
    assert latest([])["status"] is None


def test_terminal_bar_is_drawn_from_events(tmp_path):
    stream = io.StringIO()
    bar = TerminalBar(stream)
    progress = Progress(tmp_path, listeners=[bar])
    progress.start("train", total=8, step=2, unit="step")
    assert bar.bar.n == 2 and bar.bar.total == 8 and bar.bar.unit == "step"
    progress.step(5, tokens_per_s=1234.0, loss=1.23456, **{"rewards/margins": 0.5})
    assert bar.bar.n == 5 and bar.bar.postfix == "loss=1.235, margins=0.5, tok/s=1,234"
    progress.message("a line the bar ignores")
    progress.step(8)
    assert bar.bar is None  # closed at its total
    text = stream.getvalue()
    assert "train" in text and "8/8" in text and "loss=1.235" in text
    progress.start("evaluate", total=3, task="arith", unit="q")
    assert bar.bar.desc == "arith"
    progress.start("save")  # no total: no bar
    assert bar.bar is None
    progress.start("evaluate", total=3)
    progress.end("failed", "boom")
    assert bar.bar is None
