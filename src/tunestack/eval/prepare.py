"""Turn a task's rows into prompts: read the data, keep the chosen subjects, apply --limit, add few-shot examples."""

from __future__ import annotations

import random
from dataclasses import dataclass

from tunestack.config import EvalArgs
from tunestack.errors import ConfigError, DataError
from tunestack.eval.benchmarks import Doc
from tunestack.eval.loading import hub_subsets, read_hub, read_local
from tunestack.eval.tasks import TaskSpec, check_fields


@dataclass
class Prepared:
    """A task's questions with their full prompts (description, few-shot examples, question)."""

    docs: list[Doc]
    contexts: list[str]
    source: str
    num_fewshot: int


def task_data_paths(args: EvalArgs) -> dict[str, str]:
    """--task_data TASK=PATH entries as a mapping; malformed entries raise ConfigError."""
    paths, problems = {}, []
    for entry in args.task_data:
        task, sep, path = entry.partition("=")
        if not sep or not task or not path:
            problems.append(f"--task_data {entry!r}: expected TASK=PATH, e.g. mmlu=data/mmlu_test.jsonl")
        else:
            paths[task.strip()] = path.strip()
    if problems:
        raise ConfigError(problems)
    return paths


def prepare(spec: TaskSpec, args: EvalArgs, local_path: str | None) -> Prepared:
    """The task's questions and prompts, from `local_path` when given, else from the hub."""
    k = spec.num_fewshot if args.num_fewshot is None else args.num_fewshot
    if local_path:
        splits, source = read_local(local_path), local_path
    else:  # the few-shot split is read only when examples are shown
        wanted = [spec.split] + ([spec.fewshot_split] if spec.fewshot_split and k > 0 else [])
        splits, source = read_hub(spec.name, spec.hub, _hub_subset_list(spec, args), wanted), spec.hub
    rows = splits.get(spec.split) or (splits.get("test") if local_path else None)
    if not rows:
        raise DataError(f"task {spec.name}: {source} has no {spec.split} rows (found splits: "
                        f"{', '.join(splits) or 'none'})")
    check_fields(spec, rows)
    docs = [spec.to_doc(row) for row in rows]
    if spec.by_subject and args.subjects:
        wanted = set(args.subjects)
        docs = [d for d in docs if d.subject in wanted]
        if not docs:
            raise DataError(f"task {spec.name}: no questions for --subjects {','.join(args.subjects)}")
    docs = _limit(docs, args.limit, spec.by_subject)
    fewshot_rows = splits.get(spec.fewshot_split) if spec.fewshot_split else None
    if fewshot_rows:
        check_fields(spec, fewshot_rows)
    pool = [spec.to_doc(r) for r in fewshot_rows] if fewshot_rows else \
        [spec.to_doc(r) for r in spec.fixed_fewshot] if spec.fixed_fewshot else None
    contexts = fewshot_contexts(docs, k, pool, spec.by_subject, args.seed, first_n=bool(spec.fixed_fewshot))
    return Prepared(docs, contexts, source, k)


def _hub_subset_list(spec: TaskSpec, args: EvalArgs) -> list:
    if spec.hub is None:
        raise DataError(f"task {spec.name} has no hub dataset; pass --task_data {spec.name}=PATH")
    if spec.subsets != "*":
        return list(spec.subsets)
    return list(args.subjects) if args.subjects else hub_subsets(spec.hub)


def _limit(docs: list[Doc], limit: int | None, by_subject: bool) -> list[Doc]:
    if limit is None:
        return docs
    if not by_subject:
        return docs[:limit]
    counts: dict = {}
    kept = []
    for doc in docs:
        counts[doc.subject] = counts.get(doc.subject, 0) + 1
        if counts[doc.subject] <= limit:
            kept.append(doc)
    return kept


def fewshot_contexts(docs: list[Doc], k: int, pool: list[Doc] | None, by_subject: bool, seed: int,
                     first_n: bool = False) -> list[str]:
    """Each prompt: the task description, k solved examples and the question, joined as the harness joins them.

    Per-subject tasks take the first k examples of the subject's few-shot split, tasks with their own examples
    (MATH) the first k of those; others draw k at random (seeded) from the few-shot split, or from the other
    questions when the task has none."""
    rng = random.Random(seed)
    contexts = []
    for doc in docs:
        shots: list[Doc] = []
        if k > 0:
            if by_subject and pool is not None:
                shots = [d for d in pool if d.subject == doc.subject][:k]
            elif pool is not None and first_n:
                shots = pool[:k]
            elif pool is not None:
                shots = rng.sample(pool, min(k, len(pool)))
            else:
                others = rng.sample(docs, min(k + 1, len(docs)))
                shots = [d for d in others if d is not doc][:k]
        examples = "".join(f"{s.text} {s.target_text}\n\n" for s in shots)
        contexts.append(doc.description + examples + doc.text)
    return contexts
