"""Reward sources of --reward_funcs: the built-ins score what they claim, your own functions are loaded and checked,
and every misuse is one line naming the flag, the function or the sample."""

import re
from types import SimpleNamespace

import pytest

from tunestack.config import GrpoArgs
from tunestack.errors import DataError, TunestackError
from tunestack.train.reward_funcs import RewardFunction, reward_functions, reward_problems
from tunestack.train.rewards import accuracy, boxed, check_gold_answers, format_match, json_valid, length


def said(*texts):
    """Completions as TRL passes conversational ones: each a list of one assistant message."""
    return [[{"role": "assistant", "content": t}] for t in texts]


def test_accuracy_compares_the_last_number_with_the_gold_answer():
    completions = said("37 + 58 = 95.", "It is 95, not 94", "95.0", "1,234", "no number", "-5")
    assert accuracy(completions, answer=["95", "95", "95", "1234", "3", "-5"]) == [1, 0, 1, 1, 0, 1]


def test_boxed_compares_math_answers_as_minerva_math_does():
    completions = said(r"so \boxed{\frac{1}{2}}", r"\boxed{2}", r"\boxed{3}", "3")
    gold = [r"\frac12", r"\frac12", r"The answer is $\boxed{3}$.", "3"]
    assert boxed(completions, answer=gold) == [1, 0, 1, 0]  # the last: no \boxed{} answer


def test_json_length_and_format():
    assert json_valid(said('{"a": 1}', '```json\n[1, 2]\n```', "{a: 1}", "")) == [1, 1, 0, 0]
    assert length(said("", "", ""), completion_ids=[[1] * 10, [1] * 5, [1] * 25], target=10) == [1, 0.5, 0]
    pattern = re.compile(r"<think>.*</think>\s*\d+", re.DOTALL)
    assert format_match(said("<think>a\nb</think> 4", "4 <think></think> 4"), pattern=pattern) == [1, 0]


def test_built_ins_are_named_and_read_their_flags():
    args = GrpoArgs(reward_funcs=["length", "format"], length_target=4, format_regex=r"\d+")
    length_reward, format_reward = reward_functions(args)
    assert (length_reward.__name__, format_reward.__name__) == ("length", "format")
    assert length_reward(prompts=[[]], completions=said("12"), completion_ids=[[1, 2]]) == [0.5]
    assert format_reward(prompts=[[]] * 2, completions=said("12", "1a")) == [1, 0]


def test_user_function_gets_what_the_docstring_promises(tmp_path):
    (tmp_path / "mine.py").write_text(
        "def polite(prompts, completions, answer, source, **kwargs):\n"
        "    return [float('please' in c[0]['content']) for c in completions]\n")
    [reward] = reward_functions(GrpoArgs(reward_funcs=[f"{tmp_path}/mine.py:polite"]))
    assert reward.__name__ == "polite"
    assert reward(prompts=[[]] * 2, completions=said("please", "no"), answer=[None] * 2, source=["a", "b"]) == [1, 0]


def failing(returned=None, raises_on=None):
    def function(prompts, completions, **kwargs):
        for c in completions:
            if raises_on and raises_on in c[0]["content"]:
                raise ValueError(f"cannot score {c[0]['content']!r}\nsecond line")
        return returned

    return RewardFunction("mine", function)


@pytest.mark.parametrize("reward, expected", [
    (failing(raises_on="b"), "reward function mine raised ValueError: cannot score 'b' (on data.jsonl, line 2, "
                             "completion 2 of 3: 'b')"),
    (failing(returned={"a": 1}), 'reward function mine returned an object ({"a": 1}); expected a list of 3 numbers, '
                                 "one per completion"),
    (failing(returned=[1.0]), "reward function mine returned 1 rewards for 3 completions; expected one per completion"),
    (failing(returned=[1.0, "x", 0.0]), "reward function mine returned 'x' for data.jsonl, line 2, completion 2 of 3: "
                                        "'b'; expected a finite number or None"),
    (failing(returned=[1.0, 0.0, float("inf")]), "reward function mine returned a number (Infinity) for data.jsonl, "
                                                  "line 3, completion 3 of 3: 'c'; expected a finite number or None"),
])
def test_a_misbehaving_function_is_named_with_the_sample(reward, expected):
    with pytest.raises(TunestackError) as e:
        reward(prompts=[[]] * 3, completions=said("a", "b", "c"), source=[f"data.jsonl, line {i}" for i in (1, 2, 3)])
    assert str(e.value) == expected


