"""`tunestack eval --url` against tunestack's own server: the same scores and answers as evaluating locally."""

from __future__ import annotations

import json

import pytest

from server_helpers import make_serving, running_server
from tunestack.config import EvalArgs, ModelArgs
from tunestack.eval.command import run_eval


def samples(out, task):
    return [json.loads(line) for line in (out / "samples" / f"{task}.jsonl").read_text().splitlines()]


@pytest.fixture()
def tunestack_server(tiny_model_dir):
    from tunestack.serve.app import build_app

    serving = make_serving(tiny_model_dir)
    with running_server(build_app(serving)) as url:
        yield url
    serving.engine.close()


def test_multiple_choice_scores_from_the_servers_logprobs(tunestack_server, tiny_model_dir, mmlu_file, tmp_path):
    args = EvalArgs(tasks=["mmlu"], task_data=[f"mmlu={mmlu_file}"], limit=3, num_fewshot=1)
    local = run_eval(ModelArgs(model=str(tiny_model_dir), dtype="fp32"), args, tmp_path / "local")
    remote = run_eval(ModelArgs(), EvalArgs(**{**vars(args), "url": tunestack_server, "batch_size": 4}),
                      tmp_path / "remote")
    assert remote["tasks"]["mmlu"]["settings"]["scoring"] == "log-likelihood"
    for ours, theirs in zip(samples(tmp_path / "local", "mmlu"), samples(tmp_path / "remote", "mmlu"), strict=True):
        assert theirs["loglikelihoods"] == pytest.approx(ours["loglikelihoods"], abs=1e-4)
    assert remote["tasks"]["mmlu"]["metrics"] == local["tasks"]["mmlu"]["metrics"]


def test_generation_through_the_server_matches_local_generation(tunestack_server, tiny_model_dir, gsm8k_file,
                                                                 tmp_path):
    args = EvalArgs(tasks=["gsm8k"], task_data=[f"gsm8k={gsm8k_file}"], limit=3, num_fewshot=0, max_new_tokens=12)
    run_eval(ModelArgs(model=str(tiny_model_dir), dtype="fp32"), args, tmp_path / "local")
    run_eval(ModelArgs(), EvalArgs(**{**vars(args), "url": tunestack_server}), tmp_path / "remote")
    local, remote = samples(tmp_path / "local", "gsm8k"), samples(tmp_path / "remote", "gsm8k")
    assert [s["raw"] for s in remote] == [s["raw"] for s in local] and len(local) == 3
