"""GRPO with your own reward: a Python function scoring each sampled completion (here, a correct arithmetic answer
in few words), passed as an object; built-in rewards (accuracy, boxed, json, length, format), PATH.py:FUNCTION
and reward-model runs work too. Gold answers of the data (the `answer` column) reach the function by name."""

import re

import tunestack
from _common import example_args


def correct_and_short(prompts, completions, answer, **_):
    """1 for the right number, minus a little per word beyond five."""
    rewards = []
    for completion, gold in zip(completions, answer):
        text = completion[-1]["content"] if isinstance(completion, list) else completion
        numbers = re.findall(r"-?\d+", text)
        right = 1.0 if numbers and numbers[-1] == str(gold) else 0.0
        rewards.append(right - 0.05 * max(len(text.split()) - 5, 0))
    return rewards


args = example_args(__doc__, steps=30)
run = tunestack.grpo(model=args.model, dataset="arith#200", reward_funcs=[correct_and_short, "accuracy"],
                     num_generations=4, per_device_train_batch_size=4, max_completion_length=24,
                     max_steps=args.max_steps, output_dir=f"{args.workdir}/grpo")
print(run.status, "mean reward:", [round(m["reward"], 3) for m in run.metrics if "reward" in m])
