# %% [markdown]
# # 21 · What training costs
#
# Before a run starts you can know, to within a few percent, how many parameters it trains, how
# many floating-point operations each step costs and how much memory it needs. This tutorial
# predicts those numbers, checks them against measurement, and then spends less: the attention
# that never forms its T x T matrix (FlashAttention's online softmax), activation checkpointing
# (recompute instead of store), and sharding the weights over processes (FSDP). Then it spends
# better: Muon, an optimizer that gets more out of each step, and the scaling study that asks how
# big a model a given compute budget should buy.
#
# Code: `common/train/accounting.py`, `common/train/measure.py`, each family's `accounting.py`,
# `common/nn/checkpointing.py`, `common/nn/flash_attention.py`, `common/train/muon.py`,
# `bench/scaling.py`. Tests: `tests/test_accounting.py`, `tests/test_checkpointing.py`,
# `tests/test_flash_attention.py`, `tests/test_muon.py`, `tests/test_bench_scaling.py`.
# Figures: `docs/results/compute.md`. Run it: `python tutorials/21_training_costs.py` (about
# a minute); `TUTORIAL_QUICK=1` for a few seconds.

# %%
import _setup

import math

import torch

from common.nn.attention import scaled_dot_product_attention
from common.nn.flash_attention import flash_attention, online_softmax_update
from common.nn.masks import causal_mask
from common.train.measure import peak_allocated_bytes, profiled_flops
from minigpt import GPT, GPTConfig
from minigpt.accounting import estimate

_setup.seed(0)
torch.set_printoptions(precision=4, sci_mode=False)
QUICK = _setup.QUICK

# %% [markdown]
# ## 1. Counting: parameters, FLOPs, memory
#
# A Linear of fan-in k and fan-out n on m tokens does 2 m k n FLOPs forward and twice that backward
# (the gradients of its input and of its weight). Summed over the N_mat weights every token meets,
# with D = B T tokens a step, and the attention's two (T x T) products per layer:
#
#     C_step = 6 N_mat D + 12 B h T^2 d_k L
#
# Training memory in float32 with AdamW: 4 |theta| weights + 4 |theta| gradients + 8 |theta| AdamW
# state (m and v) + the activations autograd keeps for the backward pass. `estimate(config, B, T)`
# counts all of it; torch's profiler counts the FLOPs that actually ran.

# %%
config = GPTConfig(n_layer=2, n_head=4, n_embd=64, vocab_size=300, block_size=64)
model = GPT(config)
B, T = 2, 64
ids = torch.randint(0, config.vocab_size, (B, T))
cost = estimate(config, B, T)
print(cost.table())
print("parameters the model has:", sum(p.numel() for p in model.parameters()))
counted = profiled_flops(lambda: model(ids, labels=ids).loss.backward())
print(f"FLOPs the profiler counts: {counted:,} (predicted {cost.flops:,})")
model.zero_grad(set_to_none=True)

# %% [markdown]
# **Predict, then run: how much memory will this run need?** The same model with AdamW, one step at
# B = 2, T = 64. Add up weights, AdamW state and the activations (plus the first gradients of the
# backward pass) from the table above, then measure: the profiler adds up every allocation of the step.

# %%
optimizer = torch.optim.AdamW(model.parameters())


def train_step():
    model(ids, labels=ids).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


train_step()  # AdamW creates its state on the first step
measured = cost.weights + cost.adamw_state + peak_allocated_bytes(train_step)
print(f"predicted peak {cost.peak / 2**20:.2f} MiB, measured {measured / 2**20:.2f} MiB")

# %% [markdown]
# For a model you would train for real, `python -m bench.compute costs FOLDER --batch_size 8
# --seq_len 1024` prints the same table from a config.json: GPT-2 small (124M parameters) at B = 8,
# T = 1024 needs about 7 TFLOP a step and 12 GiB of activations against 1.9 GiB of weights,
# gradients and AdamW state together. The activations are what grows with the batch and the context.
#
# ## 2. Activation checkpointing: recompute instead of store
#
# `model.gradient_checkpointing_enable()` (the flag `--gradient_checkpointing` of every training
# tool) keeps only each block's input from the forward pass; the backward pass runs the block again
# to get the rest. One more forward pass (about a third of a step) buys activation memory that
# no longer grows with the layers. The random-number state at each block's start is saved and
# replayed, so dropout draws the same masks and the gradients are bit-equal.

