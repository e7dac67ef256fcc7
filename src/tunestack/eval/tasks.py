"""The task registry: every benchmark's schema, hub id, splits, prompt builder, scoring kind and defaults."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tunestack.errors import ConfigError, DataError
from tunestack.eval import benchmarks as b

CHOICE, GENERATE, CODE, CHAT = "multiple_choice", "generate", "code", "chat"


@dataclass(frozen=True)
class TaskSpec:
    """How one task is read and scored."""

    name: str
    kind: str
    """multiple_choice (log-likelihood of each choice), generate (raw prompt), code (humaneval) or chat."""
    fields: tuple[str, ...]
    """Fields every row must have, as in the hub dataset."""
    to_doc: Callable | None
    hub: str | None = None
    subsets: tuple[str | None, ...] | str = (None,)
    """Hub configurations to read; "*" for every configuration (one per subject)."""
    split: str = "test"
    fewshot_split: str | None = None
    num_fewshot: int = 0
    until: tuple[str, ...] = ()
    max_new_tokens: int | None = None
    acc_norm: bool = False
    by_subject: bool = False
    """--subjects and --limit apply per subject (MMLU-like tasks and bbh)."""
    fixed_fewshot: tuple[dict, ...] = ()
    """Few-shot rows the task ships with (MATH's four worked solutions), used instead of a few-shot split."""
    path: str | None = None
    """Custom tasks: the JSONL file."""
    options: dict = field(default_factory=dict, hash=False)


MMLU_FIELDS = ("question", "choices", "answer")
TASKS = {spec.name: spec for spec in [
    TaskSpec("mmlu", CHOICE, MMLU_FIELDS, b.mmlu, "cais/mmlu", ("all",), "test", "dev", by_subject=True),
    TaskSpec("cmmlu", CHOICE, ("Question", "A", "B", "C", "D", "Answer"), b.cmmlu, "haonan-li/cmmlu", "*", "test",
             "dev", acc_norm=True, by_subject=True),
    TaskSpec("ceval", CHOICE, ("question", "A", "B", "C", "D", "answer"), b.ceval, "ceval/ceval-exam", "*",
             "val", "dev", acc_norm=True, by_subject=True),
    TaskSpec("arc_easy", CHOICE, ("question", "choices", "answerKey"), b.arc, "allenai/ai2_arc", ("ARC-Easy",),
             "test", "train", acc_norm=True),
    TaskSpec("arc_challenge", CHOICE, ("question", "choices", "answerKey"), b.arc, "allenai/ai2_arc",
             ("ARC-Challenge",), "test", "train", acc_norm=True),
    TaskSpec("hellaswag", CHOICE, ("activity_label", "ctx_a", "ctx_b", "endings", "label"), b.hellaswag,
             "Rowan/hellaswag", (None,), "validation", "train", acc_norm=True),
    TaskSpec("truthfulqa_mc", CHOICE, ("question", "mc1_targets", "mc2_targets"), b.truthfulqa,
             "truthfulqa/truthful_qa", ("multiple_choice",), "validation"),
    TaskSpec("gsm8k", GENERATE, ("question", "answer"), b.gsm8k, "openai/gsm8k", ("main",), "test", "train", 5,
             ("Question:", "</s>", "<|im_end|>")),
    TaskSpec("math", GENERATE, ("problem", "solution"), b.math, "HuggingFaceH4/MATH-500", (None,), "test", None, 4,
             ("Problem:",), fixed_fewshot=b.MATH_FEWSHOT),
    TaskSpec("bbh", GENERATE, ("input", "target"), b.bbh, "SaylorTwift/bbh", "*", "test", None, 0,
             ("</s>", "Q:", "<|im_end|>"), by_subject=True),
    TaskSpec("humaneval", CODE, ("task_id", "prompt", "test", "entry_point"), b.humaneval,
             "openai/openai_humaneval", (None,), "test", None, 0, ("\nclass", "\ndef", "\n#", "\nif", "\nprint"),
             max_new_tokens=1024),
    TaskSpec("arith", CHAT, (), None),
    TaskSpec("self-cognition", CHAT, (), None),
]}
CUSTOM = {
    "custom_mcq": ("question", "choices", "answer"),
    "custom_qa": ("question",),
    "custom_gen": ("reference",),
    "custom_vqa": ("question", "answer"),
}


def resolve_tasks(names: list[str]) -> list[TaskSpec]:
    """TaskSpecs for --tasks entries: registry names, `custom_KIND:PATH`, or a YAML file declaring tasks."""
    specs, problems = [], []
    for name in names:
        try:
            if name.endswith((".yaml", ".yml")):
                specs.extend(_from_yaml(name))
            elif ":" in name:
                kind, path = name.split(":", 1)
                specs.append(custom_task(kind, path))
            elif name in TASKS:
                specs.append(TASKS[name])
            else:
                close = difflib.get_close_matches(name, list(TASKS) + list(CUSTOM), n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                problems.append(f"--tasks: unknown task {name!r}{hint}; known: {', '.join(TASKS)}, "
                                f"custom_mcq:PATH, custom_qa:PATH, custom_gen:PATH, custom_vqa:PATH or a tasks .yaml file")
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return specs


def custom_task(kind: str, path: str, name: str | None = None, **options) -> TaskSpec:
    """A task read from the user's JSONL: custom_mcq (question/choices/answer), custom_qa (question with an answer
    or a regex), custom_gen (prompt or question, and a reference text), custom_vqa (question, image and answer)."""
    if kind not in CUSTOM:
        raise ConfigError([f"--tasks {kind}:{path}: unknown custom task kind {kind!r}; use {', '.join(CUSTOM)}"])
    if not Path(path).expanduser().is_file():
        raise ConfigError([f"--tasks {kind}:{path}: file {path} does not exist"])
    task_kind = CHOICE if kind == "custom_mcq" else CHAT
    return TaskSpec(name or f"{kind}:{Path(path).stem}", task_kind, CUSTOM[kind],
                    b.custom_mcq if kind == "custom_mcq" else None, acc_norm=kind == "custom_mcq",
                    path=str(path), options={"custom": kind, **options})


def _from_yaml(path: str) -> list[TaskSpec]:
    """Tasks declared in YAML: `tasks: [{name, type: custom_qa, path, ...}, mmlu, ...]`."""
    import yaml

    file = Path(path)
    if not file.is_file():
        raise ConfigError([f"--tasks {path}: file does not exist"])
    data = yaml.safe_load(file.read_text()) or {}
    entries = data.get("tasks") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise ConfigError([f"--tasks {path}: expected a `tasks:` list of names or {{type, path}} mappings"])
    specs = []
    for entry in entries:
        if isinstance(entry, str):
            specs.extend(resolve_tasks([entry]))
            continue
        if not isinstance(entry, dict) or "type" not in entry or "path" not in entry:
            raise ConfigError([f"--tasks {path}: each task needs `type` and `path`, got {entry!r}"])
        data_path = Path(entry["path"])
        if not data_path.is_absolute():
            data_path = file.parent / data_path
        extra = {k: v for k, v in entry.items() if k not in ("type", "path", "name")}
        specs.append(custom_task(entry["type"], str(data_path), entry.get("name"), **extra))
    return specs


def check_fields(spec: TaskSpec, rows: list[dict]) -> None:
    """Raise DataError naming the first row that lacks a field of the task's schema."""
    from tunestack.eval.loading import LOCATION

    for row in rows:
        missing = [f for f in spec.fields if f not in row]
        if missing:
            found = sorted(k for k in row if not k.startswith("_"))
            raise DataError(f"task {spec.name}, {row.get(LOCATION, 'a row')}: missing field '{missing[0]}' "
                            f"(expected {', '.join(spec.fields)}; found {', '.join(found) or 'nothing'})")
