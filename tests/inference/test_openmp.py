"""The pt engine hands the CPU's OpenMP workers between threads (inference/openmp.py): a thread that submits lets go
of its workers, and the engine's thread lets go of its own when idle, so no two pools slow each other down."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from helpers import cli_env

SCRIPT = textwrap.dedent("""
    import json, os, queue, sys, time
    import torch
    from transformers import AutoModelForCausalLM
    from tunestack.inference.engine import GenerationRequest, SamplingParams
    from tunestack.inference.pt import PtEngine

    torch.set_num_threads(2)
    model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype="float32")

    def threads():
        return len(os.listdir("/proc/self/task"))

    def parallel_loop():  # 4M elements: two threads at once
        torch.ones(1 << 22).add_(1)

    engine = PtEngine(model, 0, [])
    time.sleep(0.2)
    counts = {"start": threads()}
    parallel_loop()
    counts["main ran a parallel loop"] = threads()
    outputs = queue.Queue()

    def emit(out):  # called in the engine's thread: it runs a parallel loop too
        parallel_loop()
        counts["engine busy"] = threads()
        outputs.put(out)

    engine.submit(GenerationRequest([5, 6, 7], SamplingParams(max_new_tokens=3, ignore_eos=True), emit))
    while outputs.get().finish_reason is None:
        pass
    deadline = time.monotonic() + 10
    while threads() != counts["start"] and time.monotonic() < deadline:
        time.sleep(0.05)
    counts["engine idle"] = threads()
    engine.close()
    print(json.dumps(counts))
""")


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads through Linux's /proc")
def test_threads_hand_their_openmp_workers_to_the_engine_and_back(tiny_model_dir):
    from tunestack.inference import openmp

    if not openmp._pauses():
        pytest.skip("torch runs on no GNU OpenMP runtime here")
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tiny_model_dir)], env=cli_env({"OMP_NUM_THREADS": 2}),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    start = counts["start"]
    assert counts["main ran a parallel loop"] == start + 1  # the main thread's pool: one worker
    assert counts["engine busy"] == start + 1  # submitting released it; the engine's thread has one now
    assert counts["engine idle"] == start  # and let go of it when it ran out of work