# %%
config = GPTConfig(n_layer=4 if QUICK else 8, n_head=4, n_embd=64, vocab_size=256, block_size=128, dropout=0.1)
ids = torch.randint(0, 256, (2, 128))
kept = {}
for enabled in (False, True):
    _setup.seed(1)
    model = GPT(config)
    if enabled:
        model.gradient_checkpointing_enable()
    torch.manual_seed(2)
    peak = peak_allocated_bytes(lambda: model(ids, labels=ids).loss.backward())
    kept[enabled] = (peak, model.transformer.h[0].attn.query.weight.grad.clone())
    print(f"checkpointing {str(enabled):5s}: peak of forward + backward {peak / 2**20:.1f} MiB")
print("same gradients, dropout included:", torch.equal(kept[False][1], kept[True][1]))

# %% [markdown]
# ## 3. When a model outgrows one process: FSDP
#
# Data parallel training (DDP, `torchrun --nproc_per_node=W`) runs W processes on W slices of the
# batch and keeps a whole copy of the weights, gradients and AdamW state in each: 16 |theta| bytes
# per process. `--fsdp` shards them with torch.distributed's `fully_shard` (common/train/fsdp.py):
# each process keeps 1/W of every tensor and gathers a block's full weights just before running it.
# Same updates as DDP (tests/test_fsdp.py: equal to 1e-5 with 2 processes, each holding half).

# %%
gpt2_small = estimate(GPTConfig(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50257), 8, 1024)
state = gpt2_small.weights + gpt2_small.gradients + gpt2_small.adamw_state
for W in (1, 2, 4, 8):
    print(f"{W} processes: DDP {state / 2**30:.2f} GiB each, FSDP {state / W / 2**30:.2f} GiB each "
          f"(+ activations {gpt2_small.activation_bytes / 2**30:.1f} GiB either way)")

# %% [markdown]
# ## 4. The online softmax
#
# softmax(s)_j = exp(s_j - m) / sum_k exp(s_k - m) needs the row maximum m and the sum over ALL
# keys before the first weight is known, so the textbook attention writes the whole (T_q x T_k)
# score matrix S, then the weights P, and keeps P for the backward pass: memory O(T^2) per head.
# The online softmax (Milakov & Gimelshein 2018) reads the keys in blocks and keeps, per query row,
#
#     m   = max of the scores seen so far
#     l   = sum exp(s - m)        over the scores seen so far
#     acc = sum exp(s - m) v      over the scores seen so far
#
# When a block arrives with a larger maximum m', what was summed against m is rescaled by
# exp(m - m'): l' = exp(m - m') l + rowsum(exp(S_b - m')), acc' = exp(m - m') acc + exp(S_b - m') V_b.
# After the last block, acc / l is exactly softmax(S) V. FlashAttention (Dao et al. 2022) runs this
# over tiles of queries and keys, keeps only m and l per row, and recomputes each tile's weights in
# the backward pass. The update is `online_softmax_update`:

# %%
scores = torch.tensor([[0.0, 1.0, 5.0, 2.0, -1.0, 3.0]])
values = torch.arange(6.0)[:, None]
m, l, acc = torch.full((1, 1), -math.inf), torch.zeros(1, 1), torch.zeros(1, 1)
for start in range(0, 6, 2):  # three blocks of two keys
    m, l, acc = online_softmax_update(m, l, acc, scores[:, start:start + 2], values[start:start + 2])
    print(f"after keys {start}..{start + 1}: m = {m.item():.0f}, l = {l.item():.4f}, acc / l = {(acc / l).item():.4f}")
print("softmax(s) v in one go:", (torch.softmax(scores, -1) @ values).item())

# %% [markdown]
# **Predict, then run.** The textbook path keeps P (T x T floats per head) for the backward; the
# tiled path keeps Q, K, V, O and two numbers per row. At T = 1024 with 4 heads of width 64, how
# many times less memory does one forward + backward of the tiled path allocate? (The tiles are
# 128 x 128; the gradients dQ, dK, dV are allocated by both.)

# %%
T = 256 if QUICK else 1024
q, k, v = (torch.randn(1, 4, T, 64) for _ in range(3))
mask = causal_mask(T)


def step(attend):
    def run():
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        out, _ = attend(*leaves, mask)
        out.sum().backward()
    return run


