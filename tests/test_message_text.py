"""Content parts become the same text in training data, the server's prompt, the terminal chat and evaluation."""

from __future__ import annotations

from types import SimpleNamespace

from tunestack.message_text import content_text, join_text_parts

PARTS = [{"type": "text", "text": "Translate to French:"}, {"type": "text", "text": "good morning"}]


def test_text_parts_are_joined_by_newlines():
    assert join_text_parts(["a", "b", "c"]) == "a\nb\nc"
    assert content_text(PARTS) == "Translate to French:\ngood morning"
    assert content_text("plain") == "plain" and content_text(None) == ""
    assert content_text([{"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": "hi"}]) == "hi"


def test_content_parts_render_the_same_in_training_and_in_the_server_prompt(tiny_tokenizer):
    from tunestack.data.formats import canonical_rows
    from tunestack.data.tokenize import encode_conversation
    from tunestack.serve.chat import chat_prompt
    from tunestack.serve.protocol import ChatCompletionRequest

    row = {"messages": [{"role": "user", "content": PARTS}, {"role": "assistant", "content": "bonjour"}]}
    (trained,) = canonical_rows([("data.jsonl, line 1", row)], "sft")
    training_ids = encode_conversation(tiny_tokenizer, trained["messages"], max_length=512).input_ids
    request = ChatCompletionRequest(model="tiny", messages=[{"role": "user", "content": PARTS}])
    served_ids = chat_prompt(SimpleNamespace(tokenizer=tiny_tokenizer), request)
    assert training_ids[:len(served_ids)] == served_ids
    assert "Translate to French:\ngood morning" in tiny_tokenizer.decode(served_ids)
