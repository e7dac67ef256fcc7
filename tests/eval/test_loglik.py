"""Multiple-choice scoring: the logged log-likelihoods equal a plain transformers computation, in any batch size."""

from __future__ import annotations

import json

import pytest
import torch

from tunestack.config import EvalArgs, ModelArgs
from tunestack.eval.command import run_eval
from tunestack.eval.loglik import encode_pair


def _samples(out, task):
    return [json.loads(line) for line in (out / "samples" / f"{task}.jsonl").read_text().splitlines()]


def _reference_loglik(model, tokenizer, context: str, continuation: str) -> float:
    """Score one choice the plain way: context + choice through the model once, continuation tokens summed."""
    context_ids = tokenizer(context)["input_ids"]
    whole = tokenizer(context + continuation)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([whole])).logits[0].float()
    logprobs = torch.log_softmax(logits, -1)
    return sum(logprobs[i - 1, whole[i]].item() for i in range(len(context_ids), len(whole)))


@pytest.mark.parametrize("task,fixture", [("mmlu", "mmlu_file"), ("arc_easy", "arc_file")])
def test_logged_loglikelihoods_match_plain_transformers(tiny_model_dir, tiny_model, tiny_tokenizer, tmp_path,
                                                         request, task, fixture):
    data = request.getfixturevalue(fixture)
    args = EvalArgs(tasks=[task], task_data=[f"{task}={data}"], batch_size=3, num_fewshot=1)
    summary = run_eval(ModelArgs(model=str(tiny_model_dir), dtype="fp32"), args, tmp_path / "out")
    samples = _samples(tmp_path / "out", task)
    assert summary["tasks"][task]["n"] == len(samples) > 0
    for sample in samples:
        expected = [_reference_loglik(tiny_model, tiny_tokenizer, sample["prompt"], " " + c)
                    for c in sample["choices"]]
        assert sample["loglikelihoods"] == pytest.approx(expected, abs=1e-4)
        assert sample["prediction"] == max(range(len(expected)), key=expected.__getitem__)
        assert sample["acc"] == float(sample["prediction"] == sample["gold"])
    accuracy = sum(s["acc"] for s in samples) / len(samples)
    assert summary["tasks"][task]["metrics"]["acc"]["value"] == pytest.approx(accuracy)
    if task == "arc_easy":  # reports length-normalised accuracy as the harness does
        normed = [max(range(3), key=lambda i: s["loglikelihoods"][i] / len(s["choices"][i])) for s in samples]
        assert [s["prediction_norm"] for s in samples] == normed


def test_scores_do_not_depend_on_batch_size(tiny_model_dir, mmlu_file, tmp_path):
    logged = []
    for batch_size in (1, 7):
        args = EvalArgs(tasks=["mmlu"], task_data=[f"mmlu={mmlu_file}"], batch_size=batch_size)
        run_eval(ModelArgs(model=str(tiny_model_dir), dtype="fp32"), args, tmp_path / str(batch_size))
        logged.append([s["loglikelihoods"] for s in _samples(tmp_path / str(batch_size), "mmlu")])
    assert [x for row in logged[0] for x in row] == pytest.approx([x for row in logged[1] for x in row], abs=1e-4)


def test_trailing_space_moves_to_the_continuation(tiny_tokenizer):
    context, continuation = encode_pair(tiny_tokenizer, "Answer: ", "42", prefix_id=0)
    assert tiny_tokenizer.decode(context) == "Answer:"
    assert tiny_tokenizer.decode(continuation) == " 42"


def test_mmlu_prompt_is_the_harness_template(tiny_model_dir, mmlu_file, tmp_path):
    args = EvalArgs(tasks=["mmlu"], task_data=[f"mmlu={mmlu_file}"], limit=1, subjects=["virology"])
    run_eval(ModelArgs(model=str(tiny_model_dir), dtype="fp32"), args, tmp_path / "out")
    (sample,) = _samples(tmp_path / "out", "mmlu")
    assert sample["prompt"] == ("The following are multiple choice questions (with answers) about virology.\n\n"
                                "What is 2 + 2?\nA. 4\nB. 5\nC. 2\nD. 6\nAnswer:")
    assert sample["gold"] == 2 and sample["subject"] == "virology"