textbook_mib = peak_allocated_bytes(step(scaled_dot_product_attention)) / 2**20
flash_mib = peak_allocated_bytes(step(flash_attention)) / 2**20
print(f"T = {T}: textbook {textbook_mib:.1f} MiB, tiled {flash_mib:.1f} MiB "
      f"({textbook_mib / flash_mib:.1f}x less)")
out_textbook, _ = scaled_dot_product_attention(q, k, v, mask)
out_flash, _ = flash_attention(q, k, v, mask)
print("max |textbook - tiled| =", (out_textbook - out_flash).abs().max().item())
assert (out_textbook - out_flash).abs().max() < 1e-5

# %% [markdown]
# The ratio grows with T: the textbook path is O(T^2), the tiled one O(T d). docs/results/compute.md
# has T = 512, 1024, 2048 (17x less at 2048) beside the times: in plain PyTorch on a CPU the tiled
# path is a Python loop over tiles, about as fast as the textbook path; on a GPU the same idea is the
# fast kernel, because S never travels to the GPU's slow memory. `attn_impl="flash"` in a GPT or
# BERT config selects it.
#
# ## 5. Muon: every direction of the update the same size
#
# AdamW divides each weight's step by that weight's own running gradient size, entry by entry. A
# weight *matrix* has more structure than its entries: its momentum M = U S V^T (an SVD) is usually
# dominated by a few singular directions, so a step along M moves the weights mostly along those.
# Muon (`--optim muon`, `common/train/muon.py`; Jordan et al. 2024, as in modded-nanogpt) keeps a
# Nesterov momentum M_t of each hidden matrix's gradient and steps along its orthogonal part U V^T
# instead: every singular value set to about 1, so the rare directions move as far as the common
# ones. An SVD at every step would be slow; five Newton-Schulz steps from X_0 = M / ||M||_F get close:
#
#     X_{k+1} = a X_k + (b A + c A^2) X_k,   A = X_k X_k^T,   (a, b, c) = (3.4445, -4.7750, 2.0315)
#
# Each step maps every singular value sigma of X to p(sigma) = a sigma + b sigma^3 + c sigma^5 and
# keeps the singular vectors. Embeddings, the output layer, biases and norm gains stay on AdamW.
#
# A real momentum matrix: a small GPT reads batches of the demo's stories; for the output weight
# of its first MLP (`c_proj`) we keep Muon's momentum B_t = mu B_{t-1} + (1 - mu) G_t (mu = 0.95) of the gradients G_t,
# take the Nesterov look-ahead M_t = mu B_t + (1 - mu) G_t, and orthogonalise that.

# %%
import numpy as np

from common.text.char import CharTokenizer
from common.train.muon import NS_COEFFICIENTS, create_muon, newton_schulz
from demo import corpus as demo_data

stories = demo_data.generate_corpus(num_documents=200 if QUICK else 2000, seed=0)
story_text = "\n\n".join("\n".join(story) for story in stories)
chars = CharTokenizer.from_text(story_text)
story_ids = torch.tensor(chars.encode(story_text, add_special_tokens=False))
train_ids, heldout_ids = story_ids[: int(0.9 * len(story_ids))], story_ids[int(0.9 * len(story_ids)):]


def windows(ids, B, T, generator):
    """(B, T) random windows; with labels = the window itself, the loss predicts x_2 .. x_T."""
    starts = torch.randint(0, len(ids) - T, (B,), generator=generator)
    return torch.stack([ids[s:s + T] for s in starts])


def heldout_loss(model, T, count=64):
    starts = torch.linspace(0, len(heldout_ids) - T - 1, count).long()
    x = torch.stack([heldout_ids[s:s + T] for s in starts])
    with torch.no_grad():
        return model(x, labels=x).loss.item()


def train(model, optimizer, steps, B=8, T=32, seed=0):
    """`steps` optimizer steps on random windows; returns the held-out L_LM."""
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = windows(train_ids, B, T, generator)
        model(x, labels=x).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return heldout_loss(model, T)


_setup.seed(0)
small = GPTConfig(n_layer=2, n_head=4, n_embd=64, block_size=32, vocab_size=len(chars), dropout=0.0)
model = GPT(small)
weight = model.transformer.h[0].mlp.c_proj.weight
generator = torch.Generator().manual_seed(0)
buffer = torch.zeros_like(weight)
for _ in range(10):
    x = windows(train_ids, 8, 32, generator)
    model(x, labels=x).loss.backward()
    buffer = 0.95 * buffer + 0.05 * weight.grad
    momentum = 0.95 * buffer + 0.05 * weight.grad
    model.zero_grad(set_to_none=True)
