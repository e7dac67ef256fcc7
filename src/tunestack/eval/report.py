"""Reports people can read: report.json, report.md with the table, samples/TASK.jsonl, and side-by-side comparisons."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from tunestack.errors import TunestackError


def _sample_file(task: str) -> str:
    return re.sub(r"[^\w.-]+", "_", task) + ".jsonl"


def write_report(out: Path, report: dict) -> dict:
    """Write report.json (without samples), report.md and samples/TASK.jsonl under `out`; returns report.json's
    content."""
    (out / "samples").mkdir(parents=True, exist_ok=True)
    summary = {k: v for k, v in report.items() if k != "tasks"}
    summary["tasks"] = {}
    for task, result in report["tasks"].items():
        with open(out / "samples" / _sample_file(task), "w", encoding="utf-8") as fh:
            for sample in result["samples"]:
                fh.write(json.dumps(sample, ensure_ascii=False, default=str) + "\n")
        summary["tasks"][task] = {k: v for k, v in result.items() if k != "samples"}
        summary["tasks"][task]["samples_file"] = f"samples/{_sample_file(task)}"
    (out / "report.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False, default=_json_default))
    (out / "report.md").write_text(markdown(summary))
    return summary


def _json_default(value):
    return str(value)  # paths and other objects in settings


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4f}"


def rows_of(summary: dict) -> list[tuple[str, str, dict, int]]:
    """(task, metric, {value, stderr}, n) for every reported metric."""
    return [(task, name, metric, result["n"]) for task, result in summary["tasks"].items()
            for name, metric in result["metrics"].items()]


def markdown(summary: dict) -> str:
    lines = [f"# Evaluation of {summary['model']}", "", "| task | metric | value | ± stderr | n | fewshot |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for task, name, metric, n in rows_of(summary):
        fewshot = summary["tasks"][task]["settings"].get("num_fewshot", 0)
        lines.append(f"| {task} | {name} | {_fmt(metric['value'])} | {_fmt(metric['stderr'])} | {n} | {fewshot} |")
    notes = list(summary.get("notes", [])) + [f"{task}: {note}" for task, result in summary["tasks"].items()
                                              for note in result.get("notes", [])]
    if notes:
        lines += ["", "Notes:"] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def read_summary(path: str) -> dict:
    """report.json of an earlier evaluation (its folder or the file)."""
    file = Path(path)
    file = file / "report.json" if file.is_dir() else file
    if not file.is_file():
        raise TunestackError(f"--compare {path}: no report.json there")
    return json.loads(file.read_text())


def compare(a: dict, b: dict) -> dict:
    """Each metric of both reports side by side: B - A, and whether the difference exceeds its standard error
    (the two errors combined: sqrt(se_a^2 + se_b^2))."""
    theirs = {(task, name): metric for task, name, metric, _ in rows_of(b)}
    rows = []
    for task, name, metric, n in rows_of(a):
        other = theirs.get((task, name))
        if other is None:
            continue
        if other["value"] is None or metric["value"] is None:
            continue
        diff = other["value"] - metric["value"]
        errors = [e for e in (metric.get("stderr"), other.get("stderr")) if e is not None and not math.isnan(e)]
        combined = math.sqrt(sum(e * e for e in errors)) if len(errors) == 2 else None
        rows.append({"task": task, "metric": name, "a": metric["value"], "b": other["value"], "difference": diff,
                     "stderr": combined, "significant": None if combined is None else abs(diff) > combined, "n": n})
    return {"a": a["model"], "b": b["model"], "rows": rows}


def write_comparison(out: Path, comparison: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(comparison, indent=2, ensure_ascii=False, default=_json_default))
    (out / "compare.md").write_text(comparison_markdown(comparison))


def comparison_markdown(comparison: dict) -> str:
    lines = [f"# A: {comparison['a']}  vs  B: {comparison['b']}", "",
             "| task | metric | A | B | B - A | ± stderr | exceeds stderr | n |",
             "| --- | --- | ---: | ---: | ---: | ---: | :---: | ---: |"]
    for row in comparison["rows"]:
        mark = {True: "yes", False: "no", None: "-"}[row["significant"]]
        lines.append(f"| {row['task']} | {row['metric']} | {_fmt(row['a'])} | {_fmt(row['b'])} | "
                     f"{row['difference']:+.4f} | {_fmt(row['stderr'])} | {mark} | {row['n']} |")
    return "\n".join(lines) + "\n"
