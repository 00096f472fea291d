# %% [markdown]
# # 17 · From GPT-2 to Llama
#
# The decoders trained today (Llama, Mistral, Qwen, ...) are GPT-2 (tutorial 08) with four parts
# swapped, each a few lines of math. In minigpt each one is a switch on `GPTConfig`:
#
# | switch | GPT-2 | Llama | formula |
# |---|---|---|---|
# | `position_embedding` | `learned`: h_0 = W_te[x] + W_pe[p] | `rope` | q, k rotated by p omega_i, omega_i = base^(-2i/d_k) |
# | `normalization` | `layernorm` | `rmsnorm` | x / sqrt(mean(x^2) + eps) * weight |
# | `feed_forward` | `gelu`: GELU(x W_1) W_2 | `swiglu` | (silu(x W_1) * (x W_3)) W_2 |
# | `n_kv_head` | = n_head | < n_head | n_head / n_kv_head query heads share one key/value head |
#
# plus no biases (`bias=False`) and, in most Llama checkpoints, an LM head of its own
# (`tie_word_embeddings=False`). `minigpt.config.LLAMA_SHAPE` holds the four switches and `bias=False`.
#
# Code: `common/nn/rope.py`, `common/nn/norms.py:RMSNorm`, `common/nn/blocks.py:SwiGLU`,
# `common/nn/attention.py:repeat_kv`, `minigpt/config.py`. Tests: `tests/test_llama.py` (equal to
# transformers' `LlamaForCausalLM`, and the properties checked below).
#
# Run it: `python tutorials/17_llama.py` (about 6 minutes: six 60-second trainings);
# `TUTORIAL_QUICK=1` for a few seconds.

# %%
import _setup

import time
from pathlib import Path

import torch

from common.nn.attention import repeat_kv
from common.nn.blocks import SwiGLU, silu
from common.nn.norms import RMSNorm
from common.nn.rope import apply_rope, rope_cos_sin
from common.text.char import CharTokenizer
from minigpt import GPT, GPTConfig
from minigpt.config import LLAMA_SHAPE, swiglu_width

_setup.seed(0)
torch.set_printoptions(precision=4, sci_mode=False)
QUICK = _setup.QUICK

# %% [markdown]
# ## 1. RoPE: positions as rotations
#
# GPT-2 adds a learned vector W_pe[p] to each input: the model must learn what "3 tokens back"
# means separately at every position, and it has no vector for a position past block_size.
# RoPE (Su et al. 2021) instead turns each head's query and key, viewed as d_k/2 planes, by the
# angle p omega_i in plane i, omega_i = base^(-2i/d_k) for i = 0 .. d_k/2 - 1 (Su et al. write
# theta_i; theta is the parameters in this course). A rotation by p omega then the inverse of one
# by s omega is a rotation by (p - s) omega, so the score q . k sees only the distance p - s.
# Rotations keep lengths, so no vector grows with position. We use Hugging Face's "rotate-half" order (plane i = dimensions i and
# i + d_k/2); Meta's original code pairs (2i, 2i + 1), the same function after permuting W^Q, W^K.
#
# **Predict, then run.** The same q and k, placed at positions (3, 1), (10, 8) and (107, 105):
# will the three scores q . k differ? And the norm of q after a rotation by position 50?

# %%
d = 8
q, k = torch.randn(2, 1, 1, 1, d, dtype=torch.float64)


def rotated(x, position):
    cos, sin = rope_cos_sin(torch.tensor([[position]]), d, dtype=torch.float64)  # (1, 1, d)
    return apply_rope(x, cos, sin)


for p, s in [(3, 1), (10, 8), (107, 105)]:
    score = (rotated(q, p) * rotated(k, s)).sum().item()
    print(f"q at {p:3d}, k at {s:3d} (distance {p - s}): score {score:+.6f}")
print("norm before / after rotation:", q.norm().item(), rotated(q, 50).norm().item())
scores = [(rotated(q, p) * rotated(k, s)).sum().item() for p, s in [(3, 1), (10, 8), (107, 105)]]
assert max(scores) - min(scores) < 1e-5 and abs(q.norm() - rotated(q, 50).norm()) < 1e-5  # float32 angles

# %% [markdown]
# ## 2. RMSNorm: only the rescaling
#
# LayerNorm centres (subtracts the mean), rescales and shifts. Zhang & Sennrich (2019) found the
# rescaling is what matters: RMSNorm divides by the root mean square and multiplies by a weight,
# with no mean and no bias. Fewer operations, the same training.

