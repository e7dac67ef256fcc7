"""The encoded-data cache: a second run over the same rows, tokenizer and flags reads the token ids the first wrote
(and trains exactly as it did); anything that changes the encoding misses; a damaged entry or one that cannot be
written never costs the run."""

import json

import pytest

from helpers import CHAT_ROWS, PREFERENCE_ROWS, write_jsonl

FLAGS = {"max_steps": 2, "logging_steps": 1, "save_steps": 10, "per_device_train_batch_size": 4, "seed": 3,
         "max_length": 64}


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    """A cache folder of this test's own, so that no other test's entry answers."""
    from tunestack.data import encoded_cache

    folder = tmp_path / "encoded"
    monkeypatch.setattr(encoded_cache, "encoded_dir", lambda: folder)
    return folder


def train(model, data, output, method="sft", **flags):
    import tunestack

    run = getattr(tunestack, method)(model=str(model), dataset=str(data), output_dir=str(output),
                                     **{**FLAGS, **flags})
    assert run.status == "completed"
    return run


def losses(run, key="loss") -> list[float]:
    return [m[key] for m in run.metrics if key in m]


def cached(run) -> dict | None:
    return json.loads((run.path / "run.json").read_text())["data"].get("data_cache")


def test_a_second_run_reads_the_encoding_and_trains_the_same(tiny_model_dir, tmp_path, cache, capfd):
    data = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    first = train(tiny_model_dir, data, tmp_path / "first", val_ratio=0.25)
    assert cached(first)["read"] is False
    said = capfd.readouterr().err
    assert "training data: 24 examples" in said and "read from the cache" not in said
    assert [p.name for p in cache.iterdir()] == [cached(first)["key"]]  # one entry, no temporary folder left

    second = train(tiny_model_dir, data, tmp_path / "second", val_ratio=0.25)
    said = capfd.readouterr().err
    assert cached(second) == {"key": cached(first)["key"], "read": True}
    assert "read from the cache" in said and "training data: 24 examples" in said  # what encoding said, again
    report = json.loads((first.path / "run.json").read_text())["data"]
    assert json.loads((second.path / "run.json").read_text())["data"] == {**report, "data_cache": cached(second)}
    assert losses(second) == losses(first) and len(losses(first)) == 2
    assert losses(second, "eval_loss") == losses(first, "eval_loss") and losses(first, "eval_loss")


def test_what_changes_the_encoding_misses(tiny_model_dir, tmp_path, cache):
    data = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    key = cached(train(tiny_model_dir, data, tmp_path / "a"))["key"]
    changed_row = write_jsonl(tmp_path / "changed.jsonl", CHAT_ROWS[:-1] + [
        {"messages": [{"role": "user", "content": "What is 8 + 4?"}, {"role": "assistant", "content": "12."}]}])
    template = tmp_path / "template.jinja"
    template.write_text("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    keys = {
        "row": cached(train(tiny_model_dir, changed_row, tmp_path / "b"))["key"],
        "max_length": cached(train(tiny_model_dir, data, tmp_path / "c", max_length=32))["key"],
        "packing": cached(train(tiny_model_dir, data, tmp_path / "d", packing=True))["key"],
        "chat_template": cached(train(tiny_model_dir, data, tmp_path / "e", chat_template=str(template)))["key"],
    }
    assert key not in keys.values() and len(set(keys.values())) == len(keys), keys
    again = train(tiny_model_dir, data, tmp_path / "f", learning_rate=1e-3)  # a training flag: same encoding
    assert cached(again) == {"key": key, "read": True}


def test_data_cache_false_neither_reads_nor_writes(tiny_model_dir, tmp_path, cache):
    data = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    run = train(tiny_model_dir, data, tmp_path / "run", data_cache=False)
    assert cached(run) is None and not cache.exists()


def test_a_damaged_entry_is_encoded_afresh(tiny_model_dir, tmp_path, cache):
    data = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    first = train(tiny_model_dir, data, tmp_path / "first")
    rows = cache / cached(first)["key"] / "train" / "rows.jsonl"
    rows.write_text(rows.read_text()[:100])  # cut mid-row, as a full disk might have
    second = train(tiny_model_dir, data, tmp_path / "second")
    assert cached(second)["read"] is False
    assert losses(second) == losses(first) and losses(first)


def test_a_cache_that_cannot_be_written_costs_only_the_cache(tiny_model_dir, tmp_path, monkeypatch, capfd):
    from tunestack.data import encoded_cache

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setattr(encoded_cache, "encoded_dir", lambda: blocker / "encoded")
    data = write_jsonl(tmp_path / "chat.jsonl", CHAT_ROWS)
    run = train(tiny_model_dir, data, tmp_path / "run")
    said = capfd.readouterr().err
    assert "encoded data: not kept in the cache (NotADirectoryError" in said, said
    assert cached(run)["read"] is False


def test_reward_model_pairs_come_back_as_a_dataset(tiny_model_dir, tmp_path, cache):
    data = write_jsonl(tmp_path / "pairs.jsonl", PREFERENCE_ROWS)
    first = train(tiny_model_dir, data, tmp_path / "first", method="rm")
    second = train(tiny_model_dir, data, tmp_path / "second", method="rm")
    assert cached(second) == {"key": cached(first)["key"], "read": True}
    assert losses(second) == losses(first) and losses(first)
