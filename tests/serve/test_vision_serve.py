"""`tunestack serve` with a vision-language model, driven by the official openai client: base64 and URL images,
several per message, text and image requests together, and the 400s for bad images or a text-only model."""

from __future__ import annotations

import base64
import http.server
import threading
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from server_helpers import make_serving, multimodal_client, running_server, serve_subprocess
from tiny_vlms import image, png_bytes, png_data_url, reference_generate

QUESTION = "What is 12 + 30?"


@pytest.fixture(scope="module")
def vlm_client(llava_dir):
    """The openai client of a uvicorn server on loopback serving the tiny LLaVA as `tiny`, built as `tunestack
    serve` builds it (the subprocess itself is test_the_serve_command_reads_images)."""
    with multimodal_client(llava_dir) as client:
        yield client


@pytest.fixture(scope="module")
def picture_url():
    """An http URL on loopback serving a PNG at /red.png, 21 MiB at /huge.png (anything else is a 404)."""
    bodies = {"/red.png": png_bytes(image((180, 40, 40), (24, 16))), "/huge.png": bytes(21 * 2**20)}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path in bodies else 404)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            try:
                self.wfile.write(bodies.get(self.path, b""))
            except OSError:  # the server stopped reading at its size limit
                pass

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def image_message(urls: list[str], text: str = QUESTION) -> list[dict]:
    return [{"role": "user", "content": [*({"type": "image_url", "image_url": {"url": u}} for u in urls),
                                         {"type": "text", "text": text}]}]


def expected_text(llava, pictures: list, text: str = QUESTION, max_new_tokens: int = 8) -> str:
    """The greedy answer of transformers' generate on the processor's inputs for the same conversation."""
    content = [*({"type": "image"} for _ in pictures), {"type": "text", "text": text}]
    tokens = reference_generate(None, [{"role": "user", "content": content}], pictures, max_new_tokens, llava)
    return llava[1].tokenizer.decode(tokens, skip_special_tokens=True)


def ask(client, messages, **kwargs):
    return client.chat.completions.create(model="tiny", messages=messages, max_tokens=8, temperature=0, **kwargs)


def test_a_base64_png_is_answered_as_generate_answers(vlm_client, llava):
    picture = image()
    reply = ask(vlm_client, image_message([png_data_url(picture)]))
    assert reply.choices[0].message.content == expected_text(llava, [picture])
    processor = llava[1]
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}],
        add_generation_prompt=True, tokenize=False)
    ids = processor(text=[prompt], images=[[picture]], add_special_tokens=False)["input_ids"][0]
    assert reply.usage.prompt_tokens == len(ids)  # the image's expanded tokens count


def test_two_images_in_one_message_and_streaming(vlm_client, llava, picture_url):
    first, second = image((20, 160, 40), (30, 18)), image((180, 40, 40), (24, 16))  # PNG keeps pixels as they are
    messages = image_message([png_data_url(first), picture_url + "/red.png"])
    whole = ask(vlm_client, messages)
    assert whole.choices[0].message.content == expected_text(llava, [first, second])
    chunks = list(ask(vlm_client, messages, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content


@pytest.mark.slow
def test_the_serve_command_reads_images(llava_dir, llava):
    """The real `tunestack serve` subprocess (about 15 s to start here): one base64 PNG, then two in one message."""
    pictures = [image(), image((20, 160, 40), (30, 18))]
    with serve_subprocess(llava_dir) as (url, process):
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)
        one = ask(client, image_message([png_data_url(pictures[0])]))
        two = ask(client, image_message([png_data_url(p) for p in pictures]))
    assert one.choices[0].message.content == expected_text(llava, pictures[:1])
    assert two.choices[0].message.content == expected_text(llava, pictures)
    assert "images accepted" in process.stderr.read()


def test_text_and_image_requests_together_each_get_their_own_answer(vlm_client, llava):
    pictures = [image(), image((20, 160, 40), (30, 18)), None, None]
    texts = [QUESTION, "What is this?", QUESTION, "hello world"]
    conversations = [image_message([png_data_url(p)], t) if p else [{"role": "user", "content": t}]
                     for p, t in zip(pictures, texts)]
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda m: ask(vlm_client, m).choices[0].message.content, conversations * 2))
    expected = [expected_text(llava, [p] if p else [], t) for p, t in zip(pictures, texts)]
    assert replies == expected * 2


