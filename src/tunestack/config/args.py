"""The argument dataclasses. Each field's docstring (the `help` metadata) is what `--help` shows."""

from __future__ import annotations

import re
from dataclasses import dataclass, field


# Range checks: (test, what the flag expects). Applied to every value, from the command line, YAML or Python.
POSITIVE = (lambda v: v > 0, "a positive number")
NON_NEGATIVE = (lambda v: v >= 0, "a number >= 0")
FRACTION = (lambda v: 0 <= v < 1, "a fraction in [0, 1)")
PROBABILITY = (lambda v: 0 < v <= 1, "a number in (0, 1]")
PORT = (lambda v: 0 <= v <= 65535, "a port number in [0, 65535]")
BACKENDS = ("pt", "vllm", "sglang", "lmdeploy", "llama.cpp")
OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "sgd", "adafactor", "adamw_8bit", "paged_adamw_8bit",
              "paged_adamw_32bit", "adamw_bnb_8bit")
REPORT_TO = ("tensorboard", "wandb", "swanlab", "mlflow", "all", "none")
SHARD_SIZE = (lambda v: re.fullmatch(r"\d+\s*[KMG]i?B", v.strip(), re.IGNORECASE) is not None,
              "a size such as 2GB, 500MB or 4GiB")


def arg(default, help: str, choices: tuple | None = None, check: tuple | None = None, aliases: tuple = (),
        values: dict | None = None, **kw):
    """A dataclass field with its `--help` text and, optionally, the values it accepts.

    `aliases` are other flag names for it (the names transformers, TRL, ms-swift or LLaMA-Factory use), and `values`
    maps other spellings of a value to ours (`float32` -> `fp32`)."""
    meta = {"help": help}
    if choices:
        meta["choices"] = choices
    if check:
        meta["check"] = check
    if aliases:
        meta["aliases"] = aliases
    if values:
        meta["values"] = values
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


_DTYPE_SPELLINGS = {"float32": "fp32", "float": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16",
                    "torch.float32": "fp32", "torch.bfloat16": "bf16", "torch.float16": "fp16"}


@dataclass
class RuntimeArgs:
    """Options every command takes."""

    config: str | None = arg(None, "YAML file supplying any flag; flags on the command line win")
    debug: bool = arg(False, "show full tracebacks for errors")


@dataclass
class ModelArgs:
    """Which model to load and how."""

    model: str = arg(
        "smollm2-135m-instruct",
        "model: local directory, .gguf file, run directory, hub id (org/name) or alias (see `tunestack models`)",
        aliases=("model_name_or_path", "model_id_or_path"),
    )
    hub: str = arg("hf", "hub for hub ids", choices=("hf", "modelscope"))
    revision: str | None = arg(None, "hub revision (branch, tag or commit)")
    dtype: str = arg(
        "auto",
        "weights and compute precision; auto picks bf16 where the hardware is fast at it (CUDA; CPUs with AMX or "
        "AVX-512 BF16)",
        choices=("auto", "bf16", "fp16", "fp32"), aliases=("torch_dtype",), values=_DTYPE_SPELLINGS,
    )
    attn_implementation: str = arg(
        "auto", "attention kernel", choices=("auto", "sdpa", "eager", "flash_attention_2", "flash_attention_3",
                                             "flex_attention")
    )
    template: str | None = arg(
        None, "chat template for models without one (chatml, llama3, qwen, ...); default: the tokenizer's own"
    )
    chat_template: str | None = arg(
        None, "Jinja chat template file (.jinja) used instead of the tokenizer's own and --template; a run records it "
        "and saves it with its tokenizer, so infer, serve, eval and export of the run use it")
    trust_remote_code: bool = arg(False, "allow custom model code from the hub")
    allow_pickle: bool = arg(False, "also load weights stored as pickle files (.bin, .pt), which can run code when "
                             "loaded; by default only safetensors are read")
    max_pixels: int | None = arg(None, "vision-language models whose processor resizes to a pixel budget (the "
                                 "Qwen2-VL family): the most pixels an image keeps, larger ones scaled down in shape; "
                                 "a run saves it with its processor", check=POSITIVE, aliases=("image_max_pixels",))
    min_pixels: int | None = arg(None, "the same, the fewest pixels an image is scaled up to", check=POSITIVE,
                                 aliases=("image_min_pixels",))
    fps: float | None = arg(None, "videos: frames sampled per second of video (default 2.0, Qwen2-VL's rate); a run "
                            "saves it with its processor", check=POSITIVE, aliases=("video_fps",))
    max_frames: int | None = arg(None, "videos: the most frames sampled from one video (default 64)", check=POSITIVE,
                                 aliases=("video_maxlen",))


