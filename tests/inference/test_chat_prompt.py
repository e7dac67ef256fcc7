"""One chat-prompt renderer for serve, infer and eval; the terminal chat streams with the incremental detokenizer;
the eval arith check draws from the training built-in's generator."""

from __future__ import annotations

from types import SimpleNamespace

from tunestack.inference.chat import Chat
from tunestack.inference.chat_prompt import chat_prompt_ids

CONVERSATION = [{"role": "developer", "content": "Answer briefly."},
                {"role": "user", "content": [{"type": "text", "text": "2 + 2?"}, {"type": "text", "text": "Thanks"}]}]


def test_serve_infer_and_eval_render_the_same_prompt(tiny_tokenizer):
    from tunestack.eval.local import LocalBackend
    from tunestack.serve.chat import chat_prompt
    from tunestack.serve.protocol import ChatCompletionRequest

    expected = chat_prompt_ids(tiny_tokenizer, CONVERSATION)
    assert "<|im_start|>system\nAnswer briefly." in tiny_tokenizer.decode(expected)
    request = ChatCompletionRequest(model="tiny", messages=CONVERSATION)
    assert chat_prompt(SimpleNamespace(tokenizer=tiny_tokenizer), request) == expected
    assert Chat(None, tiny_tokenizer).prompt_ids(CONVERSATION) == expected
    backend = LocalBackend.__new__(LocalBackend)
    backend.tokenizer, backend.processor, seen = tiny_tokenizer, None, []
    backend._run = lambda ids, until, max_new_tokens, progress, media=None: seen.extend(ids) or ["" for _ in ids]
    backend.chat([CONVERSATION], 4, lambda n: None)
    assert seen == [expected]


class _CountingTokenizer:
    """The tiny tokenizer, counting how many token ids `decode` is handed in all."""

    def __init__(self, tokenizer):
        self.tokenizer, self.decoded = tokenizer, 0

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)

    def __call__(self, *args, **kwargs):
        return self.tokenizer(*args, **kwargs)

    def decode(self, ids, **kwargs):
        self.decoded += len(ids)
        return self.tokenizer.decode(ids, **kwargs)


def test_terminal_chat_decodes_each_token_with_bounded_context(tiny_tokenizer):
    reply = tiny_tokenizer("Bonjour, ça va très bien aujourd'hui! 你好世界 " * 8, add_special_tokens=False)["input_ids"]
    engine = SimpleNamespace(stream=lambda prompt, params: iter(reply))
    counting = _CountingTokenizer(tiny_tokenizer)
    pieces = list(Chat(engine, counting).stream([{"role": "user", "content": "hi"}], None))
    assert "".join(pieces) == tiny_tokenizer.decode(reply, skip_special_tokens=True)
    assert counting.decoded < 12 * len(reply)  # re-decoding the whole reply at each token is ~len(reply)**2 / 2


def test_eval_arith_asks_questions_of_the_training_generator():
    from tunestack.arith import arith_problems
    from tunestack.eval.chat_tasks import ARITH_QUESTIONS, ARITH_SEED, arith_items

    problems = arith_problems(ARITH_QUESTIONS, ARITH_SEED)
    items = arith_items()
    assert [i.messages[0]["content"] for i in items] == [p.question for p in problems]
    assert [i.gold for i in items] == [str(p.answer) for p in problems]
    assert items[0].score(problems[0].reply(problems[0].answer)) == {"exact_match": 1.0}
