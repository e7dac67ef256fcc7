"""Importing tunestack (and its CLI) loads no heavy or optional backend."""

import subprocess
import sys

from helpers import cli_env

HEAVY = ["torch", "transformers", "bitsandbytes", "vllm", "deepspeed", "modelscope", "peft", "datasets"]


def test_import_loads_no_backend():
    code = ("import sys, tunestack, tunestack.cli, tunestack.config, tunestack.hub, tunestack.data; "
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=cli_env()).stdout
    assert out.strip() == "[]"
