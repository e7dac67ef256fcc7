"""DPO after SFT: fine-tune on arithmetic, then align the result to preference pairs. `model=` a run directory
starts from that run: its adapter is merged in memory and the DPO adapter trains on top (the reference is the SFT
model, by disabling the new adapter); infer, serve and export follow the chain."""

import tunestack
from _common import example_args

args = example_args(__doc__, steps=30)
sft = tunestack.sft(model=args.model, dataset="arith#300", max_steps=args.max_steps, output_dir=f"{args.workdir}/sft")
dpo = tunestack.dpo(model=sft, dataset="arith-pref#300", beta=0.1, max_steps=args.max_steps,
                    output_dir=f"{args.workdir}/dpo")
print("chain:", [link["run"] for link in dpo.manifest["chain"]])
print("last margin:", dpo.metrics[-1].get("rewards/margins"))
print(dpo.chat("What is 12 + 30?", max_new_tokens=16))
