"""The README's demo, as a newcomer runs it: the embedded model learns a new name and author."""

import subprocess
import sys
from pathlib import Path

import pytest

from helpers import cli_env

ROOT = Path(__file__).parents[2]


@pytest.mark.slow
def test_readme_demo_teaches_name_and_author(tmp_path):
    name, author = "Zorblax", "Quintessa Labs"
    result = subprocess.run(["bash", "scripts/demo.sh", name, author, str(tmp_path / "demo")], cwd=ROOT,
                            capture_output=True, text=True, timeout=1500, stdin=subprocess.DEVNULL,
                            env=cli_env({"PYTHON": sys.executable}))
    assert result.returncode == 0, result.stderr[-3000:]
    answers = dict(zip(("name", "author"), [l[3:] for l in result.stdout.splitlines() if l.startswith("A: ")]))
    assert name in answers["name"], result.stdout
    assert author in answers["author"], result.stdout
