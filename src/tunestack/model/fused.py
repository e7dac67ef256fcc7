"""Fused functions for training: a Llama-like gated-SiLU MLP with its LoRA adapters, any plain LoRA layer, and
Llama-like RMSNorm.

In Llama-like families the MLP is `down(silu(gate(x)) * up(x))`. Run module by module under peft, autograd keeps
gate's output, its SiLU, up's output and their product (down's LoRA input) for every token: four tensors of the
intermediate width, about half of a small model's activation memory. The backward pass needs only gate's and up's
outputs when the product and the SiLU are recomputed from them, which costs two elementwise passes and no matmul.

peft computes a LoRA layer as `base(x) + B(A(x)) * scale`: the scaling and the addition are passes of their own
over the layer's whole output, and so is the sum of the input gradient's two terms. Accumulating the adapter's term
into the base product (`addmm`) removes them.

RMSNorm run as its modeling code writes it is five elementwise operations forward and about ten backward, each a
pass over the hidden states; `RMSNormFunction` does it in three forward and four backward, and in bf16 it keeps the
input in bf16 for the backward pass where autograd keeps an fp32 copy.
"""

from __future__ import annotations

import types

import torch
from torch import nn
from torch.nn import functional as F

FUSED_MLP_FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "smollm3")
"""Families whose decoder layers' `mlp` computes `down_proj(act_fn(gate_proj(x)) * up_proj(x))` with SiLU."""
RMS_NORM_CLASSES = ("LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm", "SmolLM3RMSNorm")
"""RMSNorm classes computing `weight * (x / sqrt(mean(x**2) + eps)).to(x.dtype)`, the norm taken in fp32."""


class FusedLoraMLP(nn.Module):
    """A gated SiLU MLP whose projections carry LoRA adapters (peft's), computed by `LoraSwiGLU` while training.

    It holds the original projections under their own names, so parameter names, saved adapters and merging are
    unchanged. Whenever the adapters are not plain single LoRA ones (merged, disabled, several active, DoRA,
    dropout, a bias) or gradients are off, it runs the module-by-module computation."""

    def __init__(self, mlp: nn.Module):
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj, self.act_fn = mlp.gate_proj, mlp.up_proj, mlp.down_proj, \
            mlp.act_fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = _lora_parts((self.gate_proj, self.up_proj, self.down_proj)) if torch.is_grad_enabled() else None
        if parts is None:
            return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))
        weights, scales = parts
        return LoraSwiGLU.apply(x, scales, _compute_dtype(x), *weights)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    kind = x.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else x.dtype


def _lora_parts(layers) -> tuple[list[torch.Tensor], tuple[float, ...]] | None:
    """(base weight, A, B) of each layer and their scalings, when every layer is a plain LoRA layer with one
    active adapter; None otherwise."""
    weights, scales = [], []
    for layer in layers:
        names = getattr(layer, "active_adapters", None)
        if not names or len(names) != 1 or layer.merged or layer.disable_adapters:
            return None
        name = names[0]
        base = layer.base_layer
        if name not in layer.lora_A or layer.use_dora.get(name) or not isinstance(layer.lora_dropout[name], nn.Identity) \
                or type(base) is not nn.Linear or base.bias is not None or layer.lora_A[name].bias is not None \
                or layer.lora_B[name].bias is not None or getattr(layer, "lora_variant", {}).get(name) is not None:
            return None
        weights += [base.weight, layer.lora_A[name].weight, layer.lora_B[name].weight]
        scales.append(float(layer.scaling[name]))
    return weights, tuple(scales)


def _lora(x, weight, a, b, scale):
    """x's projection plus its LoRA term, the term accumulated into the projection's output by the same matrix
    product (no separate scaling and addition passes over the full width); also the rank-r activation."""
    low = F.linear(x, a)
    out = F.linear(x, weight)
    flat = out.view(-1, out.shape[-1])
    flat.addmm_(low.reshape(-1, low.shape[-1]), b.t(), alpha=scale)
    return out, low


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, t.shape[-1])


def _lora_grads(grad, low, x, a, b, scale, dtype):
    """For one LoRA term `scale * (x @ A^T) @ B^T` and its output's gradient: A's and B's gradients (in their own
    dtypes) and the rank-r activation's gradient."""
    grad_b = _flat(grad).t() @ _flat(low) * scale
    grad_low = grad @ b.to(dtype) * scale
    grad_a = _flat(grad_low).t() @ _flat(x)
    return grad_a.to(a.dtype), grad_b.to(b.dtype), grad_low


def _matmuls(pairs) -> torch.Tensor:
    """The sum of the products `grad @ weight` over `pairs`, accumulated in place into the first one's output."""
    (grad, weight), *rest = pairs
    total = grad @ weight
    flat = total.view(-1, total.shape[-1])
    for grad, weight in rest:
        flat.addmm_(grad.reshape(-1, grad.shape[-1]), weight)
    return total


