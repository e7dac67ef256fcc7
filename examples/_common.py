"""What every example takes: the model (the embedded default, or any name), the step budget and a work folder.
The test suite runs each example on a tiny model with a couple of steps, so none goes stale."""

import argparse
import tempfile


def example_args(description: str, steps: int) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", default="smollm2-135m-instruct", help="model name, folder or run directory")
    parser.add_argument("--max_steps", type=int, default=steps, help="optimizer steps of each training")
    parser.add_argument("--workdir", default=None, help="where runs and exports go (default: a temporary folder)")
    args = parser.parse_args()
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="tunestack-example-")
    return args