@dataclass
class DataArgs:
    """Which data to train on and how to turn it into token sequences."""

    dataset: list[str] = arg(
        [], "datasets: files, folders, built-ins (self-cognition, arith, arith-pref), hub ids; NAME#N samples N rows"
    )
    dataset_info: str | None = arg(None, "dataset registration YAML declaring names, files, columns and task")
    val_ratio: float = arg(0.0, "fraction of the training data held out for validation", check=FRACTION,
                           aliases=("val_size", "split_dataset_ratio"))
    val_dataset: list[str] = arg([], "explicit validation datasets (overrides --val_ratio)")
    max_length: int = arg(1024, "maximum tokens per example (and per packed row)", check=POSITIVE,
                          aliases=("cutoff_len", "max_seq_length"))
    truncation: str = arg(
        "truncate", "what to do with longer examples: cut them or drop them", choices=("truncate", "drop")
    )
    packing: bool = arg(False, "pack several examples into each row, with no attention across their boundaries")
    padding_free: bool | None = arg(
        None, "join each micro-batch's rows into one row without padding, positions restarting per example (sft and "
        "pt text rows); default: on a CPU with --attn_implementation auto, for rows of up to 1024 tokens of the "
        "Llama-like families, where it trains the same in less memory")
    streaming: bool = arg(False, "read large JSONL files lazily instead of loading them whole")
    system: str | None = arg(None, "system prompt added to conversations that have none", aliases=("default_system",))
    model_name: str | None = arg(None, "the name self-cognition data teaches the model")
    model_author: str | None = arg(None, "the author self-cognition data teaches the model")
    num_proc: int = arg(1, "processes that tokenize the rows (sft, pt) in contiguous shares; the result is the same",
                        check=POSITIVE)
    data_cache: bool = arg(True, "keep the encoded rows in the cache under a fingerprint of the rows, tokenizer, "
                           "chat template and encoding flags, and read them back when all match")
    on_bad_media: str = arg("fail", "an image that cannot be read (missing, too large, not an image, a URL that "
                            "fails): stop naming it, or skip its row and report the count", choices=("fail", "skip"))
    enable_thinking: bool | None = arg(
        None, "passed to the chat template as enable_thinking (Qwen3): false renders answers without reasoning "
        "behind an empty <think></think> block, as Qwen3 answers with thinking off; default: the template's own")


@dataclass
class TunerArgs:
    """Which parameters train."""

    tuner: str = arg("lora", "lora, dora, qlora (4-bit NF4 base) or full", choices=("lora", "dora", "qlora", "full"),
                     aliases=("finetuning_type", "train_type"))
    lora_rank: int = arg(8, "LoRA rank", check=POSITIVE, aliases=("lora_r",))
    lora_alpha: int = arg(32, "LoRA alpha (scaling = alpha / rank)", check=POSITIVE)
    lora_dropout: float = arg(
        0.0, "dropout on the LoRA input (0 skips the per-step random masks, a large CPU cost)", check=FRACTION
    )
    target_modules: list[str] = arg(["all-linear"], "modules to adapt: all-linear (every linear layer but the output "
                                    "head and, in MoE models, the routers and experts), names such as q_proj,v_proj, "
                                    "or one regular expression matched against full module names (no commas)",
                                    aliases=("lora_target", "lora_target_modules"), values={"all": "all-linear"})
    modules_to_save: list[str] = arg([], "extra modules trained in full and saved with the adapter")
    lora_experts: bool = arg(False, "MoE models (Qwen3-MoE, Mixtral): also adapt every expert's MLP weights; by "
                             "default adapters skip the experts (the routers are never adapted)")
    continue_adapter: bool = arg(
        False, "with --model RUN_DIR of an adapter run: keep training that adapter instead of merging it into the "
        "base and training a new one on top")
    freeze_vision: bool = arg(True, "vision-language models: keep the vision tower frozen; --freeze_vision false "
                              "trains it in full (or, with --lora_vision, through the adapter)",
                              aliases=("freeze_vit",))
    freeze_aligner: bool = arg(False, "vision-language models: keep the aligner (the projector between the vision "
                               "tower and the language model) frozen; by default it trains in full")
    freeze_language: bool = arg(False, "vision-language models: leave the language model untouched (no adapter, no "
                                "training), so its text answers stay exactly as they were", aliases=("freeze_llm",))
    lora_vision: bool = arg(False, "vision-language models: adapt the vision tower's linear layers too (LoRA on the "
                            "language model only by default)")


