"""Workarounds for defects in the libraries tunestack builds on, each applied only where the defect shows."""

from __future__ import annotations

import importlib.util
import io
import os
import sys
from contextlib import contextmanager, redirect_stderr, redirect_stdout

_show_banners = True
"""Whether optional libraries' import-time banners and notes reach stderr; commands run without --debug hide them."""


def hide_library_banners() -> None:
    global _show_banners
    _show_banners = False


def import_gptqmodel_quietly() -> None:
    """Import gptqmodel, where it is installed, with its banner off stdout and the environment left as it was.

    peft imports gptqmodel whenever it is installed, to recognise its quantized layers, the first time an adapter is
    attached or loaded. gptqmodel 7.6 prints a banner, a note on the GIL and "ENV: Auto setting ..." lines on import,
    which would mix into what `tunestack infer` prints, and sets process-wide variables: PYTORCH_ALLOC_CONF,
    CUDA_DEVICE_ORDER, and (through tokenicer) HF_HOME and the hub caches under /tmp. Its output goes to stderr, or
    nowhere after `hide_library_banners()`. Every tunestack path that imports gptqmodel goes through here first."""
    if "gptqmodel" in sys.modules or importlib.util.find_spec("gptqmodel") is None:
        return
    import huggingface_hub  # noqa: F401  (reads HF_HOME once, before gptqmodel can move it)

    saved = dict(os.environ)
    printed = io.StringIO()
    with redirect_stdout(printed), redirect_stderr(printed):
        import gptqmodel  # noqa: F401  (imported for its side effects, once)
    if _show_banners:
        sys.stderr.write(printed.getvalue())
    for name in set(os.environ) - set(saved):
        del os.environ[name]
    os.environ.update(saved)


def _tied_copies(model) -> set[str]:
    """Names under which another module (a tied output layer) shares the input embedding's weight."""
    embedding = model.get_input_embeddings()
    owner = next(name for name, module in model.named_modules() if module is embedding) + ".weight"
    return {name for name, param in model.named_parameters(remove_duplicate=False)
            if param is embedding.weight and name != owner}


@contextmanager
def torchao_tied_weights_saved_once(model):
    """While saving, write a torchao-quantized embedding once even when the output layer is tied to it.

    transformers (5.23, 5.24) removes tied duplicates by their parameter names, but torchao's flattening renames
    them (`lm_head._weight_qdata`), so the int8 matrix is written twice and the reload then fails comparing the two
    (`aten.equal` is not implemented for Int8Tensor). Leaving the tied names out of the flattened state dict writes
    it once; loading ties the output layer back to it, as for any tied model."""
    import torch

    tied = _tied_copies(model)
    quantizer = getattr(model, "hf_quantizer", None)
    if not tied or quantizer is None or type(model.get_input_embeddings().weight.data) is torch.Tensor:
        yield
        return
    from torchao.prototype.safetensors.safetensors_support import flatten_tensor_state_dict

    quantizer.get_state_dict_and_metadata = lambda m: flatten_tensor_state_dict(
        {name: tensor for name, tensor in m.state_dict().items() if name not in tied})
    try:
        yield
    finally:
        del quantizer.get_state_dict_and_metadata  # the class's own method again

