# %% [markdown]
# # 14 · 用 T5 解码：教师强制、贪心解码与束搜索、BLEU
#
# 教程 13 搭好了 T5：编码器读入源序列 x，解码器一边回看编码器，一边写出目标序列 y。T5 建模的是
#
#     P(y | x) = prod_{t=1}^{T} p(y_t | y_<t, x)
#
# 本教程先在句对上训练这个乘积（教师强制，第 1 节），再定义译文的评分（BLEU，第 2 节），然后让解码器动笔：
# 贪心解码与束搜索（第 3 节），用在一个一分钟就能学会的玩具翻译任务上（第 4 节）。代码：`minit5/model.py`
# （`shift_right`、`T5ForConditionalGeneration`）、`common/generation/beam_search.py`（`BeamSearch.step`，由 `minit5/generate.py` 调用）、
# `minit5/metrics.py`（`corpus_bleu`）。测试：`tests/test_t5_parity.py`（与 transformers 的 `generate`
# 生成相同的词元，包括束搜索）、`tests/test_minit5_cli.py`（我们的 BLEU 与 sacrebleu 相等）。
#
# 运行：`python tutorials/zh/14_t5_decoding.py`（在 2 核 CPU 上约 10 秒）；`TUTORIAL_QUICK=1` 只用更少的测试句子。

# %%
import _setup

import math
import random
import time
from types import SimpleNamespace

import torch

from minit5.config import T5Config
from minit5.generate import generate
from minit5.metrics import corpus_bleu, ngrams, tokenize_13a
from minit5.model import T5ForConditionalGeneration, shift_right

_setup.seed(0)
torch.set_printoptions(precision=3, sci_mode=False)
QUICK = _setup.QUICK

# %% [markdown]
# ## 1. 教师强制与解码器起始词元
#
# 训练时并不生成。解码器每一步读到的都是**真实的**前文（教师强制），所以 y 的 T 个位置在一次前向传播中
# 并行地得到预测，和教程 08 里的 GPT 一样。解码器的输入是把目标右移一位、前面补一个起始词元：
#
#     y_in = [start, y_1, ..., y_{T-1}]          位置 t 读 y_in[1..t] = (start, y_<t)，预测 y_t
#
# 因果掩码保证位置 t 读不到 y_t 本身。起始词元（T5 里就是填充词元，id 0）不代表任何词，它只表示“目标从这里
# 开始”，好让第一个位置有东西可读。标签 -100（填充位置，损失忽略它）在输入里换成填充词元。损失是所有带标签
# 位置上 -log p(y_t | y_<t, x) 的平均。

# %%
config = T5Config(vocab_size=30, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2, dropout_rate=0.0,
                  relative_attention_num_buckets=16, relative_attention_max_distance=32)
model = T5ForConditionalGeneration(config).eval()
source = torch.tensor([[5, 6, 7, 1]])  # three tokens and </s> (id 1)
labels = torch.tensor([[9, 10, 11, 1, -100]])  # y_1 y_2 y_3 </s>, one padded slot
decoder_input_ids = shift_right(labels, decoder_start_token_id=0, pad_token_id=0)
print("labels            ", labels.tolist()[0])
print("decoder_input_ids ", decoder_input_ids.tolist()[0], "  (start, y_1, y_2, y_3, pad)")
with torch.no_grad():
    out = model(input_ids=source, labels=labels)  # builds decoder_input_ids from labels itself
    logits = model(input_ids=source, decoder_input_ids=decoder_input_ids).logits  # (1, 5, V)
kept = labels[0] != -100
by_hand = -torch.log_softmax(logits[0], dim=-1)[kept].gather(1, labels[0, kept, None]).mean()
print(f"loss from labels {out.loss.item():.6f}   by hand, -mean log p(y_t | y_<t, x) {by_hand.item():.6f}")
assert torch.allclose(out.loss, by_hand, atol=1e-6)

# %% [markdown]
# 生成时没有真实的 y：解码器只从 `[start]` 出发，每写出一个词元，就把它作为下一步的输入。每一步怎样挑
# 这个词元，见第 3 节。
#
# ## 2. BLEU：给译文打分
#
# BLEU（Papineni et al. 2002）按共有的 n 元组比较译文（假设）和参考译文：
#
#     p_n  = 匹配的 n 元组数 / 假设中的 n 元组数                n = 1..4，在整个语料上求和
#            （截断计数：一个 n 元组最多按它在参考译文中出现的次数计）
#     BP   = 1（c >= r 时），否则 exp(1 - r / c)                  c、r：假设与参考译文的词数
#     BLEU = 100 BP exp((1/4) sum_n log p_n)
#
# 只看精确率会鼓励又短又保险的译文，简短惩罚 BP 把这点收回来。某个 p_n = 0 会让总分变成 0，所以 sacrebleu
# （以及 `corpus_bleu`）做了平滑：第 k 个完全没有匹配的阶按 1 / (2^k × 假设的 n 元组数) 计。计数之前先按
# sacrebleu 的 “13a” 规则分词（标点单独成词）。先手算一对，再调用库函数：