@dataclass
class TrainArgs:
    """The optimisation loop (names follow transformers' TrainingArguments)."""

    output_dir: str | None = arg(None, "run directory (default: runs/COMMAND-TIMESTAMP)")
    learning_rate: float | None = arg(
        None, "peak learning rate (default: the method's own; sft and pt: 1e-4 for adapters, 1e-5 for full)",
        check=POSITIVE)
    num_train_epochs: float = arg(3.0, "epochs over the training data", check=NON_NEGATIVE)
    max_steps: int = arg(-1, "stop after this many optimizer steps (overrides epochs when > 0)")
    per_device_train_batch_size: int = arg(4, "examples (or packed rows) per step and device", check=POSITIVE)
    per_device_eval_batch_size: int = arg(4, "examples per evaluation batch", check=POSITIVE)
    gradient_accumulation_steps: int = arg(1, "micro-batches per optimizer step", check=POSITIVE)
    lr_scheduler_type: str = arg("cosine", "learning-rate schedule (any transformers scheduler name)")
    warmup_ratio: float = arg(0.03, "fraction of steps spent warming up", check=FRACTION)
    weight_decay: float = arg(0.0, "AdamW weight decay", check=NON_NEGATIVE)
    max_grad_norm: float = arg(1.0, "gradient clipping norm", check=POSITIVE)
    seed: int = arg(42, "random seed for data order, dropout and initialisation")
    bf16: bool | None = arg(None, "force bf16 on or off (default: --dtype decides)")
    gradient_checkpointing: bool = arg(False, "recompute activations to save memory")
    optim: str = arg("adamw_torch", "optimizer (transformers' names): adamw_torch, adamw_torch_fused, sgd, adafactor; "
                     "with bitsandbytes: adamw_8bit, paged_adamw_8bit, paged_adamw_32bit", choices=OPTIMIZERS)
    neftune_noise_alpha: float | None = arg(None, "NEFTune: add uniform noise of this scale to the input embeddings "
                                            "while training (e.g. 5)", check=POSITIVE)
    use_liger_kernel: bool = arg(False, "Liger's fused Triton kernels (RMSNorm, SwiGLU, rotary, fused linear "
                                 "cross-entropy); CUDA only, needs `pip install liger-kernel`")
    fused_mlp: bool = arg(True, "with LoRA on a Llama-like model (llama, mistral, qwen2, qwen3, smollm3), run each MLP "
                          "and its adapters as one function that recomputes the activation in the backward pass: the "
                          "same results with half the MLP's activation memory (one process, without --torch_compile)")
    fused_lora: bool = arg(True, "run each plain LoRA layer as one function that accumulates the adapter's term into "
                           "the layer's matrix product instead of scaling and adding it in passes of their own (one "
                           "process, without --torch_compile)")
    fused_rmsnorm: bool = arg(True, "on a Llama-like model, run each RMSNorm as one function with a hand-written backward "
                              "pass: the same results to rounding, 3x faster in fp32 (one process, without "
                              "--torch_compile)")
    torch_compile: bool = arg(
        False, "compile the model with torch.compile (inductor) for training; where inductor cannot compile, one "
        "warning and eager mode; the compile time is recorded in run.json apart from training")
    logging_steps: int = arg(5, "log metrics every N steps", check=POSITIVE)
    save_steps: int = arg(100, "write a resumable checkpoint every N steps", check=POSITIVE)
    save_total_limit: int = arg(2, "complete checkpoints kept", check=POSITIVE)
    eval_steps: int | None = arg(
        None, "evaluate every N steps (default: at save steps when there is validation data)", check=POSITIVE
    )
    resume: bool = arg(False, "continue from the latest complete checkpoint in --output_dir")
    auto_plan: bool = arg(False, "estimate memory first (as `tunestack estimate`) and, when the run does not fit, "
                          "apply the cheapest change that does; recorded in run.json (sft and pt)")
    overwrite_output_dir: bool = arg(False, "start afresh even if --output_dir holds a run")
    dataloader_num_workers: int = arg(0, "data loading worker processes", check=NON_NEGATIVE)
    loss_func: str | None = arg(
        None, "PATH.py:FUNCTION computing the training loss instead of cross-entropy (sft, pt): "
        "fn(outputs, labels, num_items_in_batch) -> scalar tensor, as transformers' compute_loss_func",
        aliases=("compute_loss_func",))
    metrics: str | None = arg(
        None, "PATH.py:FUNCTION computing metrics at each evaluation (sft, pt): fn(eval_prediction) -> dict of "
        "numbers, as transformers' compute_metrics; predictions are the predicted token ids aligned with label_ids",
        aliases=("compute_metrics",))
    callbacks: list[str] = arg(
        [], "PATH.py:CLASS of transformers TrainerCallback subclasses, constructed with no arguments")
    report_to: list[str] = arg(
        ["tensorboard"], "experiment trackers: tensorboard (into the run directory), wandb, swanlab, mlflow, all "
        "(those installed) or none; the run is named after its directory", choices=REPORT_TO)
    eval_tasks: list[str] = arg(
        [], "after training, evaluate final/ on these tasks (as `tunestack eval --tasks`); the report goes to eval/"
    )
    eval_task_data: list[str] = arg([], "TASK=PATH: local data for --eval_tasks (as `tunestack eval --task_data`)")
    eval_limit: int | None = arg(None, "at most N questions per task for --eval_tasks", check=POSITIVE)


