"""Questions per second of MMLU-style multiple-choice scoring: tunestack against lm-evaluation-harness.

Target: tunestack at least as fast as the harness, with the same scores.

What runs. The embedded smollm2-135m-instruct (fp32, on this CPU) scores N four-choice questions in the MMLU format
(one subject, 5-shot from a dev file, so prompts run to a few hundred tokens) written by the script, in this one
process, with the same batch size on both sides:
  - tunestack: `run_eval` with `--tasks mmlu --task_data mmlu=FOLDER` (log-likelihood of " A".." D").
  - lm-evaluation-harness: `simple_evaluate` with its HF model (`HFLM`) on its own MMLU template pointed at the
    same files (the configuration lm_eval_parity.py builds).
Measured: wall time of the scoring call with the model already loaded (prompt building, tokenization, forward
passes and scoring; not model loading), as questions per second; the best of --repeats runs.

Needs lm-evaluation-harness: pip install lm_eval (0.4.x).

Usage:
    python benchmarks/eval_throughput.py                 # 120 questions, batch 16: about 3 minutes
    python benchmarks/eval_throughput.py --questions 40 --batch_size 8 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from lm_eval_parity import SUBJECT, harness_tasks  # noqa: E402  (the harness's MMLU template on local files)


def arithmetic_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        wrong = rng.sample([a + b + d for d in (-11, -10, -2, -1, 1, 2, 10, 11)], 3)
        answer = rng.randrange(4)
        choices = [str(x) for x in wrong[:answer] + [a + b] + wrong[answer:]]
        rows.append({"question": f"A shop has {a} red apples and {b} green apples. How many apples does it have?",
                     "choices": choices, "answer": answer})
    return rows


def write_data(folder: Path, n: int) -> dict:
    subject = folder / "mmlu" / SUBJECT
    subject.mkdir(parents=True)
    rows = arithmetic_rows(n + 5)
    (subject / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:5]))
    (subject / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[5:]))
    (folder / "gsm8k").mkdir()
    for name in ("train", "test"):  # the harness's task folder also declares a gsm8k task on these files
        (folder / "gsm8k" / f"{name}.jsonl").write_text("")
    return {"mmlu": subject.parent, "gsm8k": folder / "gsm8k"}


def time_tunestack(model_dir: str, data: Path, batch_size: int) -> tuple[float, float]:
    from tunestack.config import EvalArgs, ModelArgs
    from tunestack.eval.command import make_backend
    from tunestack.eval.runner import evaluate
    from tunestack.eval.tasks import resolve_tasks

    args = EvalArgs(tasks=["mmlu"], task_data=[f"mmlu={data}"], num_fewshot=5, batch_size=batch_size)
    backend = make_backend(ModelArgs(model=model_dir, dtype="fp32"), args)
    start = time.perf_counter()
    report = evaluate(backend, resolve_tasks(["mmlu"]), args)
    return time.perf_counter() - start, report["tasks"]["mmlu"]["metrics"]["acc"]["value"]


def time_harness(model_dir: str, include: Path, batch_size: int) -> tuple[float, float]:
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=model_dir, dtype="float32", batch_size=batch_size, device="cpu")
    manager = TaskManager(include_path=str(include))
    start = time.perf_counter()
    out = simple_evaluate(model=lm, tasks=["parity_mmlu"], num_fewshot=5, task_manager=manager, log_samples=False,
                          bootstrap_iters=0)
    return time.perf_counter() - start, out["results"]["parity_mmlu"]["acc,none"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=120)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2, help="runs per side; the fastest counts")
    parser.add_argument("--output", default="benchmarks/results/eval_throughput.json")
    options = parser.parse_args()
    import torch

    from tunestack.hub import resolve_model

    model_dir = str(resolve_model("smollm2-135m-instruct").path)
    results = {"tunestack": [], "lm-eval": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = write_data(folder, options.questions)
        include = harness_tasks(folder, data, 16)
        for _ in range(options.repeats):  # alternate, so that both sides see the same machine load
            results["tunestack"].append(time_tunestack(model_dir, data["mmlu"], options.batch_size))
            results["lm-eval"].append(time_harness(model_dir, include, options.batch_size))
    rows = []
    for tool, runs in results.items():
        seconds, acc = min(runs)
        rows.append({"tool": tool, "questions": options.questions, "batch_size": options.batch_size,
                     "seconds": round(seconds, 2), "questions_per_second": round(options.questions / seconds, 2),
                     "acc": acc, "all_seconds": [round(s, 2) for s, _ in runs]})
    print(f"MMLU-style 5-shot scoring, {options.questions} questions, smollm2-135m-instruct fp32, "
          f"{torch.get_num_threads()} CPU threads\n")
    print("| tool | batch | seconds | questions/s | acc |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(f"| {row['tool']} | {row['batch_size']} | {row['seconds']} | {row['questions_per_second']} | "
              f"{row['acc']:.4f} |")
    speedup = rows[0]["questions_per_second"] / rows[1]["questions_per_second"]
    print(f"\ntunestack / lm-eval: {speedup:.2f}x (target: >= 1.00x) -> {'met' if speedup >= 1 else 'NOT met'}; "
          f"same accuracy: {'yes' if abs(rows[0]['acc'] - rows[1]['acc']) < 1e-9 else 'NO'}")
    Path(options.output).parent.mkdir(parents=True, exist_ok=True)
    Path(options.output).write_text(json.dumps({"rows": rows, "speedup": speedup}, indent=2))


if __name__ == "__main__":
    main()
