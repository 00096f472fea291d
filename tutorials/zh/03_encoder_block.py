# %% [markdown]
# # 03 · 编码器块与 BERT 的嵌入
#
# 一个 BERT 层包含教程 01 的多头注意力和一个两层的小网络，每一个都放在残差连接里，后面跟着
# LayerNorm（"post-LN"，与原始 Transformer 相同）：
#
#     X' = LayerNorm(X + Dropout(MultiHead(X)))                   注意力子层
#     Y  = LayerNorm(X' + Dropout(FFN(X')))                       前馈子层
#     FFN(u) = GELU(u W_1 + b_1) W_2 + b_2                        W_1: d -> 4d, W_2: 4d -> d
#
# 其中 `MultiHead(X) = Concat(head_1, ..., head_h) W^O` 与教程 01 完全相同（`W^O` 在内部，只乘
# 一次）。`X`、`X'`、`Y` 的形状都是 `(T, d)`：每个位置一行。
#
# 在第一层之前，每个词元 id 变成一个向量，即三个可学习嵌入之和：
#
#     E = LayerNorm(E_token[x_t] + E_position[t] + E_segment[s_t])     s_t = 0（句子 A）或 1（B）
#
# 代码：`common/nn/blocks.py`（`gelu`、`FeedForward`、`EncoderBlock`），`minibert/model.py`
# （`BertEmbeddings`、`BertModel`）。测试：`tests/test_blocks.py`、`tests/test_bert_parity.py`。
#
# 运行：`python tutorials/zh/03_encoder_block.py`。

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
# ## GELU：精确形式与近似形式
#
# GELU 用“标准正态变量小于输入的概率” `Phi(x)` 给输入加权：
#
#     GELU(x)      = x Phi(x) = 0.5 x (1 + erf(x / sqrt 2))                      BERT（"gelu"）
#     GELU_tanh(x) = 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))           GPT-2（"gelu_new"）
#
# 与 ReLU 不同，它是光滑的，并让较小的负值通过。tanh 形式曾经算得更快；两者相差不到千分之一，但
# 模型必须使用训练时用的那一个，所以 `hidden_act` 是配置的一部分。

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
# ## 前馈网络独立作用于每个位置
#
# `FFN` 以相同的权重作用于每个位置，从不混合不同位置（只有注意力会这样做）。所以在整个
# `(B, T, d)` 张量上运行它，与一次一个位置地运行结果相同：

# %%
d, d_ff = 16, 64
ffn = FeedForward(d, d_ff, activation="gelu")
x = torch.randn(2, 5, d)  # (B, T, d)
print("x", tuple(x.shape), "-> c_fc", tuple(ffn.c_fc(x).shape), "-> c_proj", tuple(ffn(x).shape))
one_at_a_time = torch.cat([ffn(x[:, t:t + 1]) for t in range(5)], dim=1)  # (B, T, d)
print("FFN(x) equals FFN(one position at a time):", torch.allclose(ffn(x), one_at_a_time, atol=1e-6))

# %% [markdown]
# ## 编码器块，一步一步
#
# `EncoderBlock` 沿用 transformers 的子模块名字，所以 BERT 检查点可以直接加载进来：
#
#     attention.self       query, key, value           context = Concat(head_1, ..., head_h)
#     attention.output     dense (W^O), LayerNorm      X' = LayerNorm(X + context W^O)
#                                                         = LayerNorm(X + MultiHead(X))
#     intermediate         dense (W_1), GELU
#     output               dense (W_2), LayerNorm      Y = LayerNorm(X' + GELU(X' W_1) W_2)
#
# （BERT 把 `MultiHead` 拆到两个模块里：`attention.self` 停在拼接处，`attention.output.dense` 是
# `W^O`，所以 `W^O` 仍然只乘一次。）
#
# 我们用这个块自己的权重，在一个有填充的批次上手算它，然后比较。`eval()` 关闭 dropout，两种计算
# 因此都是确定的。

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
# 最后一步运算是 LayerNorm，`LN(z) = g * (z - mean(z)) / sqrt(var(z) + eps) + b` （`g`、`b` 即 PyTorch 的 `weight`、`bias`），在每个位置
# 的 `d` 个通道上计算。初始化时 `g = 1`、`b = 0`，所以每个输出行的均值为 0、标准差为 1——
# `test_encoder_block_output_is_layer_normalised_rows_of_the_input_shape` 检查的正是这个性质：

# %%
print("row means, first sentence:", y[0].mean(-1))
print("row std devs             :", y[0].std(-1, unbiased=False))