class LoraSwiGLU(torch.autograd.Function):
    """down(silu(gate(x)) * up(x)) with a LoRA term on each projection, saving x, gate's and up's outputs and the
    rank-r activations; SiLU and the product are recomputed in the backward pass. Each LoRA term is accumulated into
    its projection's matrix product (as are the input gradient's four terms), and the SiLU's derivative is ATen's
    own kernel, so no elementwise pass over the full width is spent on scaling or adding. All of it runs in the
    compute dtype (autocast's when on); the adapters' gradients come back in their own dtype."""

    @staticmethod
    def forward(ctx, x, scales, dtype, wg, ag, bg, wu, au, bu, wd, ad, bd):
        with torch.autocast(x.device.type, enabled=False):
            xc = x.to(dtype)
            ag_, bg_, au_, bu_, ad_, bd_ = (t.to(dtype) for t in (ag, bg, au, bu, ad, bd))
            gate, low_g = _lora(xc, wg.to(dtype), ag_, bg_, scales[0])
            up, low_u = _lora(xc, wu.to(dtype), au_, bu_, scales[1])
            out, low_d = _lora(F.silu(gate) * up, wd.to(dtype), ad_, bd_, scales[2])
        ctx.save_for_backward(xc, gate, up, low_g, low_u, low_d, wg, ag, bg, wu, au, bu, wd, ad, bd)
        ctx.scales, ctx.input_dtype = scales, x.dtype
        return out

    @staticmethod
    def backward(ctx, grad_out):
        xc, gate, up, low_g, low_u, low_d, wg, ag, bg, wu, au, bu, wd, ad, bd = ctx.saved_tensors
        sg, su, sd = ctx.scales
        dtype = xc.dtype
        with torch.autocast(xc.device.type, enabled=False):
            grad_out = grad_out.to(dtype)
            act = F.silu(gate)
            hidden = act * up  # exactly the forward's
            # down projection: out = hidden @ wd^T + (hidden @ ad^T) @ bd^T * sd
            grad_ad, grad_bd, grad_low_d = _lora_grads(grad_out, low_d, hidden, ad, bd, sd, dtype)
            del hidden
            grad_hidden = _matmuls(((grad_out, wd.to(dtype)), (grad_low_d, ad.to(dtype))))
            # as autograd differentiates silu(gate) * up: the product's two sides, then ATen's SiLU backward kernel
            grad_up = grad_hidden * act
            del act
            grad_gate = torch.ops.aten.silu_backward(grad_hidden * up, gate)
            del grad_hidden
            grads, terms = [], []
            for grad, low, w, a, b, s in ((grad_gate, low_g, wg, ag, bg, sg), (grad_up, low_u, wu, au, bu, su)):
                grad_a, grad_b, grad_low = _lora_grads(grad, low, xc, a, b, s, dtype)
                terms += [(grad, w.to(dtype)), (grad_low, a.to(dtype))]
                grads.append((grad_a, grad_b))
            grad_x = _matmuls(terms)
        (grad_ag, grad_bg), (grad_au, grad_bu) = grads
        return (grad_x.to(ctx.input_dtype), None, None, None, grad_ag, grad_bg, None, grad_au, grad_bu, None,
                grad_ad, grad_bd)


def fuse_lora_mlps(model: nn.Module) -> int:
    """Replace the MLP of every decoder layer of a FUSED_MLP_FAMILIES model whose three projections carry LoRA
    with a FusedLoraMLP; the number replaced."""
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) not in FUSED_MLP_FAMILIES or getattr(config, "hidden_act", None) != "silu":
        return 0
    swapped = 0
    for parent in list(model.modules()):
        mlp = getattr(parent, "mlp", None)
        silu = type(getattr(mlp, "act_fn", None)).__name__ in ("SiLU", "SiLUActivation")  # torch's, transformers'
        layers = [getattr(mlp, name, None) for name in ("gate_proj", "up_proj", "down_proj")]
        if silu and not isinstance(mlp, FusedLoraMLP) and _lora_parts(layers) is not None:
            parent.mlp = FusedLoraMLP(mlp)
            swapped += 1
    return swapped


