"""Peak memory of one device while training: weights, gradients, optimizer states, activations, the process around.

On a CPU the peak is the process's resident memory, so it includes what the process holds before training (Python,
torch, transformers, peft, the tokenizer and data: measured, CPU_PROCESS) and the heap memory glibc keeps after
activations are freed (CPU_HEAP_KEPT). On a GPU the peak is what torch allocates (torch.cuda.max_memory_allocated);
the CUDA context and the caching allocator's slack come on top (GPU_RESERVE) when checking that a run fits.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from tunestack.plan.activations import Activations, activations
from tunestack.plan.rows import RowProfile
from tunestack.plan.setup import RunSetup
from tunestack.plan.shape import ModelShape

MIB = 2**20
CPU_PROCESS = {"adapter": 680 * MIB, "full": 600 * MIB}
"""Resident memory of a `tunestack sft` process with its model mapped but not yet touched, measured on Linux with
torch 2.13 (CPU), transformers 5.24 and peft 0.21: adapter runs also import peft (and what it pulls in)."""
CPU_HEAP_KEPT = {False: 0.7, True: 0.4}
"""glibc serves blocks under its dynamic mmap threshold (at most 32 MiB) from its heap and keeps them once freed; the
next micro-batches cannot reuse all of it. With MALLOC_MMAP_THRESHOLD_ fixed the peak is the live memory, so this is
the allocator; how much it keeps was fitted to measured runs (benchmarks/estimate_accuracy.py): about this fraction
of the activations the layers keep without checkpointing (with checkpointing, which frees and recomputes them
layer by layer, less), in blocks under 32 MiB. The least certain term of the CPU estimate."""
GLIBC_MMAP_MAX = 32 * MIB
GPU_RESERVE = (512 * MIB, 0.05)
"""CUDA context and kernels, and the caching allocator's slack as a fraction of the peak."""
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)
"""Bytes per weight of a 4-bit NF4 layer with double quantization (block 64: 8-bit absmax, fp32 per 256 blocks)."""


@dataclass(frozen=True)
class Memory:
    """Bytes on one device at the training peak."""

    weights: int
    gradients: int
    optimizer: int
    activations: Activations
    checkpointing: bool
    gradients_in_backward: int = 0
    """Gradients already held when activations peak: all of them while accumulating, else the output layer's
    (the first weight gradient backward computes)."""
    process: int = 0
    """CPU: the process before training (Python and libraries, tokenizer, data)."""
    heap_kept: int = 0
    """CPU: freed activation memory glibc keeps."""
    gathered: int = 0
    """ZeRO-3 / FSDP: full layers gathered for compute."""
    cast_weights: int = 0
    """Full fine-tuning of fp32 weights in bf16/fp16 compute: autocast's half-precision copy of every weight a matmul
    reads, which autograd keeps for the backward pass."""
    host: int = 0
    """CPU memory holding offloaded states (not on the device)."""
    load: int = 0
    """CPU: the peak while loading (checkpoint pages and converted weights)."""
    reserve: int = 0
    """GPU: memory needed beyond the peak (CUDA context, allocator slack)."""

    @property
    def activation_bytes(self) -> int:
        return self.activations.peak(self.checkpointing)

    @property
    def peak(self) -> int:
        backward = max(self.activation_bytes + self.gradients_in_backward, self.gradients)  # then the optimizer step
        training = (self.weights + self.optimizer + backward + self.process + self.heap_kept + self.gathered
                    + self.cast_weights)
        return max(training, self.load)

    @property
    def needed(self) -> int:
        """What the device must have: the peak and the reserve."""
        return self.peak + self.reserve


def parameters(shape: ModelShape, setup: RunSetup) -> tuple[int, int]:
    """(bytes of all weights as training holds them in one process, trainable weights)."""
    saved = {"embed_tokens": shape.embedding_params, "lm_head": shape.vocab * shape.hidden}
    extra = sum(saved.get(name, 0) for name in setup.modules_to_save)
    if setup.tuner == "full":
        return shape.params * 4, shape.params
    adapter = shape.adapter_params(shape.targets(setup.targets), setup.rank, setup.tuner == "dora")
    if setup.tuner == "qlora":  # linear layers in NF4; peft casts the rest (embedding, norms, head) to fp32
        linear = shape.layers * shape.layer_linear_params
        rest = shape.params - linear
        return int(linear * NF4_BYTES) + (rest + adapter + extra) * 4, adapter + extra
    return (shape.params + extra) * setup.weight_bytes + adapter * 4, adapter + extra


