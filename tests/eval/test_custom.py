"""Custom tasks from JSONL files (multiple choice, open QA, free generation) and declared in YAML; text metrics."""

from __future__ import annotations

import json

import pytest

from helpers import write_jsonl
from tunestack.config import EvalArgs, ModelArgs
from tunestack.errors import ConfigError, DataError
from tunestack.eval.command import run_eval
from tunestack.eval.tasks import resolve_tasks
from tunestack.eval.textmetrics import corpus_scores, rouge_l, words


def _run(model_dir, tmp_path, tasks, **kw):
    return run_eval(ModelArgs(model=str(model_dir), dtype="fp32"), EvalArgs(tasks=tasks, max_new_tokens=8, **kw),
                    tmp_path / "out")


def test_custom_mcq_accepts_letters_indices_and_answer_text(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "quiz.jsonl", [
        {"question": "Capital of France?", "choices": ["Paris", "Rome", "Oslo"], "answer": "Paris"},
        {"question": "2 + 2?", "choices": ["3", "4"], "answer": "B"},
        {"question": "Largest?", "choices": ["1", "9", "5", "2", "0"], "answer": 1},
    ])
    summary = _run(tiny_model_dir, tmp_path, [f"custom_mcq:{data}"])
    samples = [json.loads(l) for l in (tmp_path / "out" / "samples" / "custom_mcq_quiz.jsonl").read_text().splitlines()]
    assert [s["gold"] for s in samples] == [0, 1, 1]
    assert [len(s["loglikelihoods"]) for s in samples] == [3, 2, 5]
    assert samples[0]["prompt"] == "Capital of France?\nA. Paris\nB. Rome\nC. Oslo\nAnswer:"
    assert summary["tasks"]["custom_mcq:quiz"]["n"] == 3


def test_custom_qa_exact_match_and_regex(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "qa.jsonl", [
        {"question": "Say anything.", "regex": ".*"},
        {"question": "Say something impossible.", "answer": "zzz-never-generated"},
    ])
    summary = _run(tiny_model_dir, tmp_path, [f"custom_qa:{data}"])
    samples = [json.loads(l) for l in (tmp_path / "out" / "samples" / "custom_qa_qa.jsonl").read_text().splitlines()]
    assert [s["exact_match"] for s in samples] == [1.0, 0.0]
    assert summary["tasks"]["custom_qa:qa"]["metrics"]["exact_match"]["value"] == 0.5


def test_custom_gen_reports_bleu_rouge_chrf_from_a_yaml_declaration(tiny_model_dir, tmp_path):
    write_jsonl(tmp_path / "gen.jsonl", [{"prompt": "Greet me.", "reference": "Hello there, friend."},
                                         {"prompt": "用中文问好。", "reference": "你好，世界。"}])
    (tmp_path / "tasks.yaml").write_text("tasks:\n  - name: greetings\n    type: custom_gen\n    path: gen.jsonl\n")
    summary = _run(tiny_model_dir, tmp_path, [str(tmp_path / "tasks.yaml")])
    metrics = summary["tasks"]["greetings"]["metrics"]
    assert {"bleu", "rouge_l", "chrf"} <= set(metrics)
    assert all(0 <= metrics[m]["value"] <= 100 for m in ("bleu", "rouge_l", "chrf"))


def test_chinese_is_segmented_into_words():
    assert words("我爱北京天安门") == ["我", "爱", "北京", "天安门"]
    perfect = corpus_scores(["我爱北京天安门"], ["我爱北京天安门"])
    assert perfect["bleu"] == pytest.approx(100) and perfect["rouge_l"] == pytest.approx(100)
    assert corpus_scores(["今天天气很好"], ["我爱北京天安门"])["rouge_l"] == 0


def test_rouge_l_agrees_with_rouge_score_on_english():
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    for pred, ref in [("the cat sat on the mat", "the cat lay on a mat"), ("a b c d", "d c b a"), ("x", "y")]:
        assert rouge_l(words(pred), words(ref)) == pytest.approx(scorer.score(ref, pred)["rougeL"].fmeasure)


def test_bad_custom_declarations_are_named(tmp_path):
    with pytest.raises(ConfigError, match="unknown custom task kind 'custom_xyz'"):
        resolve_tasks([f"custom_xyz:{tmp_path}/a.jsonl"])
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_tasks([f"custom_qa:{tmp_path}/missing.jsonl"])


def test_custom_qa_row_without_answer_names_the_field(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "qa.jsonl", [{"question": "Hi?", "reply": "Hello"}])
    with pytest.raises(DataError, match="qa.jsonl, line 1: missing field 'answer'"):
        _run(tiny_model_dir, tmp_path, [f"custom_qa:{data}"])


def test_self_cognition_needs_the_expected_name(tiny_model_dir, tmp_path):
    with pytest.raises(ConfigError, match="--model_name and --model_author"):
        _run(tiny_model_dir, tmp_path, ["self-cognition"])
    summary = _run(tiny_model_dir, tmp_path, ["self-cognition"], model_name="Nova", model_author="Acme")
    assert summary["tasks"]["self-cognition"]["n"] == 12