class FusedRMSNorm(nn.Module):
    """An RMSNorm of one of RMS_NORM_CLASSES computed by `RMSNormFunction`; it holds the same `weight` parameter,
    so parameter names and saved weights are unchanged."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.weight, self.variance_epsilon = norm.weight, norm.variance_epsilon

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return RMSNormFunction.apply(x, self.weight, self.variance_epsilon)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.variance_epsilon}"


class RMSNormFunction(torch.autograd.Function):
    """`weight * (x * rstd).to(x.dtype)` with rstd = 1 / sqrt(mean(x**2) + eps) taken in fp32, as the modeling code
    computes it; the backward pass keeps x (in its own dtype) and rstd alone and computes in fp32."""

    @staticmethod
    def forward(ctx, x, weight, eps):
        xf = x.float()
        rstd = torch.linalg.vector_norm(xf, dim=-1, keepdim=True).square_().div_(x.shape[-1]).add_(eps).rsqrt_()
        normed = xf * rstd
        if normed.dtype == x.dtype == weight.dtype:
            out = normed.mul_(weight)
        else:
            out = weight * normed.to(x.dtype)
        ctx.save_for_backward(x, rstd, weight)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, rstd, weight = ctx.saved_tensors
        xf = x.float()
        grad_normed = (grad_out * weight).to(x.dtype).float()  # autograd's rounding of the product, in bf16 too
        # d/dx of x * rstd: rstd * g - x * rstd**3 * mean(g * x)
        coef = torch.linalg.vecdot(grad_normed, xf, dim=-1).unsqueeze(-1).mul_(rstd.pow(3)).div_(x.shape[-1])
        grad_x = torch.addcmul(grad_normed.mul_(rstd), xf, coef, value=-1).to(x.dtype)
        grad_weight = None
        if ctx.needs_input_grad[1]:
            normed = (xf * rstd).to(x.dtype)
            grad_weight = (grad_out * normed).reshape(-1, weight.shape[-1]).sum(0).to(weight.dtype)
        return grad_x, grad_weight, None


def fuse_rms_norms(model: nn.Module) -> int:
    """Replace every RMSNorm of a RMS_NORM_CLASSES class in `model` with a FusedRMSNorm; the number replaced."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child).__name__ in RMS_NORM_CLASSES and isinstance(getattr(child, "weight", None), nn.Parameter):
                setattr(parent, name, FusedRMSNorm(child))
                swapped += 1
    return swapped


class LoraLinearFunction(torch.autograd.Function):
    """x @ W^T + scale * (x @ A^T) @ B^T for one plain LoRA layer, with the adapter's term accumulated into the
    projection's matrix product, and the input gradient's two terms likewise; it keeps x and the rank-r activation,
    as peft's module-by-module computation does. It runs in the compute dtype (autocast's when on)."""

    @staticmethod
    def forward(ctx, x, scale, dtype, weight, a, b):
        with torch.autocast(x.device.type, enabled=False):
            xc = x.to(dtype)
            out, low = _lora(xc, weight.to(dtype), a.to(dtype), b.to(dtype), scale)
        ctx.save_for_backward(xc, low, weight, a, b)
        ctx.scale, ctx.input_dtype = scale, x.dtype
        return out

    @staticmethod
    def backward(ctx, grad_out):
        xc, low, weight, a, b = ctx.saved_tensors
        dtype = xc.dtype
        with torch.autocast(xc.device.type, enabled=False):
            grad_out = grad_out.to(dtype)
            grad_a, grad_b, grad_low = _lora_grads(grad_out, low, xc, a, b, ctx.scale, dtype)
            grad_x = None
            if ctx.needs_input_grad[0]:
                grad_x = _matmuls(((grad_out, weight.to(dtype)), (grad_low, a.to(dtype)))).to(ctx.input_dtype)
        return grad_x, None, None, None, grad_a, grad_b


def _fused_lora_forward(layer: nn.Module, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """A peft LoRA Linear's forward through LoraLinearFunction while it is a plain single LoRA layer and gradients
    are on; its class's own forward otherwise (merged, disabled, several adapters, DoRA, dropout, extra
    arguments)."""
    parts = _lora_parts((layer,)) if torch.is_grad_enabled() and not args and not kwargs else None
    if parts is None:
        return type(layer).forward(layer, x, *args, **kwargs)
    (weight, a, b), (scale,) = parts
    return LoraLinearFunction.apply(x, scale, _compute_dtype(x), weight, a, b)


def fuse_lora_linears(model: nn.Module) -> int:
    """Run every peft LoRA Linear layer of `model` outside a FusedLoraMLP through LoraLinearFunction, by giving the
    layer `_fused_lora_forward` as its forward (the module, its parameters and peft's merging and saving are
    untouched); the number of layers."""
    from peft.tuners.lora import Linear as LoraLinear

    inside_mlps = {id(layer) for module in model.modules() if isinstance(module, FusedLoraMLP)
                   for layer in (module.gate_proj, module.up_proj, module.down_proj)}
    fused = 0
    for module in model.modules():
        if type(module) is LoraLinear and id(module) not in inside_mlps and _lora_parts((module,)) is not None:
            if getattr(module.forward, "__func__", None) is not _fused_lora_forward:
                module.forward = types.MethodType(_fused_lora_forward, module)
            fused += 1
    return fused


def fused_lora_linears(model: nn.Module) -> int:
    """How many of `model`'s LoRA layers run through LoraLinearFunction."""
    return sum(getattr(getattr(module, "forward", None), "__func__", None) is _fused_lora_forward
               for module in model.modules())
