"""Family-specific chat rendering: Qwen3's thinking switch, tool calls, Gemma's `model` role, tokenizers without a
pad token. Each mask is checked token by token against apply_chat_template."""

import json

import pytest

from tunestack.data.formats import canonical_rows
from tunestack.data.templates import ensure_chat_template
from tunestack.data.tokenize import IGNORE_INDEX, encode_conversation
from tunestack.errors import DataError

MARKERS = ["<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]

# A tools-aware chatml template in the style of Qwen2.5: the schemas go into the system turn, the assistant writes
# each call as <tool_call>{json}</tool_call>, and tool results come back in a user turn as <tool_response>.
TOOLS_CHATML = (
    "{%- if tools %}{{- '<|im_start|>system\nYou may call functions.\n<tools>' }}{%- for tool in tools %}"
    "{{- '\n' + (tool | tojson) }}{%- endfor %}{{- '\n</tools><|im_end|>\n' }}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' %}{{- '<|im_start|>assistant\n' + (message.content or '') }}"
    "{%- for call in message.tool_calls or [] %}{%- set f = call.function %}"
    "{{- '<tool_call>\n{\"name\": \"' + f.name + '\", \"arguments\": ' + (f.arguments | tojson) + '}\n</tool_call>' }}"
    "{%- endfor %}{{- '<|im_end|>\n' }}"
    "{%- elif message.role == 'tool' %}"
    "{{- '<|im_start|>user\n<tool_response>\n' + message.content + '\n</tool_response><|im_end|>\n' }}"
    "{%- else %}{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}{%- endif %}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)

WEATHER = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                              "parameters": {"type": "object",
                                                             "properties": {"city": {"type": "string"}}}}}]
