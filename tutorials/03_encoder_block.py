# %% [markdown]
# # 03 · The encoder block and BERT's embeddings
#
# A BERT layer wraps tutorial 01's multi-head attention and a small two-layer network, each in a
# residual connection followed by LayerNorm ("post-LN", as in the original Transformer):
#
#     X' = LayerNorm(X + Dropout(MultiHead(X)))                   the attention sub-layer
#     Y  = LayerNorm(X' + Dropout(FFN(X')))                       the feed-forward sub-layer
#     FFN(u) = GELU(u W_1 + b_1) W_2 + b_2                        W_1: d -> 4d, W_2: 4d -> d
#
# with `MultiHead(X) = Concat(head_1, ..., head_h) W^O` exactly as in tutorial 01 (`W^O` inside,
# applied once). `X`, `X'`, `Y` are `(T, d)`: one row per position.
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

from common.nn.attention import MultiHeadAttention
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
# attention does that). So running it on the whole `(B, T, d)` tensor equals running it on one
# position at a time:

# %%
d, d_ff = 16, 64
ffn = FeedForward(d, d_ff, activation="gelu")
x = torch.randn(2, 5, d)  # (B, T, d)
print("x", tuple(x.shape), "-> c_fc", tuple(ffn.c_fc(x).shape), "-> c_proj", tuple(ffn(x).shape))
one_at_a_time = torch.cat([ffn(x[:, t:t + 1]) for t in range(5)], dim=1)  # (B, T, d)
print("FFN(x) equals FFN(one position at a time):", torch.allclose(ffn(x), one_at_a_time, atol=1e-6))

# %% [markdown]
# ## The encoder block, step by step
#
# `EncoderBlock` keeps transformers' submodule names, so a BERT checkpoint loads into it:
#
#     attention.self       query, key, value           context = Concat(head_1, ..., head_h)
#     attention.output     dense (W^O), LayerNorm      X' = LayerNorm(X + context W^O)
#                                                         = LayerNorm(X + MultiHead(X))
#     intermediate         dense (W_1), GELU
#     output               dense (W_2), LayerNorm      Y = LayerNorm(X' + GELU(X' W_1) W_2)
#
# (BERT splits `MultiHead` across two modules: `attention.self` stops at the concatenation and
# `attention.output.dense` is `W^O`, so `W^O` is still multiplied once.)
#
# We compute the block by hand with its own weights, on a padded batch, and compare. `eval()`
# switches dropout off, so both computations are deterministic.

# %%
B, T, d, h = 2, 6, 32, 4
block = EncoderBlock(hidden_size=d, num_heads=h, intermediate_size=4 * d).eval()
x = torch.randn(B, T, d)  # (B, T, d)
attention_mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])  # sentence 2 has 2 pads
mask = padding_mask(attention_mask)  # (B, 1, 1, T)

context, _ = block.attention.self(x, mask=mask)  # (B, T, d): Concat(head_1, ..., head_h)
x_prime = block.attention.output.LayerNorm(x + block.attention.output.dense(context))  # (B, T, d): X'
inner = gelu(block.intermediate.dense(x_prime))  # (B, T, 4d)
y_by_hand = block.output.LayerNorm(x_prime + block.output.dense(inner))  # (B, T, d)

y, weights = block(x, mask=mask, output_attentions=True)
print("X", tuple(x.shape), "-> X'", tuple(x_prime.shape), "-> inner", tuple(inner.shape), "-> Y", tuple(y.shape))
print("attention weights", tuple(weights.shape), "(B, h, T, T)")
print("max |by hand - EncoderBlock|:", float((y_by_hand - y).abs().max()))
assert torch.allclose(y_by_hand, y, atol=1e-5)

# %% [markdown]
# The last operation is a LayerNorm, `LN(z) = g * (z - mean(z)) / sqrt(var(z) + eps) + b`
# (`g`, `b`: PyTorch's `weight` and `bias`)
# over the `d` channels of each position. At initialisation `g = 1` and `b = 0`, so every
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
# - `E_token[x_t]`: what the token is (one row of a `(V, d)` table);
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
summed = (embeddings.word_embeddings.weight[ids]  # (B, T, d)
          + embeddings.position_embeddings.weight[torch.arange(T)]  # (T, d), broadcast over B
          + embeddings.token_type_embeddings.weight[segments])  # (B, T, d)
