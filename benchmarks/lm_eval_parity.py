"""Parity of `tunestack eval` with lm-evaluation-harness on the embedded model: same data, same scores.

What runs. The script writes two small local data sets and evaluates the embedded smollm2-135m-instruct (fp32) on
them with both tools in this one process:
  - MMLU format (`question`, `choices`, `answer`; one subject folder with test and dev files), 5-shot from dev:
    tunestack's `mmlu` task with `--task_data mmlu=FOLDER`; lm-evaluation-harness's own mmlu template
    (`_default_template_yaml` with the subject's description) pointed at the same files.
  - GSM8K format (`question`, `answer` with `#### N`), 0-shot and 3-shot from a train file: tunestack's `gsm8k`
    task; the harness's gsm8k.yaml (strict-match and flexible-extract) pointed at the same files.
Compared: every score, and per question the log-likelihood of each choice (MMLU) and the generated text (GSM8K).

Needs lm-evaluation-harness: pip install lm_eval (0.4.x).

Usage:
    python benchmarks/lm_eval_parity.py                       # about 4 minutes on an idle 2-core CPU
    python benchmarks/lm_eval_parity.py --gsm8k 4 --output /tmp/parity.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

SUBJECT = "high_school_geography"
CAPITALS = [("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Egypt", "Cairo"), ("Spain", "Madrid"),
            ("Germany", "Berlin"), ("Canada", "Ottawa"), ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Norway", "Oslo"),
            ("Greece", "Athens"), ("Cuba", "Havana"), ("Chile", "Santiago"), ("Poland", "Warsaw"),
            ("Austria", "Vienna"), ("Ireland", "Dublin"), ("Portugal", "Lisbon"), ("Sweden", "Stockholm"),
            ("Thailand", "Bangkok"), ("Vietnam", "Hanoi"), ("Russia", "Moscow"), ("China", "Beijing"),
            ("India", "New Delhi"), ("Turkey", "Ankara"), ("Mexico", "Mexico City"), ("Argentina", "Buenos Aires"),
            ("Australia", "Canberra"), ("Brazil", "Brasilia"), ("Finland", "Helsinki"), ("Denmark", "Copenhagen")]


def mmlu_rows(seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for country, capital in CAPITALS:
        wrong = rng.sample([c for _, c in CAPITALS if c != capital], 3)
        answer = rng.randrange(4)
        choices = wrong[:answer] + [capital] + wrong[answer:]
        rows.append({"question": f"What is the capital of {country}?", "choices": choices, "answer": answer})
    return rows


def gsm8k_rows(seed: int = 1, n: int = 20) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b, price = rng.randint(2, 20), rng.randint(2, 20), rng.randint(2, 9)
        total = (a + b) * price
        rows.append({"question": f"Ann buys {a} pens and Bob buys {b} pens. Each pen costs ${price}. How many dollars "
                                 f"do they spend in total?",
                     "answer": f"They buy {a} + {b} = <<{a}+{b}={a + b}>>{a + b} pens.\nThey spend {a + b} * {price} = "
                               f"<<{a + b}*{price}={total}>>{total} dollars.\n#### {total}"})
    return rows


def write_data(folder: Path, n_gsm8k: int) -> dict:
    rows = mmlu_rows()
    mmlu = folder / "mmlu" / SUBJECT
    mmlu.mkdir(parents=True)
    for name, part in (("dev", rows[:5]), ("test", rows[5:])):
        (mmlu / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    gsm8k = folder / "gsm8k"
    gsm8k.mkdir()
    rows = gsm8k_rows(n=n_gsm8k + 10)
    for name, part in (("train", rows[:10]), ("test", rows[10:])):
        (gsm8k / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    return {"mmlu": mmlu.parent, "gsm8k": gsm8k}


def harness_tasks(folder: Path, data: dict, max_gen: int) -> Path:
    """The harness's own mmlu and gsm8k configurations, with the dataset pointed at the local files."""
    import yaml
    from lm_eval import tasks as harness

    tasks_dir = Path(harness.__file__).parent
    mmlu = yaml.safe_load((tasks_dir / "mmlu" / "default" / "_default_template_yaml").read_text())
    mmlu.update(task="parity_mmlu", dataset_path="json", dataset_name=None,
                description=f"The following are multiple choice questions (with answers) about "
                            f"{SUBJECT.replace('_', ' ')}.\n\n",
                dataset_kwargs={"data_files": {"test": str(data["mmlu"] / SUBJECT / "test.jsonl"),
                                               "dev": str(data["mmlu"] / SUBJECT / "dev.jsonl")}})
    gsm8k = yaml.safe_load((tasks_dir / "gsm8k" / "gsm8k.yaml").read_text())
    gsm8k.pop("tag", None)
    gsm8k.update(task="parity_gsm8k", dataset_path="json", dataset_name=None,
                 dataset_kwargs={"data_files": {"test": str(data["gsm8k"] / "test.jsonl"),
                                                "train": str(data["gsm8k"] / "train.jsonl")}})
    gsm8k["generation_kwargs"]["max_gen_toks"] = max_gen
    out = folder / "harness_tasks"
    out.mkdir()
    for config in (mmlu, gsm8k):
        (out / f"{config['task']}.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    return out


def run_harness(model_dir: str, include: Path, task: str, shots: int, batch_size: int) -> tuple[dict, list, float]:
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=model_dir, dtype="float32", batch_size=batch_size, device="cpu")
    start = time.perf_counter()
    out = simple_evaluate(model=lm, tasks=[task], num_fewshot=shots, task_manager=TaskManager(include_path=str(include)),
                          log_samples=True, bootstrap_iters=0)
    seconds = time.perf_counter() - start
    by_doc = {}
    for sample in out["samples"][task]:  # one record per doc and filter (strict-match, flexible-extract)
        by_doc.setdefault(sample["doc_id"], sample)
    return out["results"][task], [by_doc[d] for d in sorted(by_doc)], seconds