ZERO_STAGES = ("zero1", "zero2", "zero3", "zero3_offload")
DEEPSPEED = (lambda v: v in ZERO_STAGES or v.lower().endswith(".json"), "zero1, zero2, zero3, zero3_offload or a "
             "DeepSpeed config file (.json)")
GPU_TYPES = ("t4", "v100", "a10g", "l4", "rtx3090", "rtx4090", "a100-40gb", "a100-80gb", "h100", "h200")


@dataclass
class PlanArgs:
    """The device a memory and time estimate is made for, and how it is reported."""

    device: str | None = arg(None, "device to plan for (default: cuda when a GPU is visible, else cpu)",
                             choices=("cpu", "cuda"))
    gpus: int | None = arg(
        None, "GPUs available; recommendations may raise --nproc up to this (default: the visible GPUs, at least "
        "--nproc)", check=POSITIVE)
    gpu_type: str | None = arg(None, "GPU model: sets --gpu_memory and the peak FLOP/s (default: the visible GPU's)",
                               choices=GPU_TYPES)
    gpu_memory: float | None = arg(None, "memory of each GPU in GiB (overrides --gpu_type's)", check=POSITIVE)
    peak_tflops: float | None = arg(
        None, "dense peak TFLOP/s of one device in the compute precision (default: --gpu_type's; on CPU a short "
        "matmul probe)", check=POSITIVE)
    efficiency: float | None = arg(
        None, "fraction of the peak FLOP/s training achieves (default: 0.4 on GPUs, 0.25 on CPUs)", check=PROBABILITY)
    measure: bool = arg(False, "time a few real training steps on this machine instead of using the peak FLOP/s")
    measure_steps: int = arg(3, "optimizer steps timed by --measure, after one warm-up step", check=POSITIVE)
    json: bool = arg(False, "print one JSON object (for tools) instead of the table")


@dataclass
class ParallelArgs:
    """Several processes or machines: DDP by default, FSDP2 or DeepSpeed ZeRO on request."""

    nproc: int = arg(1, "training processes on this machine, launched with torchrun (one per GPU; on CPU, gloo)",
                     check=POSITIVE)
    nnodes: int = arg(1, "machines taking part (run the same command on each, with its own --node_rank)",
                      check=POSITIVE)
    node_rank: int = arg(0, "this machine's index among --nnodes (0 writes the run directory)", check=NON_NEGATIVE)
    master_addr: str = arg("127.0.0.1", "address of the machine with --node_rank 0")
    master_port: int = arg(29500, "free port on the machine with --node_rank 0", check=PORT)
    tp: int = arg(1, "tensor parallelism: split each layer's weights over this many processes with transformers' "
                  "tp_plan (models that define one: Llama, Qwen, Mistral, Gemma, ...); equals --nproc", check=POSITIVE)
    fsdp: bool = arg(False, "shard parameters, gradients and optimizer states with FSDP2 (through accelerate)")
    fsdp_offload: bool = arg(False, "with --fsdp: keep parameters and optimizer states in CPU memory")
    deepspeed: str | None = arg(
        None, "DeepSpeed ZeRO: zero1, zero2, zero3, zero3_offload (shipped configs whose `auto` values come from "
        "the run's flags) or a DeepSpeed JSON file; needs `pip install 'tunestack[deepspeed]'`", check=DEEPSPEED)


