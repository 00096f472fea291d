# %% [markdown]
# # 15 · LoRA: fine-tuning through a low-rank update
#
# Fine-tuning (tutorial 07) trains every weight. For a model of a billion weights that means a
# billion gradients, two billion Adam moments, and a full copy of the model per task. LoRA (Hu et
# al. 2021) freezes every pretrained matrix `W` (out x in) and learns only a low-rank change:
#
#     y = x W^T + b + (alpha / r) * dropout(x) A^T B^T,      A: (r, in),  B: (out, r),  r << in, out
#
# `B A` is an (out x in) matrix of rank at most r, made of r (in + out) numbers instead of
# in x out. (PyTorch and peft, Hugging Face's library of parameter-efficient fine-tuning methods,
# store weights as (out, in), so this line is written with transposes;
# in the course's row-vector convention, docs/notation.md, it is y = x W + b + (alpha / r) x A B.)
# `alpha / r` scales the update; Hu et al. chose it so that one learning rate serves several ranks.
# It does not make the update's size independent of r: Kalajdzievski (2023) shows that under
# alpha / r the update shrinks as r grows, and that alpha / sqrt(r) (rsLoRA, peft's `use_rslora`)
# keeps it steady. The course, like peft's default, uses alpha / r.
#
# Code: `common/nn/lora.py:LoRALinear`, `common/nn/lora.py:inject_lora`, `common/nn/lora.py:merge_and_unload`,
# `common/hub/adapters.py:save_adapter` (peft's file format). Tests: `tests/test_lora.py` (against
# peft on BERT and GPT), `tests/test_lora_cli.py` (the `--lora_r` flags).
# `TUTORIAL_QUICK=1`: a few seconds.

# %%
import _setup

import tempfile
from pathlib import Path

import torch
import torch.nn as nn

from common.hub.adapters import save_adapter
from common.nn.lora import LoraConfig, LoRALinear, inject_lora, merge_and_unload, trainable_parameters_line
from minigpt import GPT, GPTConfig

_setup.seed(0)
QUICK = _setup.QUICK

# %% [markdown]
# ## Step 0: B starts at zero, so nothing changes
#
# A is drawn like any Linear weight (kaiming-uniform: each entry uniform in +-1/sqrt(in), PyTorch's
# default for `nn.Linear`); B is all zeros. Then `B A = 0` and the
# adapted layer computes exactly what the frozen one did: fine-tuning starts from the pretrained
# model, not from a perturbed copy of it.

# %%
base = nn.Linear(64, 48)
layer = LoRALinear(base, r=4, lora_alpha=8)
x = torch.randn(5, 64)
print("max |LoRA(x) - W x| at step 0:", (layer(x) - base(x)).abs().max().item())
print("A", tuple(layer.lora_A.weight.shape), "B", tuple(layer.lora_B.weight.shape),
      "scaling alpha / r =", layer.scaling)

# %% [markdown]
# **Predict, then run.** One backward pass at step 0, A random and B = 0: which of A and B gets a
# gradient? And if A were zero too?

# %%
grads = {}
for name, init_A in (("A random, B = 0", False), ("A = 0,    B = 0", True)):
    layer = LoRALinear(nn.Linear(64, 48), r=4, lora_alpha=8)
    if init_A:
        nn.init.zeros_(layer.lora_A.weight)
    layer(x).pow(2).sum().backward()
    grads[name] = (layer.lora_A.weight.grad.norm().item(), layer.lora_B.weight.grad.norm().item())
    print(f"{name}: |dL/dA| = {grads[name][0]:.3f}, |dL/dB| = {grads[name][1]:.3f}")
assert grads["A random, B = 0"][0] == 0 < grads["A random, B = 0"][1] and grads["A = 0,    B = 0"] == (0, 0)

# %% [markdown]
# With s = alpha / r and G = dL/dy, the gradients are `dL/dB = s G^T (x A^T)` and
# `dL/dA = s (G B)^T x`. With A random, B gets a gradient at once and A none (B = 0 multiplies
# it); A starts moving as soon as B is not zero. With A = 0 and B = 0 both vanish and the adapter
# never moves: that is why one of the two must start random.

