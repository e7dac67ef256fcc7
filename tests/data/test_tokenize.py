"""Training text is exactly what apply_chat_template renders; loss falls on assistant turns and nowhere else."""

import pytest

from tunestack.data.templates import CHAT_TEMPLATES, ensure_chat_template
from tunestack.data.tokenize import IGNORE_INDEX, encode_conversation, encode_text

CONVERSATIONS = {
    "single": [{"role": "user", "content": "What is your name?"},
               {"role": "assistant", "content": "I am a tiny model."}],
    "system": [{"role": "system", "content": "Answer briefly."},
               {"role": "user", "content": "What is 12 + 30?"},
               {"role": "assistant", "content": "42"}],
    "multi_turn": [{"role": "user", "content": "help me"},
                   {"role": "assistant", "content": "hello world"},
                   {"role": "user", "content": "Who made you?"},
                   {"role": "assistant", "content": "The tunestack developers made me."}],
    "chinese": [{"role": "user", "content": "你是谁？"}, {"role": "assistant", "content": "你好，世界。"}],
}


def labelled_text(tokenizer, encoded) -> str:
    return tokenizer.decode([t for t, l in zip(encoded.input_ids, encoded.labels) if l != IGNORE_INDEX])


def expected_assistant_text(messages) -> str:
    return "".join(m["content"] + "<|im_end|>\n" for m in messages if m["role"] == "assistant")


@pytest.mark.parametrize("name", sorted(CONVERSATIONS))
def test_ids_equal_apply_chat_template_and_mask_covers_assistant_turns(tiny_tokenizer, name):
    messages = CONVERSATIONS[name]
    encoded = encode_conversation(tiny_tokenizer, messages, max_length=512)
    reference = tiny_tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    assert encoded.input_ids == list(reference)
    assert labelled_text(tiny_tokenizer, encoded) == expected_assistant_text(messages)
    # Token by token: a label is either the token itself or ignored, never another token.
    assert all(l in (t, IGNORE_INDEX) for t, l in zip(encoded.input_ids, encoded.labels))


def test_user_and_system_tokens_never_carry_loss(tiny_tokenizer):
    messages = CONVERSATIONS["system"]
    encoded = encode_conversation(tiny_tokenizer, messages, max_length=512)
    prompt = tiny_tokenizer.apply_chat_template(messages[:-1], tokenize=True, add_generation_prompt=True,
                                                return_dict=True)["input_ids"]
    assert encoded.labels[: len(prompt)] == [IGNORE_INDEX] * len(prompt)
    assert all(l != IGNORE_INDEX for l in encoded.labels[len(prompt):])


def test_truncate_and_drop(tiny_tokenizer):
    messages = CONVERSATIONS["multi_turn"]
    full = encode_conversation(tiny_tokenizer, messages, max_length=512)
    cut = encode_conversation(tiny_tokenizer, messages, max_length=20, truncation="truncate")
    assert cut.truncated and cut.input_ids == full.input_ids[:20] and cut.labels == full.labels[:20]
    assert encode_conversation(tiny_tokenizer, messages, max_length=20, truncation="drop") is None


def test_text_for_pretraining_trains_every_token(tiny_tokenizer):
    encoded = encode_text(tiny_tokenizer, "The quick brown fox.", max_length=64)
    assert encoded.labels == encoded.input_ids
    assert encoded.input_ids[-1] == tiny_tokenizer.eos_token_id


@pytest.mark.parametrize("name", sorted(CHAT_TEMPLATES))
def test_registry_templates_render_and_mask(tiny_model_dir, name):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = None
    assert ensure_chat_template(tokenizer, name) == name
    messages = CONVERSATIONS["multi_turn"]
    encoded = encode_conversation(tokenizer, messages, max_length=512)
    reference = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    assert encoded.input_ids == list(reference)
    text = labelled_text(tokenizer, encoded)
    for message in messages:
        assert (message["content"] in text) == (message["role"] == "assistant")


def test_tokenizer_without_template_gets_chatml(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = None
    assert ensure_chat_template(tokenizer, None) == "chatml"
    assert ensure_chat_template(tokenizer, None) == "tokenizer"  # now it has one, it is kept


def test_unknown_template_names_the_choices(tiny_tokenizer):
    from tunestack.errors import TunestackError

    with pytest.raises(TunestackError, match="--template 'nope'.*chatml"):
        ensure_chat_template(tiny_tokenizer, "nope")


def test_a_generation_prompt_that_differs_from_the_turn_opening_names_the_template(tiny_model_dir):
    """A template whose generation prompt ('assistant\\n') is not how it opens an assistant turn ('assistant: ')
    would put the loss mask where the model never answers: an error naming the template, not silent mislabelling."""
    from transformers import AutoTokenizer

    from tunestack.errors import DataError

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + (': ' if m['role'] == 'assistant' else '\n') + "
        "m['content'] + '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
        "{% endif %}")
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    with pytest.raises(DataError, match=rf"chat template of {tiny_model_dir}.*add_generation_prompt"):
        encode_conversation(tokenizer, messages, max_length=64)