before = torch.linalg.svdvals(momentum)  # 64 values, largest first
after = torch.linalg.svdvals(newton_schulz(momentum))
print(f"M_t {tuple(momentum.shape)}, singular values number 1, 16, 32, 48, 63, 64:")
print("  M_t         ", " ".join(f"{v:9.2e}" for v in before[[0, 15, 31, 47, 62, 63]]))
print("  NS_5(M_t)   ", " ".join(f"{v:9.3f}" for v in after[[0, 15, 31, 47, 62, 63]]))

# %% [markdown]
# The singular values of M_t spread over orders of magnitude; most come out in a band around 1.
# The smallest nonzero ones may end lower: five steps multiply a tiny value by at most about
# 3.4^5 ≈ 470, so a direction a thousand times weaker than the strongest only gets part of the way
# (Muon accepts that: such directions carry almost none of the gradient).
# The 64th is zero before and after, and should be: this matrix (`c_proj`, shape (out, in)) writes
# into the residual stream, and every reader of that stream is a LayerNorm, which ignores a shift
# of all features together; so the gradient of the stream sums to zero over its features and never
# points along (1, ..., 1). p(0) = 0: Muon equalises the directions the gradient has, it does not
# invent one it lacks.

# %% [markdown]
# **Predict, then run.** After X_0 = M / ||M||_F every singular value is at most 1. Where does a
# singular value of 0.01 end after one step of p? After five? And 0.5? (p'(0) = a = 3.4445: a small
# value grows about 3.4x a step until the higher terms pull it into a band around 1. The
# coefficients buy speed, not exactness: the band is about 0.7 to 1.2, not 1 itself.)

# %%
a, b, c = NS_COEFFICIENTS
s = torch.tensor([0.01, 0.1, 0.5, 1.0], dtype=torch.float64)
for k in range(1, 6):
    s = a * s + b * s**3 + c * s**5
    print(f"after step {k}: {s.numpy().round(3)}")

# %% [markdown]
# The same small GPT, the same batches, the same number of steps: AdamW on everything (learning
# rate 3e-3), or Muon on the hidden matrices (0.02, the default of `--muon_learning_rate`) with
# AdamW on the rest (3e-3). On tiny shakespeare with `minigpt.train`'s model (4 layers, width 128)
# Muon made the default recipe reach 0.84 of nanoGPT's validation loss in nanoGPT's wall time
# (docs/results/minigpt.md, section 5); a Muon step costs more (the Newton-Schulz products), so the
# fair comparison there was at equal time. Here, at equal steps:

# %%
steps = 30 if QUICK else 600
for name in ("AdamW", "Muon"):
    _setup.seed(1)
    model = GPT(small)
    if name == "AdamW":
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    else:
        optimizer = create_muon(model, learning_rate=3e-3, muon_learning_rate=0.02)
    print(f"{name:5s}: held-out L_LM after {steps} steps {train(model, optimizer, steps):.3f}")

# %% [markdown]
# ## 6. How big a model for a given compute? IsoFLOP curves
#
# A whole run of S steps costs C = S C_step FLOPs and reads D = S B T tokens, so C ≈ 6 N D for a
# model of N parameters (the attention term aside). One budget C buys a big model on few tokens or
# a small one on many. Hoffmann et al. (2022, "Chinchilla", approach 2) trained several sizes at
# each of several budgets and plotted the final loss against log N: a valley per budget (an IsoFLOP
# curve). A small model sees many tokens but cannot hold what they teach; a big one stops
# undertrained. A parabola through each valley puts its vertex at N_opt(C) (and D_opt(C) = C /
# (6 N_opt)); across budgets, N_opt ∝ C^a and D_opt ∝ C^b. They measured a ≈ b ≈ 0.5: grow the model
# and its data together, about 20 tokens per parameter. Since C ≈ 6 N D, a + b ≈ 1; what the study
# measures is how a bigger budget is split.
#
# IsoFLOP curves, small: at each budget every width trains for the steps the budget buys, and a
# parabola through (log10 N, held-out loss) finds the valley. The quick run has one tiny budget and
# three widths: enough to run the code, too few to trust a vertex (three points always fit a
# parabola exactly). The full run has three budgets ten times apart, four widths each.