def test_none_and_numpy_results_pass():
    import numpy as np

    assert failing(returned=[None, 1, 0.5])(prompts=[[]] * 3, completions=said("a", "b", "c")) == [None, 1, 0.5]
    assert failing(returned=np.array([1.0, 0.0]))(prompts=[[]] * 2, completions=said("a", "b")) == [1.0, 0.0]


def test_flag_problems_are_gathered_before_a_model_loads(tmp_path):
    (tmp_path / "mine.py").write_text("def ok(completions, **kw):\n    return [0.0] * len(completions)\nx = 1\n")
    (tmp_path / "broken.py").write_text("def f(:\n")
    args = GrpoArgs(reward_funcs=["accurracy", f"{tmp_path}/mine.py:nope", f"{tmp_path}/mine.py:x",
                                  f"{tmp_path}/gone.py:f", f"{tmp_path}/broken.py:f", "runs/rm", "length", "format"],
                    format_regex="(", reward_weights=[1.0, 2.0])
    problems = reward_problems(args)
    assert problems[0] == ("--reward_funcs accurracy: not a built-in (accuracy, boxed, json, length, format), a "
                           "PATH.py:FUNCTION or a reward-model run directory")
    assert problems[1] == f"--reward_funcs {tmp_path}/mine.py:nope: {tmp_path}/mine.py defines no function nope"
    assert problems[2] == f"--reward_funcs {tmp_path}/mine.py:x: {tmp_path}/mine.py defines no function x"
    assert problems[3] == f"--reward_funcs {tmp_path}/gone.py:f: file {tmp_path}/gone.py not found"
    assert problems[4].startswith(f"--reward_funcs: importing {tmp_path / 'broken.py'} failed: SyntaxError")
    assert problems[5] == "--reward_funcs runs/rm: no such reward-model run directory"
    assert problems[6:] == [
        "--reward_funcs length: needs --length_target (the completion length, in tokens, it rewards)",
        "--format_regex '(': not a valid regular expression (missing ), unterminated subpattern at position 0)",
        "--reward_weights: 2 weights for 8 reward sources (accurracy, " + ", ".join(args.reward_funcs[1:]) +
        "); give one per source",
    ]
    assert reward_problems(GrpoArgs()) == ["--reward_funcs: required; built-ins accuracy, boxed, json, length, "
                                           "format, PATH.py:FUNCTION or a reward-model run directory, e.g. "
                                           "--reward_funcs accuracy"]


def rows(answers):
    return SimpleNamespace(train={"answer": answers, "source": [f"data.jsonl, line {i}" for i in range(1, 4)]},
                           val=None)


def test_gold_answers_are_checked_for_the_rewards_that_need_them():
    check_gold_answers(rows(["1", None, "x"]), GrpoArgs(reward_funcs=["json"]))
    check_gold_answers(rows(["1", "2,500", r"\frac12"]), GrpoArgs(reward_funcs=["boxed"]))
    with pytest.raises(DataError) as e:
        check_gold_answers(rows(["1", None, "3"]), GrpoArgs(reward_funcs=["json", "accuracy"]))
    assert str(e.value) == ('data.jsonl, line 2: no gold answer (an "answer" or "solution" field); --reward_funcs '
                            "accuracy compares each completion with it")
    with pytest.raises(DataError) as e:
        check_gold_answers(rows(["1", "2", "x^2"]), GrpoArgs(reward_funcs=["accuracy"]))
    assert str(e.value) == ("data.jsonl, line 3: answer 'x^2' is not a number; the accuracy reward compares the "
                            "completion's last number with it (use boxed for math expressions)")
