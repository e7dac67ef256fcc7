"""QLoRA: the base model in 4-bit NF4 (bitsandbytes, which runs on CPU too), LoRA adapters trained on top."""

import tunestack
from _common import example_args

args = example_args(__doc__, steps=30)
run = tunestack.sft(model=args.model, dataset="arith#200", tuner="qlora", lora_rank=16, max_steps=args.max_steps,
                    output_dir=f"{args.workdir}/qlora")
print(run.status, f"loss {run.metrics[0]['loss']:.3f} -> {run.final_loss:.3f}")
