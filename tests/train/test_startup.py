"""startup_seconds: the first run of a process counts from the process's start, a later run in the same process (the
Python API) from its own start; the parts add up to the total."""

from __future__ import annotations

import time

import pytest

from tunestack.train import startup


def test_the_first_run_counts_the_imports_and_a_later_one_does_not(monkeypatch):
    monkeypatch.setattr(startup, "_marks", {})
    monkeypatch.setattr(startup, "_runs", 0)
    startup.mark("data")
    time.sleep(0.05)
    startup.mark("model")
    first = startup.startup_seconds(time.time() + 0.1)
    assert first["imports"] > 0.5  # this test process started (and imported torch) well before
    assert first["data"] >= 0.04 and first["model"] >= 0.09
    assert first["total"] == pytest.approx(first["imports"] + first["data"] + first["model"], abs=0.02)
    startup.mark("data")
    startup.mark("model")
    later = startup.startup_seconds()
    assert later["imports"] == 0 and later["total"] < 1
    assert "first step after" in startup.describe(later)


def test_finding_the_model_counts_as_model_time_though_it_comes_before_encoding(monkeypatch):
    """The embedded model's one-time conversion happens between reading and encoding the data; it is model time."""
    monkeypatch.setattr(startup, "_marks", {})
    monkeypatch.setattr(startup, "_runs", 0)
    startup.mark("data")
    time.sleep(0.02)
    startup.mark("resolve")
    time.sleep(0.2)  # the model is found (converted, downloaded)
    startup.mark("resolved")
    time.sleep(0.02)
    startup.mark("model")
    parts = startup.startup_seconds()
    assert 0.03 <= parts["data"] < 0.15 and parts["model"] >= 0.2
    assert parts["total"] == pytest.approx(parts["imports"] + parts["data"] + parts["model"], abs=0.02)
    startup.mark("data")  # a later run starts its marks over: no resolving left from the first
    startup.mark("model")
    assert startup.startup_seconds()["data"] < 0.05
