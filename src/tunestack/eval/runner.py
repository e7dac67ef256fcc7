"""Run every requested task on one backend and gather the per-task metrics, samples and settings."""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

from tunestack.config import EvalArgs
from tunestack.eval import chat_tasks, scoring
from tunestack.eval.loading import read_local
from tunestack.eval.prepare import prepare, task_data_paths
from tunestack.eval.tasks import CHAT, CHOICE, CODE, TaskSpec
from tunestack.progress import Progress, TerminalBar

DEFAULT_NEW_TOKENS = 256
"""Tokens generated per answer when neither the task nor --max_new_tokens says otherwise (the harness's default)."""
EVENTS_PER_S = 4
"""The most progress events a task writes per second (the last one is always written)."""


@contextmanager
def task_progress(progress: Progress, task: str, total: int, per_question: float = 1.0):
    """An "evaluate" phase for `task`: a start with its `total` questions, then the questions done as units are
    scored (`per_question` units make a question), written at most EVENTS_PER_S times a second and always at the end.
    Yields the callback that takes the units scored; the terminal bar is drawn from the same events."""
    progress.start("evaluate", total=total, task=task, unit="q")
    units, shown, last = 0.0, 0, 0.0

    def advance(scored: float) -> None:
        nonlocal units, shown, last
        units += scored
        done = min(total, int(units / per_question + 1e-6))
        now = time.monotonic()
        if done != shown and (done == total or now - last >= 1 / EVENTS_PER_S):
            progress.step(done)
            shown, last = done, now

    try:
        yield advance
    finally:
        done = min(total, int(units / per_question + 1e-6))
        if done != shown:
            progress.step(done)


def evaluate(backend, specs: list[TaskSpec], args: EvalArgs, progress: Progress | None = None) -> dict:
    """The report of `specs` on `backend`: per task its metrics (value, stderr), n, settings, notes and samples.
    `progress` receives an "evaluate" phase per task, and its metrics as figures once scored."""
    progress = progress or Progress(None, listeners=[TerminalBar()])
    paths = task_data_paths(args)
    tasks = {}
    for spec in specs:
        started = time.perf_counter()
        result = _run_task(spec, backend, args, paths.get(spec.name) or spec.path, progress)
        result["seconds"] = round(time.perf_counter() - started, 2)
        result["questions_per_second"] = round(result["n"] / max(result["seconds"], 1e-9), 2)
        tasks[spec.name] = result
        progress.step(len(result["samples"]), **{name: m["value"] for name, m in result["metrics"].items()})
    notes = list(backend.notes)
    errors = getattr(backend, "errors", [])
    if errors:
        notes.append(f"{len(errors)} server requests failed after {args.max_retries} retries; first: {errors[0]}")
    return {"model": backend.name, "tasks": tasks, "notes": notes}


def _run_task(spec: TaskSpec, backend, args: EvalArgs, local_path: str | None, progress: Progress) -> dict:
    settings = {"limit": args.limit, "seed": args.seed, "batch_size": args.batch_size}
    notes: list[str] = []
    if spec.kind == CHAT:
        samples, extra = _run_chat(spec, backend, args, local_path, progress)
        settings.update(num_fewshot=0, max_new_tokens=args.max_new_tokens or DEFAULT_NEW_TOKENS,
                        source=local_path or "built-in")
    else:
        prepared = prepare(spec, args, local_path)
        settings.update(num_fewshot=prepared.num_fewshot, source=prepared.source)
        extra = {}
        if spec.kind == CHOICE:
            samples = _run_choices(spec, prepared, backend, notes, progress)
            settings["scoring"] = "generated letter" if notes else "log-likelihood"
        else:
            samples = _run_generation(spec, prepared, backend, args, settings, progress)
    return _summarise(samples, settings, notes, extra)


def _run_generation(spec: TaskSpec, prepared, backend, args: EvalArgs, settings: dict,
                    progress: Progress) -> list[dict]:
    """Greedy answers to the raw prompts, scored by the task's extraction (or, for code, by running them)."""
    max_new = args.max_new_tokens or spec.max_new_tokens or DEFAULT_NEW_TOKENS
    settings.update(max_new_tokens=max_new, until=list(spec.until))
    with task_progress(progress, spec.name, len(prepared.docs)) as advance:
        outputs = backend.generate(prepared.contexts, list(spec.until), max_new, advance)
    if spec.kind != CODE:
        return scoring.score_generation(spec.name, prepared.docs, prepared.contexts, outputs)
    from tunestack.eval.sandbox import isolation, score_code

    settings["sandbox"] = isolation()
    return score_code(prepared.docs, prepared.contexts, outputs, args.code_timeout)


