# %% [markdown]
# # 20 · Smaller models: distillation, int8 quantization, head pruning
#
# A trained model can be made smaller in three ways, each cheap compared with training it:
#
# - **distillation** (Hinton et al. 2015; DistilBERT, Sanh et al. 2019): train a smaller *student*
#   to reproduce the *teacher*'s whole output distribution, softened by a temperature T:
#
#       L = alpha_ce * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) + alpha_task * L_task
#
# - **int8 quantization**: store each weight row as 8-bit integers and one float scale,
#   `s = max|w| / 127`, `q = round(w / s)`, and multiply integers at run time;
# - **head pruning** (Michel et al. 2019): remove the attention heads the loss barely depends on.
#
# Code: `common/nn/distillation.py`, `common/nn/quantization.py`, `common/nn/pruning.py` and
# `MultiHeadAttention.prune_heads` (`common/nn/attention.py`); the tools `python -m minibert.distill`,
# `python -m minibert.quantize`, `python -m minigpt.quantize`. Tests: `tests/test_distillation.py`,
# `tests/test_quantization.py`, `tests/test_pruning.py`, `tests/test_compression_cli.py`. Measured on
# SST-2 with a fine-tuned MiniLM: `docs/results/compression.md`. `TUTORIAL_QUICK=1`: a few seconds.

# %%
import _setup

import time

import torch
import torch.nn as nn

from common.nn.distillation import distillation_loss, every_other_layer
from common.nn.pruning import head_gates, head_importance, heads_to_prune
from common.nn.quantization import Int8Linear, dequantize, quantize_absmax, use_int8_kernel
from minibert import BertConfig, BertForSequenceClassification

_setup.seed(0)
QUICK = _setup.QUICK

# %% [markdown]
# ## 1. Soft targets and the temperature
#
# A teacher that says "positive: 0.90, negative: 0.10" knows more than the label "positive": how
# sure it is, and (with many classes) which wrong classes are near. Dividing the logits by T > 1
# spreads the probability so that the student sees those small numbers:

# %%
z_teacher = torch.tensor([[4.0, 1.0, 0.5, -2.0]])
for T in (1.0, 2.0, 4.0):
    print(f"T = {T:.0f}: softmax(z_t / T) =", [round(p, 3) for p in torch.softmax(z_teacher / T, -1)[0].tolist()])
print("KL of the teacher to itself:", float(distillation_loss(z_teacher, z_teacher, 2.0)))

# %% [markdown]
# **Predict, then run.** The gradient of `KL(p_t || p_s)` with respect to the student's logits is
# `(p_s - p_t) / T`, and for soft logits `p_s - p_t` itself is about `(z_s - z_t) / (K T)`. Without
# the factor T^2, how many times smaller is the gradient at T = 8 than at T = 1: about 8, about
# 64, or about the same? And with T^2? Write your guess down; the table answers it.

# %%
g = torch.Generator().manual_seed(0)
z_t = torch.randn(32, 5, generator=g) * 0.2
z_s = z_t + torch.randn(32, 5, generator=g) * 0.2
print(f"{'T':>3} {'|grad| with T^2':>16} {'|grad| without':>15}")
sizes = {}
for T in (1.0, 2.0, 4.0, 8.0):
    z = z_s.clone().requires_grad_(True)
    distillation_loss(z, z_t, T).backward()
    with_t2 = z.grad.norm().item()
    sizes[T] = (with_t2, with_t2 / T**2)
    print(f"{T:>3.0f} {with_t2:>16.5f} {with_t2 / T**2:>15.6f}")
print(f"T = 1 vs T = 8 without T^2: {sizes[1.0][1] / sizes[8.0][1]:.0f}x smaller; "
      f"with T^2: {sizes[1.0][0] / sizes[8.0][0]:.2f}x")
assert sizes[1.0][1] / sizes[8.0][1] > 50 and abs(sizes[1.0][0] / sizes[8.0][0] - 1) < 0.1

# %% [markdown]
# About 64 = 8^2 without it, the same with it: T^2 keeps the distillation term's weight alpha_ce
# meaning the same thing at every temperature. (`distillation_loss` is the exercise of this
# tutorial; `tests/test_distillation.py` checks exactly this, for T in {1, 2, 4, 8}.)
#
# ## 2. A student learns from a teacher
#
# A toy: a wide teacher network has learned a ten-class problem on 2-D points; a small student
# sees only 64 labelled points. Trained on the labels alone it overfits them; trained on the
# teacher's soft targets on the same 64 points plus unlabelled ones, it copies the teacher's
# boundaries. (DistilBERT does this with a 6-layer BERT copied from every other layer of BERT-base.)

# %%
def mlp(width):
    return nn.Sequential(nn.Linear(2, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 10))


def true_label(x):  # ten angular sectors, the rule the teacher learned
    return ((torch.atan2(x[:, 1], x[:, 0]) + torch.pi) / (2 * torch.pi) * 10).long().clamp(max=9)


def train(model, x, loss_fn, steps):
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(model(x)).backward()
        opt.step()
    return model


steps = 150 if QUICK else 600
x_all, x_test = torch.randn(4000, 2), torch.randn(2000, 2)
teacher = train(mlp(128), x_all, lambda out: nn.functional.cross_entropy(out, true_label(x_all)), steps)
x_few = x_all[:64]
x_free = torch.randn(1000, 2)  # no labels needed: the teacher labels them softly
with torch.no_grad():
    soft = teacher(x_free)
