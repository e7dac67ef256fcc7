"""Self-cognition: teach the model its own name and author with the built-in data set, then ask it who it is."""

import tunestack
from _common import example_args

args = example_args(__doc__, steps=60)
run = tunestack.sft(model=args.model, dataset="self-cognition", model_name="Nova", model_author="Acme Labs",
                    max_steps=args.max_steps, output_dir=f"{args.workdir}/nova")
print(f"final loss {run.final_loss:.3f}")
print(run.chat("What is your name?", max_new_tokens=24))