# %% [markdown]
# ## Learning a low-rank change
#
# Suppose the task needs `W* = W + Delta` with Delta of rank 2. Full fine-tuning would train all
# 64 x 48 = 3,072 numbers; a rank-2 adapter trains 2 (64 + 48) = 224 and can still represent Delta
# exactly.

# %%
_setup.seed(1)
W = nn.Linear(64, 48)
delta = 0.5 * torch.randn(48, 2) @ torch.randn(2, 64) / 8  # rank 2
target = lambda inputs: inputs @ (W.weight + delta).T + W.bias  # noqa: E731
W_before = W.weight.detach().clone()
layer = LoRALinear(W, r=2, lora_alpha=2)
optimizer = torch.optim.Adam([layer.lora_A.weight, layer.lora_B.weight], lr=1e-2)
steps = 150 if QUICK else 1500
for step in range(steps + 1):
    inputs = torch.randn(32, 64)
    loss = (layer(inputs) - target(inputs)).pow(2).mean()
    if step % (steps // 5) == 0:
        print(f"step {step:5d}  mse {loss.item():.6f}")
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
error = (layer.delta_weight() - delta).norm() / delta.norm()
print(f"relative error of (alpha / r) B A against Delta: {error:.4f}; W moved: {not torch.equal(W.weight, W_before)}")

# %% [markdown]
# ## Merging: free at inference
#
# After training, `W' = W + (alpha / r) B A` is one matrix of the old shape: the merged layer costs
# exactly what the original did, and `unmerge` subtracts the update again.

# %%
with torch.no_grad():
    before = layer(x)
    layer.merge()
    after = layer(x)
    layer.unmerge()
print("max |merged - unmerged| =", (after - before).abs().max().item())

# %% [markdown]
# ## A whole GPT: what is trained, what is stored
#
# `inject_lora` wraps every Linear whose name matches `target_modules` (peft's rule: the module's
# path ends with the name, or a regex matches the whole path) and freezes everything else.

# %%
config = GPTConfig(n_layer=4, n_head=4, n_embd=128, block_size=64, vocab_size=500)
model = GPT(config)
print("full fine-tuning:", trainable_parameters_line(model))
lora = LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"])
wrapped = inject_lora(model, lora)
print(f"LoRA r=8 on {len(wrapped)} layers:", trainable_parameters_line(model))
with tempfile.TemporaryDirectory() as folder:
    save_adapter(model, lora, folder)
    sizes = {p.name: p.stat().st_size for p in Path(folder).iterdir()}
print("the adapter on disk:", sizes, f"(the whole model: {4 * sum(p.numel() for p in model.parameters()):,} bytes)")
plain = merge_and_unload(model)
print("after merge_and_unload the keys are the base model's again:",
      "transformer.h.0.attn.query.weight" in plain.state_dict())

# %% [markdown]
# On real data: `python -m minibert.finetune ... --lora_r 8` and `python -m minigpt.train ... --lora_r 8`
# train adapters instead of every weight; docs/results/lora_sft.md compares LoRA with full
# fine-tuning on SST-2 (accuracy, trained parameters, memory, step time, size on disk).
#
# ## Your turn: exercise `lora_linear`
#
# In the student copy (`make exercises`), `LoRALinear`'s forward, `delta_weight`, `merge` and
# `unmerge` (`common/nn/lora.py`) raise `NotImplementedError`. Write them from the formula at the
# top; the tests compare outputs and gradients with peft on BERT and GPT:
#
#     python -m tutorials.exercises make --out ../student --only lora_linear
#     cd ../student && python -m tutorials.exercises grade --only lora_linear

# %%
from tutorials.exercises import REGISTRY

print(REGISTRY["lora_linear"].pytest_command())
print("hint:", REGISTRY["lora_linear"].hint)