def memory(shape: ModelShape, setup: RunSetup, rows: RowProfile) -> Memory:
    """The training peak of one device for `setup` on the worst micro-batch of `rows`."""
    weights, trainable = parameters(shape, setup)
    shard = setup.sharding
    mixed = shard.engine == "deepspeed" and setup.compute_bytes == 2  # bf16 weights, fp32 master copies
    if mixed:
        weights -= trainable * 2
    gradients = trainable * (2 if mixed else 4)
    optimizer = trainable * (12 if mixed else 8)  # AdamW's two moments (and DeepSpeed's fp32 master weights)
    if shard.engine == "none" and shard.world > 1:
        gradients *= 2  # DDP's reduction buckets hold a second copy
    world, host, gathered = shard.world, 0, 0
    if shard.stage >= 1:
        optimizer //= world
    if shard.stage >= 2:
        gradients //= world
    if shard.stage >= 3:
        weights //= world
        largest = shape.layer_linear_params + max(shape.embedding_params, shape.head_params)
        gathered = 2 * largest * setup.compute_bytes  # the layer computing and the one prefetched
    cast = 0
    if setup.tuner == "full" and setup.compute_bytes == 2 and not mixed and shard.stage < 3:
        cast = (shape.layers * shape.layer_linear_params + shape.vocab * shape.hidden) * 2  # the layers and the head
    if shard.offload_optimizer:
        host, optimizer = host + optimizer, 0
    if shard.offload_params:
        host, weights = host + weights, 0
        if shard.engine == "fsdp":
            host, gradients = host + gradients, 0
    acts = activations(shape, setup, rows)
    head = min(gradients, shape.vocab * shape.hidden * 4) if setup.tuner == "full" else 0
    held = gradients if setup.accumulation > 1 else head
    if setup.device == "cpu":
        if setup.tuner == "qlora" and shape.checkpoint_bytes == 4:
            # The unquantized layers are the checkpoint file's own pages (same precision), so the file stays mapped,
            # with the pages of the layers read for quantizing still resident.
            weights += shape.layers * shape.layer_linear_params * 4
        return Memory(weights, gradients, optimizer, acts, setup.checkpointing, held, host=host, gathered=gathered,
                      cast_weights=cast, process=CPU_PROCESS["adapter" if setup.adapter else "full"],
                      heap_kept=int(CPU_HEAP_KEPT[setup.checkpointing] * _heap_sized(acts)),
                      load=_load_peak(shape, setup, weights))
    found = Memory(weights, gradients, optimizer, acts, setup.checkpointing, held, host=host, gathered=gathered,
                   cast_weights=cast)
    return replace(found, reserve=GPU_RESERVE[0] + int(GPU_RESERVE[1] * found.peak))


def _heap_sized(acts: Activations) -> int:
    """Activation bytes (the layers' without checkpointing, and the logits' three tensors) in tensors small enough for
    glibc to serve from its heap."""
    small = sum(k.bytes * k.count for k in acts.kept if 0 < k.bytes < GLIBC_MMAP_MAX)
    return small + (acts.logits if acts.logits // 3 < GLIBC_MMAP_MAX else 0)


def _load_peak(shape: ModelShape, setup: RunSetup, weights: int) -> int:
    """CPU peak while loading: a checkpoint stored in another precision (or quantized on load) is read through its
    file pages, which stay resident until loading ends, beside the converted weights."""
    process = CPU_PROCESS["adapter" if setup.adapter else "full"]
    if setup.tuner != "qlora" and shape.checkpoint_bytes == setup.weight_bytes:
        return 0  # the weights are the file's pages
    return process + shape.params * shape.checkpoint_bytes + weights