@pytest.mark.parametrize("url, problem", [
    ("data:image/png;base64,iVBOR%%%", "the data URL's base64 payload does not decode"),
    ("data:image/png;base64," + base64.b64encode(b"not a picture").decode(), "is not a readable image"),
    ("/red.png-missing", "could not be fetched"),
    ("/huge.png", "larger than the 20 MiB limit"),
])
def test_a_bad_image_is_a_400_naming_its_part(vlm_client, picture_url, url, problem):
    url = picture_url + url if url.startswith("/") else url
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Look:"},
                                             {"type": "image_url", "image_url": {"url": png_data_url(image())}},
                                             {"type": "image_url", "image_url": {"url": url}}]}]
    with pytest.raises(openai.BadRequestError) as refused:
        ask(vlm_client, messages)
    error = refused.value.body
    assert error["message"].startswith("messages[1].content[2]: ") and problem in error["message"]
    assert error["type"] == "invalid_request_error" and error["param"] == "messages"


def test_a_text_only_model_refuses_images_with_a_400(tiny_model_dir):
    from tunestack.serve.app import build_app

    serving = make_serving(tiny_model_dir)
    try:
        with running_server(build_app(serving)) as url:
            client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)
            with pytest.raises(openai.BadRequestError) as refused:
                ask(client, image_message([png_data_url(image())]))
            assert ask(client, [{"role": "user", "content": "hi"}]).choices[0].message.content is not None
    finally:
        serving.engine.close()
    message = refused.value.body["message"]
    assert message.startswith("messages[0].content[0]: the model `tiny` takes text only")


def test_a_full_server_answers_429_before_fetching_the_images(llava_dir):
    """With the only slot taken by a running stream, a request with an image URL is refused by the real
    admission (its 429 counter moves) without the image being fetched; once the slot frees it is fetched once."""
    import httpx

    from tunestack.config import ModelArgs
    from tunestack.inference.backends import EngineOptions, build_engine
    from tunestack.serve.app import build_app
    from tunestack.serve.serving import ServeLimits, Serving

    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            self.wfile.write(png_bytes(image()))

        def log_message(self, *args):
            pass

    pictures = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=pictures.serve_forever, daemon=True).start()
    picture = f"http://127.0.0.1:{pictures.server_address[1]}/picture.png"
    parts = build_engine(ModelArgs(model=str(llava_dir), dtype="fp32"), "pt", EngineOptions(max_batch=1))
    serving = Serving(parts.engine, parts.tokenizer, "tiny", ServeLimits(1, 0, 64), processor=parts.processor)
    try:
        with running_server(build_app(serving)) as url:
            client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)
            stream = client.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=400, temperature=0,
                stream=True, extra_body={"ignore_eos": True})
            next(iter(stream))  # admitted and generating: the one slot is taken
            with pytest.raises(openai.RateLimitError):
                ask(client, image_message([picture]))
            assert hits == []
            assert "tunestack_rejected_overload_total 1.0" in httpx.get(url + "/metrics").text
            stream.close()
            pause = threading.Event()
            for _ in range(200):  # the slot frees once the server sees the stream closed
                if serving.admitted == 0:
                    break
                pause.wait(0.05)
            assert ask(client, image_message([picture])).choices[0].message.content is not None
            assert hits == ["/picture.png"]
    finally:
        parts.engine.close()
        pictures.shutdown()


def test_a_qwen2_vl_checkpoint_answers_base64_images_as_generate_does(tmp_path):
    """Qwen2-VL's processor built for images alone (no torchvision), its M-RoPE positions through the server."""
    import torch

    from tiny_vlms import build_tiny_qwen2_vl, qwen2_vl_inputs, save_tiny_qwen2_vl
    from tunestack.config import ModelArgs
    from tunestack.inference.backends import EngineOptions, build_engine
    from tunestack.serve.app import build_app
    from tunestack.serve.serving import ServeLimits, Serving

    path = save_tiny_qwen2_vl(tmp_path / "qwen2-vl", seed=5)
    model, image_processor, tokenizer = build_tiny_qwen2_vl(seed=5)
    pictures = [image((20, 160, 40), (40, 30)), image((180, 40, 40), (60, 56))]
    content = [*({"type": "image"} for _ in pictures), {"type": "text", "text": QUESTION}]
    inputs = qwen2_vl_inputs(tokenizer, image_processor, [{"role": "user", "content": content}], pictures)
    with torch.no_grad():
        tokens = model.generate(**inputs, max_new_tokens=8, do_sample=False)[0, inputs["input_ids"].shape[1]:]
    parts = build_engine(ModelArgs(model=str(path), dtype="fp32"), "pt", EngineOptions(max_batch=4))
    serving = Serving(parts.engine, parts.tokenizer, "tiny", ServeLimits(4, 16, 64), processor=parts.processor)
    try:
        with running_server(build_app(serving)) as url:
            client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)
            reply = ask(client, image_message([png_data_url(p) for p in pictures]))
    finally:
        parts.engine.close()
    assert len(tokens) == 8 and reply.usage.completion_tokens == 8  # eight tokens, not an early end
    assert reply.choices[0].message.content == tokenizer.decode(tokens, skip_special_tokens=True)
    assert reply.usage.prompt_tokens == inputs["input_ids"].shape[1]  # each image's merged patches count
