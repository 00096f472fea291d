"""Speculative decoding, measured: a target GPT and a small draft GPT trained on the same text.

    python -m bench.speculative --target out/target --draft out/draft [--new_tokens 256] [--gamma 4]

Greedy generation of --new_tokens tokens after a prompt of the text, batch 1, four ways on the same
weights: ours plain (minigpt.generate), ours with the draft (assistant_model=, gamma fixed), transformers'
GPT2LMHeadModel.generate and transformers' assisted generation (assistant_model=, the same gamma,
schedule "constant"). All four must give the same tokens; the script checks it. Reports the
acceptance rate a, the tokens per target forward against (1 - a^(g+1)) / (1 - a), the median
wall-clock of interleaved repeats (bench/timing.py) and the load average before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import warnings

import torch

from bench.timing import interleaved, per_repeat_ms, ratio
from common.text.auto import load_tokenizer
from minigpt import GPT


def to_transformers(model):
    """transformers' GPT2LMHeadModel with our GPT's weights (Conv1D: W^T, c_attn = [W^Q W^K W^V])."""
    import transformers
    c = model.config
    config = transformers.GPT2Config(n_layer=c.n_layer, n_head=c.n_head, n_embd=c.n_embd, n_positions=c.block_size,
                                     vocab_size=c.vocab_size, n_inner=c.n_inner, activation_function=c.activation_function,
                                     layer_norm_epsilon=c.layer_norm_epsilon, resid_pdrop=0.0, embd_pdrop=0.0,
                                     attn_pdrop=0.0, bos_token_id=None, eos_token_id=None, pad_token_id=0)
    state = {}
    ours = model.state_dict()
    for key, tensor in ours.items():
        if ".attn.key." in key or ".attn.value." in key:
            continue
        if ".attn.query." in key:
            kind = key.rsplit(".", 1)[1]
            parts = [ours[key.replace(".query.", f".{p}.")] for p in ("query", "key", "value")]
            fused = torch.cat(parts, dim=0)
            state[key.replace("attn.query", "attn.c_attn")] = fused.t().contiguous() if kind == "weight" else fused
        elif ".attn.out_proj." in key:
            state[key.replace("out_proj", "c_proj")] = tensor.t().contiguous() if key.endswith("weight") else tensor
        elif ".mlp.c_" in key and key.endswith("weight"):
            state[key] = tensor.t().contiguous()
        else:
            state[key] = tensor
    hf = transformers.GPT2LMHeadModel(config)
    missing, unexpected = hf.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith((".attn.bias", ".attn.masked_bias"))]
    assert not missing and not unexpected, (missing, unexpected)
    return hf.eval()


def run(target_dir: str, draft_dir: str, new_tokens: int = 256, gamma: int = 4, repeats: int = 5,
        prompt_text: str = "ROMEO:\n") -> dict:
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    target, draft = GPT.from_pretrained(target_dir).eval(), GPT.from_pretrained(draft_dir).eval()
    tokenizer = load_tokenizer(target_dir)
    prompt = torch.tensor([tokenizer.encode(prompt_text, add_special_tokens=False)])
    hf_target, hf_draft = to_transformers(target), to_transformers(draft)
    hf_draft.generation_config.num_assistant_tokens = gamma
    hf_draft.generation_config.num_assistant_tokens_schedule = "constant"
    # no eos on either side: every way writes new_tokens tokens (min_new_tokens would ban the eos id instead)
    hf_kwargs = dict(attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens, do_sample=False,
                     eos_token_id=None, pad_token_id=0)

    def hf_plain():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return hf_target.generate(prompt, **hf_kwargs)

    def hf_assisted():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return hf_target.generate(prompt, assistant_model=hf_draft, **hf_kwargs)

    def ours_plain():
        return target.generate(prompt, new_tokens)

    def ours_draft():
        return target.generate(prompt, new_tokens, assistant_model=draft, num_assistant_tokens=gamma)

    outputs = {name: fn() for name, fn in (("ours", ours_plain), ("ours + draft", ours_draft),
                                            ("transformers", hf_plain), ("transformers assisted", hf_assisted))}
    same = {name: torch.equal(out, outputs["ours"]) for name, out in outputs.items()}
    stats = target.generate(prompt, new_tokens, assistant_model=draft, num_assistant_tokens=gamma,
                            return_dict_in_generate=True)
    a = stats.accepted_tokens / stats.draft_tokens
    timings = interleaved({"ours": ours_plain, "ours + draft": ours_draft, "transformers": hf_plain,
                           "transformers assisted": hf_assisted}, repeats=repeats, steps=1, warmup=1)
    base = timings["ours"]
    return dict(
        target=dict(dir=target_dir, n_layer=target.config.n_layer, n_embd=target.config.n_embd,
                    parameters=target.num_parameters()),
        draft=dict(dir=draft_dir, n_layer=draft.config.n_layer, n_embd=draft.config.n_embd,
                   parameters=draft.num_parameters()),
        new_tokens=new_tokens, gamma=gamma, prompt=prompt_text, same_tokens_as_ours_plain=same,
        text=tokenizer.decode(outputs["ours"][0].tolist()),
        acceptance_rate=a, target_forwards=stats.target_forwards,
        tokens_per_target_forward=new_tokens / stats.target_forwards,
        formula_tokens_per_target_forward=(1 - a ** (gamma + 1)) / (1 - a) if a < 1 else gamma + 1,
        ms={name: t.median * 1e3 for name, t in timings.items()},
        speedup_over_ours_plain={name: ratio(base, t) for name, t in timings.items()},
        speedup_of_ours_draft_over={name: ratio(t, timings["ours + draft"]) for name, t in timings.items()},
        per_repeat_ms=per_repeat_ms(timings), threads=torch.get_num_threads(),
        loadavg_before=load_before, loadavg_after=os.getloadavg())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.speculative", description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True)
    parser.add_argument("--draft", required=True)
    parser.add_argument("--new_tokens", type=int, default=256)
    parser.add_argument("--gamma", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print(json.dumps(run(args.target, args.draft, args.new_tokens, args.gamma, args.repeats), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
