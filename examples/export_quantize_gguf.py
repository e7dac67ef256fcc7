"""Export: merge a run's adapter into a plain Hugging Face model, quantize it to int8, and write a GGUF file for
llama.cpp / Ollama; each export records its size and the perplexity before and after."""

import tunestack
from _common import example_args

args = example_args(__doc__, steps=20)
run = tunestack.sft(model=args.model, dataset="arith#100", max_steps=args.max_steps, output_dir=f"{args.workdir}/run")
merged = tunestack.export(run, f"{args.workdir}/merged", to="gguf", gguf_type="q8_0")
quantized = tunestack.export(run, f"{args.workdir}/int8", quant="int8")
print("gguf:", sorted(p.name for p in merged.path.glob("*.gguf")))
print("int8 size:", quantized.sizes, "perplexity:", quantized.perplexity)
