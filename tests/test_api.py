"""The Python API: the CLI's flags as keyword arguments, the same run directories, typed results, Python objects."""

import json
import subprocess
import sys

import pytest

from helpers import CHAT_ROWS, cli, cli_env, write_jsonl

FLAGS = {"max_steps": 3, "logging_steps": 1, "save_steps": 2, "per_device_train_batch_size": 4, "seed": 5,
         "learning_rate": 5e-3}
TIMING = {"tokens_per_s", "memory_mb"}


def test_import_is_light():
    code = "import sys, tunestack; tunestack.sft; tunestack.Run; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env())
    assert result.stdout.strip() == "False"


def _comparable(run):
    manifest = json.loads((run / "run.json").read_text())
    for key in ("created", "versions", "startup_seconds"):  # when and where it ran, and how long it took to start
        manifest.pop(key)
    manifest["config"]["train"].pop("output_dir")
    manifest["data"].pop("data_cache")  # the second of the two runs reads the first's encoding
    metrics = [{k: v for k, v in json.loads(line).items() if k not in TIMING}
               for line in (run / "metrics.jsonl").read_text().splitlines()]
    return manifest, metrics, (run / "final" / "adapter_model.safetensors").read_bytes()


def test_api_and_cli_give_identical_run_directories(tiny_model_dir, tmp_path):
    import tunestack

    data = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    flags = [f"--{k}={v}" for k, v in FLAGS.items()]
    cli("sft", "--model", str(tiny_model_dir), "--dataset", str(data), "--output_dir", str(tmp_path / "cli"), *flags)
    run = tunestack.sft(model=str(tiny_model_dir), dataset=str(data), output_dir=str(tmp_path / "api"), **FLAGS)
    assert isinstance(run, tunestack.Run) and run.status == "completed"
    assert _comparable(run.path) == _comparable(tmp_path / "cli")
    assert run.final_loss == run.metrics[-1]["loss"]
    assert [m["step"] for m in run.metrics] == [1, 2, 3]
    figure = run.plot()
    assert figure.axes[0].lines[0].get_xdata().tolist() == [1, 2, 3]
    answer = run.chat("What is 2 + 3?", max_new_tokens=6)
    assert answer == cli("infer", "--model", str(run.path), "--prompt", "What is 2 + 3?", "--max_new_tokens",
                         "6").stdout.strip()


def test_bad_arguments_raise_the_gathered_error(tiny_model_dir):
    import tunestack
    from tunestack.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        tunestack.dpo(model=str(tiny_model_dir), dataset="arith-pref", beta=-1, lora_rnak=4, tuner="lora2")
    problems = "\n".join(caught.value.problems)
    assert "--beta: expected a positive number, got -1" in problems
    assert "unknown argument 'lora_rnak' (did you mean lora_rank?)" in problems
    assert "--tuner: expected one of lora, dora, qlora, full, got 'lora2'" in problems


def test_python_objects_as_data_model_and_callback(tiny_model_dir, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    import tunestack

    class Steps(TrainerCallback):
        seen: list = []

        def on_step_end(self, args, state, control, **kwargs):
            self.seen.append(state.global_step)

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    run = tunestack.sft(model=model, tokenizer=tokenizer, dataset=Dataset.from_list(CHAT_ROWS[:8]),
                        callbacks=[Steps()], output_dir=str(tmp_path / "run"), **FLAGS)
    assert run.status == "completed" and Steps.seen == [1, 2, 3]
    recorded = run.manifest
    assert recorded["data"]["train_rows"] == 8 and recorded["data"]["encoded"]["examples"] == 8
    assert recorded["base_model_fingerprint"]  # the loaded model was saved beside the run and fingerprinted
    run2 = tunestack.sft(model=str(tiny_model_dir), dataset=CHAT_ROWS[:8], output_dir=str(tmp_path / "run2"),
                         **FLAGS)
    assert run2.manifest["data"]["encoded"] == recorded["data"]["encoded"]


def test_public_api_type_checks():
    pytest.importorskip("mypy")
    from pathlib import Path

    src = Path(__file__).parents[1] / "src" / "tunestack"
    result = subprocess.run([sys.executable, "-m", "mypy", "--follow-imports=silent", "--ignore-missing-imports",
                             str(src / "api.py"), str(src / "results.py"), str(src / "__init__.py")],
                            capture_output=True, text=True, env=cli_env())
    assert result.returncode == 0, result.stdout


def test_estimate_matches_the_cli_json(tiny_model_dir, tmp_path):
    import tunestack

    data = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    from_api = tunestack.estimate(model=str(tiny_model_dir), dataset=str(data), max_length=64)
    from_cli = json.loads(cli("estimate", "--model", str(tiny_model_dir), "--dataset", str(data), "--max_length",
                              "64", "--json").stdout)
    assert from_api["peak_bytes"] == from_cli["peak_bytes"] > 0


def test_chat_sees_images_given_as_files_or_parts(llava_dir, llava, tiny_model_dir, tmp_path):
    """tunestack.chat() reads media as `tunestack infer` does: image= files beside a text prompt, or image parts in
    messages; the answer is transformers' greedy one, and a text model given an image says so before loading."""
    from tiny_vlms import image, reference_generate, save_png

    import tunestack
    from tunestack.errors import ConfigError

    picture = image((30, 40, 230), (20, 24))
    path = save_png(picture, tmp_path / "blue.png")
    expected = llava[1].tokenizer.decode(reference_generate(
        None, [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Colour?"}]}], [picture], 6,
        llava), skip_special_tokens=True).strip()
    assert tunestack.chat(llava_dir, "Colour?", image=[str(path)], max_new_tokens=6, dtype="fp32") == expected
    parts = [{"role": "user", "content": [{"type": "image", "image": str(path)}, {"type": "text", "text": "Colour?"}]}]
    assert tunestack.chat(llava_dir, parts, max_new_tokens=6, dtype="fp32") == expected
    with pytest.raises(ConfigError, match="image=: --model .* is a text-only model"):
        tunestack.chat(tiny_model_dir, "Colour?", image=[str(path)])