# %%
B, T = 8, 32
budgets = (3e8,) if QUICK else (2e9, 6e9, 2e10)
widths = (8, 16, 32) if QUICK else (8, 16, 32, 64)
valleys = []
for budget in budgets:
    curve = []
    for width in widths:
        _setup.seed(0)
        config = GPTConfig(n_layer=1, n_head=max(1, width // 16), n_embd=width, block_size=T,
                           vocab_size=len(chars), dropout=0.0)
        model = GPT(config)
        steps = int(budget // estimate(config, B, T).flops)  # C = S C_step
        loss = train(model, torch.optim.AdamW(model.parameters(), lr=3e-3), steps, B, T)
        n_params = model.num_parameters() - model.transformer.wpe.weight.numel()
        curve.append((n_params, loss))
        print(f"C = {budget:.0e}  width {width:3d}: N = {n_params:6,d}, {steps:5d} steps, "
              f"D = {steps * B * T:9,d} tokens, held-out L_LM {loss:.3f}")
    log_n = np.log10([n for n, _ in curve])
    p2, p1, _ = np.polyfit(log_n, [loss for _, loss in curve], 2)
    vertex = -p1 / (2 * p2)
    if p2 > 0 and log_n.min() < vertex < log_n.max():
        valleys.append((budget, 10 ** vertex))
        print(f"  the parabola's vertex: N_opt ~ {10 ** vertex:,.0f} parameters")
    else:
        print("  no valley among these widths: the optimum lies outside them")
if len(valleys) >= 2:
    c_log, n_log = np.log10([c for c, _ in valleys]), np.log10([n for _, n in valleys])
    print(f"N_opt ~ C^{np.polyfit(c_log, n_log, 1)[0]:.2f} over {len(valleys)} budgets")

# %% [markdown]
# **Predict, then run.** Chinchilla's loss fit is L(N, D) = E + A / N^alpha + B_D / D^beta with
# (E, A, B_D, alpha, beta) = (1.69, 406.4, 410.7, 0.34, 0.28). Minimising it at C = 6 N D gives
# N_opt ~ C^(beta / (alpha + beta)) and D_opt ~ C^(alpha / (alpha + beta)). What exponents will the
# parabola-and-line fit below recover from three budgets of made-up runs on that surface? And if
# alpha = beta?

# %%
E, A, B_D, alpha, beta = 1.69, 406.4, 410.7, 0.34, 0.28
budgets = np.array([1e18, 1e19, 1e20])
n_opt = []
def surface(n, C):
    return E + A / n**alpha + B_D / (C / (6 * n)) ** beta


for C in budgets:
    coarse = 10 ** np.linspace(5, 13, 81)  # a first sweep finds the valley,
    n = coarse[np.argmin(surface(coarse, C))] * 10 ** np.linspace(-0.5, 0.5, 7)  # then 7 sizes around it
    loss = surface(n, C)
    q2, q1, _ = np.polyfit(np.log10(n), loss, 2)
    n_opt.append(10 ** (-q1 / (2 * q2)))
a_fit = np.polyfit(np.log10(budgets), np.log10(n_opt), 1)[0]
b_fit = np.polyfit(np.log10(budgets), np.log10(budgets / (6 * np.array(n_opt))), 1)[0]
print(f"N_opt ~ C^{a_fit:.3f} (beta / (alpha + beta) = {beta / (alpha + beta):.3f}), "
      f"D_opt ~ C^{b_fit:.3f} (alpha / (alpha + beta) = {alpha / (alpha + beta):.3f})")

# %% [markdown]
# `python -m bench.scaling` runs the real study on tiny shakespeare (2-layer GPTs, characters). At
# four budgets from 1e10 to 3e11 FLOPs each had its valley, and the fit gave N_opt ~ C^0.63 (standard
# error 0.07) and D_opt ~ C^0.48 (0.06): Chinchilla's 0.5 is within about two standard errors, the
# pairs of budgets alone give anything from 0.37 to 0.80, and these tiny models wanted 140-320 tokens
# per parameter, not 20. docs/results/compute.md has the table, the plot and why to read it loosely.
#
# ## Your turn
#
# `make exercises` stubs `online_softmax` (`common/nn/flash_attention.py:online_softmax_update`):
# write the three update lines, with dropout's keep factors on the values' sum but not on l.
# `make grade` runs `tests/test_flash_attention.py`; the tests fold random score rows in random
# blocks and compare with softmax(S) V, and the whole tiled attention with the textbook one.
