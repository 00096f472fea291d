# %% [markdown]
# # 03 · The encoder block and BERT's embeddings
#
# A BERT layer wraps tutorial 01's multi-head attention and a small two-layer network, each in a
# residual connection followed by LayerNorm ("post-LN", as in the original Transformer):
#
#     h = LayerNorm(x + Dropout(MultiHead(x) W^O))              the attention sub-layer
#     y = LayerNorm(h + Dropout(FFN(h)))                          the feed-forward sub-layer
#     FFN(h) = GELU(h W_1 + b_1) W_2 + b_2                        W_1: C -> 4C, W_2: 4C -> C
#
# Before the first layer, each token id becomes a vector, the sum of three learned embeddings:
#
#     E = LayerNorm(E_token[x_t] + E_position[t] + E_segment[s_t])     s_t = 0 (sentence A) or 1 (B)
#
# Code: `common/nn/blocks.py` (`gelu`, `FeedForward`, `EncoderBlock`), `minibert/model.py`
# (`BertEmbeddings`, `BertModel`). Tests: `tests/test_blocks.py`, `tests/test_bert_parity.py`.
#
# Run it: `python tutorials/03_encoder_block.py`.

# %%
import _setup

import math

import torch
import torch.nn.functional as F

from common.nn.blocks import EncoderBlock, FeedForward, gelu, gelu_tanh
from common.nn.masks import padding_mask
from common.text.auto import BertTokenizer
from minibert import BertConfig, BertEmbeddings, BertModel

_setup.seed(0)
torch.set_printoptions(precision=4, sci_mode=False)
torch.set_grad_enabled(False)

# %% [markdown]
# ## GELU, exact and approximated
#
# GELU weighs its input by the probability that a standard normal variable is below it,
# `Phi(x)`:
#
#     GELU(x)      = x Phi(x) = 0.5 x (1 + erf(x / sqrt 2))                      BERT ("gelu")
#     GELU_tanh(x) = 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))           GPT-2 ("gelu_new")
#
# Unlike ReLU it is smooth and lets small negative values through. The tanh form was cheaper
# once; the two differ by less than a thousandth, but a model must use the one it was trained
# with, which is why `hidden_act` is part of the config.

# %%
xs = torch.tensor([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0])
print("x          ", xs)
print("GELU       ", gelu(xs))
print("GELU_tanh  ", gelu_tanh(xs))
grid = torch.linspace(-6, 6, 1201)
print("max |GELU - GELU_tanh| on [-6, 6]:", float((gelu(grid) - gelu_tanh(grid)).abs().max()))
print("max |gelu - torch's F.gelu|              :", float((gelu(grid) - F.gelu(grid)).abs().max()))
print("max |gelu_tanh - F.gelu(approximate=tanh)|:",
      float((gelu_tanh(grid) - F.gelu(grid, approximate="tanh")).abs().max()))

# %%
plt = _setup.pyplot()
if plt is not None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5), constrained_layout=True)
    left.plot(grid, grid.clamp_min(0), label="ReLU", color="grey", linestyle=":")
    left.plot(grid, gelu(grid), label="GELU (erf)")
    left.plot(grid, gelu_tanh(grid), label="GELU (tanh)", linestyle="--")
    left.set_xlim(-4, 3)
    left.set_ylim(-0.5, 3)
    left.legend()
    left.set_title("activations")
    right.plot(grid, gelu(grid) - gelu_tanh(grid))
    right.set_title("GELU(erf) - GELU(tanh)")
    _setup.save_plot(fig, "03_gelu.png")

# %% [markdown]
# ## The feed-forward network works on each position alone
#
# `FFN` is applied to every position with the same weights and never mixes positions (only
# attention does that). So running it on the whole `(B, T, C)` tensor equals running it on one
# position at a time:

# %%
C, ffn_size = 16, 64
ffn = FeedForward(C, ffn_size, activation="gelu")
x = torch.randn(2, 5, C)  # (B, T, C)
print("x", tuple(x.shape), "-> c_fc", tuple(ffn.c_fc(x).shape), "-> c_proj", tuple(ffn(x).shape))
one_at_a_time = torch.cat([ffn(x[:, t:t + 1]) for t in range(5)], dim=1)  # (B, T, C)
print("FFN(x) equals FFN(one position at a time):", torch.allclose(ffn(x), one_at_a_time, atol=1e-6))

