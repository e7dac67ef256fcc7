"""Activation memory of one micro-batch of a Llama-like decoder: the tensors autograd keeps for backward, one by one.

Counted for transformers' Llama layers under tunestack's trainer: RMSNorm keeps its input in fp32 and its output,
the attention keeps the rotated queries, the (repeated) keys and values and, with eager attention, the softmax
scores in fp32; the MLP keeps the gate output, its SiLU, the up projection and (when the down projection trains)
their product; LoRA keeps each A output. PyTorch keeps a frozen layer's weight, not its input, so which layers
train decides which inputs are kept. Logits are computed only where a target is (train/trainer.py), in fp32 for
the loss: the logits, their log-softmax and its gradient peak together at 12 bytes per element.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunestack.plan.rows import RowProfile
from tunestack.plan.setup import RunSetup
from tunestack.plan.shape import ModelShape

F32 = 4


@dataclass(frozen=True)
class Kept:
    """One kind of tensor autograd keeps: its size and how many of it the micro-batch holds."""

    name: str
    bytes: int
    count: int


@dataclass(frozen=True)
class Activations:
    """Activation bytes of the worst micro-batch, without and with gradient checkpointing."""

    kept: list[Kept]
    """What the decoder layers keep without checkpointing."""
    layer: int
    """What one decoder layer keeps beyond its input (recomputed for its backward under checkpointing)."""
    inputs: int
    """The decoder layers' inputs: all that checkpointing keeps of them."""
    head: int
    """Kept after the last layer: the final norm's input and, when it trains, the output layer's input."""
    logits: int
    """Peak of logits, log-softmax and gradients in the loss."""
    transient: int
    """Gradients and scratch of one layer's backward, on top of what is kept."""

    @property
    def full(self) -> int:
        return sum(k.bytes * k.count for k in self.kept) + self.head + max(self.logits, self.transient)

    @property
    def checkpointed(self) -> int:
        return self.inputs + self.head + max(self.logits, self.layer + self.transient)

    def peak(self, checkpointing: bool) -> int:
        return self.checkpointed if checkpointing else self.full


def activations(shape: ModelShape, setup: RunSetup, rows: RowProfile) -> Activations:
    """What one micro-batch of `rows` keeps for backward under `setup`."""
    a, tokens = setup.compute_bytes, rows.tokens
    h, i, qd = shape.hidden, shape.intermediate, shape.heads * shape.head_dim
    trained = set(shape.linear_sizes()) if setup.tuner == "full" else set(shape.targets(setup.targets))
    full = setup.tuner == "full"
    per_layer = [
        Kept("layer input, fp32 (RMSNorm)", tokens * h * F32, 2),  # before attention and before the MLP
        Kept("RMSNorm statistics", tokens * F32, 2),
        Kept("RMSNorm normalized (trained norm weights)", tokens * h * a, 2 if full else 0),
        Kept("attention input", tokens * h * a, 1 if trained & {"q_proj", "k_proj", "v_proj"} else 0),
        Kept("MLP input", tokens * h * a, 1 if trained & {"gate_proj", "up_proj"} else 0),
        *_attention(shape, setup, rows),
        Kept("attention output", tokens * qd * a, 1 if "o_proj" in trained else 0),
        Kept("MLP gate, SiLU and up", tokens * i * a, 3),
        Kept("MLP product", tokens * i * a, 1 if "down_proj" in trained else 0),
        *_adapters(shape, setup, tokens, trained),
    ]
    layer = sum(k.bytes * k.count for k in per_layer) - tokens * h * F32  # its input is kept anyway
    first_needs_input = full or setup.checkpointing  # an adapter run's embedding output needs no gradient
    kept = [Kept(k.name, k.bytes, k.count * shape.layers) for k in per_layer if k.count]
    if not first_needs_input:
        kept.append(Kept("first layer input (no gradient)", -tokens * h * F32, 1))
    kept_logits = rows.batch * rows.kept
    head = tokens * h * F32 + (kept_logits * h * a + tokens * h * a if full else 0)
    scores = _scores(shape, setup, rows)
    transient = 2 * tokens * h * a + 3 * tokens * i * a + 2 * scores
    return Activations(kept=kept, layer=layer, inputs=shape.layers * tokens * h * a, head=head,
                       logits=kept_logits * shape.vocab * 3 * F32, transient=transient)


def _scores(shape: ModelShape, setup: RunSetup, rows: RowProfile) -> int:
    """Bytes of one layer's softmax scores in fp32 (none for sdpa and flash attention)."""
    if setup.attention == "eager":
        return rows.batch * shape.heads * rows.length**2 * F32
    if setup.attention == "packed":
        return rows.examples * shape.heads * rows.longest_example**2 * F32
    return 0


def _attention(shape: ModelShape, setup: RunSetup, rows: RowProfile) -> list[Kept]:
    """Queries, keys, values and scores the attention keeps, by kernel."""
    a, tokens, d = setup.compute_bytes, rows.tokens, shape.head_dim
    repeated = shape.heads if shape.kv_heads < shape.heads else shape.kv_heads  # eager and sdpa repeat keys/values
    if setup.attention == "packed":  # per-example grid: examples x longest example, keys/values broadcast
        grid = rows.examples * rows.longest_example
        scores = _scores(shape, setup, rows)
        return [Kept("queries (per-example grid)", grid * shape.heads * d * a, 1),
                Kept("keys and values (per-example grid)", grid * shape.kv_heads * d * a, 2),
                Kept("softmax scores (per example)", scores + (scores // 2 if a == 2 else 0), 1),
                Kept("attention mask", rows.examples * rows.longest_example**2, 1)]
    kept = [Kept("queries", tokens * shape.heads * d * a, 1), Kept("keys and values", tokens * repeated * d * a, 2)]
    if setup.attention == "eager":
        scores = _scores(shape, setup, rows)
        return kept + [Kept("softmax scores", scores + (scores // 2 if a == 2 else 0), 1)]
    return kept + [Kept("attention kernel output and statistics", tokens * shape.heads * (d * a + F32), 1)]


def _adapters(shape: ModelShape, setup: RunSetup, tokens: int, trained: set[str]) -> list[Kept]:
    """LoRA's A outputs; dropout's masked inputs; DoRA's base and adapter outputs (for the magnitude's gradient)."""
    if not setup.adapter:
        return []
    sizes = shape.linear_sizes()
    a = setup.compute_bytes
    kept = [Kept("LoRA A outputs", tokens * setup.rank * a, len(trained))]
    if setup.dropout > 0:
        kept.append(Kept("LoRA dropout inputs and masks", tokens * sum(sizes[t][0] for t in trained) * (a + 1), 1))
    if setup.tuner == "dora":
        kept.append(Kept("DoRA base and adapter outputs", 2 * tokens * sum(sizes[t][1] for t in trained) * a, 1))
    return kept