# %%
x = 3 * torch.randn(2, 16) + 1
rms = RMSNorm(16)(x)
print("root mean square after RMSNorm (weight = 1):", rms.pow(2).mean(-1).sqrt())
print("its mean is not 0 (no centring):", rms.mean(-1))

# %% [markdown]
# ## 3. SwiGLU: a gated feed-forward
#
# Shazeer (2020) replaced GELU(x W_1) W_2 by a product of two projections, one passed through
# silu(x) = x sigmoid(x): (silu(x W_1) * (x W_3)) W_2, in the course's row-vector form. The gate lets each hidden unit scale another
# multiplicatively. Three matrices instead of two: width 8d/3 (rounded up to a multiple of 8)
# keeps the parameter count of GPT-2's 4d-wide feed-forward.

# %%
d = 48
ffn = SwiGLU(d, swiglu_width(d))
x = torch.randn(2, 5, d)
by_hand = ffn.down_proj(silu(ffn.gate_proj(x)) * ffn.up_proj(x))
print("SwiGLU by hand == module:", torch.allclose(by_hand, ffn(x)))
print(f"d = {d}: SwiGLU width {swiglu_width(d)}, parameters {3 * d * swiglu_width(d)} vs GELU FFN {8 * d * d}")

# %% [markdown]
# ## 4. Grouped-query attention: a smaller KV cache
#
# Generating a token reads the whole KV cache of every layer; at long contexts that, not the
# weights, is the memory traffic. Ainslie et al. (2023): project only n_kv_head key/value heads and
# let n_head / n_kv_head query heads share each one (n_kv_head = 1 is multi-query attention). The
# cache shrinks by that factor; `repeat_kv` hands query head h the kv head h // (n_head / n_kv_head).

# %%
kv = torch.arange(2.0)[None, :, None, None].expand(1, 2, 1, 1)  # 2 kv heads holding 0 and 1
print("query heads 0..5 read kv heads:", repeat_kv(kv, 3)[0, :, 0, 0].tolist())
for n_kv in (6, 2, 1):
    model = GPT(GPTConfig(n_layer=4, n_head=6, n_embd=192, block_size=256, vocab_size=65, n_kv_head=n_kv))
    caches = model.new_kv_caches(1, 256)
    mib = sum(c.key.numel() + c.value.numel() for c in caches) * 4 / 2**20
    print(f"n_kv_head = {n_kv}: KV cache for 256 tokens {mib:.2f} MiB")

# %% [markdown]
# ## 5. The effect of each switch on tiny shakespeare
#
# Same data, same recipe, the same wall-clock budget for every model: GPT-2, then one switch at a
# time, then the whole Llama shape. Parameter counts stay within a few percent (RoPE drops the
# block_size x d position table, `bias=False` the biases, GQA some of W^K, W^V), printed beside
# each loss. The machine is shared, so a model that gets fewer steps in its budget shows it in the
# `steps` column; docs/results/minigpt.md has the three-seed medians of the full comparison.

# %%
DATA = _setup.ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
if DATA.is_file():
    text = DATA.read_text(encoding="utf-8")
else:  # a clone without the shared data folder: a small stand-in, so the tutorial still runs
    print(f"({DATA} not found: using a repeated verse instead)")
    text = "Shall I compare thee to a summer's day? Thou art more lovely and more temperate.\n" * 400
if QUICK:
    text = text[:60_000]
tokenizer = CharTokenizer.from_text(text)
ids = torch.tensor(tokenizer.encode(text, add_special_tokens=False))
split = int(0.9 * len(ids))
train_ids, val_ids = ids[:split], ids[split:]

BASE = dict(n_layer=2 if QUICK else 4, n_head=4, n_embd=64 if QUICK else 128, block_size=64,
            vocab_size=len(tokenizer))
VARIANTS = {
    "GPT-2": {},
    "+ RoPE": dict(position_embedding="rope"),
    "+ RMSNorm": dict(normalization="rmsnorm"),
    "+ SwiGLU": dict(feed_forward="swiglu"),
    "+ GQA (2 kv heads)": dict(n_kv_head=2),
    "Llama shape": dict(LLAMA_SHAPE),
}
BUDGET = 5.0 if QUICK else 60.0  # seconds of training per model
STEPS = 12 if QUICK else 10**9  # quick mode: at most a few steps each
BATCH, LR = 8 if QUICK else 32, 6e-3


