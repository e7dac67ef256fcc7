"""Every subprocess the tests start runs with the session's temporary HF_HOME, never the user's Hugging Face cache."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import helpers
from helpers import cli_env

LAUNCHERS = {"run", "Popen", "call", "check_call", "check_output"}


def launches_without_cli_env(path: Path) -> list[int]:
    """Lines of `path` that call subprocess.run/Popen/... without `env=cli_env(...)`."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in LAUNCHERS
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "subprocess"):
            continue
        env = next((k.value for k in node.keywords if k.arg == "env"), None)
        if not (isinstance(env, ast.Call) and isinstance(env.func, ast.Name) and env.func.id == "cli_env"):
            lines.append(node.lineno)
    return lines


def test_every_subprocess_launch_in_the_tests_goes_through_cli_env():
    root = Path(__file__).parent
    missing = {str(p.relative_to(root)): lines for p in sorted(root.rglob("*.py"))
               if (lines := launches_without_cli_env(p))}
    assert not missing, f"subprocess launches without env=cli_env(...): {missing}"


def test_the_check_catches_a_launch_with_the_users_environment(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import os, subprocess\nsubprocess.run(['x'], env={**os.environ})\nsubprocess.Popen(['x'])\n"
                      "subprocess.run(['x'], env=cli_env())\n")
    assert launches_without_cli_env(sample) == [2, 3]


def test_a_cli_subprocess_sees_the_sessions_hf_home_and_cache(tmp_path_factory):
    code = ("import os; from huggingface_hub import constants as c; "
            "print(os.environ['HF_HOME']); print(c.HF_HUB_CACHE); print(os.environ['HF_HUB_OFFLINE'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=cli_env()).stdout.splitlines()
    home = str(helpers.session_hf_home)
    assert out == [home, os.path.join(home, "hub"), "1"]
    assert os.path.abspath(home) != os.path.abspath(helpers.USER_HF_HOME)
    assert Path(home).parent == tmp_path_factory.getbasetemp()  # a temporary directory of this session


def test_cli_env_drops_the_users_cache_variables_and_refuses_the_users_home(monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", "/somewhere/the/user/keeps/models")
    assert "HF_HUB_CACHE" not in cli_env()
    with pytest.raises(RuntimeError, match="user's HF_HOME"):
        cli_env({"HF_HOME": helpers.USER_HF_HOME})
