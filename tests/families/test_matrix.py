"""Every model family through the whole life on a tiny random model of its own class: masks, LoRA training,
`infer` and the server equal to transformers' `generate`, merged export equal to base + adapter, evaluation
locally and against the server, and GGUF for the families it converts (benchmarks/family_matrix.py prints the
same checks as a table)."""

from __future__ import annotations

import json

import pytest
import torch
from families.checks import (
    PROMPT, QA, eval_answers, gguf_logit_error, gguf_read_back_logit_error, mask_pieces, merged_logit_error,
    reference_answer, served_answer, train_family,
)
from families.specs import FAMILIES


@pytest.fixture(scope="module", params=list(FAMILIES))
def family_run(request, tmp_path_factory):
    family = FAMILIES[request.param]
    return family, *train_family(family, tmp_path_factory.mktemp(request.param))


def test_masks_follow_the_template_token_by_token(family_run):
    pieces, expected = mask_pieces(family_run[2])
    assert len(pieces) == len(expected), pieces
    assert all(piece.rstrip().endswith(want) for piece, want in zip(pieces, expected)), (pieces, expected)


def test_lora_training_runs_and_lowers_the_loss(family_run):
    family, base, run = family_run
    losses = [m["loss"] for m in run.metrics if "loss" in m]
    assert run.status == "completed" and len(losses) == 6 and torch.isfinite(torch.tensor(losses)).all()
    assert losses[-1] < losses[0], (family.name, losses)
    assert (run.final / "adapter_model.safetensors").is_file()


def test_infer_and_server_answer_as_generate_does(family_run):
    from tunestack import api

    family, base, run = family_run
    expected = reference_answer(base, run.final, PROMPT, max_new_tokens=8)
    assert api.chat(run, PROMPT, max_new_tokens=8, dtype="fp32") == expected  # exact: no bf16 on AMX
    assert served_answer(run, PROMPT, max_tokens=8) == expected


def test_merged_export_equals_base_plus_adapter(family_run, tmp_path):
    from tunestack import api

    family, base, run = family_run
    export = api.export(run, tmp_path / "merged")
    assert merged_logit_error(base, run.final, export.path) < 1e-4


def test_eval_agrees_locally_and_on_the_server(family_run, tmp_path):
    local, served = eval_answers(family_run[2], tmp_path)
    assert len(local) == len(QA) and local == served


def test_gguf_round_trip_keeps_the_logits(family_run, tmp_path):
    from tunestack import api
    from tunestack.errors import TunestackError

    family, base, run = family_run
    if not family.gguf:
        with pytest.raises(TunestackError, match="GGUF export supports"):
            api.export(run, tmp_path / "gguf", to="gguf", gguf_type="f32")
        return
    export = api.export(run, tmp_path / "gguf", to="gguf", gguf_type="f32")
    record = json.loads((export.path / "export.json").read_text())
    check = gguf_logit_error if family.gguf_loader else gguf_read_back_logit_error
    assert check(export.path / record["gguf"]["file"], base, run.final) < 1e-3
