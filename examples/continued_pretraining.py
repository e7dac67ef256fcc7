"""Continued pre-training on raw text: every token is trained on; .txt files and `text` rows both work."""

from pathlib import Path

import tunestack
from _common import example_args

args = example_args(__doc__, steps=30)
corpus = Path(args.workdir) / "corpus.txt"
corpus.write_text("Tunestack takes a language model through its whole life.\n" * 50)
run = tunestack.pt(model=args.model, dataset=str(corpus), max_length=64, max_steps=args.max_steps,
                   output_dir=f"{args.workdir}/pt")
print(run.status, run.final_loss)