ln = embeddings.LayerNorm
mean = summed.mean(-1, keepdim=True)
var = summed.var(-1, unbiased=False, keepdim=True)
E_by_hand = ln.weight * (summed - mean) / torch.sqrt(var + ln.eps) + ln.bias  # (B, T, d)
E = embeddings(ids, token_type_ids=segments)
print("E", tuple(E.shape), " max |by hand - BertEmbeddings|:", float((E_by_hand - E).abs().max()))
assert torch.allclose(E_by_hand, E, atol=1e-5)

# %% [markdown]
# ## Positions: learned or sinusoidal?
#
# Attention without positions treats the input as a bag of tokens (tutorial 01's permutation
# test). BERT and GPT *learn* one vector per position, `E_position[t]`, a `(T_max, d)` table
# (`max_position_embeddings` rows: a BERT cannot read position 512 if it has 512 rows). The
# original Transformer (Vaswani et al. 2017, section 3.5) used fixed sinusoids instead:
#
#     PE[t, 2i] = sin(t / 10000^(2i/d)),   PE[t, 2i+1] = cos(t / 10000^(2i/d))
#
# defined for every `t`, and with a useful property: `PE[t] . PE[t+k] = sum_i cos(k w_i)` depends
# on the offset `k` only, not on `t`. The code below checks that property.
#
# **Predict, then run.** A one-layer, one-head attention model is trained to output, at each
# position `t`, the token at `t - 1` (random tokens, 12 of them). Three versions: no positions,
# learned positions, sinusoidal positions. What accuracy does the version *without* positions
# reach: near 100%, or near chance? And which of the other two learns faster?

# %%
def sinusoidal_positions(T: int, d: int) -> torch.Tensor:
    """PE[t, 2i] = sin(t w_i), PE[t, 2i+1] = cos(t w_i), w_i = 10000^(-2i/d); shape (T, d)."""
    t = torch.arange(T, dtype=torch.float32)[:, None]  # (T, 1)
    omega = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float32) / d)  # (d / 2,)
    pe = torch.zeros(T, d)
    pe[:, 0::2] = torch.sin(t * omega)
    pe[:, 1::2] = torch.cos(t * omega)
    return pe


gram = sinusoidal_positions(64, 32) @ sinusoidal_positions(64, 32).T  # (T, T): PE[t] . PE[u]
for offset in (1, 5):
    diagonal = torch.diagonal(gram, offset=offset)  # PE[t] . PE[t + offset] for every t
    print(f"PE[t] . PE[t+{offset}] over all t: min {float(diagonal.min()):.4f}, max {float(diagonal.max()):.4f}")
    assert torch.allclose(diagonal, diagonal[0].expand_as(diagonal), atol=1e-3)


class PositionProbe(torch.nn.Module):
    """tokens + positions -> one attention head (with W^O) -> a linear read-out over the vocabulary."""

    def __init__(self, vocab_size: int, T: int, d: int, positions: str):
        super().__init__()
        self.tokens = torch.nn.Embedding(vocab_size, d)
        if positions == "learned":
            self.positions = torch.nn.Parameter(0.02 * torch.randn(T, d))  # BERT's init scale
        else:  # fixed: sinusoids, or zeros for "none"
            table = sinusoidal_positions(T, d) if positions == "sinusoidal" else torch.zeros(T, d)
            self.register_buffer("positions", table)
        self.attention = MultiHeadAttention(d, num_heads=1, output_projection=True)
        self.read_out = torch.nn.Linear(d, vocab_size)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, V)
        x = self.tokens(ids) + self.positions[: ids.size(1)]  # (B, T, d)
        return self.read_out(self.attention(x)[0])


def previous_token_accuracy(model: PositionProbe, vocab_size: int, T: int) -> float:
    ids = torch.randint(vocab_size, (512, T))
    return float((model(ids)[:, 1:].argmax(-1) == ids[:, :-1]).float().mean())


