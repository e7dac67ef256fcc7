"""`tunestack infer --input`: prompts from a JSONL file, answers to --output in the same order, resumable after a
kill without redoing the rows already written."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tunestack.config import InferArgs
from tunestack.errors import DataError
from tunestack.inference.engine import SamplingParams


def read_prompts(path: str) -> list[list[dict]]:
    """Conversations from a JSONL file whose rows hold `messages`, `prompt`, `query` or `instruction`."""
    conversations = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}, line {number}: not valid JSON ({exc.msg}: column {exc.colno})") from None
        conversations.append(_row_to_messages(row, path, number))
    if not conversations:
        raise DataError(f"{path}: no prompts (empty file)")
    return conversations


def _row_to_messages(row, path: str, number: int) -> list[dict]:
    if isinstance(row, dict) and isinstance(row.get("messages"), list):
        messages = [_with_image_references(m, f"{path}, line {number}, messages[{i}]", Path(path).parent)
                    for i, m in enumerate(row["messages"]) if isinstance(m, dict)]
        if messages and messages[-1].get("role") == "assistant":
            messages = messages[:-1]  # answer the conversation afresh
        return messages
    for key in ("prompt", "query", "instruction"):
        if isinstance(row, dict) and isinstance(row.get(key), str):
            text = row[key] + (f"\n{row['input']}" if key == "instruction" and row.get("input") else "")
            return [{"role": "user", "content": text}]
    keys = sorted(row) if isinstance(row, dict) else type(row).__name__
    raise DataError(f"{path}, line {number}: expected a \"messages\" list or a \"prompt\" string, found {keys}")


def _with_image_references(message: dict, where: str, base_dir: Path) -> dict:
    """The message with each image or audio part as `{"type": "image", "image": REF}` (`"audio"`), a relative path
    taken from the file's folder (as training data's are); MediaError naming the part when it holds no reference."""
    from tunestack.media import media_kind, media_part

    content = message.get("content")
    if not isinstance(content, list) or not any(media_kind(p) for p in content):
        return message
    return {**message, "content": [media_part(p, f"{where}.content[{j}]", base_dir) if media_kind(p) else p
                                   for j, p in enumerate(content)]}


def answer_file(chat, prompts: list[list[dict]], args: InferArgs, params: SamplingParams, done: int = 0) -> None:
    """Answer the prompts in batches, each batch's rows written (and flushed) together; after the first `done`, which
    --output already answers (--resume). Batches keep the boundaries an uninterrupted run has, so the answers are
    the same."""
    from tqdm.auto import tqdm

    if args.resume:
        print(f"resuming: {done} of {len(prompts)} prompts already answered in {args.output}", file=sys.stderr)
    size = args.batch_size
    starts = [done] + list(range((done // size + 1) * size, len(prompts), size)) if done < len(prompts) else []
    out = open(args.output, "a" if done else "w", encoding="utf-8") if args.output else sys.stdout
    try:
        for start in tqdm(starts, desc="answering", unit="batch", file=sys.stderr):
            batch = prompts[start:(start // size + 1) * size]
            out.write("".join(json.dumps({"messages": messages, "response": answer}, ensure_ascii=False) + "\n"
                              for messages, answer in zip(batch, chat.answer(batch, params))))
            out.flush()
    finally:
        if out is not sys.stdout:
            out.close()


def answered_rows(output: str, prompts: list[list[dict]], input_path: str) -> int:
    """How many prompts `output` already answers, in order; a last row cut short by a kill is removed from it."""
    path = Path(output)
    if not path.is_file():
        return 0
    data = path.read_bytes()
    complete = data[:data.rfind(b"\n") + 1]
    if len(complete) < len(data):
        path.write_bytes(complete)
    rows = complete.decode("utf-8").splitlines()
    for number, line in enumerate(rows, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if number > len(prompts) or not isinstance(row, dict) or row.get("messages") != prompts[number - 1]:
            raise DataError(f"--resume: {output}, line {number} does not answer prompt {number} of {input_path}; "
                            "drop --resume to start afresh, or choose another --output")
    return len(rows)
