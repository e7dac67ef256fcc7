"""Every example in examples/ runs, in a reduced form (the tiny model, two steps), so that none goes stale."""

import subprocess
import sys
from pathlib import Path

import pytest

from helpers import cli_env

EXAMPLES = Path(__file__).parents[1] / "examples"
SCRIPTS = sorted(p for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))
# What each example prints when it did its job (beside exiting 0).
PRINTS = {"self_cognition.py": "final loss", "sft_jsonl.py": "completed", "qlora.py": "completed",
          "continued_pretraining.py": "completed", "dpo_after_sft.py": "last margin:",
          "export_quantize_gguf.py": "model-q8_0.gguf", "evaluate_compare.py": "# A:",
          "multi_process.py": "ddp 2 processes", "serve_adapters_openai.py": "models: ['base', 'math', 'nova']",
          "grpo_custom_reward.py": "completed mean reward:"}


def test_every_example_is_listed():
    assert sorted(p.name for p in SCRIPTS) == sorted(PRINTS)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_example_runs(script, tiny_model_dir, tmp_path):
    result = subprocess.run([sys.executable, str(script), "--model", str(tiny_model_dir), "--max_steps", "2",
                             "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=900,
                            env=cli_env())
    assert result.returncode == 0, result.stderr[-3000:]
    assert PRINTS[script.name] in result.stdout, result.stdout[-2000:]


def test_notebook_runs(tiny_model_dir, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(EXAMPLES / "python_api.ipynb", as_version=4)
    parameters = next(c for c in notebook.cells if c.cell_type == "code")
    parameters.source = f"MODEL = {str(tiny_model_dir)!r}\nMAX_STEPS = 2\nWORKDIR = {str(tmp_path)!r}"
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs), "run.plot() shows a figure"
    assert any("completed" in o.get("text", "") for o in outputs)
