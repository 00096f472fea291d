"""Row 3: greedy generation, batch 1, a 16-token prompt and 256 new tokens, ours
(minigpt.generate, preallocated KV cache) against transformers' generate(use_cache=True) on the
same weights. Both must produce the same tokens; the benchmark checks it.

tokens/s = new tokens / wall time of the whole call (prefill + 256 decode steps).
"""
from __future__ import annotations

import torch

from bench.gpt_train import hf_gpt2, ours_from_hf
from bench.timing import interleaved, per_repeat_ms, ratio

FULL = dict(n_layer=6, n_head=6, n_embd=384, block_size=512, vocab_size=8000, prompt=16, new_tokens=256)
QUICK = dict(n_layer=2, n_head=2, n_embd=32, block_size=64, vocab_size=100, prompt=4, new_tokens=8)


def hf_generate(model, prompt: torch.Tensor, new_tokens: int) -> torch.Tensor:
    return model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens,
                          min_new_tokens=new_tokens, do_sample=False, use_cache=True,
                          pad_token_id=0)


def ours_generate(model, prompt: torch.Tensor, new_tokens: int) -> torch.Tensor:
    return model.generate(prompt, max_new_tokens=new_tokens)


def run(quick: bool = False, repeats: int = 5) -> dict:
    size = QUICK if quick else FULL
    hf = hf_gpt2(size).eval()
    ours = ours_from_hf(hf).eval()
    new = size["new_tokens"]
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(1, size["vocab_size"], (1, size["prompt"]), generator=g)  # (1, T_0)
    # eos_token_id=0 never stops ours (not passed); min_new_tokens keeps transformers going too.
    same = torch.equal(hf_generate(hf, prompt, new), ours_generate(ours, prompt, new))
    # Opt-in: bf16 weights halve the bytes each decode step streams from memory. Greedy tokens may
    # then differ from float32 ones once two logits are within bf16 rounding; counted below.
    ours_bf16 = ours_from_hf(hf).eval().to(torch.bfloat16)
    bf16_tokens = ours_generate(ours_bf16, prompt, new)[0, prompt.size(1):]
    fp32_tokens = ours_generate(ours, prompt, new)[0, prompt.size(1):]
    bf16_agree = int((bf16_tokens == fp32_tokens).cumprod(0).sum())  # leading tokens that agree
    candidates = {
        "transformers": lambda: hf_generate(hf, prompt, new),
        "ours": lambda: ours_generate(ours, prompt, new),
        "ours bf16 weights": lambda: ours_generate(ours_bf16, prompt, new),
    }
    timings = interleaved(candidates, repeats=1 if quick else repeats, steps=1, warmup=1)
    base = timings["transformers"]
    rows = {name: dict(ms=t.median * 1e3, spread=t.spread, tokens_per_s=new / t.median, ratio=ratio(base, t))
            for name, t in timings.items()}
    return dict(row="Generation (greedy, KV cache)", size=size, target=2.0, same_tokens=same,
                bf16_leading_tokens_equal=bf16_agree,
                candidates=rows, per_repeat_ms=per_repeat_ms(timings))