def batch(data, generator):
    """BATCH random windows of block_size tokens; the loss shifts them by one itself."""
    starts = torch.randint(0, len(data) - BASE["block_size"], (BATCH,), generator=generator)
    return torch.stack([data[s:s + BASE["block_size"]] for s in starts.tolist()])  # (B, T)


@torch.no_grad()
def validation_loss(model, windows=BATCH if QUICK else 10 * BATCH):
    model.eval()
    generator = torch.Generator().manual_seed(1)
    losses = [model(w, labels=w).loss.item() for w in (batch(val_ids, generator) for _ in range(max(1, windows // BATCH)))]
    model.train()
    return sum(losses) / len(losses)


def train(overrides):
    _setup.seed(0)
    model = GPT(GPTConfig(**BASE, **overrides))
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.99), weight_decay=0.1)
    generator = torch.Generator().manual_seed(0)
    curve, step, start = [], 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < BUDGET and step < STEPS:
        progress = max(elapsed / BUDGET, step / STEPS)
        for group in optimizer.param_groups:  # linear decay to 0 over the budget
            group["lr"] = LR * max(0.0, 1.0 - progress)
        window = batch(train_ids, generator)
        loss = model(window, labels=window).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        if QUICK or step % 10 == 0:
            curve.append((time.perf_counter() - start, loss.item()))
    return model, curve, step


results = {}
for name, overrides in VARIANTS.items():
    model, curve, steps = train(overrides)
    results[name] = (validation_loss(model), model.num_parameters(), steps, curve)

print(f"{'model':<20} {'val loss':>8} {'params':>8} {'steps':>6}")
for name, (val, params, steps, _) in results.items():
    print(f"{name:<20} {val:8.3f} {params:8d} {steps:6d}")

plt = _setup.pyplot()
if plt is not None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, (_, _, _, curve) in results.items():
        if curve:
            ax.plot(*zip(*curve), label=name)
    ax.set_xlabel("seconds of training")
    ax.set_ylabel("training loss")
    ax.set_title(f"tiny shakespeare, {BUDGET:.0f} s each" + (" (quick mode)" if QUICK else ""))
    ax.legend()
    _setup.save_plot(fig, "17_llama_curves.png")

# %% [markdown]
# ## 6. Loading a Llama checkpoint
#
# A Hugging Face `LlamaForCausalLM` folder (config.json with `"model_type": "llama"` and
# model.safetensors) loads with `GPT.from_pretrained(folder)`: the config is mapped onto the Llama
# shape and `model.layers.N.self_attn.q_proj` becomes `transformer.h.N.attn.query`, and so on
# (`minigpt/model.py:llama_state_dict_to_minigpt`). `python -m minigpt.sample --model_name_or_path
# folder --prompt_ids 1 2 3 --greedy` then continues a prompt. tests/test_llama.py checks logits,
# loss, gradients and greedy tokens against transformers on random weights. Below, a save and load
# round trip of the Llama-shaped model trained above.

# %%
folder = _setup.OUT / "17_llama"
model.save_pretrained(folder)
again = GPT.from_pretrained(folder)
prompt = torch.tensor([tokenizer.encode("ROMEO:" if DATA.is_file() else "Shall", add_special_tokens=False)])
print(repr(tokenizer.decode(again.generate(prompt, 80 if not QUICK else 20, do_sample=True, top_k=20, seed=0)[0].tolist())))

# %% [markdown]
# ## Your turn: exercises `rms_norm`, `swiglu` and `rope`
#
# `make exercises` stubs `rms_norm` (`common/nn/norms.py`), `swiglu` (`common/nn/blocks.py`) and
# `rope` (`common/nn/rope.py:apply_rope`); their tests are in tests/test_llama.py:
#
#     python -m tutorials.exercises make --out ../student --only rms_norm --only swiglu --only rope
#     cd ../student && python -m tutorials.exercises grade --only rms_norm --only swiglu --only rope
#
# Then: which plausible wrong versions would still pass the tests? (Rotating pairs (2i, 2i + 1)
# keeps norms and relative scores but fails the transformers parity test; forgetting the float32
# cast in RMSNorm changes nothing in float32 and a lot in bfloat16, the 16-bit float with
# float32's 8 exponent bits and only 7 mantissa bits: the same range, about 3 significant digits.)

# %%
from tutorials.exercises import REGISTRY

for name in ("rms_norm", "swiglu", "rope"):
    print(REGISTRY[name].pytest_command())
