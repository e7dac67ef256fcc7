"""The family matrix: every model family through every command, on tiny random models of each family's own class.

Rows are the families of tests/families/specs.py (Qwen3, Qwen2.5, Llama 3, Gemma 3, Mistral, Phi-4, GLM-4,
DeepSeek-V3, Qwen3-MoE, Mixtral, gpt-oss); columns are what tests/families/test_matrix.py checks:
  - mask:   the loss falls exactly on each answer and its end-of-turn marker (ids equal apply_chat_template's)
  - sft:    6 LoRA steps, first and last loss
  - infer:  `infer`'s greedy answer equals transformers' generate on base + adapter
  - serve:  the server's answer (openai client over loopback) equals the same
  - export: largest logit difference of the merged export from base + adapter
  - eval:   custom_qa answers equal locally and through the server
  - gguf:   largest logit difference of the f32 GGUF (loaded by transformers) from base + adapter, or "-" where
            GGUF export does not convert the family

Usage:
    python benchmarks/family_matrix.py                      # every family (about 2 minutes on 2 idle cores)
    python benchmarks/family_matrix.py --only qwen3,gemma3
    python benchmarks/family_matrix.py --output /tmp/matrix.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "family_matrix.json"
COLUMNS = ("mask", "sft", "infer", "serve", "export", "eval", "gguf")


def _cell(check) -> dict:
    """{"ok": bool, "value": what was measured} or {"ok": False, "error": the last line of the failure}."""
    try:
        ok, value = check()
        return {"ok": bool(ok), "value": value}
    except Exception as error:  # a failing cell is a result, not the end of the table
        traceback.print_exc()
        return {"ok": False, "error": f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"}


def family_row(family, folder: Path) -> dict:
    from families.checks import (
        PROMPT, eval_answers, gguf_logit_error, gguf_read_back_logit_error, mask_pieces, merged_logit_error,
        reference_answer, served_answer, train_family,
    )

    from tunestack import api

    base, run = train_family(family, folder)
    losses = [m["loss"] for m in run.metrics if "loss" in m]
    expected = reference_answer(base, run.final, PROMPT, max_new_tokens=8)

    def mask():
        pieces, want = mask_pieces(run)
        return len(pieces) == len(want) and all(p.rstrip().endswith(w) for p, w in zip(pieces, want)), len(pieces)

    def export():
        error = merged_logit_error(base, run.final, api.export(run, folder / "merged").path)
        return error < 1e-4, error

    def gguf():
        if not family.gguf:
            return True, None
        path = api.export(run, folder / "gguf", to="gguf", gguf_type="f32").path
        check = gguf_logit_error if family.gguf_loader else gguf_read_back_logit_error
        error = check(path / json.loads((path / "export.json").read_text())["gguf"]["file"], base, run.final)
        return error < 1e-3, error

    def evaluation():
        local, served = eval_answers(run, folder)
        return local == served, len(local)

    return {
        "mask": _cell(mask),
        "sft": _cell(lambda: (losses[-1] < losses[0], [losses[0], losses[-1]])),
        "infer": _cell(lambda: (api.chat(run, PROMPT, max_new_tokens=8) == expected, expected)),
        "serve": _cell(lambda: (served_answer(run, PROMPT, max_tokens=8) == expected, expected)),
        "export": _cell(export),
        "eval": _cell(evaluation),
        "gguf": _cell(gguf),
    }


def _show(cell: dict, column: str) -> str:
    if "error" in cell:
        return "FAIL"
    mark = "ok" if cell["ok"] else "FAIL"
    value = cell["value"]
    if column in ("export", "gguf"):
        return f"{mark} {value:.1e}" if value is not None else "-"
    if column == "sft":
        return f"{mark} {value[0]:.2f}>{value[1]:.2f}"
    return mark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated family names")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    sys.path[:0] = [str(ROOT / "tests")]
    from families.specs import FAMILIES

    names = args.only.split(",") if args.only else list(FAMILIES)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            rows[name] = family_row(FAMILIES[name], Path(tmp) / name)
    print(f"\n{'family':<13}" + "".join(f"{c:<16}" for c in COLUMNS))
    for name, row in rows.items():
        print(f"{name:<13}" + "".join(f"{_show(row[c], c):<16}" for c in COLUMNS))
    failures = [(n, c, row[c].get("error")) for n, row in rows.items() for c in COLUMNS if not row[c]["ok"]]
    for name, column, error in failures:
        print(f"FAIL {name} {column}: {error or 'values differ'}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "rows": rows}, indent=1))
    print(f"\nwritten: {args.output}")


if __name__ == "__main__":
    main()