alone = train(mlp(16), x_few, lambda out: nn.functional.cross_entropy(out, true_label(x_few)), steps)
student = train(mlp(16), x_free, lambda out: distillation_loss(out, soft, temperature=2.0), steps)
accuracy = lambda m: (m(x_test).argmax(-1) == true_label(x_test)).float().mean().item()  # noqa: E731
with torch.no_grad():
    print(f"teacher {accuracy(teacher):.3f} | student on 64 labels {accuracy(alone):.3f} | "
          f"student distilled {accuracy(student):.3f}")
print("DistilBERT's initialisation, 6 teacher layers -> 3 student layers: teacher layers", every_other_layer(6, 3))

# %% [markdown]
# On real data: `python -m minibert.distill --task classification --teacher_name_or_path out/sst2
# --train_file sst2/train.tsv --validation_file sst2/dev.tsv --student_num_hidden_layers 3
# --temperature 2 --alpha_ce 0.5 --alpha_task 0.5 --output_dir out/student`.
#
# ## 3. int8: absmax per output channel
#
# Each row of a weight matrix (one output channel) gets its own scale `s = max|w| / 127`; the
# integers are `q = round(w / s)` in [-127, 127], and `s q` is within half a step of `w`.

# %%
w = torch.randn(4, 8)
w[2, 0] = 12.0  # one large weight in row 2
q, s = quantize_absmax(w)
error = (w - dequantize(q, s)).abs()
print("scales per row:", [round(v, 4) for v in s.view(-1).tolist()])
print("largest error / scale per row:", [round(v, 3) for v in (error / s).max(1).values.tolist()], "(<= 0.5)")
q_tensor = torch.round(w / (w.abs().max() / 127)).clamp(-127, 127)
tensor_error = (w - q_tensor * (w.abs().max() / 127)).abs().mean()
print(f"mean error: per channel {error.mean():.4f}, one scale for the tensor {tensor_error:.4f}")

# %% [markdown]
# One large weight spoils the resolution of its own row only; with a single scale for the whole
# tensor it would spoil all of them. Activations get a scale per token at run time (dynamic
# quantization), so a Linear becomes
#
#     y[t, o] = s_x[t] s_w[o] sum_j qx[t, j] qw[o, j] + b[o]
#
# The sum is over integers: torch's int8 matrix product (`torch._int_mm`) computes it exactly.
# `Int8Linear` has both paths: the textbook one dequantizes and multiplies in float32, the fast one
# multiplies integers. Same numbers; how fast?

# %%
linear = nn.Linear(384, 1536)
int8 = Int8Linear.from_linear(linear)
x = torch.randn(256 if QUICK else 2048, 384)
textbook = int8(x)
use_int8_kernel(int8)
fast = int8(x)
with torch.no_grad():
    exact = linear(x)
print(f"int8 kernel vs textbook: max difference {(fast - textbook).abs().max():.2e}; vs float32: "
      f"{(fast - exact).abs().max():.4f} on outputs up to {exact.abs().max():.2f}")


def ms(fn, repeats=5 if QUICK else 20):
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1e3


with torch.no_grad():
    print(f"float32 {ms(lambda: linear(x)):.2f} ms, int8 {ms(lambda: int8(x)):.2f} ms (one run, a busy machine "
          "varies; docs/results/compression.md has medians)")
print(f"bytes: float32 {linear.weight.numel() * 4:,}, int8 + scales {int8.weight.numel() + int8.weight_scale.numel() * 4:,}")

# %% [markdown]
# `python -m minibert.quantize --model_name_or_path out/sst2 --output_dir out/sst2-int8` writes a
# folder whose config.json carries `quantization_config` and whose model.safetensors holds the int8
# weights and their scales; `BertForSequenceClassification.from_pretrained("out/sst2-int8")` loads it.
#
# ## 4. Head pruning
#
# Put a gate `xi_h` (= 1) on every head's output; the importance of a head is `|dL / dxi_h|`
# averaged over data. Removing a head drops its rows of W^Q, W^K, W^V and its columns of W^O: the
# model computes what it computed with the gate at 0, with fewer weights.

# %%
config = BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=64, max_position_embeddings=16, num_labels=2)
model = BertForSequenceClassification(config).eval()
batch = dict(input_ids=torch.randint(1, 60, (8, 10)), labels=torch.randint(0, 2, (8,)))
importance = head_importance(model, [batch])
print("importance per layer and head:\n", importance.numpy().round(2))
plan = heads_to_prune(model, importance, fraction=0.5)
gates = torch.ones(2, 4)
for layer, heads in plan.items():
    gates[layer, heads] = 0.0
with torch.no_grad(), head_gates(model, gates):
    masked = model(batch["input_ids"]).logits
before = model.num_parameters()
model.prune_heads(plan)
with torch.no_grad():
    pruned = model(batch["input_ids"]).logits
print(f"pruned {plan}: max |pruned - masked| = {(pruned - masked).abs().max():.1e}, "
      f"parameters {before:,} -> {model.num_parameters():,}")
assert (pruned - masked).abs().max() < 1e-6

# %% [markdown]
# ## Your turn: exercises `distillation_loss` and `quantize_absmax`
#
# In the student copy, `distillation_loss` (`common/nn/distillation.py`) and `quantize_absmax`
# (`common/nn/quantization.py`) raise `NotImplementedError`:
#
#     python -m tutorials.exercises make --out ../student --only distillation_loss --only quantize_absmax
#     cd ../student && python -m tutorials.exercises grade --only distillation_loss --only quantize_absmax
#
# The grade runs their tests. Then try: distil with
# `--alpha_cos 0.5` (align the hidden states too) and compare; quantize only the feed-forward layers
# (`--modules_to_not_convert query,key,value`) and measure the accuracy; prune with importance
# re-estimated after every 10% of heads instead of once.
