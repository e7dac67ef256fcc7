"""Several processes: the same job with DDP in 2 processes (gloo on CPU, NCCL on GPUs); `fsdp=True` or
`deepspeed="zero3"` switch the engine. The losses equal one process's with the same global batch."""

import tunestack
from _common import example_args

args = example_args(__doc__, steps=20)
run = tunestack.sft(model=args.model, dataset="arith#200", nproc=2, per_device_train_batch_size=2,
                    max_steps=args.max_steps, output_dir=f"{args.workdir}/ddp")
print(run.manifest["engine"], run.manifest["processes"], "processes, final loss", run.final_loss)
