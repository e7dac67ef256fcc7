"""Bad input to the preference methods: one line naming the file and line or the flag, before any model loads."""

import pytest

from helpers import KTO_ROWS, PREFERENCE_ROWS, build_model, build_tokenizer, write_jsonl

GOOD, KTO_GOOD = PREFERENCE_ROWS[0], KTO_ROWS[0]
CASES = {  # name: (command, rows or None, flags, what the one line says)
    "missing rejected": ("dpo", [{"prompt": "q", "chosen": "a"}], [],
                         'preference data needs "prompt"/"chosen"/"rejected" fields'),
    "rejected missing later": ("orpo", [GOOD, {"prompt": "q", "chosen": "a"}], [],
                               "data.jsonl, line 2: expected \"prompt\"/\"chosen\"/\"rejected\" fields like the first"),
    "chosen equals rejected": ("dpo", [GOOD, {"prompt": "q", "chosen": "same", "rejected": "same"}], [],
                               "data.jsonl, line 2: chosen and rejected are the same answer"),
    "empty chosen": ("simpo", [{**GOOD, "chosen": ""}], [], "data.jsonl, line 1: chosen is empty"),
    "empty rejected": ("cpo", [GOOD, {**GOOD, "rejected": [{"role": "assistant", "content": "  "}]}], [],
                       "data.jsonl, line 2: rejected is empty"),
    "empty completion": ("kto", [KTO_GOOD, {**KTO_GOOD, "completion": ""}], [],
                         "data.jsonl, line 2: completion is empty"),
    "label not boolean": ("kto", [KTO_GOOD, {**KTO_GOOD, "label": "maybe"}], [],
                          "data.jsonl, line 2: label is"),
    "ref_model to orpo": ("orpo", None, ["--ref_model", "x"], "--ref_model: orpo uses no reference model"),
    "ref_model to simpo": ("simpo", None, ["--ref_model", "x"], "--ref_model: simpo uses no reference model"),
    "ref_model to cpo": ("cpo", None, ["--ref_model", "x"], "--ref_model: cpo uses no reference model"),
    "packing": ("dpo", None, ["--packing"], "--packing: dpo trains on whole examples"),
    "exo_pair": ("dpo", None, ["--loss_type", "exo_pair"], "--loss_type exo_pair: needs --label_smoothing"),
}


@pytest.fixture()
def no_model_loads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("tunestack.model.load.load_model", refuse)


def one_error(command: str, flags: list[str], capsys) -> str:
    """Run `tunestack COMMAND FLAGS` in this process; the single error line it printed."""
    from tunestack.cli import main

    assert main([command, *flags]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("tunestack")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_before_any_model_loads(name, tiny_model_dir, tmp_path, capsys, no_model_loads):
    command, rows, flags, expected = CASES[name]
    data = write_jsonl(tmp_path / "data.jsonl", rows or (KTO_ROWS if command == "kto" else PREFERENCE_ROWS))
    run = tmp_path / "run"
    error = one_error(command, ["--model", str(tiny_model_dir), "--dataset", str(data), "--output_dir", str(run),
                                *flags], capsys)
    assert expected in error
    assert not run.exists()


def test_reference_with_another_tokenizer_is_refused_before_any_weights_load(tiny_model_dir, tmp_path, capsys,
                                                                            no_model_loads):
    other = tmp_path / "other"
    tokenizer = build_tokenizer()
    tokenizer.add_tokens(["<|extra|>"])
    tokenizer.save_pretrained(other)
    build_model(tokenizer).save_pretrained(other)
    data = write_jsonl(tmp_path / "data.jsonl", PREFERENCE_ROWS)
    run = tmp_path / "run"
    error = one_error("dpo", ["--model", str(tiny_model_dir), "--dataset", str(data), "--output_dir", str(run),
                              "--ref_model", str(other)], capsys)
    assert f"--ref_model {other}: its tokenizer differs from the policy's" in error
    assert not run.exists()
