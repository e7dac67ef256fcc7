"""Hand the CPU's OpenMP worker threads from one thread to another, so that the pt engine's thread decodes at speed.

torch's CPU build runs its parallel loops on GNU OpenMP (libgomp), which gives every thread that runs one a pool of
worker threads of its own, kept until that thread ends. Once the pools of a process hold more threads than the
machine has cores, libgomp stops spinning at its barriers (100 spins instead of 300,000) and every parallel loop
waits on a futex instead: a decoding step runs some 1,000 small parallel loops, and on a 2-core AMD EPYC the
embedded model's bf16 decoding fell from 72-76 to 36-40 tokens/s in the engine's thread once the main thread had
run one parallel loop of its own (loading, training or scoring), and stayed there for the life of the process.

`release()` frees the calling thread's pool (OpenMP 5's `omp_pause_resource_all`, soft: its workers end; the
thread gets a new pool at its next parallel loop, in microseconds). The engine calls it where the model changes
hands: a thread that submits a request lets go of its workers, and the engine's thread lets go of its own when it
runs out of work, so that a thread scoring or training between generations gets the cores at full speed too.
Elsewhere (no libgomp: Intel OpenMP, macOS, Windows) it does nothing.
"""

from __future__ import annotations

import ctypes
import functools

_SOFT = 1  # omp_pause_soft: release the threads, keep the runtime


@functools.cache
def _pauses() -> tuple:
    """`omp_pause_resource_all` of each GNU OpenMP runtime loaded in this process (none where none is)."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split(maxsplit=5)[-1].strip() for line in maps if "/libgomp" in line}
    except OSError:
        return ()
    pauses = []
    for path in sorted(paths):
        try:
            pauses.append(ctypes.CDLL(path).omp_pause_resource_all)
        except (OSError, AttributeError):  # unloadable, or a libgomp older than OpenMP 5 (GCC 9)
            continue
    return tuple(pauses)


def release() -> None:
    """End the calling thread's OpenMP worker threads (a no-op for a thread without any, or inside a parallel
    region)."""
    for pause in _pauses():
        pause(_SOFT)