def _run_choices(spec: TaskSpec, prepared, backend, notes: list[str], progress: Progress) -> list[dict]:
    per_question = sum(len(d.choices) + len(d.extra.get("mc2_choices", [])) for d in prepared.docs) / \
        max(len(prepared.docs), 1)
    if backend.supports_loglikelihood:
        try:
            with task_progress(progress, spec.name, len(prepared.docs), per_question) as advance:
                return scoring.score_choices(spec.name, prepared.docs, prepared.contexts, backend, spec.acc_norm,
                                             advance)
        except scoring.LogprobsUnavailable as exc:
            backend.supports_loglikelihood = False
            backend.notes.append(f"the server returns no prompt log-probabilities ({exc}); multiple-choice tasks "
                                 f"were scored by generating the answer letter")
    notes.append("scored by generating the answer letter (no log-probabilities): not comparable with the harness")
    with task_progress(progress, spec.name, len(prepared.docs)) as advance:
        return scoring.score_choices_by_letter(prepared.docs, prepared.contexts, backend, advance)


def _run_chat(spec: TaskSpec, backend, args: EvalArgs, local_path: str | None,
              progress: Progress) -> tuple[list[dict], dict]:
    custom = spec.options.get("custom")
    if spec.name == "arith":
        items = chat_tasks.arith_items()
    elif spec.name == "self-cognition":
        items = chat_tasks.self_cognition_items(args.model_name, args.model_author)
    else:
        rows = read_local(local_path)["test"]
        items = {"custom_qa": lambda: chat_tasks.custom_qa_items(rows, spec.options.get("regex")),
                 "custom_vqa": lambda: chat_tasks.custom_vqa_items(rows, _folder(local_path)),
                 "custom_gen": lambda: chat_tasks.custom_gen_items(rows)}[custom]()
    items = items[:args.limit] if args.limit else items
    with task_progress(progress, spec.name, len(items)) as advance:
        outputs = backend.chat([i.messages for i in items], args.max_new_tokens or DEFAULT_NEW_TOKENS, advance)
    samples = []
    for item, output in zip(items, outputs):
        sample = {"prompt": item.messages, "raw": output, "gold": item.gold}
        if output is None:
            samples.append({**sample, "error": "request failed"})
            continue
        sample.update(extracted=item.extract(output), **item.score(output))
        if custom == "custom_gen":
            from tunestack.eval.textmetrics import sentence_scores

            sample.update({f"sentence_{k}": v for k, v in sentence_scores(output, item.gold).items()})
        samples.append(sample)
    extra = {}
    if custom == "custom_gen":
        from tunestack.eval.textmetrics import corpus_scores

        done = [s for s in samples if "error" not in s]
        extra = corpus_scores([s["raw"] for s in done], [s["gold"] for s in done])
    return samples, extra


def _folder(path: str) -> Path:
    """Where a task file's relative paths start: its folder (or the folder given)."""
    path = Path(path).expanduser()
    return path if path.is_dir() else path.parent


def _summarise(samples: list[dict], settings: dict, notes: list[str], corpus: dict) -> dict:
    """Mean and standard error of each per-question score; corpus-level scores (BLEU, chrF) without stderr."""
    for number, sample in enumerate(samples):
        sample["doc_id"] = number
    done = [s for s in samples if "error" not in s]
    metrics = {}
    for name in scoring.metric_names(done):
        if name.startswith("sentence_"):
            continue
        value, stderr = scoring.mean_and_stderr([s[name] for s in done if name in s])
        metrics[name] = {"value": value, "stderr": stderr}
    for name, value in corpus.items():
        metrics[name] = {"value": value, "stderr": None}
    failed = [s["doc_id"] for s in samples if "error" in s]
    if failed:
        notes.append(f"{len(failed)} questions failed (server errors) and are left out of the scores: "
                     f"doc_id {', '.join(map(str, failed[:20]))}{' ...' if len(failed) > 20 else ''}")
    return {"metrics": metrics, "n": len(done), "failed": failed, "settings": settings, "notes": notes,
            "samples": samples}
