"""Proximal policy optimisation against a reward model (RLHF): sample answers with the policy, score them with
--reward_model, and improve the policy with the clipped objective on GAE advantages, a value head learning beside it.

Each training step takes one batch of prompts: a rollout (sampling, rewards, the per-token KL penalty towards the
reference, values, GAE), then --ppo_epochs updates on it; the Trainer makes the last of them, so checkpoints,
--resume and logging work as for every method. With an adapter the reference is the policy with its adapter
disabled; with --tuner full, a frozen copy of the starting weights. The value head, a linear layer on the policy's
last hidden states, is training state: checkpoints keep it, final/ holds only the policy."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import Trainer

from tunestack.config import DataArgs
from tunestack.config.align import PpoArgs
from tunestack.errors import ConfigError, DataError
from tunestack.train.lifecycle import Method, Prepared, say

VALUE_HEAD = "tunestack_value_head.safetensors"
"""The value head's file in each checkpoint (the `tunestack_` prefix keeps it out of final/)."""


def gae(rewards, values, mask, gamma: float, lam: float):
    """Advantages and returns for per-token `rewards` and `values` ([batch, tokens]); `mask` marks each row's
    completion, a prefix. A_t = d_t + gamma * lam * A_t+1 with d_t = r_t + gamma * V_t+1 - V_t, and V = 0 past the
    last token; the return is A_t + V_t."""
    advantages = torch.zeros_like(rewards)
    next_value = next_advantage = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantages[:, t] = (delta + gamma * lam * next_advantage) * mask[:, t]
        next_value, next_advantage = values[:, t] * mask[:, t], advantages[:, t]
    return advantages, advantages + values * mask


def masked_mean(x, mask):
    return (x * mask).sum() / mask.sum().clamp(min=1)


@dataclass
class Rollout:
    """One batch of sampled completions and what the update needs about them."""

    ids: torch.Tensor  # prompt (left-padded) + completion, [batch, P + C]
    attention: torch.Tensor
    prompt_length: int
    mask: torch.Tensor  # the completion's tokens, through the first end-of-turn token, [batch, C]
    logprobs: torch.Tensor  # of the policy that sampled them
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor


class PpoTrainer(Trainer):
    """A Trainer whose step is a PPO iteration: rollout, then --ppo_epochs clipped updates of policy and value head."""

    def __init__(self, *args, ppo, reward_model, ref_model=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.ppo, self.reward_model, self.ref_model = ppo, reward_model, ref_model
        hidden = self.model.config.get_text_config().hidden_size
        self.value_head = torch.nn.Linear(hidden, 1).to(self.args.device)
        torch.nn.init.zeros_(self.value_head.weight), torch.nn.init.zeros_(self.value_head.bias)
        self._metrics, self._tokens = defaultdict(list), 0
        for module in self.model.modules():  # the ratio compares the same network before and after an update
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0

    def training_step(self, model, inputs, num_items_in_batch=None):
        inputs = self._prepare_inputs(inputs)
        self.optimizer.zero_grad()  # the Trainer zeroes the model's gradients, not the value head's
        rollout = self.rollout(model, inputs)
        model.train()
        for epoch in range(self.ppo.ppo_epochs):
            with self.compute_loss_context_manager():
                loss = self.ppo_loss(model, rollout)
            self.accelerator.backward(loss)
            if epoch < self.ppo.ppo_epochs - 1:  # the Trainer makes the last update, and the step's bookkeeping
                self._clip_grad_norm(model)
                self.optimizer.step()
                self.optimizer.zero_grad()
        return loss.detach()

    @torch.no_grad()
    def rollout(self, model, inputs) -> Rollout:
        policy, ppo = self.accelerator.unwrap_model(model), self.ppo
        policy.eval()
        prompt, prompt_attention = inputs["input_ids"], inputs["attention_mask"]
        with self.compute_loss_context_manager():
            ids = policy.generate(input_ids=prompt, attention_mask=prompt_attention, do_sample=True, top_k=0,
                                  top_p=1.0, temperature=ppo.temperature, max_new_tokens=ppo.max_completion_length,
                                  use_cache=True, pad_token_id=self.processing_class.pad_token_id)
        completion, length = ids[:, prompt.shape[1]:], prompt.shape[1]
        ends = torch.isin(completion, torch.tensor(self._stop_ids(policy), device=ids.device)).int()
        mask = ((ends.cumsum(1) - ends) == 0).float()  # through the first end token
        attention = torch.cat([prompt_attention, mask.long()], dim=1)
        with self.compute_loss_context_manager():
            logprobs, values = self.forward(model, ids, attention, length)
            ref_logprobs = self.reference_logprobs(policy, ids, attention, length)
        texts = [self.processing_class.decode(c[m.bool()], skip_special_tokens=True).strip()
                 for c, m in zip(completion, mask)]
        scores = torch.tensor(self.reward_model.score([p + [{"role": "assistant", "content": t}]
                                                       for p, t in zip(inputs["prompt"], texts)]), device=ids.device)
        kl = (logprobs - ref_logprobs) * mask
        rewards = -ppo.kl_coef * kl
        rewards[torch.arange(len(ids)), mask.sum(1).long() - 1] += scores
        values = values * mask
        advantages, returns = gae(rewards, values, mask, ppo.gamma, ppo.lam)
        mean = masked_mean(advantages, mask)
        advantages = (advantages - mean) * torch.rsqrt(masked_mean((advantages - mean) ** 2, mask) + 1e-8) * mask
        self._tokens += int(attention.sum())
        self._record(reward=scores.mean(), reward_std=scores.std(correction=0), kl=kl.sum(1).mean(),
                     completion_length=mask.sum(1).mean())
        return Rollout(ids, attention, length, mask, logprobs, values, advantages, returns)

    def forward(self, model, ids, attention, prompt_length: int):
        """Log-probabilities of the completion tokens (at the sampling temperature) and the values before each."""
        positions = (attention.cumsum(1) - 1).clamp(min=0)
        out = model(input_ids=ids, attention_mask=attention, position_ids=positions, output_hidden_states=True,
                    use_cache=False, logits_to_keep=ids.shape[1] - prompt_length + 1)
        return (self._logprobs(out.logits, ids, prompt_length),
                self.value_head(out.hidden_states[-1][:, prompt_length - 1:-1].float()).squeeze(-1))

    def reference_logprobs(self, policy, ids, attention, prompt_length: int):
        positions = (attention.cumsum(1) - 1).clamp(min=0)
        kept = ids.shape[1] - prompt_length + 1
        if self.ref_model is not None:
            logits = self.ref_model(input_ids=ids, attention_mask=attention, position_ids=positions,
                                    logits_to_keep=kept).logits
        else:
            with policy.disable_adapter():
                logits = policy(input_ids=ids, attention_mask=attention, position_ids=positions,
                                logits_to_keep=kept).logits
        return self._logprobs(logits, ids, prompt_length)

    def _logprobs(self, logits, ids, prompt_length: int):
        """Log-probabilities of the completion tokens from the logits of the positions before each (and the last)."""
        logits = logits[:, -(ids.shape[1] - prompt_length) - 1:-1].float() / self.ppo.temperature
        return logits.log_softmax(-1).gather(-1, ids[:, prompt_length:, None]).squeeze(-1)

    def ppo_loss(self, model, r: Rollout):
        ppo, mask = self.ppo, r.mask
        logprobs, values = self.forward(model, r.ids, r.attention, r.prompt_length)
        ratio = torch.exp(logprobs - r.logprobs)
        unclipped, clipped = -r.advantages * ratio, -r.advantages * ratio.clamp(1 - ppo.cliprange, 1 + ppo.cliprange)
        policy_loss = masked_mean(torch.max(unclipped, clipped), mask)
        values_clipped = r.values + (values - r.values).clamp(-ppo.cliprange_value, ppo.cliprange_value)
        value_losses = torch.max((values - r.returns) ** 2, (values_clipped - r.returns) ** 2)
        value_loss = 0.5 * masked_mean(value_losses, mask)
        self._record(policy_loss=policy_loss, value_loss=value_loss, clip_ratio=masked_mean(clipped > unclipped, mask),
                     value_clip_ratio=masked_mean((values - r.returns) ** 2 < value_losses, mask),
                     approx_kl=0.5 * masked_mean((logprobs - r.logprobs) ** 2, mask))
        return policy_loss + ppo.vf_coef * value_loss

    def _stop_ids(self, policy) -> list[int]:
        configured = getattr(policy.generation_config, "eos_token_id", None)
        ids = set(configured if isinstance(configured, list) else [configured]) | {self.processing_class.eos_token_id}
        return sorted(i for i in ids if i is not None)

    def _record(self, **figures) -> None:
        for name, value in figures.items():
            self._metrics[name].append(float(value.detach()) if torch.is_tensor(value) else float(value))

    def log(self, logs: dict, start_time=None) -> None:
        if "loss" in logs:
            logs.update({name: sum(v) / len(v) for name, v in self._metrics.items()}, num_tokens=self._tokens)
            self._metrics.clear()
        super().log(logs, start_time)

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        optimizer.add_param_group({"params": list(self.value_head.parameters()), "weight_decay": 0.0})
        return optimizer

    def _clip_grad_norm(self, model):
        parameters = [*model.parameters(), *self.value_head.parameters()]
        return self.accelerator.clip_grad_norm_(parameters, self.args.max_grad_norm)

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            from safetensors.torch import save_file

            folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
            save_file(self.value_head.state_dict(), folder / VALUE_HEAD)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        from safetensors.torch import load_file

        super()._load_from_checkpoint(resume_from_checkpoint, model)
        self.value_head.load_state_dict(load_file(Path(resume_from_checkpoint) / VALUE_HEAD))


def encode(splits, tokenizer, data: DataArgs):
    """Each prompt as the token ids the policy continues (the template's assistant opening included)."""
    from datasets import Dataset

    from tunestack.data.tokenize import generation_prompt_ids

    rows = [{"input_ids": generation_prompt_ids(tokenizer, row["prompt"]), "prompt": row["prompt"]}
            for row in splits.train]
    kept = [row for row in rows if len(row["input_ids"]) <= data.max_length]
    if not kept:
        raise DataError(f"training data: every prompt is longer than --max_length {data.max_length}; raise it")
    dropped = f"; {len(rows) - len(kept)} longer than --max_length dropped" if len(kept) < len(rows) else ""
    say(f"training data: {len(kept)} prompts, {sum(len(r['input_ids']) for r in kept):,} tokens{dropped}")
    return Dataset.from_list(kept), None, {"encoded": {"prompts": len(kept), "dropped_too_long": len(rows) - len(kept)}}


def trainer(prepared: Prepared):
    import copy

    from tunestack.train import distributed
    from tunestack.train.policy import quick_disable_adapter
    from tunestack.train.reward_model import load_reward_model

    if distributed.world_size() > 1:
        raise ConfigError(["--nproc: ppo trains in one process (its value head is not synchronised); drop --nproc"])
    ppo, pad = prepared.method_args, prepared.tokenizer.pad_token_id
    reward_model = load_reward_model(ppo.reward_model, prepared.tokenizer, prepared.extra["model_args"])
    reference = None
    if not hasattr(prepared.model, "disable_adapter"):  # full fine-tuning: a frozen copy of the starting weights
        reference = copy.deepcopy(prepared.model).eval().requires_grad_(False)
    else:
        quick_disable_adapter(prepared.model)

    def collate(rows: list[dict]) -> dict:  # prompts padded on the left, where generation continues them
        width = max(len(row["input_ids"]) for row in rows)
        return {"input_ids": torch.tensor([[pad] * (width - len(r["input_ids"])) + r["input_ids"] for r in rows]),
                "attention_mask": torch.tensor([[0] * (width - len(r["input_ids"])) + [1] * len(r["input_ids"])
                                                for r in rows]),
                "prompt": [row["prompt"] for row in rows]}

    return PpoTrainer(model=prepared.model, args=prepared.training_args(), train_dataset=prepared.train,
                      data_collator=collate, processing_class=prepared.tokenizer, ppo=ppo, reward_model=reward_model,
                      ref_model=reference)


def check(ppo, tuner, train) -> list[str]:
    problems = []
    if not ppo.reward_model:
        problems.append("--reward_model: required; a reward model run (train one: tunestack rm --model BASE "
                        "--dataset PAIRS)")
    if train.gradient_accumulation_steps != 1:
        problems.append(f"--gradient_accumulation_steps {train.gradient_accumulation_steps}: ppo updates once per "
                        "batch of rollouts (--ppo_epochs times); raise --per_device_train_batch_size instead")
    return problems


def check_data(splits, ppo) -> None:
    if splits.val is not None:
        raise ConfigError(["--val_ratio / --val_dataset: ppo does not evaluate a validation split; score held-out "
                           "answers after training (tunestack infer, then infer --score with the reward model)"])


PPO = Method("ppo", "prompts", trainer, encode=encode, learning_rate=(1e-5, 1e-6), check=check,
             check_data=check_data, args=PpoArgs, generates=True)