def run_tunestack(model_dir: str, task: str, path: Path, shots: int, batch_size: int, max_gen: int, out: Path):
    from tunestack.config import EvalArgs, ModelArgs
    from tunestack.eval.command import run_eval

    args = EvalArgs(tasks=[task], task_data=[f"{task}={path}"], num_fewshot=shots, batch_size=batch_size,
                    max_new_tokens=max_gen)
    start = time.perf_counter()
    summary = run_eval(ModelArgs(model=model_dir, dtype="fp32"), args, out)
    samples = [json.loads(l) for l in (out / "samples" / f"{task}.jsonl").read_text().splitlines()]
    return summary["tasks"][task], samples, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gsm8k", type=int, default=8, help="GSM8K-format questions")
    parser.add_argument("--max_gen", type=int, default=128, help="tokens generated per GSM8K answer (both tools)")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--output", default="benchmarks/results/lm_eval_parity.json")
    options = parser.parse_args()
    from tunestack.hub import resolve_model

    model_dir = str(resolve_model("smollm2-135m-instruct").path)
    rows, record = [], {"model": model_dir, "checks": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = write_data(folder, options.gsm8k)
        include = harness_tasks(folder, data, options.max_gen)
        for task, shots in (("mmlu", 5), ("mmlu", 0), ("gsm8k", 0), ("gsm8k", 3)):
            theirs, their_samples, their_s = run_harness(model_dir, include, f"parity_{task}", shots,
                                                         options.batch_size)
            ours, our_samples, our_s = run_tunestack(model_dir, task, data[task], shots, options.batch_size,
                                                     options.max_gen, folder / f"ts-{task}-{shots}")
            rows += compare(task, shots, theirs, their_samples, ours, our_samples, record)
    print("| task | shots | metric | lm-eval | tunestack | same | per-question check |")
    print("| --- | ---: | --- | ---: | ---: | :---: | --- |")
    for row in rows:
        print(f"| {row['task']} | {row['shots']} | {row['metric']} | {row['harness']:.4f} | {row['tunestack']:.4f} | "
              f"{'yes' if row['same'] else 'NO'} | {row['detail']} |")
    record["rows"] = rows
    Path(options.output).parent.mkdir(parents=True, exist_ok=True)
    Path(options.output).write_text(json.dumps(record, indent=2))
    print(f"\nwritten: {options.output}", file=sys.stderr)


def compare(task, shots, theirs, their_samples, ours, our_samples, record) -> list[dict]:
    if task == "mmlu":
        their_ll = [[r[0] for r in s["filtered_resps"]] for s in their_samples]
        our_ll = [s["loglikelihoods"] for s in our_samples]
        gap = max(abs(a - b) for x, y in zip(their_ll, our_ll) for a, b in zip(x, y))
        detail = f"{len(our_ll)} questions, max |log-likelihood difference| {gap:.2e}"
        pairs = [("acc", theirs["acc,none"], ours["metrics"]["acc"]["value"])]
    else:
        their_text = [s["resps"][0][0] for s in their_samples]
        our_text = [s["raw"] for s in our_samples]
        same_text = sum(a == b for a, b in zip(their_text, our_text))
        detail = f"{same_text}/{len(our_text)} generations identical"
        pairs = [(f"exact_match,{f}", theirs[f"exact_match,{f}"], ours["metrics"][f"exact_match,{f}"]["value"])
                 for f in ("strict-match", "flexible-extract")]
        record["checks"].append({"task": task, "shots": shots, "harness_text": their_text, "tunestack_text": our_text})
    return [{"task": task, "shots": shots, "metric": m, "harness": float(a), "tunestack": float(b), "same": bool(abs(a - b) < 1e-9),
             "detail": detail} for m, a, b in pairs]


if __name__ == "__main__":
    main()
