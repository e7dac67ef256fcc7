"""Activation memory of one micro-batch of a Llama-like decoder: the tensors autograd keeps for backward, one by one.

Counted for transformers' Llama layers under tunestack's trainer: RMSNorm keeps its input in fp32 and its output,
the attention keeps the rotated queries, the (repeated) keys and values and, with eager attention, the softmax
scores in fp32; the MLP keeps the gate output, its SiLU, the up projection and (when the down projection trains)
their product; LoRA keeps each A output. With tunestack's fused functions (model/fused.py, on by default in one
process for the Llama-like families), RMSNorm keeps its input in its own dtype and no output, and a LoRA-adapted MLP
keeps its input, the gate output and the up projection alone. PyTorch keeps a frozen layer's weight, not its input,
so which layers train decides which inputs are kept. Logits are computed only where a target is (train/trainer.py),
in fp32 for the loss: the logits, their log-softmax and its gradient peak together at 12 bytes per element.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunestack.plan.rows import RowProfile
from tunestack.plan.setup import RunSetup
from tunestack.plan.shape import ModelShape

F32 = 4
I64 = 8


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
    """Kept outside the layers: the final norm's input (and, when they train, its output, the output layer's input
    and the embedding's token ids), the rotary cos / sin, the indices of the positions with logits and, for packed
    rows, the per-example grids' masks and indices that all layers share."""
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
    fused_norm, fused_mlp = _fused(shape, setup, trained)
    norm_input = tokens * h * (a if fused_norm else F32)  # the fused RMSNorm keeps its input as it comes
    per_layer = [
        Kept("layer input (RMSNorm)", norm_input, 2),  # before attention and before the MLP
        Kept("RMSNorm statistics", tokens * F32, 2),
        Kept("RMSNorm normalized (trained norm weights)", tokens * h * a, 2 if full and not fused_norm else 0),
        Kept("attention input", tokens * h * a, 1 if trained & {"q_proj", "k_proj", "v_proj"} else 0),
        Kept("MLP input", tokens * h * a, 1 if trained & {"gate_proj", "up_proj"} or fused_mlp else 0),
        *_attention(shape, setup, rows, trained),
        Kept("attention output", tokens * qd * a, 1 if "o_proj" in trained else 0),
        Kept("MLP gate and up" if fused_mlp else "MLP gate, SiLU and up", tokens * i * a, 2 if fused_mlp else 3),
        Kept("MLP product", tokens * i * a, 1 if "down_proj" in trained and not fused_mlp else 0),
        *_adapters(shape, setup, tokens, trained),
    ]
    layer = sum(k.bytes * k.count for k in per_layer) - norm_input  # its input is kept anyway
    first_needs_input = full or setup.checkpointing  # an adapter run's embedding output needs no gradient
    kept = [Kept(k.name, k.bytes, k.count * shape.layers) for k in per_layer if k.count]
    if not first_needs_input:
        unkept = _unkept_in_first_layer(shape, rows, trained, _attention(shape, setup, rows, trained), norm_input,
                                        fused_kernel=_grouped_by_sdpa(shape, setup, rows))
        kept.append(Kept("first layer: no gradient reaches its input", -unkept, 1))
    kept_logits = rows.batch * rows.kept
    rotary = 2 * (rows.batch if setup.attention == "packed" else 1) * rows.length * shape.head_dim * F32
    trained_outside = kept_logits * h * a + tokens * h * a + tokens * 8 if full else 0  # head input, norm, token ids
    head = norm_input + tokens * F32 + trained_outside + rotary + rows.kept * I64
    if setup.attention == "packed":  # the grids' masks, gather indices and padding, their real positions, the order
        head += rows.masked_pairs(_flash(setup)) + rows.grid_positions * (I64 + 1) + 3 * tokens * I64
    if _grouped_by_sdpa(shape, setup, rows):  # sdpa's kernel keeps the eager mask all layers share
        head += rows.batch * rows.length**2 * a
    scores = _scores(shape, setup, rows)
    transient = 2 * tokens * h * a + 3 * tokens * i * a + 2 * scores
    return Activations(kept=kept, layer=layer, inputs=shape.layers * tokens * h * a, head=head,
                       logits=_loss_logits(shape, setup, kept_logits), transient=transient)


def _loss_logits(shape: ModelShape, setup: RunSetup, positions: int) -> int:
    """Peak bytes of the loss's logits, their log-softmax and its gradient (fp32) over `positions` target
    positions: all at once, or one chunk's where the trainer computes the loss in chunks (train/trainer.py)."""
    from tunestack.model.families import LOSS_CHUNK_FROM_BYTES, LOSS_CHUNK_ROWS, PLAIN_HEAD_FAMILIES

    chunked = setup.loss_in_chunks and shape.model_type in PLAIN_HEAD_FAMILIES \
        and positions * shape.vocab * F32 >= LOSS_CHUNK_FROM_BYTES
    return (min(positions, LOSS_CHUNK_ROWS) if chunked else positions) * shape.vocab * 3 * F32