# %%
hypothesis, reference = "the cat sat on the mat", "the cat sat quietly on the mat"
hyp, ref = tokenize_13a(hypothesis), tokenize_13a(reference)
log_p, empty = [], 0
for n in range(1, 5):
    counts, in_ref = ngrams(hyp, n), ngrams(ref, n)
    matches = sum(min(c, in_ref[g]) for g, c in counts.items())
    total = sum(counts.values())
    if matches == 0:  # smoothing: the k-th empty order counts 1 / (2^k total)
        empty += 1
        matches = 1 / 2 ** empty
    print(f"p_{n} = {matches:g} / {total}")
    log_p.append(math.log(matches / total))
BP = 1.0 if len(hyp) >= len(ref) else math.exp(1 - len(ref) / len(hyp))
bleu = 100 * BP * math.exp(sum(log_p) / 4)
print(f"c = {len(hyp)}, r = {len(ref)}, BP = {BP:.4f}   BLEU by hand {bleu:.4f}   "
      f"corpus_bleu {corpus_bleu([hypothesis], [reference]):.4f}")
assert abs(bleu - corpus_bleu([hypothesis], [reference])) < 1e-9

# %% [markdown]
# ## 3. 贪心解码与束搜索
#
# **贪心解码**每一步取 `y_t = argmax_v p(v | y_<t, x)`：只挑眼下最好的词元，从不回头。可眼下最好的词元，
# 未必能引出最好的句子。**束搜索**同时保留 K = `num_beams` 个最可能的前缀。记
# `log P(y_<=t | x) = sum_s log p(y_s | y_<s, x)`，每一步：
#
# 1. 每个候选前缀接上每个词元，得到 K V 个候选，得分为 log P(前缀) + log p(词元 | 前缀, x)；保留最好的 2K 个
#    （取 2K，是为了即使其中 K 个在这一步结束，也还有 K 个能继续）；
# 2. 前 K 个候选中以 </s> 结尾（或达到 `max_new_tokens`）的成为完成的假设，得分 `log P / n^lp`：n 是生成的
#    词元数，算上 </s>、不算起始词元（与 transformers 相同）；lp 即 `length_penalty`；只保留最好的 K 个完成假设；
# 3. 没有结束的候选中最好的 K 个成为下一步的前缀；每个自注意力缓存按行重排，使第 i 行存的正是第 i 个前缀
#    所接续的那一行。
#
# 当已有 K 个完成的假设、并且没有哪个前缀（按当前长度计分）还能超过其中最差的一个时，搜索停止（或者到达
# `max_new_tokens`）。为什么要除以 `n^lp`：每多一个词元就多加一个负的 log p，所以直接比较 `log P`（lp = 0）
# 总是偏向短的输出；lp = 1 比较的是平均每个词元的 log p；lp > 1 则偏向长的输出。
#
# 不训练也能看清楚：用一个“模型”，它的下一个词元的概率是一张表（词元：0 起始，1 </s>，2 A，3 B，4 C）。
# 起始之后，A（0.55）比 B（0.45）更可能；但 A 后面接什么都没把握，而 B 后面几乎必定是 </s>：
#
#     start -> A 0.55, B 0.45        A -> C 0.40, </s> 0.35, B 0.25        B -> </s> 0.90, C 0.10
#     A C -> </s> 1.0                A B -> </s> 1.0                        B C -> </s> 1.0
#
# **先预测，再运行。** 贪心解码写出 A、C、</s>：P = 0.55 × 0.40 × 1.0 = 0.22。两个束的束搜索
# （`length_penalty` 为 1）返回什么，概率是多少？`length_penalty` 为 2 时呢？

# %%
NAMES = ["<start>", "</s>", "A", "B", "C"]
TABLE = {(0,): {2: 0.55, 3: 0.45}, (0, 2): {4: 0.40, 1: 0.35, 3: 0.25}, (0, 3): {1: 0.90, 4: 0.10},
         (0, 2, 4): {1: 1.0}, (0, 2, 3): {1: 1.0}, (0, 3, 4): {1: 1.0}}


class TableModel(torch.nn.Module):
    """Stands in for T5 in `generate`: encode() ignores the source, decode() reads TABLE."""
    config = SimpleNamespace(eos_token_id=1, pad_token_id=0, decoder_start_token_id=0)

    def encode(self, input_ids, attention_mask=None):
        return torch.zeros(input_ids.size(0), 1, 1)

    def decode(self, tokens, encoded, attention_mask=None):
        logits = torch.full((tokens.size(0), tokens.size(1), len(NAMES)), -1e4)  # log 0, almost
        for row, prefix in enumerate(tokens.tolist()):
            for token, p in TABLE.get(tuple(prefix), {1: 1.0}).items():
                logits[row, -1, token] = math.log(p)
        return logits


def show(tokens):
    return " ".join(NAMES[t] for t in tokens[1:])


def probability(tokens):
    return math.prod(TABLE[tuple(tokens[:i])][tokens[i]] for i in range(1, len(tokens)))


