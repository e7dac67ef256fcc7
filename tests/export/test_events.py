"""`tunestack export` writes its progress as events into --output_dir; the file moves with the finished folder, and
a folder left holding only the events of a stopped export can be exported into again."""

import pytest

from helpers import make_adapter
from tunestack.config import ExportArgs, ModelArgs
from tunestack.export.merge import run_export
from tunestack.progress import read_events


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("event-adapters")
    return [make_adapter(tiny_model_dir, root / f"lora{seed}", seed=seed) for seed in (1, 2)]


def test_export_writes_its_phases_into_the_output_folder(adapters, tiny_model_dir, tmp_path):
    out = tmp_path / "merged"
    run_export(ModelArgs(model=str(tiny_model_dir)),
               ExportArgs(adapter=[str(a) for a in adapters], output_dir=str(out), eval_ppl=True))
    events = read_events(out)
    assert [e["phase"] for e in events if e["kind"] == "start"] == ["load", "merge", "write", "perplexity"]
    merge = next(e for e in events if e["phase"] == "merge" and e["kind"] == "start")
    assert merge["total"] == 2 and merge["unit"] == "adapter"
    assert [e["step"] for e in events if e["phase"] == "merge" and e["kind"] == "progress"] == [1, 2]
    assert events[-1]["kind"] == "end" and events[-1]["status"] == "completed" and events[-1]["message"] == str(out)
    assert not list(tmp_path.glob("merged.*"))  # the events file moved in with the folder; nothing left beside it

    # --overwrite: the new export's events replace the old ones.
    run_export(ModelArgs(model=str(tiny_model_dir)),
               ExportArgs(adapter=[str(adapters[0])], output_dir=str(out), eval_ppl=False, overwrite=True))
    events = read_events(out)
    assert [e["phase"] for e in events if e["kind"] == "start"] == ["load", "merge", "write"]
    assert [e["kind"] for e in events].count("end") == 1


def test_a_folder_holding_only_a_stopped_exports_events_is_free(adapters, tiny_model_dir, tmp_path, monkeypatch):
    import transformers.modeling_utils

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    out = tmp_path / "merged"
    args = ExportArgs(adapter=[str(adapters[0])], output_dir=str(out), eval_ppl=False)
    with monkeypatch.context() as patch:
        patch.setattr(transformers.modeling_utils, "safe_save_file", full_disk)
        with pytest.raises(Exception, match="No space left"):
            run_export(ModelArgs(model=str(tiny_model_dir)), args)
    assert [p.name for p in out.iterdir()] == ["events.jsonl"]
    assert read_events(out)[-1]["status"] == "failed"
    run_export(ModelArgs(model=str(tiny_model_dir)), args)  # no --overwrite needed
    events = read_events(out)
    assert events[0]["phase"] == "load" and [e["status"] for e in events if e["kind"] == "end"] == ["completed"]
    assert (out / "model.safetensors").is_file()
