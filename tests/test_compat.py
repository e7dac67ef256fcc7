"""The workarounds in tunestack.compat do what they say, in a fresh interpreter each."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest


@pytest.mark.skipif(importlib.util.find_spec("gptqmodel") is None,
                    reason="gptqmodel is not installed (pip install 'tunestack[gptq]')")
def test_gptqmodel_imports_without_writing_to_stdout_or_changing_the_environment():
    script = ("import json, os, sys\n"
              "from tunestack.compat import import_gptqmodel_quietly\n"
              "before = dict(os.environ)\n"
              "import_gptqmodel_quietly()\n"
              "assert 'gptqmodel' in sys.modules\n"
              "print(json.dumps({k: v for k, v in os.environ.items() if before.get(k) != v}))\n")
    unset = {k: v for k, v in os.environ.items() if k not in ("PYTORCH_ALLOC_CONF", "CUDA_DEVICE_ORDER")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=unset)
    assert json.loads(result.stdout) == {}  # stdout holds only the script's own line: no banner, no new variables
    assert "GPT-QModel" in result.stderr  # the banner went to stderr
