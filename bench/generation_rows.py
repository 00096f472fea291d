"""The generation rows before and after a change: GPT (bench/generation.py's FULL size, greedy, 256 tokens)
and T5 (bench/t5.py's FULL size, greedy, batch 8, 48 tokens), ours against transformers interleaved in one
process, 3 repeats, 1 thread. Read from stdin so that it imports the bench/ of the tree it runs in:

    for tree in OLD_CHECKOUT . OLD_CHECKOUT .; do (cd $tree && python - < /path/to/bench/generation_rows.py); done

One JSON line per run: the ratios transformers / ours (higher = ours faster), same-token checks, load averages.
"""
import json
import os
import warnings

import torch

from bench import generation, t5
from bench.gpt_train import hf_gpt2, ours_from_hf
from bench.timing import interleaved, ratio

torch.set_num_threads(1)
load = os.getloadavg()
size = generation.FULL
hf = hf_gpt2(size).eval()
ours = ours_from_hf(hf).eval()
prompt = torch.randint(1, size["vocab_size"], (1, size["prompt"]), generator=torch.Generator().manual_seed(0))
new = size["new_tokens"]
same = torch.equal(generation.hf_generate(hf, prompt, new), generation.ours_generate(ours, prompt, new))
g = interleaved({"transformers": lambda: generation.hf_generate(hf, prompt, new),
                 "ours": lambda: generation.ours_generate(ours, prompt, new)}, repeats=3, steps=1, warmup=1)
size = t5.FULL
hf5, ours5 = t5.models(size)
hf5.eval(), ours5.eval()
source = torch.randint(2, size["vocab_size"], (size["generation_batch"], size["source_length"]),
                       generator=torch.Generator().manual_seed(1))
n5 = size["new_tokens"]


def hf_t5():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return hf5.generate(input_ids=source, attention_mask=torch.ones_like(source), max_new_tokens=n5,
                            min_new_tokens=n5, do_sample=False, num_beams=1, use_cache=True)


def ours_t5():
    return ours5.generate(source, max_new_tokens=n5, eos_token_id=-1)


same5 = torch.equal(hf_t5(), ours_t5())
tt = interleaved({"transformers": hf_t5, "ours": ours_t5}, repeats=3, steps=1, warmup=1)
print(json.dumps(dict(tree=os.getcwd(), load_before=load, load_after=os.getloadavg(),
                      gpt_same=same, gpt_ratio=ratio(g["transformers"], g["ours"]),
                      gpt_ms={k: t.median * 1e3 for k, t in g.items()},
                      t5_same=same5, t5_ratio=ratio(tt["transformers"], tt["ours"]),
                      t5_ms={k: t.median * 1e3 for k, t in tt.items()})), flush=True)
