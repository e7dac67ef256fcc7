"""`--torch_compile`: the model compiled with torch.compile (inductor) for training or for the decoding step of
`infer`, `serve` and `eval`, or eager with one warning.

Whether inductor works here is tried once before the model runs, on a tiny function: without a C++ compiler (CPU) or
Triton (CUDA) it cannot, and the run goes on in eager mode after saying why. Once training runs compiled, dynamo
is set to fall back to eager for any part of the model it cannot compile (an unsupported operation) rather than
stop the run. Inductor's graph cache (on disk, `TORCHINDUCTOR_CACHE_DIR`, else its default under the temporary
folder) makes a second run of the same model and shapes compile much faster; the seconds spent compiling are
recorded in run.json apart from the training time.
"""

from __future__ import annotations

import functools


@functools.cache
def inductor_problem() -> str | None:
    """Why torch.compile cannot compile on this machine (one line), or None when it can."""
    import torch

    try:
        double = torch.compile(lambda x: x * 2 + 1, backend="inductor", fullgraph=True)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if not torch.equal(double(torch.arange(4.0, device=device)), torch.tensor([1.0, 3, 5, 7], device=device)):
            return "a compiled test function gave a wrong result"
    except Exception as error:  # inductor raises many kinds: no compiler, no Triton, a broken toolchain
        first = str(error).strip().splitlines()
        return f"{type(error).__name__}: {first[0] if first else ''}"[:300]
    finally:
        torch._dynamo.reset()
    return None


def use_torch_compile(wanted: bool, say, doing: str = "training") -> bool:
    """True when `doing` runs compiled: asked for and possible; otherwise eager, with `say` naming the cause."""
    if not wanted:
        return False
    problem = inductor_problem()
    if problem is not None:
        say(f"warning: --torch_compile: inductor cannot compile on this machine ({problem}); {doing} in eager mode")
        return False
    import torch._dynamo

    torch._dynamo.config.suppress_errors = True  # a part it cannot compile runs eagerly instead of failing the run
    return True


def compile_seconds() -> float:
    """Seconds this process has spent compiling (dynamo tracing and inductor code generation) so far."""
    try:
        from torch._dynamo.utils import compilation_time_metrics
    except ImportError:
        return 0.0
    return round(sum(compilation_time_metrics.get("_compile.compile_inner", [])), 2)
