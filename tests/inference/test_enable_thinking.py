"""--enable_thinking and a request's chat_template_kwargs reach Qwen3's chat template in infer and serve."""

import pytest

from tunestack.data.templates import ensure_chat_template

THINK_OFF = "<|im_start|>assistant\n<think>\n\n</think>\n\n"


@pytest.mark.parametrize("command, group", [("sft", "DataArgs"), ("infer", "InferArgs"), ("serve", "ServeArgs")])
def test_flag_parses_for_each_command(command, group):
    from tunestack.cli.commands import COMMANDS
    from tunestack.config import parse_groups

    groups = COMMANDS[command].groups
    parsed = {type(g).__name__: g for g in parse_groups(groups, ["--enable_thinking", "false"])}
    assert parsed[group].enable_thinking is False
    default = {type(g).__name__: g for g in parse_groups(groups, [])}
    assert default[group].enable_thinking is None


@pytest.fixture()
def qwen3_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = None
    ensure_chat_template(tokenizer, "qwen3")
    return tokenizer


def test_terminal_chat_passes_the_switch(qwen3_tokenizer):
    from tunestack.inference.chat import Chat

    messages = [{"role": "user", "content": "hello"}]
    off = qwen3_tokenizer.decode(Chat(None, qwen3_tokenizer, template_kwargs={"enable_thinking": False})
                                 .prompt_ids(messages))
    on = qwen3_tokenizer.decode(Chat(None, qwen3_tokenizer).prompt_ids(messages))
    assert off.endswith(THINK_OFF) and on.endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize("server, request_kwargs, thinking_off", [
    ({}, None, False), ({"enable_thinking": False}, None, True), ({}, {"enable_thinking": False}, True),
    ({"enable_thinking": False}, {"enable_thinking": True}, False)])
def test_server_default_and_request_chat_template_kwargs(qwen3_tokenizer, server, request_kwargs, thinking_off):
    from types import SimpleNamespace

    from tunestack.serve.chat import chat_prompt
    from tunestack.serve.protocol import ChatCompletionRequest

    body = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
    if request_kwargs is not None:
        body["chat_template_kwargs"] = request_kwargs
    serving = SimpleNamespace(tokenizer=qwen3_tokenizer, template_kwargs=server)
    text = qwen3_tokenizer.decode(chat_prompt(serving, ChatCompletionRequest(**body)))
    assert text.endswith(THINK_OFF) == thinking_off