# %% [markdown]
# ## The encoder block, step by step
#
# `EncoderBlock` keeps transformers' submodule names, so a BERT checkpoint loads into it:
#
#     attention.self       MultiHead (query, key, value)
#     attention.output     dense (W^O), LayerNorm           h = LayerNorm(x + context W^O)
#     intermediate         dense (W_1), GELU
#     output               dense (W_2), LayerNorm           y = LayerNorm(h + GELU(h W_1) W_2)
#
# We compute the block by hand with its own weights, on a padded batch, and compare. `eval()`
# switches dropout off, so both computations are deterministic.

# %%
B, T, C, H = 2, 6, 32, 4
block = EncoderBlock(hidden_size=C, num_heads=H, intermediate_size=4 * C).eval()
x = torch.randn(B, T, C)  # (B, T, C)
attention_mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])  # sentence 2 has 2 pads
mask = padding_mask(attention_mask)  # (B, 1, 1, T)

context, _ = block.attention.self(x, mask=mask)  # (B, T, C): the heads, concatenated
h = block.attention.output.LayerNorm(x + block.attention.output.dense(context))  # (B, T, C)
inner = gelu(block.intermediate.dense(h))  # (B, T, 4C)
y_by_hand = block.output.LayerNorm(h + block.output.dense(inner))  # (B, T, C)

y, weights = block(x, mask=mask, output_attentions=True)
print("x", tuple(x.shape), "-> h", tuple(h.shape), "-> inner", tuple(inner.shape), "-> y", tuple(y.shape))
print("attention weights", tuple(weights.shape), "(B, H, T, T)")
print("max |by hand - EncoderBlock|:", float((y_by_hand - y).abs().max()))
assert torch.allclose(y_by_hand, y, atol=1e-5)

# %% [markdown]
# The last operation is a LayerNorm, `LN(z) = gamma * (z - mean(z)) / sqrt(var(z) + eps) + beta`
# over the `C` channels of each position. At initialisation `gamma = 1` and `beta = 0`, so every
# output row has mean 0 and standard deviation 1 - the property
# `test_encoder_block_output_is_layer_normalised_rows_of_the_input_shape` checks:

# %%
print("row means, first sentence:", y[0].mean(-1))
print("row std devs             :", y[0].std(-1, unbiased=False))

# %% [markdown]
# GPT-2 moves the LayerNorm to the front of each sub-layer ("pre-LN":
# `x + Sublayer(LayerNorm(x))`), which trains more stably in deep stacks; that is
# `DecoderBlock`, tutorial 08.
#
# ## BERT's input: three embeddings summed
#
# BERT reads one or two sentences at once: `[CLS] A [SEP] B [SEP]`. Each token gets
#
# - `E_token[x_t]`: what the token is (one row of a `(V, C)` table);
# - `E_position[t]`: where it is (attention alone cannot tell positions apart, tutorial 01);
# - `E_segment[s_t]`: which sentence it belongs to (`token_type_ids`: 0 for `[CLS] A [SEP]`,
#   1 for `B [SEP]`).

# %%
vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "a", "dog", "ran"]
tokenizer = BertTokenizer(vocab=vocab)
batch = tokenizer(["the cat sat", "a dog"], ["on the mat", "ran"], padding=True, return_tensors="pt")
print(f"{'token':>7} {'id':>3} {'position':>8} {'segment':>7} {'attention_mask':>14}")
for t, (token, segment, keep) in enumerate(zip(tokenizer.convert_ids_to_tokens(batch["input_ids"][1].tolist()),
                                               batch["token_type_ids"][1].tolist(),
                                               batch["attention_mask"][1].tolist())):
    print(f"{token:>7} {batch['input_ids'][1, t].item():>3} {t:>8} {segment:>7} {keep:>14}")

# %% [markdown]
# A BERT this small has every size in `BertConfig` (the defaults are BERT-base: 12 layers,
# 768 channels, 12 heads). `BertEmbeddings` computes the sum and the LayerNorm; we do it by hand
# with its tables:

# %%
config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=128, max_position_embeddings=64)
embeddings = BertEmbeddings(config).eval()
ids, segments = batch["input_ids"], batch["token_type_ids"]  # (B, T)
T = ids.size(1)
summed = (embeddings.word_embeddings.weight[ids]  # (B, T, C)
          + embeddings.position_embeddings.weight[torch.arange(T)]  # (T, C), broadcast over B
          + embeddings.token_type_embeddings.weight[segments])  # (B, T, C)