# %% [markdown]
# GPT-2 把 LayerNorm 移到每个子层的前面（"pre-LN"：`x + Sublayer(LayerNorm(x))`），在很深的堆叠中
# 训练更稳定；那就是 `DecoderBlock`，教程 08。
#
# ## BERT 的输入：三个嵌入相加
#
# BERT 一次读入一个或两个句子：`[CLS] A [SEP] B [SEP]`。每个词元得到
#
# - `E_token[x_t]`：它是哪个词元（`(V, d)` 表中的一行）；
# - `E_position[t]`：它在哪里（只靠注意力无法区分位置，教程 01）；
# - `E_segment[s_t]`：它属于哪个句子（`token_type_ids`：`[CLS] A [SEP]` 为 0，`B [SEP]` 为 1）。

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
# 这么小的 BERT 也具备 `BertConfig` 中的每一个尺寸（默认值是 BERT-base：12 层、768 个通道、
# 12 个头）。`BertEmbeddings` 计算这个和以及 LayerNorm；我们用它的表手算一遍：

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
# ## 位置：可学习的还是正弦的？
#
# 没有位置信息的注意力把输入当作一袋词元（教程 01 的置换测试）。BERT 和 GPT 为每个位置*学习*一个
# 向量 `E_position[t]`，即一张 `(T_max, d)` 的表（`max_position_embeddings` 行：只有 512 行的 BERT
# 读不了位置 512）。原始 Transformer（Vaswani et al. 2017，第 3.5 节）用的则是固定的正弦函数：
#
#     PE[t, 2i] = sin(t / 10000^(2i/d)),   PE[t, 2i+1] = cos(t / 10000^(2i/d))
#
# 它对每个 `t` 都有定义，并且有一个有用的性质：`PE[t] . PE[t+k] = sum_i cos(k w_i)` 只取决于偏移
# `k`，与 `t` 无关。下面的代码检查这个性质。
#
# **先预测，再运行。** 训练一个单层、单头的注意力模型，让它在每个位置 `t` 输出位置 `t - 1` 上的
# 词元（随机词元，共 12 种）。三个版本：没有位置、可学习位置、正弦位置。*没有*位置的版本能达到
# 多高的准确率：接近 100%，还是接近随机猜测？另外两个版本哪个学得更快？

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
# 没有位置时，模型分辨不出哪个词元紧挨在前面：它只能根据看到的那一袋词元去猜，无论训练多少步都远低于
# 100%。两种位置都能解决这个任务。这次运行中正弦位置更快达到目标（它的偏移结构是给定的，可学习的表
# 必须自己发现它）；数据足够时两者都行，所以 BERT 和 GPT 干脆学习自己的位置。可学习表的代价：超出
# `T_max` 的位置没有对应的行。

# %% [markdown]
# ## 完整的 BertModel
#
#     H_0 = E,   H_l = EncoderBlock_l(H_{l-1}) for l = 1..L,   c = tanh(H_L[0] W_p + b_p)
#
# `c` 是 `[CLS]`（位置 0；Devlin 等人称之为 `C`）的“池化”向量，句子级的头（NSP、分类）读取的就是它：
# 池化层的全连接 `W_p` 和 tanh 位于最终的 `[CLS]` 状态 `H_L[0]` 与这些头之间。

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
# ## 与 Hugging Face transformers 相同的名字
#
# 每个参数的名字都与 transformers 给它的名字相同，所以真实的 BERT 检查点可以按名字加载，无需改名
# （教程 11 加载真实的 MiniLM 权重）：

# %%
names = list(model.state_dict())
for name in names[:6] + ["..."] + names[-4:]:
    print("  ", name)

# %% [markdown]
# 安装了 transformers 时（它是本项目测试用的参照，从不是依赖），我们用相同的尺寸构建它的 BertModel
# 并比较：名字集合相同；把我们的权重复制进去之后，数值也相同。`tests/test_bert_parity.py` 对每一种头
# 都这样做，连梯度也比较。

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
# ## 轮到你了：练习 `encoder_block` 和 `embeddings`
#
# 在学生副本中（`make exercises`），有两个 forward 是桩函数：
#
# - `common/nn/blocks.py` 中的 `EncoderBlock.forward`：上面的两个 post-LN 子层，使用块的
#   `attention`、`intermediate` 和 `output` 子模块；
# - `minibert/model.py` 中的 `BertEmbeddings.forward`：三个嵌入之和（未给出时位置为 `0..T-1`、
#   段为 0），然后 LayerNorm、dropout。
#
#     python -m tutorials.exercises make --out ../student --only encoder_block --only embeddings
#     cd ../student && python -m tutorials.exercises grade --only encoder_block --only embeddings

# %%
from tutorials.exercises import REGISTRY

for name in ("encoder_block", "embeddings"):
    print(f"{name}: {REGISTRY[name].pytest_command()}")