def test_truthfulqa_mc1_and_mc2(tiny_model_dir, tmp_path):
    import math

    from helpers import write_jsonl

    rows = [{"question": f"Is {x} green?", "mc1_targets": {"choices": ["No.", "Yes."], "labels": [1, 0]},
             "mc2_targets": {"choices": ["No.", "It is not.", "Yes."], "labels": [1, 1, 0]}} for x in ("snow", "coal")]
    data = write_jsonl(tmp_path / "tq.jsonl", rows)
    summary = run_eval(ModelArgs(model=str(tiny_model_dir), dtype="fp32"),
                       EvalArgs(tasks=["truthfulqa_mc"], task_data=[f"truthfulqa_mc={data}"]), tmp_path / "out")
    samples = _samples(tmp_path / "out", "truthfulqa_mc")
    for sample in samples:
        probs = [math.exp(ll) for ll in sample["mc2_loglikelihoods"]]
        assert sample["mc2"] == pytest.approx((probs[0] + probs[1]) / sum(probs))
        assert sample["mc1"] == float(sample["loglikelihoods"][0] > sample["loglikelihoods"][1])
    assert set(summary["tasks"]["truthfulqa_mc"]["metrics"]) == {"mc1", "mc2"}


@pytest.mark.slow
def test_embedded_model_loglikelihoods_match_plain_transformers(mmlu_file, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunestack.hub import resolve_model

    path = resolve_model("smollm2-135m-instruct").path
    args = EvalArgs(tasks=["mmlu"], task_data=[f"mmlu={mmlu_file}"], limit=2, num_fewshot=2, batch_size=4)
    run_eval(ModelArgs(model="smollm2-135m-instruct", dtype="fp32"), args, tmp_path / "out")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    for sample in _samples(tmp_path / "out", "mmlu"):
        expected = [_reference_loglik(model, tokenizer, sample["prompt"], " " + c) for c in sample["choices"]]
        assert sample["loglikelihoods"] == pytest.approx(expected, abs=1e-3)


@pytest.mark.skipif(torch.cuda.is_available(), reason="on CUDA int4 goes through torchao")
def test_an_int4_export_is_scored_as_optimum_quanto_scores_it(tiny_model_dir, tiny_tokenizer, mmlu_file, tmp_path):
    """optimum-quanto's int4 weights fail under torch.inference_mode: scoring runs under no_grad as inference does."""
    pytest.importorskip("optimum.quanto", reason="optimum-quanto is not installed (pip install 'tunestack[quanto]')")
    from optimum.quanto import QuantizedModelForCausalLM

    from tunestack.config import ExportArgs
    from tunestack.export.merge import run_export

    out = tmp_path / "q4"
    run_export(ModelArgs(model=str(tiny_model_dir)), ExportArgs(output_dir=str(out), quant="int4", eval_ppl=False))
    args = EvalArgs(tasks=["mmlu"], task_data=[f"mmlu={mmlu_file}"], batch_size=4, limit=4)
    summary = run_eval(ModelArgs(model=str(out)), args, tmp_path / "eval")
    samples = _samples(tmp_path / "eval", "mmlu")
    assert summary["tasks"]["mmlu"]["n"] == len(samples) > 0
    quantized = QuantizedModelForCausalLM.from_pretrained(str(out))
    for sample in samples:
        expected = [_reference_loglik(quantized, tiny_tokenizer, sample["prompt"], " " + c)
                    for c in sample["choices"]]
        assert sample["loglikelihoods"] == pytest.approx(expected, abs=1e-3)