TOOL_CONVERSATION = [
    {"role": "user", "content": "What is the weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
    {"role": "assistant", "content": "It is sunny in Paris."},
]


@pytest.fixture()
def qwen_tokenizer(tiny_model_dir):
    """The tiny tokenizer with Qwen's marker tokens, as Qwen's own tokenizers carry them."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": MARKERS})
    return tokenizer


def qwen3(tokenizer):
    tokenizer.chat_template = None
    assert ensure_chat_template(tokenizer, "qwen3") == "qwen3"
    return tokenizer


def segments(tokenizer, encoded) -> list[str]:
    """The labelled tokens as decoded runs of consecutive positions."""
    runs, run = [], []
    for token, label in zip(encoded.input_ids, encoded.labels):
        assert label in (token, IGNORE_INDEX)  # a label is its own token or ignored, never another token
        if label == IGNORE_INDEX and run:
            runs.append(run)
            run = []
        elif label != IGNORE_INDEX:
            run.append(token)
    return [tokenizer.decode(r) for r in runs + ([run] if run else [])]


def reference(tokenizer, messages, **kwargs) -> list[int]:
    return list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)["input_ids"])


def assert_last_turn_trained_from_prompt(tokenizer, messages, encoded, **kwargs):
    """Token by token: the last turn's labels are masked exactly up to the generation prompt, then all trained."""
    prompt = reference(tokenizer, messages[:-1], add_generation_prompt=True, **kwargs)
    assert encoded.input_ids[: len(prompt)] == prompt
    assert encoded.labels[len(prompt) - 1] == IGNORE_INDEX
    assert encoded.labels[len(prompt):] == encoded.input_ids[len(prompt):]


QUESTION = [{"role": "user", "content": "What is 12 + 30?"}]


def test_qwen3_thinking_off_answer_follows_empty_think_block_outside_the_loss(qwen_tokenizer):
    tokenizer = qwen3(qwen_tokenizer)
    messages = QUESTION + [{"role": "assistant", "content": "42"}]
    off = {"enable_thinking": False}
    encoded = encode_conversation(tokenizer, messages, 512, template_kwargs=off)
    assert encoded.input_ids == reference(tokenizer, messages, **off)
    assert tokenizer.decode(encoded.input_ids).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n42<|im_end|>\n")
    assert segments(tokenizer, encoded) == ["42<|im_end|>\n"]
    assert_last_turn_trained_from_prompt(tokenizer, messages, encoded, **off)


def test_qwen3_generation_prompt_with_thinking_off_opens_an_empty_think_block(qwen_tokenizer):
    tokenizer = qwen3(qwen_tokenizer)
    off = tokenizer.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    on = tokenizer.apply_chat_template(QUESTION, tokenize=False, add_generation_prompt=True)
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert on.endswith("<|im_start|>assistant\n")


def test_qwen3_reasoning_in_the_data_is_trained_on(qwen_tokenizer):
    tokenizer = qwen3(qwen_tokenizer)
    messages = QUESTION + [{"role": "assistant", "content": "<think>\n12 plus 30 is 42.\n</think>\n\n42"}]
    encoded = encode_conversation(tokenizer, messages, 512)
    assert encoded.input_ids == reference(tokenizer, messages)
    assert segments(tokenizer, encoded) == ["<think>\n12 plus 30 is 42.\n</think>\n\n42<|im_end|>\n"]
    assert_last_turn_trained_from_prompt(tokenizer, messages, encoded)


@pytest.mark.parametrize("thinking", [None, False])
def test_qwen3_history_turns_render_their_answer_and_are_trained_on(qwen_tokenizer, thinking):
    tokenizer = qwen3(qwen_tokenizer)
    messages = [{"role": "user", "content": "help me"},
                {"role": "assistant", "content": "<think>\nthey need help\n</think>\n\nhello world"},
                {"role": "user", "content": "Who made you?"},
                {"role": "assistant", "content": "The tunestack developers."}]
    kwargs = {} if thinking is None else {"enable_thinking": thinking}
    encoded = encode_conversation(tokenizer, messages, 512, template_kwargs=kwargs)
    assert encoded.input_ids == reference(tokenizer, messages, **kwargs)
    text = tokenizer.decode(encoded.input_ids)
    assert "they need help" not in text  # Qwen3 drops the reasoning of earlier turns
    last = "<think>\n\n</think>\n\nThe tunestack developers.<|im_end|>\n" if thinking is None else \
        "The tunestack developers.<|im_end|>\n"
    assert segments(tokenizer, encoded) == ["hello world<|im_end|>\n", last]
    assert_last_turn_trained_from_prompt(tokenizer, messages, encoded, **kwargs)


def test_tool_calls_are_trained_on_and_tool_results_are_not(qwen_tokenizer):
    tokenizer = qwen_tokenizer
    tokenizer.chat_template = TOOLS_CHATML
    encoded = encode_conversation(tokenizer, TOOL_CONVERSATION, 512, tools=WEATHER)
    assert encoded.input_ids == reference(tokenizer, _as_hf(TOOL_CONVERSATION), tools=WEATHER)
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n'
    assert segments(tokenizer, encoded) == [call, "It is sunny in Paris.<|im_end|>\n"]
    first = next(i for i, label in enumerate(encoded.labels) if label != IGNORE_INDEX)
    assert "Weather in a city" in tokenizer.decode(encoded.input_ids[:first])  # the schemas: prompt, untrained
    assert_last_turn_trained_from_prompt(tokenizer, _as_hf(TOOL_CONVERSATION), encoded, tools=WEATHER)


def _as_hf(messages):
    """The conversation with arguments as objects, as Hugging Face templates take them."""
    out = json.loads(json.dumps(messages))
    for message in out:
        for call in message.get("tool_calls", []):
            call["function"]["arguments"] = json.loads(call["function"]["arguments"])
    return out


def test_tools_with_a_template_that_ignores_them_name_the_template(qwen_tokenizer):
    tokenizer = qwen_tokenizer
    tokenizer.chat_template = None
    ensure_chat_template(tokenizer, "chatml")
    with pytest.raises(DataError, match="tools.*'chatml' chat template does not render tools"):
        encode_conversation(tokenizer, TOOL_CONVERSATION, 512, tools=WEATHER)


def test_tools_column_and_tool_messages_pass_through_loading(qwen_tokenizer, tmp_path):
    from helpers import write_jsonl
    from tunestack.config import DataArgs
    from tunestack.data.encode import encode_rows
    from tunestack.data.load import load_datasets

    tokenizer = qwen_tokenizer
    tokenizer.chat_template = TOOLS_CHATML
    plain = {"messages": QUESTION + [{"role": "assistant", "content": "42"}]}
    rows = list(canonical_rows([("a", {"messages": TOOL_CONVERSATION, "tools": WEATHER}), ("b", plain)], "sft"))
    assert json.loads(rows[0]["tools"]) == WEATHER and "tools" not in rows[1]
    assert json.loads(rows[0]["messages"][1]["tool_calls"])[0]["function"]["name"] == "get_weather"
    assert rows[0]["messages"][2] == {"role": "tool", "content": "sunny, 21 C", "tool_call_id": "call_1"}
    path = write_jsonl(tmp_path / "tools.jsonl", [{"messages": TOOL_CONVERSATION, "tools": WEATHER}, plain])
    splits = load_datasets(DataArgs(dataset=[str(path)]))
    encoded, stats = encode_rows(splits.train, tokenizer, "sft", 512, "truncate", packing=False)
    direct = [encode_conversation(tokenizer, TOOL_CONVERSATION, 512, tools=WEATHER),
              encode_conversation(tokenizer, plain["messages"], 512)]
    assert [e["input_ids"] for e in encoded] == [d.input_ids for d in direct]
    assert [e["labels"] for e in encoded] == [d.labels for d in direct]
    assert stats.examples == 2


def test_bad_tools_column_is_a_data_error():
    with pytest.raises(DataError, match="a.jsonl, line 1: tools is .*expected a list of function schemas"):
        list(canonical_rows([("a.jsonl, line 1", {"messages": TOOL_CONVERSATION, "tools": "nope"})], "sft"))


def test_gemma_model_role_is_the_assistant(tiny_model_dir):
    from transformers import AutoTokenizer

    rows = [*canonical_rows([("a", {"messages": [{"role": "user", "content": "Hi?"},
                                                 {"role": "model", "content": "Hello."}]})], "sft"),
            *canonical_rows([("b", {"conversations": [{"from": "human", "value": "Hi?"},
                                                      {"from": "model", "value": "Hello."}]})], "sft")]
    assert rows[0] == rows[1] == {"messages": [{"role": "user", "content": "Hi?"},
                                               {"role": "assistant", "content": "Hello."}]}
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = None
    ensure_chat_template(tokenizer, "gemma")
    encoded = encode_conversation(tokenizer, rows[0]["messages"], 512)
    assert "<start_of_turn>model\nHello." in tokenizer.decode(encoded.input_ids)
    assert segments(tokenizer, encoded) == ["Hello.<end_of_turn>\n"]


def test_streamed_rows_keep_tools_or_stop(tmp_path):
    from helpers import write_jsonl
    from tunestack.config import DataArgs
    from tunestack.data.load import load_datasets

    plain = {"messages": QUESTION + [{"role": "assistant", "content": "42"}]}
    tool_row = {"messages": TOOL_CONVERSATION, "tools": WEATHER}
    first = write_jsonl(tmp_path / "first.jsonl", [tool_row, plain])
    rows = list(load_datasets(DataArgs(dataset=[str(first)], streaming=True)).train)
    assert json.loads(rows[0]["tools"]) == WEATHER and rows[1]["tools"] is None
    later = write_jsonl(tmp_path / "later.jsonl", [plain, tool_row])
    with pytest.raises(DataError, match="with --streaming, tools or tool calls must appear in the first row"):
        list(load_datasets(DataArgs(dataset=[str(later)], streaming=True)).train)


@pytest.mark.parametrize("thinking", [None, False])
def test_qwen3_tool_calls_and_answer_are_trained_on(qwen_tokenizer, thinking):
    tokenizer = qwen3(qwen_tokenizer)
    kwargs = {} if thinking is None else {"enable_thinking": thinking}
    encoded = encode_conversation(tokenizer, TOOL_CONVERSATION, 2048, tools=WEATHER, template_kwargs=kwargs)
    assert not encoded.truncated
    assert encoded.input_ids == reference(tokenizer, _as_hf(TOOL_CONVERSATION), tools=WEATHER, **kwargs)
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n'
    answer = "It is sunny in Paris.<|im_end|>\n"
    assert segments(tokenizer, encoded) == [call, answer if thinking is False else "<think>\n\n</think>\n\n" + answer]
    assert "sunny, 21 C" in tokenizer.decode(encoded.input_ids)