ln = embeddings.LayerNorm
mean = summed.mean(-1, keepdim=True)
var = summed.var(-1, unbiased=False, keepdim=True)
E_by_hand = ln.weight * (summed - mean) / torch.sqrt(var + ln.eps) + ln.bias  # (B, T, C)
E = embeddings(ids, token_type_ids=segments)
print("E", tuple(E.shape), " max |by hand - BertEmbeddings|:", float((E_by_hand - E).abs().max()))
assert torch.allclose(E_by_hand, E, atol=1e-5)

# %% [markdown]
# ## The whole BertModel
#
#     H_0 = E,   H_l = EncoderBlock_l(H_{l-1}) for l = 1..L,   C = tanh(H_L[:, 0] W_p + b_p)
#
# `C`, the "pooled" vector of `[CLS]`, is what sentence-level heads (NSP, classification) read.

# %%
_setup.seed(0)
model = BertModel(config).eval()
out = model(ids, attention_mask=batch["attention_mask"], token_type_ids=segments,
            output_hidden_states=True, output_attentions=True)
print("input_ids          ", tuple(ids.shape), "(B, T)")
print("last_hidden_state  ", tuple(out.last_hidden_state.shape), "(B, T, C)")
print("pooler_output      ", tuple(out.pooler_output.shape), "(B, C)")
print("hidden_states      ", len(out.hidden_states), "tensors: H_0 (the embeddings) ... H_L")
print("attentions         ", len(out.attentions), "x", tuple(out.attentions[0].shape), "(B, H, T, T)")
pads = batch["attention_mask"][1] == 0
print("weight any query of sentence 2 puts on its pads:",
      float(out.attentions[-1][1][..., pads].abs().max()))
print("parameters:", sum(p.numel() for p in model.parameters()))

# %% [markdown]
# ## The same names as Hugging Face transformers
#
# Every parameter has the name transformers gives it, so a real BERT checkpoint loads by name
# with nothing renamed (tutorial 10 loads the real MiniLM weights):

# %%
names = list(model.state_dict())
for name in names[:6] + ["..."] + names[-4:]:
    print("  ", name)

# %% [markdown]
# When transformers is installed (it is this project's test oracle, never a dependency), we
# build its BertModel with the same sizes and compare: the same set of names, and after copying
# our weights into it, the same numbers. `tests/test_bert_parity.py` does this for every head,
# with gradients too.

# %%
try:
    import transformers
except ImportError:
    transformers = None
    print("(transformers is not installed: skipping the comparison)")
if transformers is not None:
    hf_config = transformers.BertConfig(**{k: getattr(config, k) for k in (
        "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
        "max_position_embeddings")})
    hf_config._attn_implementation = "eager"
    hf_model = transformers.BertModel(hf_config).eval()
    ours, theirs = set(model.state_dict()), set(hf_model.state_dict())
    print(f"parameter names: {len(ours)} ours, {len(theirs)} transformers', "
          f"only ours: {sorted(ours - theirs)}, only theirs: {sorted(theirs - ours)}")
    hf_model.load_state_dict(model.state_dict())
    hf_out = hf_model(input_ids=ids, attention_mask=batch["attention_mask"], token_type_ids=segments)
    print("max |ours - transformers| last_hidden_state:",
          float((hf_out.last_hidden_state - out.last_hidden_state).abs().max()))
    assert ours == theirs

# %% [markdown]
# ## Your turn: exercises `encoder_block` and `embeddings`
#
# In the student copy (`make exercises`) two forwards are stubs:
#
# - `EncoderBlock.forward` in `common/nn/blocks.py`: the two post-LN sub-layers above, using the
#   block's `attention`, `intermediate` and `output` submodules;
# - `BertEmbeddings.forward` in `minibert/model.py`: the sum of the three embeddings (positions
#   `0..T-1` and segment 0 when not given), LayerNorm, dropout.
#
#     python -m tutorials.exercises make --out student --only encoder_block --only embeddings
#     cd student && python -m tutorials.exercises grade --only encoder_block --only embeddings

# %%
from tutorials.exercises import REGISTRY

for name in ("encoder_block", "embeddings"):
    print(f"{name}: {REGISTRY[name].pytest_command()}")