@dataclass
class DecodingArgs:
    """Decoding speed (pt backend). Speculative decoding: drafted tokens checked by one forward pass of the model
    while a single sequence is generating; greedy output is unchanged and sampling keeps its distribution. Compiled
    decoding: each step through torch.compile over a static KV cache."""

    torch_compile: bool = arg(
        False, "compile the decoding step with torch.compile (inductor) over a static KV cache whose batch size and "
        "length come in power-of-two buckets, each compiled once at its first step (seconds reported); prefill "
        "stays eager. Pays on GPUs; on a CPU only a lone sequence runs compiled (batches are faster eagerly there; "
        "see the README). Where inductor cannot compile: one warning, then eager decoding")

    prompt_lookup_tokens: int = arg(
        0, "draft this many tokens by prompt lookup (the continuation of the latest earlier occurrence of the last "
        "few tokens): fast when answers repeat their input; 0: off", check=NON_NEGATIVE,
        aliases=("prompt_lookup_num_tokens",))
    draft_model: str | None = arg(
        None, "a small model sharing the model's tokenizer that drafts --num_speculative_tokens tokens a step "
        "(alias, local folder or hub id)", aliases=("assistant_model",))
    num_speculative_tokens: int = arg(4, "tokens the --draft_model drafts each step", check=POSITIVE)


@dataclass
class InferArgs(DecodingArgs):
    """Generation from a model or run directory."""

    adapter: list[str] = arg([], "LoRA adapter directories applied on top of --model")
    prompt: str | None = arg(None, "answer this one prompt and print only the answer")
    image: list[str] = arg([], "images for --prompt, for a vision-language model: image files or http(s) URLs "
                           "(repeat the flag or give a comma list); in the terminal chat, /image PATH")
    audio: list[str] = arg([], "audio clips for --prompt, for an audio-language model (Qwen2-Audio): wav, flac, mp3 "
                           "or ogg files or http(s) URLs (repeat the flag or give a comma list); in the terminal "
                           "chat, /audio PATH")
    video: list[str] = arg([], "videos for --prompt, for a video-language model (the Qwen2-VL family): files or "
                           "http(s) URLs, sampled by --fps and --max_frames; in the terminal chat, /video PATH")
    score: bool = arg(False, "score instead of generating, with a reward model (a `tunestack rm` run): --prompt "
                      "(with --response), or each --input row (prompt/response, messages or prompt/chosen/rejected)")
    response: str | None = arg(None, "with --score and --prompt: the answer to score")
    input: str | None = arg(None, "JSONL file of prompts (`messages`, `prompt`, `query` or `instruction` rows)")
    output: str | None = arg(None, "where --input's answers go (JSONL)")
    system: str | None = arg(None, "system prompt")
    max_new_tokens: int = arg(512, "maximum tokens generated per answer", check=POSITIVE)
    temperature: float = arg(0.0, "sampling temperature; 0 is greedy", check=NON_NEGATIVE)
    top_p: float = arg(1.0, "nucleus sampling probability mass", check=PROBABILITY)
    top_k: int = arg(0, "sample from the k most likely tokens (0: no limit)", check=NON_NEGATIVE)
    repetition_penalty: float = arg(1.0, "penalty on repeated tokens (1.0: none)", check=POSITIVE)
    seed: int = arg(42, "random seed for sampling")
    backend: str = arg("pt", "inference engine (vllm, sglang, lmdeploy and llama.cpp need their extra installed)",
                       choices=BACKENDS)
    batch_size: int = arg(8, "prompts generated together with --input", check=POSITIVE)
    enable_thinking: bool | None = arg(
        None, "passed to the chat template as enable_thinking (Qwen3): false opens each answer with an empty "
        "<think></think> block, so the model answers without reasoning; default: the template's own")
    resume: bool = arg(False, "with --input and --output: keep the answers already in --output and answer the rest")
    allow_pickle: bool = arg(
        False, "also load model and adapter weights from pickle files (.bin, .pt), which can run code when loaded; "
        "by default only safetensors load")


