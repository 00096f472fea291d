# %% [markdown]
# # 21 · What training costs
#
# Before a run starts you can know, to within a few percent, how many parameters it trains, how
# many floating-point operations each step costs and how much memory it needs. This tutorial
# predicts those numbers, checks them against measurement, and then spends less: the attention
# that never forms its T x T matrix (FlashAttention's online softmax), activation checkpointing
# (recompute instead of store), and sharding the weights over processes (FSDP).
#
# Code: `common/train/accounting.py`, `common/train/measure.py`, each family's `accounting.py`,
# `common/nn/checkpointing.py`, `common/nn/flash_attention.py`. Tests: `tests/test_accounting.py`,
# `tests/test_checkpointing.py`, `tests/test_flash_attention.py`.
# Figures: `docs/results/compute.md`. Run it: `python tutorials/21_training_costs.py` (about a
# minute); `TUTORIAL_QUICK=1` for a few seconds.

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
# <!-- i30b: the Muon and scaling-study sections go here (sections 5 and 6). -->
#
# ## Your turn
#
# `make exercises` stubs `online_softmax` (`common/nn/flash_attention.py:online_softmax_update`):
# write the three update lines, with dropout's keep factors on the values' sum but not on l.
# `make grade` runs `tests/test_flash_attention.py`; the tests fold random score rows in random
# blocks and compare with softmax(S) V, and the whole tiled attention with the textbook one.
