"""--streaming trains from a large JSONL without reading it whole."""

import json

from helpers import CHAT_ROWS, cli


def test_streaming_training_never_reaches_the_end_of_the_file(tiny_model_dir, tmp_path):
    data = tmp_path / "big.jsonl"
    with open(data, "w") as fh:
        for i in range(3000):
            fh.write(json.dumps(CHAT_ROWS[i % len(CHAT_ROWS)]) + "\n")
        fh.write("{ this line is broken and is never read\n")
    run = tmp_path / "run"
    cli("sft", "--model", str(tiny_model_dir), "--dataset", str(data), "--streaming", "--packing", "--max_steps", "3",
        "--output_dir", str(run), "--logging_steps", "1", "--per_device_train_batch_size", "2",
        "--max_length", "128")
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "loss" in m] == [1, 2, 3]
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
