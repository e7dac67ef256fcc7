"""Evaluation: score a model before and after fine-tuning on the built-in arithmetic check and compare the two."""

import tunestack
from _common import example_args

args = example_args(__doc__, steps=40)
run = tunestack.sft(model=args.model, dataset="arith#300", max_steps=args.max_steps, output_dir=f"{args.workdir}/run")
before = tunestack.evaluate(args.model, tasks="arith", limit=20, output_dir=f"{args.workdir}/eval-base")
after = tunestack.evaluate(run, tasks="arith", limit=20, output_dir=f"{args.workdir}/eval-run")
print("before:", before.scores["arith"], "after:", after.scores["arith"])
tunestack.evaluate(compare=[str(before.path), str(after.path)], tasks="arith", output_dir=f"{args.workdir}/compare")
print(open(f"{args.workdir}/compare/compare.md").read())
