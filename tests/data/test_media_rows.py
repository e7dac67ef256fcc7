"""Rows with images: every shape users bring (image parts, OpenAI image_url, an `images` column with <image>
placeholders, ShareGPT) becomes one canonical row; paths are taken relative to the data file; mismatches and
unreadable images name the row; text models and text data are untouched."""

import base64
import json

import pytest

from helpers import write_jsonl
from tunestack.config import DataArgs
from tunestack.data import load_datasets
from tunestack.errors import DataError
from tunestack.media import MediaError, content_parts, load_image, placeholder_text

ANSWER = {"role": "assistant", "content": "Red."}


@pytest.fixture()
def red(tmp_path):
    from PIL import Image

    (tmp_path / "img").mkdir()
    Image.new("RGB", (8, 6), (255, 0, 0)).save(tmp_path / "img" / "red.png")
    return tmp_path / "img" / "red.png"


def rows_of(path):
    return list(load_datasets(DataArgs(dataset=[str(path)])).train)


def test_every_image_shape_becomes_the_same_canonical_row(tmp_path, red):
    data = base64.b64encode(red.read_bytes()).decode()
    shapes = [
        {"messages": [{"role": "user", "content": [{"type": "image", "image": "img/red.png"},
                                                   {"type": "text", "text": "Colour?"}]}, ANSWER]},
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "img/red.png"}},
                                                   {"type": "text", "text": "Colour?"}]}, ANSWER]},
        {"messages": [{"role": "user", "content": "<image>Colour?"}, ANSWER], "images": ["img/red.png"]},
        {"conversations": [{"from": "human", "value": "<image>Colour?"}, {"from": "gpt", "value": "Red."}],
         "images": [str(red)]},
    ]
    for i, row in enumerate(shapes):
        got = rows_of(write_jsonl(tmp_path / f"d{i}.jsonl", [row]))
        assert got == [{"images": [str(red)], "audios": [], "videos": [], "objects": None,
                        "messages": [{"role": "user", "content": "<image>Colour?"}, ANSWER]}], i
    got = rows_of(write_jsonl(tmp_path / "url.jsonl", [
        {"messages": [{"role": "user", "content": [{"type": "image_url",
                                                    "image_url": {"url": f"data:image/png;base64,{data}"}}]},
                      ANSWER]}]))
    assert got[0]["images"] == [f"data:image/png;base64,{data}"] and got[0]["messages"][0]["content"] == "<image>"
    assert load_image(got[0]["images"][0], "here").getpixel((0, 0)) == (255, 0, 0)


def test_text_and_image_rows_mix_and_text_data_stays_as_it_was(tmp_path, red):
    text_only = {"messages": [{"role": "user", "content": "What is <image> in HTML?"}, ANSWER]}
    got = rows_of(write_jsonl(tmp_path / "text.jsonl", [text_only]))
    assert got == [text_only]  # no images column, and "<image>" in text is just text
    mixed = rows_of(write_jsonl(tmp_path / "mixed.jsonl", [
        text_only, {"messages": [{"role": "user", "content": "<image><image>Same?"}, ANSWER],
                    "images": [str(red), str(red)]}]))
    assert [r["images"] for r in mixed] == [[], [str(red), str(red)]]


def test_parts_and_placeholder_text_round_trip():
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}, {"type": "image"},
             {"type": "text", "text": "c"}]
    text = placeholder_text(["a", "b", {"type": "image"}, "c"])
    assert text == "a\nb<image>c"
    assert content_parts(text) == [{"type": "text", "text": "a\nb"}, {"type": "image"}, {"type": "text", "text": "c"}]
    assert content_parts(placeholder_text([{"type": "image"}])) == [{"type": "image"}]
    assert parts[2] in content_parts(text)
    mixed = placeholder_text([{"type": "audio"}, "what is this?", {"type": "image"}, {"type": "audio"}])
    assert mixed == "<audio>what is this?<image><audio>"
    assert content_parts(mixed) == [{"type": "audio"}, {"type": "text", "text": "what is this?"}, {"type": "image"},
                                    {"type": "audio"}]


@pytest.mark.parametrize("row, message", [
    ({"messages": [{"role": "user", "content": "<image>Colour?"}, ANSWER], "images": ["a.png", "b.png"]},
     "2 image(s) but 1 <image> placeholder(s)"),
    ({"messages": [{"role": "user", "content": "Colour?"}, ANSWER], "images": ["a.png"]},
     "1 image(s) but 0 <image> placeholder(s)"),
    ({"messages": [{"role": "user", "content": "<image>?"}, {"role": "assistant", "content": "<image>"}],
      "images": ["a.png"]}, "outside a user turn"),
    ({"messages": [{"role": "user", "content": [{"type": "image"}]}, ANSWER]}, "an image part needs a path or URL"),
    ({"messages": [{"role": "user", "content": "<image>?"}, ANSWER], "images": [3]}, "images[0] is"),
])
def test_bad_image_rows_name_the_line(tmp_path, row, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"messages": [{"role": "user", "content": "hi"}, ANSWER]}, row])
    with pytest.raises(DataError) as error:
        rows_of(path)
    assert f"{path}, line 2" in str(error.value) and message in str(error.value)


def test_images_are_refused_where_they_cannot_be_trained(tmp_path, red):
    path = write_jsonl(tmp_path / "pref.jsonl", [{"prompt": [{"role": "user", "content": [
        {"type": "image", "image": str(red)}, {"type": "text", "text": "Colour?"}]}], "chosen": "Red.",
        "rejected": "Blue."}])
    with pytest.raises(DataError, match="images in preference data are not supported yet"):
        list(load_datasets(DataArgs(dataset=[str(path)]), task="preference").train)


def test_unreadable_images_are_named(tmp_path, red):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(MediaError, match="row 3: .*broken.png is not a readable image"):
        load_image(str(tmp_path / "broken.png"), "row 3")
    with pytest.raises(MediaError, match="row 4: image file .*missing.png not found"):
        load_image(str(tmp_path / "missing.png"), "row 4")
    with pytest.raises(MediaError, match="limit is 0 MiB"):
        load_image(str(red), "row 5", max_bytes=10)
    with pytest.raises(MediaError, match="base64 payload does not decode"):
        load_image("data:image/png;base64,@@@", "row 6")


def test_an_image_url_that_hangs_times_out_naming_the_row():
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()  # never answers
    url = f"http://127.0.0.1:{server.getsockname()[1]}/cat.png"
    try:
        with pytest.raises(MediaError, match=r"row 7: image URL .* timed out after 0.5 s"):
            load_image(url, "row 7", timeout=0.5)
        assert accepted, "the request reached the server"
    finally:
        server.close()


def test_an_image_url_is_fetched(red):
    import http.server
    import threading

    body = red.read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        image = load_image(f"http://127.0.0.1:{server.server_port}/red.png", "row 1")
        assert image.size == (8, 6) and image.getpixel((3, 3)) == (255, 0, 0)
    finally:
        server.shutdown()


def test_a_json_dataset_keeps_its_images_column(tmp_path, red):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"messages": [{"role": "user", "content": "<image>x"}, ANSWER],
                                 "images": ["img/red.png"]}]))
    assert rows_of(path)[0]["images"] == [str(red)]
