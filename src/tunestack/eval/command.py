"""`tunestack eval`: check the flags, build the backend (a local model or a server), run the tasks, write reports."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

from tunestack.config import EvalArgs, ModelArgs
from tunestack.errors import ConfigError
from tunestack.eval.report import compare, comparison_markdown, read_summary, write_comparison, write_report
from tunestack.eval.tasks import CODE, resolve_tasks
from tunestack.progress import Progress, TerminalBar, events_path


def validate_eval(args: EvalArgs):
    """The resolved tasks; every problem with the flags raised at once, before a model is loaded."""
    problems = []
    specs = []
    if not args.tasks and not (len(args.compare) == 2 and all(map(_is_report, args.compare))):
        problems.append("--tasks: say which tasks to run, e.g. --tasks mmlu,gsm8k (or custom_mcq:my.jsonl)")
    else:
        try:
            specs = resolve_tasks(args.tasks)
        except ConfigError as exc:
            problems.extend(exc.problems)
    if any(s.kind == CODE for s in specs) and not args.allow_code_execution:
        problems.append("--tasks humaneval runs code the model writes: add --allow_code_execution to allow it "
                        "(it runs in a subprocess with a timeout and no network)")
    names = {s.name for s in specs}
    for entry in args.task_data:
        task = entry.partition("=")[0].strip()
        if specs and task not in names:
            problems.append(f"--task_data {entry}: {task!r} is not one of --tasks ({', '.join(sorted(names))})")
    if args.compare and len(args.compare) != 2:
        problems.append(f"--compare: expected two models or eval folders (A B), got {len(args.compare)}")
    if args.compare and args.url:
        problems.append("--compare and --url exclude each other: compare two models, or two earlier eval folders")
    if args.resume and not args.output_dir:
        problems.append("--resume: needs --output_dir, the folder of the evaluation to continue")
    if problems:
        raise ConfigError(problems)
    return specs


def run_eval(model_args: ModelArgs, args: EvalArgs, output_dir: str | Path | None = None,
             progress: Progress | None = None) -> dict:
    """Evaluate --model (or --url) on --tasks; returns the report written to the output folder.

    Progress events ("evaluate": loading, then one start per task counted in questions; then the end) go into
    `progress`, whose owner ends it, or else into the output folder's events.jsonl (started over unless --resume)
    when one is named; an unnamed one (evals/TIME) gets none, and a failed evaluation leaves nothing there."""
    specs = validate_eval(args)
    named = output_dir or args.output_dir
    out = Path(named or f"evals/{time.strftime('%Y%m%d-%H%M%S')}")
    if progress is not None:
        return _run(model_args, args, specs, out, progress)
    if named and not args.resume:
        events_path(out).unlink(missing_ok=True)
    with Progress(out if named else None, listeners=[TerminalBar()]) as own:
        return _run(model_args, args, specs, out, own)


def _run(model_args: ModelArgs, args: EvalArgs, specs, out: Path, progress: Progress) -> dict:
    if args.compare:
        return _compare(model_args, args, specs, out, progress)
    summary = _evaluate_one(model_args, args, specs, out, progress)
    print(_table(summary), flush=True)
    print(f"report: {out / 'report.md'}", file=sys.stderr, flush=True)
    return summary


def _evaluate_one(model_args: ModelArgs, args: EvalArgs, specs, out: Path, progress: Progress) -> dict:
    from tunestack.eval.cache import CachedBackend
    from tunestack.eval.runner import evaluate

    progress.start("evaluate", message=f"loading {args.url or model_args.model}")
    backend = make_backend(model_args, args)
    model_key = json.dumps({"model": backend.name, "dtype": model_args.dtype, "seed": args.seed})
    cached = CachedBackend(backend, out, model_key, args.resume, chunk=4 * args.batch_size)
    if args.resume:
        print(f"resuming: {len(cached.answers)} answers in {cached.path}", file=sys.stderr, flush=True)
    report = evaluate(cached, specs, args, progress)
    if args.resume:
        print(f"resumed: {cached.reused} questions read from {cached.path.name}, not asked again", file=sys.stderr,
              flush=True)
    report["settings"] = {"model": args.url or model_args.model, "dtype": model_args.dtype, "tasks": args.tasks,
                          "task_data": args.task_data, "limit": args.limit, "num_fewshot": args.num_fewshot,
                          "seed": args.seed, "batch_size": args.batch_size}
    return write_report(out, report)


def make_backend(model_args: ModelArgs, args: EvalArgs):
    if args.url:
        from tunestack.eval.remote import RemoteBackend

        return RemoteBackend(args.url, args.api_key, args.served_model_name, args.batch_size, args.max_retries,
                             args.seed)
    from tunestack.eval.local import LocalBackend
    from tunestack.inference.loading import load_for_inference

    return LocalBackend(load_for_inference(model_args, allow_pickle=args.allow_pickle), args.batch_size, args.seed,
                        compile_decode=args.torch_compile)


def _compare(model_args: ModelArgs, args: EvalArgs, specs, out: Path, progress: Progress) -> dict:
    """Both sides from an earlier eval folder (its report.json) or evaluated now, then the table of differences."""
    summaries = []
    for label, entry in zip("AB", args.compare):
        if _is_report(entry):
            summaries.append(read_summary(entry))
        else:
            side = dataclasses.replace(model_args, model=entry)
            progress.message(f"{label}: {entry}")
            summaries.append(_evaluate_one(side, args, specs, out / label, progress))
    comparison = compare(*summaries)
    write_comparison(out, comparison)
    print(comparison_markdown(comparison), flush=True)
    print(f"comparison: {out / 'compare.md'}", file=sys.stderr, flush=True)
    return comparison


def _is_report(entry: str) -> bool:
    """Whether a --compare entry is an earlier evaluation (a folder holding report.json, or the file)."""
    return (Path(entry) / "report.json").is_file() or (entry.endswith("report.json") and Path(entry).is_file())


def _table(summary: dict) -> str:
    from tunestack.eval.report import markdown

    return markdown(summary)