table_model, x = TableModel(), torch.zeros(1, 1, dtype=torch.long)
greedy = generate(table_model, x, max_new_tokens=5, num_beams=1, use_cache=False)[0].tolist()
print(f"greedy                  : {show(greedy):10s} P = {probability(greedy):.3f}")
for lp in (1.0, 2.0):
    beam = generate(table_model, x, max_new_tokens=5, num_beams=2, length_penalty=lp, use_cache=False)[0]
    beam = beam[:1].tolist() + [t for t in beam[1:].tolist() if t != 0]  # the start, then no pad
    n = len(beam) - 1
    print(f"beam, length_penalty {lp:g} : {show(beam):10s} P = {probability(beam):.3f}   "
          f"score log P / n^lp = {math.log(probability(beam)):.3f} / {n}^{lp:g} = "
          f"{math.log(probability(beam)) / n ** lp:.3f}")
    if lp == 1.0:
        assert show(beam) == "B </s>" and probability(beam) > probability(greedy)
    else:
        assert show(beam) == "A C </s>", "lp = 2 divides by n^2: the longer hypothesis wins"

# %% [markdown]
# 束搜索找到了 B </s>（P = 0.405，几乎是贪心解码 0.22 的两倍）：第 1 步时 A 看起来更好，它却把 B 也留了下来。
# lp = 2 时，三个词元的 A C </s> 反而胜出：log P / n^2 = -1.514 / 9 = -0.168，而另一个是
# -0.904 / 4 = -0.226。长度惩罚是在选择“最好”的含义，而不是在纠正某种偏差；transformers 和 T5 默认 lp = 1。
#
# ## 4. 在学出来的任务上比较贪心解码与束搜索
#
# 一个玩具翻译任务：目标是把源序列倒过来、每个字母写两遍，一分钟就能学会。然后用两种解码方法翻译留出的
# 源序列，测量 BLEU（第 2 节）和用时（机器是共享的：每次运行的时间不同，两者的比值变化较小）。

# %%
letters = list(range(3, 23))  # 20 "letters", ids 3..22
def pair(rng):
    src = [rng.choice(letters) for _ in range(rng.randint(3, 8))]
    return src, [t for s in reversed(src) for t in (s, s)]

rng = random.Random(0)
train_pairs = [pair(rng) for _ in range(2000)]
test_pairs = [pair(rng) for _ in range(16 if QUICK else 200)]
toy = T5ForConditionalGeneration(T5Config(vocab_size=30, d_model=64, d_kv=16, num_heads=4, d_ff=128, num_layers=2,
                                          dropout_rate=0.0, relative_attention_num_buckets=16,
                                          relative_attention_max_distance=32))
optimizer = torch.optim.AdamW(toy.parameters(), lr=3e-3)


def batch(pairs):
    S = max(len(s) for s, _ in pairs) + 1
    T = max(len(t) for _, t in pairs) + 1
    x = torch.zeros(len(pairs), S, dtype=torch.long)
    y = torch.full((len(pairs), T), -100)
    for i, (s, t) in enumerate(pairs):
        x[i, :len(s) + 1] = torch.tensor(s + [1])
        y[i, :len(t) + 1] = torch.tensor(t + [1])
    return x, (x != 0).long(), y


steps = 15 if QUICK else 400
for step in range(steps):
    x, m, y = batch(rng.sample(train_pairs, 32))
    loss = toy(input_ids=x, attention_mask=m, labels=y).loss
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
print(f"after {steps} steps: loss {loss.item():.3f}")

x, m, _ = batch(test_pairs)
references = [" ".join(map(str, t)) for _, t in test_pairs]
for num_beams in (1, 4):
    start = time.perf_counter()
    out = toy.generate(x, attention_mask=m, max_new_tokens=20, num_beams=num_beams)
    seconds = time.perf_counter() - start
    hypotheses = [" ".join(str(t) for t in row[1:] if t > 2) for row in out.tolist()]
    print(f"num_beams={num_beams}: BLEU {corpus_bleu(hypotheses, references):6.2f}   {seconds * 1000:7.1f} ms "
          f"for {len(test_pairs)} sources")

# %% [markdown]
# 束搜索每一步的解码器计算量大约是 num_beams 倍（编码器的输出以及交叉注意力的键和值，每个源序列只算一次，
# 由它的各个束共用）。模型训练得好时，贪心解码往往一样好；模型在开头几步拿不准时（就像第 3 节的表格模型），
# 束搜索的帮助最大。
#
# ## 轮到你了：练习 `beam_search`
#
# 在学生副本里（`make exercises`），`beam_search`（`common/generation/beam_search.py`）会抛出 `NotImplementedError`。
# 按第 3 节的三个步骤写出它；它的测试在多种 num_beams、长度惩罚和提前停止规则下，把它生成的词元与
# transformers 的 `generate` 逐个比较：
#
#     python -m tutorials.exercises make --out ../student --only beam_search
#     cd ../student && python -m tutorials.exercises grade --only beam_search

# %%
from tutorials.exercises import REGISTRY

print(REGISTRY["beam_search"].pytest_command())
print("hint:", REGISTRY["beam_search"].hint)