vocab_size, T_probe, d_probe, steps = 12, 12, 32, 150
threads = torch.get_num_threads()
torch.set_num_threads(1)  # a model this small runs faster on one core than split across several
probe_accuracy = {}
for positions in ("none", "learned", "sinusoidal"):
    _setup.seed(0)
    probe = PositionProbe(vocab_size, T_probe, d_probe, positions)
    optimizer = torch.optim.Adam(probe.parameters(), lr=1e-2)
    with torch.enable_grad():
        for step in range(1, steps + 1):
            random_ids = torch.randint(vocab_size, (64, T_probe))
            logits = probe(random_ids)[:, 1:]  # position t predicts the token at t - 1
            loss = F.cross_entropy(logits.reshape(-1, vocab_size), random_ids[:, :-1].reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if step == 50:
                early = previous_token_accuracy(probe, vocab_size, T_probe)
    probe_accuracy[positions] = previous_token_accuracy(probe, vocab_size, T_probe)
    print(f"{positions:>10} positions: accuracy after 50 steps {early:.2f}, after {steps} steps "
          f"{probe_accuracy[positions]:.2f}  (chance {1 / vocab_size:.2f})")
torch.set_num_threads(threads)
assert probe_accuracy["none"] < 0.4, probe_accuracy
assert probe_accuracy["learned"] > 0.9 and probe_accuracy["sinusoidal"] > 0.9, probe_accuracy

# %% [markdown]
# Without positions the model cannot tell which token came just before: it can only guess from
# the bag of tokens it sees, well below 100% whatever the number of steps. Either kind of
# position solves the task. On this run the sinusoids got there sooner (their offset structure is
# given, the learned table must discover it); with enough data both work, which is why BERT and
# GPT simply learn theirs. The learned table's price: no row for a position beyond `T_max`.

# %% [markdown]
# ## The whole BertModel
#
#     H_0 = E,   H_l = EncoderBlock_l(H_{l-1}) for l = 1..L,   c = tanh(H_L[0] W_p + b_p)
#
# `c`, the "pooled" vector of `[CLS]` (position 0; Devlin et al. call it `C`), is what
# sentence-level heads (NSP, classification) read: the pooler's dense layer `W_p` and tanh sit
# between the final `[CLS]` state `H_L[0]` and those heads.

# %%
_setup.seed(0)
model = BertModel(config).eval()
out = model(ids, attention_mask=batch["attention_mask"], token_type_ids=segments,
            output_hidden_states=True, output_attentions=True)
print("input_ids          ", tuple(ids.shape), "(B, T)")
print("last_hidden_state  ", tuple(out.last_hidden_state.shape), "(B, T, d): H_L")
print("pooler_output      ", tuple(out.pooler_output.shape), "(B, d): c")
print("hidden_states      ", len(out.hidden_states), "tensors: H_0 (the embeddings) ... H_L")
print("attentions         ", len(out.attentions), "x", tuple(out.attentions[0].shape), "(B, h, T, T)")
pooled_by_hand = torch.tanh(model.pooler.dense(out.last_hidden_state[:, 0]))  # tanh(H_L[0] W_p + b_p)
assert torch.allclose(pooled_by_hand, out.pooler_output, atol=1e-6)
pads = batch["attention_mask"][1] == 0
print("weight any query of sentence 2 puts on its pads:",
      float(out.attentions[-1][1][..., pads].abs().max()))
print("parameters:", sum(p.numel() for p in model.parameters()))

# %% [markdown]
# ## The same names as Hugging Face transformers
#
# Every parameter has the name transformers gives it, so a real BERT checkpoint loads by name
# with nothing renamed (tutorial 11 loads the real MiniLM weights):

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
#     python -m tutorials.exercises make --out ../student --only encoder_block --only embeddings
#     cd ../student && python -m tutorials.exercises grade --only encoder_block --only embeddings

# %%
from tutorials.exercises import REGISTRY

for name in ("encoder_block", "embeddings"):
    print(f"{name}: {REGISTRY[name].pytest_command()}")
