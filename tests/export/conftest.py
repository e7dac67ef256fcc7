"""A trained run directory that export tests share."""

import pytest

from helpers import CHAT_ROWS, cli, write_jsonl

TRAIN = ["--per_device_train_batch_size", "4", "--learning_rate", "1e-2", "--logging_steps", "1"]


@pytest.fixture(scope="session")
def trained_run(tiny_model_dir, tmp_path_factory):
    """A LoRA run of two steps on the tiny model, through the real CLI."""
    root = tmp_path_factory.mktemp("export-run")
    run = root / "run"
    cli("sft", "--model", str(tiny_model_dir), "--dataset", str(write_jsonl(root / "chat.jsonl", CHAT_ROWS)),
        "--max_steps", "2", "--output_dir", str(run), *TRAIN)
    return run
