"""SFT on your own JSONL: OpenAI-style `messages` rows (ShareGPT, Alpaca and query/response rows work too)."""

import json
from pathlib import Path

import tunestack
from _common import example_args

args = example_args(__doc__, steps=40)
rows = [{"messages": [{"role": "user", "content": f"Spell {word} backwards."},
                      {"role": "assistant", "content": word[::-1]}]} for word in ("tune", "stack", "model", "data")]
data = Path(args.workdir) / "mine.jsonl"
data.write_text("".join(json.dumps(r) + "\n" for r in rows))
run = tunestack.sft(model=args.model, dataset=str(data), max_steps=args.max_steps, learning_rate=2e-4,
                    output_dir=f"{args.workdir}/spell")
print(run.status, run.final_loss)
print(run.chat("Spell tune backwards.", max_new_tokens=8))