@dataclass
class ServeArgs(DecodingArgs):
    """The OpenAI-compatible HTTP server."""

    adapter: list[str] = arg(
        [], "LoRA adapters served beside the base model, each as NAME=PATH (adapter or run directory); a request "
        "picks one with `model: NAME`")
    host: str = arg("127.0.0.1", "address to bind (0.0.0.0 exposes the server to the network)")
    port: int = arg(8000, "port to listen on", check=PORT)
    api_key: str | None = arg(
        None, "require `Authorization: Bearer KEY` on every endpoint but /health; the environment variable "
        "TUNESTACK_API_KEY gives it too, out of sight of the process list")
    api_key_file: str | None = arg(None, "file of accepted API keys, one per line (with or instead of --api_key)")
    served_model_name: str | None = arg(None, "the name clients send as `model` (default: --model as given)")
    backend: str = arg("pt", "inference engine (vllm, sglang, lmdeploy and llama.cpp need their extra installed)",
                       choices=BACKENDS)
    max_concurrency: int = arg(32, "sequences generated together in one batch", check=POSITIVE)
    max_queue: int = arg(64, "sequences waiting for a batch slot; beyond it requests get 429", check=NON_NEGATIVE)
    max_model_len: int | None = arg(
        None, "context length (prompt + completion); a longer prompt gets a 400; default: the model's", check=POSITIVE)
    default_max_tokens: int = arg(512, "completion tokens when a request gives no max_tokens", check=POSITIVE)
    enable_thinking: bool | None = arg(
        None, "passed to the chat template as enable_thinking (Qwen3): false opens each answer with an empty "
        "<think></think> block, so the model answers without reasoning; default: the template's own; a request's "
        "chat_template_kwargs override it")
    max_request_bytes: int = arg(16 * 2**20, "largest request body accepted; bigger ones get 413", check=POSITIVE)
    request_timeout: float = arg(
        600.0, "seconds a request may take from admission to its last token; later it ends with 408 (a stream with a "
        "final error event); 0: no limit", check=NON_NEGATIVE)
    drain_timeout: float = arg(
        30.0, "on SIGTERM, seconds running requests get to finish before open streams are ended with an error "
        "event; new requests get 503 meanwhile, and /health says draining", check=NON_NEGATIVE)
    allow_pickle: bool = arg(
        False, "also load model and adapter weights from pickle files (.bin, .pt), which can run code when loaded; "
        "by default only safetensors load")


@dataclass
class ModelsArgs:
    """How `tunestack models` prints the aliases."""

    json: bool = arg(False, "print one JSON object (for tools) instead of the table")


@dataclass
class DownloadArgs:
    """What to fetch into the cache."""

    model: str | None = arg(None, "model to download (hub id or alias)")
    dataset: str | None = arg(None, "dataset to download (hub id)")
    hub: str = arg("hf", "hub to download from", choices=("hf", "modelscope"))
    revision: str | None = arg(None, "hub revision (branch, tag or commit)")


