"""The workarounds in tunestack.compat do what they say, in a fresh interpreter each."""

import importlib.util
import json
import subprocess
import sys

import pytest

from helpers import cli_env


@pytest.mark.skipif(importlib.util.find_spec("gptqmodel") is None,
                    reason="gptqmodel is not installed (pip install 'tunestack[gptq]')")
def test_gptqmodel_imports_without_writing_to_stdout_or_changing_the_environment():
    script = ("import json, os, sys\n"
              "from tunestack.compat import import_gptqmodel_quietly\n"
              "before = dict(os.environ)\n"
              "import_gptqmodel_quietly()\n"
              "assert 'gptqmodel' in sys.modules\n"
              "print(json.dumps({k: v for k, v in os.environ.items() if before.get(k) != v}))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                            env=cli_env(drop=("PYTORCH_ALLOC_CONF", "CUDA_DEVICE_ORDER")))
    assert json.loads(result.stdout) == {}  # stdout holds only the script's own line: no banner, no new variables
    assert "GPT-QModel" in result.stderr  # the banner went to stderr


@pytest.mark.skipif(importlib.util.find_spec("gptqmodel") is None,
                    reason="gptqmodel is not installed (pip install 'tunestack[gptq]')")
def test_infer_chat_shows_no_library_banner_without_debug(tiny_model_dir, tmp_path):
    """peft imports gptqmodel when an adapter loads; its banner and ENV notes stay off the terminal chat (--debug
    leaves them on stderr, as the test above shows)."""
    from helpers import make_adapter

    adapter = make_adapter(tiny_model_dir, tmp_path / "adapter", seed=1)
    script = ("import sys\nfrom tunestack.cli import main\nrc = main(sys.argv[1:])\n"
              "print('gptqmodel was imported' if 'gptqmodel' in sys.modules else 'no gptqmodel')\nsys.exit(rc)\n")
    result = subprocess.run([sys.executable, "-c", script, "infer", "--model", str(tiny_model_dir), "--adapter",
                             str(adapter), "--max_new_tokens", "3"], input="hi\n/exit\n", capture_output=True,
                            text=True, timeout=300, env=cli_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("gptqmodel was imported")  # so its banner would have shown
    assert "GPT-QModel" not in result.stdout + result.stderr and "ENV:" not in result.stdout + result.stderr
    quiet = result.stderr.splitlines()
    assert [line.split(":")[0] for line in quiet] == ["model", "chat"], quiet  # tunestack's own two lines alone
