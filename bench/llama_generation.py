"""Greedy generation of a Llama-shaped model with grouped-query attention: ours (minigpt.generate,
the decode_step fast path) against transformers' LlamaForCausalLM.generate on the same weights,
and the KV cache's memory against full multi-head attention.

    python -m bench.llama_generation            # the full size, 5 interleaved repeats
    python -m bench.llama_generation --quick    # tiny sizes, one repeat (a smoke run)
    python -m bench.llama_generation --train_step   # time per training step, GPT-2 vs Llama shape

--train_step times one AdamW step (forward, backward, update) of the minigpt.train default model
(4 layers, 4 heads, 128 wide, context 64, batch 32, 65 characters) in the GPT-2 shape and in the
Llama shape, interleaved: the factor that turns a loss at equal steps into one at equal time.

Batch 1, a 16-token prompt, 256 new tokens; tokens/s = new tokens / wall time of the whole call.
Both must produce the same tokens (checked). The KV cache figure is arithmetic, not a timing:
2 (K and V) x n_layer x n_kv_head x block_size x head_dim x 4 bytes.
"""
from __future__ import annotations

import argparse
import json
import tempfile

import torch

from bench.timing import interleaved, per_repeat_ms, ratio
from minigpt import GPT

FULL = dict(n_layer=6, n_head=8, n_kv_head=2, n_embd=384, block_size=512, vocab_size=8000, prompt=16,
            new_tokens=256)
QUICK = dict(n_layer=2, n_head=4, n_kv_head=2, n_embd=32, block_size=64, vocab_size=100, prompt=4, new_tokens=8)


def hf_llama(size: dict):
    import transformers  # the oracle: bench and tests only

    config = transformers.LlamaConfig(
        vocab_size=size["vocab_size"], hidden_size=size["n_embd"], intermediate_size=8 * -(-8 * size["n_embd"] // 24),
        num_hidden_layers=size["n_layer"], num_attention_heads=size["n_head"],
        num_key_value_heads=size["n_kv_head"], max_position_embeddings=size["block_size"],
        tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():  # perturbed: at the default init every logit is near 0 and ties are common
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model


def ours_from_hf(hf) -> GPT:
    with tempfile.TemporaryDirectory() as folder:
        hf.save_pretrained(folder)
        return GPT.from_pretrained(folder).eval()


def kv_cache_mib(model: GPT, n_kv_head: int) -> float:
    c = model.config
    return 2 * c.n_layer * n_kv_head * c.block_size * c.head_dim * 4 / 2**20


def run(quick: bool = False, repeats: int = 5, new_tokens: int = None) -> dict:
    size = dict(QUICK if quick else FULL)
    if new_tokens is not None:
        size["new_tokens"] = new_tokens
    hf = hf_llama(size)
    ours = ours_from_hf(hf)
    new = size["new_tokens"]
    prompt = torch.randint(3, size["vocab_size"], (1, size["prompt"]), generator=torch.Generator().manual_seed(0))

    def theirs_call():
        return hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new,
                           min_new_tokens=new, do_sample=False, use_cache=True, pad_token_id=0)

    def ours_call():
        return ours.generate(prompt, max_new_tokens=new)

    with torch.inference_mode():
        same = torch.equal(theirs_call(), ours_call())
    print(f"same tokens: {same}; timing {repeats} interleaved repeats", flush=True)
    timings = interleaved({"transformers": theirs_call, "ours": ours_call}, repeats=1 if quick else repeats,
                          steps=1, warmup=1)
    base = timings["transformers"]
    rows = {name: dict(ms=t.median * 1e3, spread=t.spread, tokens_per_s=new / t.median, ratio=ratio(base, t))
            for name, t in timings.items()}
    return dict(row="Llama-shaped greedy generation (GQA, KV cache)", size=size, target=2.0, same_tokens=same,
                candidates=rows, per_repeat_ms=per_repeat_ms(timings),
                kv_cache_mib=dict(gqa=kv_cache_mib(ours, size["n_kv_head"]), mha=kv_cache_mib(ours, size["n_head"])),
                threads=torch.get_num_threads())


def train_step_times(repeats: int = 5, steps: int = 5, bf16: bool = False) -> dict:
    """Median ms per training step of the two shapes, interleaved (bench/timing.py); bf16=True runs the
    forward under CPU bf16 autocast, as minigpt.train does where the CPU has native bf16."""
    from minigpt import GPTConfig
    from minigpt.config import LLAMA_SHAPE

    base = dict(n_layer=4, n_head=4, n_embd=128, block_size=64, vocab_size=65)
    batch = torch.randint(0, 65, (32, 64), generator=torch.Generator().manual_seed(0))
    candidates, params = {}, {}
    for name, overrides in (("GPT-2 shape", {}), ("Llama shape", LLAMA_SHAPE)):
        torch.manual_seed(0)
        model = GPT(GPTConfig(**base, **overrides)).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        params[name] = model.num_parameters()

        def step(model=model, optimizer=optimizer):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = model(batch, labels=batch).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        candidates[name] = step
    timings = interleaved(candidates, repeats=repeats, steps=steps, warmup=2)
    return {name: dict(ms=t.median * 1e3, spread=t.spread, parameters=params[name]) for name, t in timings.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.llama_generation")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--new_tokens", type=int, default=None, help="tokens to generate (default: 256)")
    parser.add_argument("--train_step", action="store_true", help="time training steps of the two shapes instead")
    parser.add_argument("--bf16", action="store_true", help="with --train_step: under bf16 autocast (minigpt.train's)")
    args = parser.parse_args(argv)
    if args.train_step:
        for name, row in train_step_times(args.repeats, bf16=args.bf16).items():
            print(f"{name}: {row['ms']:.1f} ms per step (±{row['spread']:.0%}), {row['parameters']:,} parameters")
        return 0
    result = run(args.quick, args.repeats, args.new_tokens)
    t, o = result["candidates"]["transformers"], result["candidates"]["ours"]
    print(f"{result['row']}, {result['size']}, {result['threads']} threads")
    print(f"  transformers {t['ms']:.1f} ms ({t['tokens_per_s']:.0f} tokens/s, ±{t['spread']:.0%})")
    print(f"  ours         {o['ms']:.1f} ms ({o['tokens_per_s']:.0f} tokens/s, ±{o['spread']:.0%})  "
          f"ratio {o['ratio']:.2f}x (target {result['target']:g}x), same tokens: {result['same_tokens']}")
    kv = result["kv_cache_mib"]
    print(f"  KV cache at block_size: {kv['gqa']:.2f} MiB with n_kv_head={result['size']['n_kv_head']}, "
          f"{kv['mha']:.2f} MiB with n_kv_head=n_head ({kv['mha'] / kv['gqa']:.0f}x)")
    print(json.dumps(result["per_repeat_ms"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