@dataclass
class ExportArgs:
    """What an export writes and where."""

    adapter: list[str] = arg(
        [], "adapters (PEFT adapter or run directories) merged on top of --model, in order, after a run's own"
    )
    adapter_weights: list[float] = arg(
        [], "one weight per adapter: combine them into one weighted LoRA before merging (default: merge each in full)"
    )
    merge: bool = arg(True, "merge the adapters into the weights and write a plain Hugging Face model")
    output_dir: str | None = arg(None, "folder the merged model is written to (required)")
    overwrite: bool = arg(False, "replace --output_dir if it already holds files (only once the new model is complete)")
    max_shard_size: str = arg("2GB", "largest safetensors file written; bigger models are split", check=SHARD_SIZE)
    to: str = arg(
        "hf", "format written: hf (a Hugging Face model folder), or gguf (that folder plus model-<gguf_type>.gguf "
        "for llama.cpp; llama architecture only; a model without adapters is converted as it is)",
        choices=("hf", "gguf"),
    )
    gguf_type: str = arg(
        "f16", "with --to gguf, the type of 2-D weights (norms and other 1-D weights stay f32; q8_0/q4_0 rows whose "
        "length is not a multiple of 32 are written in f16)", choices=("f32", "f16", "q8_0", "q4_0"),
    )
    quant: str | None = arg(
        None, "quantize the Hugging Face model: int8 (torchao, weight-only), int4 (torchao on CUDA, else "
        "optimum-quanto), bnb8 / bnb4 (bitsandbytes LLM.int8 / NF4), hqq (4-bit half-quadratic, calibration-free, "
        "through optimum-quanto), gptq or awq (gptqmodel, calibrated on --calib_dataset), fp8 (transformers on CUDA "
        "8.9+, else torchao); a model without adapters is quantized as it is",
        choices=("int8", "int4", "bnb8", "bnb4", "hqq", "gptq", "awq", "fp8"),
    )
    calib_dataset: list[str] = arg(
        [], "with --quant gptq/awq: datasets whose examples (rendered with the chat template) calibrate the "
        "quantization; any name --dataset takes (default: a run's own training data, else the built-in arith)"
    )
    calib_samples: int = arg(128, "with --quant gptq/awq: calibration examples used", check=POSITIVE)
    push_to_hub: str | None = arg(
        None, "upload the finished export to this hub repository (org/name) with a generated model card; --hub "
        "modelscope uploads to ModelScope"
    )
    private: bool = arg(False, "with --push_to_hub: create the repository as private")
    eval_ppl: bool = arg(True, "measure perplexity before and after the export on the same text, into export.json")
    ppl_text: str | None = arg(None, "UTF-8 .txt file --eval_ppl scores (default: a built-in held-out English passage)")


@dataclass
class EvalArgs:
    """What to evaluate, on what data, and where the report goes."""

    tasks: list[str] = arg(
        [], "tasks: mmlu, cmmlu, ceval, gsm8k, arc_easy, arc_challenge, hellaswag, bbh, math, truthfulqa_mc, "
        "humaneval, arith, self-cognition; custom_mcq:PATH, custom_qa:PATH, custom_gen:PATH; or a tasks YAML file"
    )
    url: str | None = arg(None, "evaluate a running OpenAI-compatible server at this base URL instead of --model")
    api_key: str | None = arg(None, "API key for --url")
    served_model_name: str | None = arg(None, "model name sent to --url (default: the first the server lists)")
    task_data: list[str] = arg([], "TASK=PATH: read TASK from a local file or folder in the hub dataset's schema")
    limit: int | None = arg(None, "evaluate at most N questions per task (per subject for MMLU-like tasks)",
                            check=POSITIVE)
    num_fewshot: int | None = arg(None, "few-shot examples in each prompt (default: the task's own)",
                                  check=NON_NEGATIVE)
    subjects: list[str] = arg([], "subjects of MMLU-like tasks (mmlu, cmmlu, ceval) and bbh to run (default: all)")
    batch_size: int = arg(8, "questions scored or generated together", check=POSITIVE)
    torch_compile: bool = arg(False, "generate with the decoding step compiled (as `tunestack infer --torch_compile`)")
    max_new_tokens: int | None = arg(
        None, "tokens generated per answer (default: the task's own: 1024 for humaneval, 256 otherwise)", check=POSITIVE
    )
    seed: int = arg(1234, "seed for few-shot sampling and generation")
    output_dir: str | None = arg(None, "where report.json, report.md and samples/ go (default: evals/TIMESTAMP)")
    compare: list[str] = arg(
        [], "RUN_A RUN_B: two models (or two earlier eval output folders) side by side, with the difference"
    )
    allow_code_execution: bool = arg(False, "let humaneval run model-written code (in a sandboxed subprocess)")
    code_timeout: float = arg(10.0, "seconds each humaneval program may run", check=POSITIVE)
    max_retries: int = arg(4, "retries of a failed server request (the openai client's: exponential backoff, "
                           "honouring Retry-After)", check=NON_NEGATIVE)
    model_name: str | None = arg(None, "the name the self-cognition check expects the model to give")
    model_author: str | None = arg(None, "the author the self-cognition check expects the model to give")
    resume: bool = arg(
        False, "continue a killed evaluation in --output_dir: questions already scored there (cache.jsonl, keyed by "
        "model and prompt) are not asked again")
    allow_pickle: bool = arg(
        False, "also load model and adapter weights from pickle files (.bin, .pt), which can run code when loaded; "
        "by default only safetensors load")
