"""Group relative policy optimisation (TRL's GRPOTrainer): sample --num_generations completions per prompt, score
them with --reward_funcs, and push each up or down by how its reward compares with its group's.

Completions come from the policy itself (CPU or GPU), or from vLLM with --use_vllm. With an adapter, the KL
reference (--beta > 0) is the policy with its adapter disabled, no second copy in memory (with --continue_adapter,
a copy of the adapter as this run found it)."""

from __future__ import annotations

import importlib.util

from tunestack.config.align import GrpoArgs
from tunestack.errors import ConfigError
from tunestack.train.lifecycle import Method, Prepared
from tunestack.train.reward_funcs import reward_functions, reward_problems
from tunestack.train.rewards import check_gold_answers


def trainer(prepared: Prepared):
    from trl import GRPOConfig, GRPOTrainer

    from tunestack.train.policy import without_adapter_copy

    grpo = prepared.method_args
    config = prepared.training_args(GRPOConfig, **sampling(prepared), loss_type=grpo.loss_type,
                                    scale_rewards=grpo.scale_rewards)
    return without_adapter_copy(GRPOTrainer(
        model=prepared.model,
        reward_funcs=reward_functions(grpo, reward_model_loader(prepared)),
        args=config,
        train_dataset=prepared.train,
        eval_dataset=prepared.val,
        processing_class=prepared.tokenizer,
    ), prepared.tuner)


def sampling(prepared: Prepared) -> dict:
    """The TRL config fields GRPO and RLOO share: sampling, clipping, KL, reward weights and the vLLM generator."""
    args = prepared.method_args
    if prepared.tuner.tuner == "full" and args.beta > 0 and prepared.run.read_manifest().get("chain"):
        # TRL would load the reference from the base's folder, without the adapters merged into this policy.
        raise ConfigError([f"--beta {args.beta} with --tuner full on an adapter run: the reference would miss that "
                           "run's adapters; export the run (`tunestack export`) and train on the export"])
    # TRL's evaluation batch counts completions, so it holds whole groups.
    groups = -(-prepared.args.per_device_eval_batch_size // args.num_generations)
    return dict(num_generations=args.num_generations, max_completion_length=args.max_completion_length,
                temperature=args.temperature, epsilon=args.epsilon, beta=args.beta,
                reward_weights=args.reward_weights or None, per_device_eval_batch_size=groups * args.num_generations,
                use_vllm=args.use_vllm, vllm_mode=args.vllm_mode, vllm_server_base_url=args.vllm_server_url)


def reward_model_loader(prepared: Prepared):
    """`load(run_dir)`: a `tunestack rm` run as a reward source, frozen, checked to share the policy's tokenizer."""
    def load(name: str):
        from tunestack.train.reward_model import load_reward_model

        return load_reward_model(name, prepared.tokenizer, prepared.extra["model_args"], flag="--reward_funcs")

    return load


def check(args, tuner, train) -> list[str]:
    """Problems with the reward sources, the batch shape and vLLM, before a model loads."""
    problems = reward_problems(args)
    batch = train.per_device_train_batch_size * train.gradient_accumulation_steps
    if batch % args.num_generations:
        problems.append(f"--num_generations {args.num_generations}: a step's completions "
                        f"(--per_device_train_batch_size {train.per_device_train_batch_size} x "
                        f"--gradient_accumulation_steps {train.gradient_accumulation_steps} = {batch}) must be a "
                        f"multiple of it; e.g. --per_device_train_batch_size {args.num_generations}")
    if args.use_vllm and importlib.util.find_spec("vllm") is None:
        problems.append("--use_vllm: vLLM is not installed: pip install 'tunestack[vllm]' (on a machine with a GPU)")
    if args.vllm_server_url and not (args.use_vllm and args.vllm_mode == "server"):
        problems.append("--vllm_server_url: used only with --use_vllm --vllm_mode server; add them or drop the URL")
    return problems


GRPO = Method("grpo", "prompts", trainer, learning_rate=(1e-5, 1e-6), check=check,
              check_data=check_gold_answers, args=GrpoArgs, generates=True)
