"""custom_vqa: rows with an image become image questions (paths relative to the task file), scored by exact match
and ANLS; for a server, local images travel as base64 data URLs; a row without an image is named."""

import base64
import json

import pytest

from helpers import write_jsonl
from tiny_vlms import image, save_png
from tunestack.errors import DataError
from tunestack.eval.chat_tasks import anls, custom_vqa_items
from tunestack.eval.loading import read_local
from tunestack.eval.remote import openai_messages


def test_anls_follows_its_definition():
    assert anls("Red.", "red") == 1.0
    assert anls("reed", "red") == pytest.approx(1 - 1 / 4)  # one edit over the longer length
    assert anls("blue", "red") == 0.0  # distance 3/4 is past the 0.5 threshold
    assert anls("", "") == 1.0


def test_vqa_rows_become_image_questions_scored_by_exact_match_and_anls(tmp_path):
    save_png(image((200, 30, 40)), tmp_path / "red.png")
    path = write_jsonl(tmp_path / "vqa.jsonl", [
        {"question": "What colour?", "image": "red.png", "answer": ["Red", "crimson"]},
        {"question": "Same?", "images": ["red.png", "red.png"], "answer": "yes"}])
    first, second = custom_vqa_items(read_local(str(path))["test"], tmp_path)
    assert first.messages == [{"role": "user", "content": [{"type": "image", "image": str(tmp_path / "red.png")},
                                                          {"type": "text", "text": "What colour?"}]}]
    assert first.score("red.") == {"exact_match": 1.0, "anls": 1.0}
    assert first.score("Crimsen") == {"exact_match": 0.0, "anls": pytest.approx(1 - 1 / 7)}
    assert [p["type"] for p in second.messages[0]["content"]] == ["image", "image", "text"]

    sent = openai_messages(first.messages)[0]["content"][0]
    assert sent["type"] == "image_url" and sent["image_url"]["url"].startswith("data:image/png;base64,")
    assert base64.b64decode(sent["image_url"]["url"].split(",", 1)[1]) == (tmp_path / "red.png").read_bytes()


def test_a_vqa_row_without_an_image_is_named(tmp_path):
    path = write_jsonl(tmp_path / "vqa.jsonl", [{"question": "What colour?", "answer": "red"}])
    with pytest.raises(DataError, match=r"vqa.jsonl, line 1: field 'image' must be an image path or URL"):
        custom_vqa_items(read_local(str(path))["test"], tmp_path)


@pytest.mark.parametrize("family", ["llava", "qwen2-vl"])
def test_custom_vqa_on_a_local_vision_model_and_through_its_server_gives_the_same_answers(tmp_path, family):
    from server_helpers import running_server
    from tiny_vlms import save_tiny_llava, save_tiny_qwen2_vl
    from tunestack.config import EvalArgs, ModelArgs
    from tunestack.eval.command import run_eval
    from tunestack.inference.backends import EngineOptions, build_engine
    from tunestack.serve.app import build_app
    from tunestack.serve.serving import ServeLimits, Serving

    model = {"llava": save_tiny_llava, "qwen2-vl": save_tiny_qwen2_vl}[family](tmp_path / family)
    for name, rgb in {"red": (200, 30, 40), "blue": (30, 40, 200), "green": (30, 200, 40)}.items():
        save_png(image(rgb), tmp_path / f"{name}.png")
    path = write_jsonl(tmp_path / "vqa.jsonl", [{"question": "What colour?", "image": f"{c}.png", "answer": c}
                                                for c in ("red", "blue", "green")])
    args = EvalArgs(tasks=[f"custom_vqa:{path}"], max_new_tokens=5)
    local = run_eval(ModelArgs(model=str(model), dtype="fp32"), args, tmp_path / "local")
    task = next(iter(local["tasks"]))
    assert set(local["tasks"][task]["metrics"]) == {"exact_match", "anls"}

    parts = build_engine(ModelArgs(model=str(model), dtype="fp32"), "pt", EngineOptions(max_batch=4))
    serving = Serving(parts.engine, parts.tokenizer, "tiny", ServeLimits(4, 8, 64), processor=parts.processor)
    try:
        with running_server(build_app(serving)) as url:
            run_eval(ModelArgs(), EvalArgs(**{**vars(args), "url": url}), tmp_path / "remote")
    finally:
        parts.engine.close()
    ours, theirs = samples(tmp_path / "local", task), samples(tmp_path / "remote", task)
    assert [s["raw"] for s in theirs] == [s["raw"] for s in ours] and len(ours) == 3


def test_a_text_model_refuses_a_vqa_task_in_one_line(tiny_model_dir, tmp_path):
    from tunestack.config import EvalArgs, ModelArgs
    from tunestack.errors import ConfigError
    from tunestack.eval.command import run_eval

    save_png(image((200, 30, 40)), tmp_path / "red.png")
    path = write_jsonl(tmp_path / "vqa.jsonl", [{"question": "What colour?", "image": "red.png", "answer": "red"}])
    with pytest.raises(ConfigError, match="is a text-only model and the task asks about images"):
        run_eval(ModelArgs(model=str(tiny_model_dir), dtype="fp32"), EvalArgs(tasks=[f"custom_vqa:{path}"]),
                 tmp_path / "out")


def samples(out, task):
    return [json.loads(line) for line in (out / "samples" / f"{task.replace(':', '_')}.jsonl").read_text().splitlines()]
