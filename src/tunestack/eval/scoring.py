"""Score prepared questions on a backend: multiple choice by log-likelihood (or the generated letter), generation
tasks by their answer extraction, chat tasks by their own checks; one sample record per question."""

from __future__ import annotations

import math

from tunestack.eval import extract
from tunestack.eval.benchmarks import Doc
from tunestack.eval.math_answer import extract_answer, is_equiv


class LogprobsUnavailable(Exception):
    """The server does not return prompt log-probabilities; multiple choice falls back to generating the letter."""


def score_choices(name: str, docs: list[Doc], contexts: list[str], backend, acc_norm: bool, progress) -> list[dict]:
    """acc (and acc_norm: log-likelihood over the choice's length in characters) from each choice's log-likelihood
    after the context, the choice preceded by a space (the harness's target delimiter)."""
    pairs, owners = [], []
    for index, (doc, context) in enumerate(zip(docs, contexts)):
        choices = doc.choices + doc.extra.get("mc2_choices", [])
        pairs += [(context, " " + choice) for choice in choices]
        owners += [index] * len(choices)
    scores = backend.loglikelihood(pairs, progress)
    samples, cursor = [], 0
    for doc, context in zip(docs, contexts):
        count = len(doc.choices)
        mine = scores[cursor:cursor + count]
        mc2 = scores[cursor + count:cursor + count + len(doc.extra.get("mc2_choices", []))]
        cursor += count + len(mc2)
        samples.append(_choice_sample(doc, context, mine, mc2, acc_norm))
    return samples


def _choice_sample(doc: Doc, context: str, scores: list, mc2: list, acc_norm: bool) -> dict:
    if any(s is None for s in scores + mc2):
        return {"prompt": context, "choices": doc.choices, "gold": doc.target, "error": "request failed"}
    lls = [s[0] for s in scores]
    prediction = max(range(len(lls)), key=lambda i: lls[i])
    sample = {"prompt": context, "choices": doc.choices, "loglikelihoods": lls, "is_greedy": [s[1] for s in scores],
              "prediction": prediction, "gold": doc.target, "acc": float(prediction == doc.target)}
    if acc_norm:
        normed = [ll / len(choice) for ll, choice in zip(lls, doc.choices)]
        sample["prediction_norm"] = max(range(len(normed)), key=lambda i: normed[i])
        sample["acc_norm"] = float(sample["prediction_norm"] == doc.target)
    if mc2:
        lls2 = [s[0] for s in mc2]
        top = max(lls2)
        probs = [math.exp(ll - top) for ll in lls2]
        labels = doc.extra["mc2_labels"]
        sample.update(mc2_loglikelihoods=lls2, mc2=sum(p for p, l in zip(probs, labels) if l == 1) / sum(probs))
        sample["mc1"] = sample.pop("acc")
    if doc.subject:
        sample["subject"] = doc.subject
    return sample


def score_choices_by_letter(docs: list[Doc], contexts: list[str], backend, progress) -> list[dict]:
    """Without log-probabilities: ask for the letter of the answer and read the first choice letter in the reply."""
    prompts = []
    for doc, context in zip(docs, contexts):
        listed = all(len(c) == 1 for c in doc.choices)  # MMLU-like prompts already list lettered choices
        options = "" if listed else "\n" + "\n".join(f"{chr(65 + i)}. {c}" for i, c in enumerate(doc.choices))
        prompts.append([{"role": "user", "content": f"{context}{options}\nAnswer with the letter of the correct "
                                                    f"choice only."}])
    outputs = backend.chat(prompts, 8, progress)
    samples = []
    for doc, context, output in zip(docs, contexts, outputs):
        if output is None:
            samples.append({"prompt": context, "choices": doc.choices, "gold": doc.target, "error": "request failed"})
            continue
        prediction = extract.choice_letter(output, len(doc.choices))
        sample = {"prompt": context, "choices": doc.choices, "raw": output, "prediction": prediction,
                  "gold": doc.target, "acc": float(prediction == doc.target)}
        if doc.subject:
            sample["subject"] = doc.subject
        samples.append(sample)
    return samples


def score_generation(task: str, docs: list[Doc], contexts: list[str], outputs: list[str | None]) -> list[dict]:
    """gsm8k, math and bbh answers extracted from the outputs and matched as the harness does."""
    samples = []
    for doc, context, output in zip(docs, contexts, outputs):
        sample = {"prompt": context, "raw": output, "gold": doc.target}
        if doc.subject:
            sample["subject"] = doc.subject
        if output is None:
            samples.append({**sample, "error": "request failed"})
            continue
        if task == "gsm8k":
            scores, extracted = extract.gsm8k_scores(output, doc.target)
        elif task == "bbh":
            scores, extracted = extract.bbh_scores(output, doc.target)
        else:
            answer = extract_answer(output)
            scores, extracted = {"exact_match": float(is_equiv(answer, doc.extra["answer"]))}, answer
            sample["gold"] = doc.extra["answer"]
        samples.append({**sample, "extracted": extracted, **scores})
    return samples


def metric_names(samples: list[dict]) -> list[str]:
    """The per-question scores present in the samples, in a stable order."""
    skip = {"prediction", "prediction_norm", "gold", "subject", "doc_id"}
    names = []
    for sample in samples:
        for key, value in sample.items():
            if key not in skip and key not in names and isinstance(value, float):
                names.append(key)
    return names


def mean_and_stderr(values: list[float]) -> tuple[float | None, float | None]:
    """The mean and its standard error (sample standard deviation over the square root of n), as the harness;
    None where undefined."""
    n = len(values)
    if n == 0:
        return None, None
    mean = sum(values) / n
    if n < 2:
        return mean, None
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(variance / n)