def _fused(shape: ModelShape, setup: RunSetup, trained: set[str]) -> tuple[bool, bool]:
    """Whether the run's RMSNorms and its MLPs run as model/fused.py's functions (as fuse_modules decides)."""
    from tunestack.model.fused import FUSED_MLP_FAMILIES

    llama_like = shape.model_type in FUSED_MLP_FAMILIES
    mlp = llama_like and "mlp" in setup.fused and setup.tuner == "lora" and setup.dropout == 0 \
        and {"gate_proj", "up_proj", "down_proj"} <= trained
    return llama_like and "rmsnorm" in setup.fused, mlp


def _unkept_in_first_layer(shape: ModelShape, rows: RowProfile, trained: set[str], attention: list[Kept],
                           norm_input: int, fused_kernel: bool) -> int:
    """What an adapter run's first layer does not keep, as no gradient reaches its input: its first RMSNorm keeps
    nothing (nor its second, with no attention projection trained); with no query, key or value projection trained
    its attention keeps nothing; otherwise sdpa's kernel under the grouped kernel keeps all of its inputs, and
    attention as matrix products leaves the queries unkept with a frozen key projection (and the keys with a frozen
    query projection), and the values too with both frozen."""
    size = {k.name.split(" (")[0]: k.bytes for k in attention}
    unkept = norm_input + rows.tokens * F32
    if not trained & {"q_proj", "k_proj", "v_proj", "o_proj"}:  # no gradient reaches the second RMSNorm either
        unkept += norm_input + rows.tokens * F32
    if not trained & {"q_proj", "k_proj", "v_proj"}:  # no input of the attention needs a gradient: nothing kept
        return unkept + sum(k.bytes * k.count for k in attention)
    if fused_kernel:
        return unkept
    unkept += size["queries"] if "k_proj" not in trained else 0
    unkept += size["keys and values"] if "q_proj" not in trained else 0
    unkept += size["keys and values"] if not trained & {"q_proj", "k_proj"} else 0
    return unkept


def _scores(shape: ModelShape, setup: RunSetup, rows: RowProfile) -> int:
    """Bytes of one layer's softmax scores in fp32 (none for sdpa and flash attention)."""
    if setup.attention in ("eager", "grouped eager") and not _grouped_by_sdpa(shape, setup, rows):
        return rows.batch * shape.heads * rows.length**2 * F32
    if setup.attention == "packed":
        return shape.heads * rows.masked_pairs(_flash(setup)) * F32
    return 0


def _flash(setup: RunSetup, masked: bool = False) -> int:
    """The CPU kernels' flash_from for this run's compute dtype."""
    from tunestack.model.attention import flash_from

    return flash_from(setup.compute_bytes, masked)


def _grouped_by_sdpa(shape: ModelShape, setup: RunSetup, rows: RowProfile) -> bool:
    """Whether the grouped eager kernel hands these rows to sdpa's kernel (rows of flash_from tokens or more)."""
    from tunestack.model.attention import GROUPED_FAMILIES

    return setup.attention == "grouped eager" and shape.model_type in GROUPED_FAMILIES and \
        rows.length >= _flash(setup, masked=True)


def _attention(shape: ModelShape, setup: RunSetup, rows: RowProfile, trained: set[str]) -> list[Kept]:
    """Queries, keys, values and scores the attention keeps, by kernel."""
    from tunestack.model.attention import GROUPED_FAMILIES

    a, tokens, d = setup.compute_bytes, rows.tokens, shape.head_dim
    # eager and sdpa repeat keys/values per query head; the grouped eager kernel (its families) does not
    grouped = setup.attention == "grouped eager" and shape.model_type in GROUPED_FAMILIES
    repeated = shape.kv_heads if grouped else shape.heads
    if setup.attention == "packed":  # per-example grids, examples padded to their group's longest
        grid = rows.grid_positions
        scores = _scores(shape, setup, rows)
        flash = rows.flash_positions(_flash(setup))
        return [Kept("queries (per-example grids)", grid * shape.heads * d * a, 1),
                Kept("keys and values (per-example grids)", grid * shape.kv_heads * d * a, 2),
                Kept("softmax scores (per example)", scores + (scores // 2 if a == 2 else 0), 1),
                Kept("attention kernel output and statistics (long examples)", flash * shape.heads * (d * a + F32),
                     1)]
    kept = [Kept("queries", tokens * shape.heads * d * a, 1), Kept("keys and values", tokens * repeated * d * a, 2)]
    scores = _scores(shape, setup, rows)
    if scores:  # attention as matrix products
        return kept + [Kept("softmax scores", scores + (scores // 2 if a == 2 else 0), 1)]
    # a kernel: sdpa's or flash attention; under the grouped kernel sdpa's output is laid out [batch, length, heads,
    # dim], and a trained output projection's input is that storage
    output = 0 if "o_proj" in trained and grouped else d * a
    return kept + [Kept("attention kernel output and statistics", tokens * shape.heads * (output + F32), 1)]


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
