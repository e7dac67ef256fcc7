"""A short soak through benchmarks/serve_soak.py: mixed traffic at twice the capacity of a real `tunestack serve`
(overload, bad requests and disconnects included) leaves no 5xx, no hung request, no wrong greedy answer and flat
memory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import cli_env

SOAK = Path(__file__).resolve().parents[2] / "benchmarks" / "serve_soak.py"
pytestmark = pytest.mark.serial  # memory must stay flat and every request finish in time


@pytest.mark.slow
def test_mixed_traffic_at_twice_the_capacity_gives_no_5xx_no_hang_and_flat_memory(tiny_model_dir, adapters, tmp_path):
    out = tmp_path / "soak.json"
    command = [sys.executable, str(SOAK), "--minutes", "0.75", "--model", str(tiny_model_dir), "--threads", "1",
               "--rss_bound_mb", "24", "--output", str(out)]
    for name, path in adapters.items():
        command += ["--adapter", f"{name}={path}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=cli_env())
    assert result.returncode == 0, result.stderr[-3000:]
    soak = json.loads(out.read_text())
    assert soak["internal_errors"] == 0 and soak["hung"] == 0 and not soak["errors"], soak["errors"]
    assert soak["answers_checked"] >= 20  # each greedy answer equal to generate's: none in soak["errors"]
    assert set(soak["expected_answers"]) == {"tiny", *adapters} and len(set(soak["expected_answers"].values())) == 3
    assert soak["served"] >= 100 and soak["rejected_429"] > 0  # overloaded: the queue was full at times
    assert soak["disconnects"] > 0 and soak["bad_answered"] > 0
    assert soak["rss_peak_growth_mb"] <= 24, soak["rss_samples"]
    assert soak["after"]["answers_after"] and not any(soak["after"]["gauges"].values())
    assert soak["exit_code"] == 0
