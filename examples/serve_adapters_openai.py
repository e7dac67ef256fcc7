"""Serving: one base model with two fine-tuned adapters behind the OpenAI API, queried with the official `openai`
client; `model` picks the base or an adapter per request. (`tunestack serve` does the same from a shell.)"""

import tunestack
from _common import example_args
from openai import OpenAI

args = example_args(__doc__, steps=30)
math = tunestack.sft(model=args.model, dataset="arith#200", max_steps=args.max_steps, output_dir=f"{args.workdir}/math")
nova = tunestack.sft(model=args.model, dataset="self-cognition", model_name="Nova", model_author="Acme Labs",
                     max_steps=args.max_steps, output_dir=f"{args.workdir}/nova")
with tunestack.serve(args.model, background=True, port=0, served_model_name="base",
                     adapter=[f"math={math.path}", f"nova={nova.path}"]) as server:
    client = OpenAI(base_url=server.url, api_key="none")
    print("models:", sorted(m.id for m in client.models.list()))
    for name, question in (("math", "What is 12 + 30?"), ("nova", "What is your name?"), ("base", "Hello!")):
        reply = client.chat.completions.create(model=name, messages=[{"role": "user", "content": question}],
                                               max_tokens=16, temperature=0)
        print(f"{name}: {reply.choices[0].message.content!r}")
