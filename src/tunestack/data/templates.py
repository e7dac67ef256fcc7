"""Chat templates for tokenizers that ship none; the tokenizer's own template always wins."""

from __future__ import annotations

from tunestack.errors import TunestackError

_CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_QWEN = (
    "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}"
    "{% endif %}" + _CHATML
)
_LLAMA3 = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
_MISTRAL = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content']"
    " + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% elif message['role'] == 'system' %}{{ message['content'] + '\n\n' }}{% endif %}{% endfor %}"
)
_GEMMA = (
    "{{ bos_token }}{% for message in messages %}{% set role = 'model' if message['role'] == 'assistant'"
    " else 'user' %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
_PHI3 = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)

_ZEPHYR = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

CHAT_TEMPLATES: dict[str, str] = {
    "chatml": _CHATML,
    "qwen": _QWEN,
    "qwen3": _CHATML,
    "zephyr": _ZEPHYR,
    "llama3": _LLAMA3,
    "mistral": _MISTRAL,
    "gemma": _GEMMA,
    "phi3": _PHI3,
}

# Special tokens each template relies on; added to the tokenizer when missing so turns end cleanly.
_END_OF_TURN = {"chatml": "<|im_end|>", "qwen": "<|im_end|>", "qwen3": "<|im_end|>", "llama3": "<|eot_id|>", "phi3": "<|end|>",
                "gemma": "<end_of_turn>"}


def ensure_chat_template(tokenizer, name: str | None = None, fallback: str | None = None) -> str:
    """Give `tokenizer` a chat template and return its name: 'tokenizer' for its own, else the registry name.

    `name` (--template) forces a registry template. Otherwise the tokenizer's own template is kept, and only a
    tokenizer without one gets `fallback` (the model alias's template) or chatml.
    """
    if name == "tokenizer":  # recorded by runs trained on the tokenizer's own template
        name = None
    if name is None and tokenizer.chat_template:
        return "tokenizer"
    chosen = name or (fallback if fallback in CHAT_TEMPLATES else "chatml")
    if chosen not in CHAT_TEMPLATES:
        raise TunestackError(
            f"--template {chosen!r}: unknown chat template; expected one of {', '.join(sorted(CHAT_TEMPLATES))}"
        )
    tokenizer.chat_template = CHAT_TEMPLATES[chosen]
    end = _END_OF_TURN.get(chosen)
    if end is not None and end not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [end]})
    if end is not None and chosen in ("chatml", "qwen", "qwen3"):
        tokenizer.eos_token = end
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return chosen
