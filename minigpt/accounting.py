"""What training a GPT costs, from its config and the batch shape (B sequences of T tokens).

Parameters (C = n_embd, I = n_inner, C_kv = n_kv_head * head_dim, b = 1 with biases else 0,
n = 2 parameters per LayerNorm with bias, 1 for RMSNorm or LayerNorm without bias):
    V C  (+ T_max C learned positions)  (+ V C untied head)  + n C (final norm)
    + L [ 2 n C + C (C + C_kv + C_kv + C) + b (2 C + 2 C_kv) + FFN ]
    FFN gelu: 2 C I + b (I + C);   swiglu: 3 C I + b (2 I + C)

FLOPs per step (common/train/accounting.py): 6 D N_mat + 12 B h T^2 d_k L, D = B T,
    N_mat = L (2 C^2 + 2 C C_kv + (2 or 3) C I) + C V.

Activations autograd keeps per layer, in numbers (x 4 bytes in float32), GPT-2 shape:
    each norm keeps its input and output (2 B T C) and two numbers per row (LayerNorm's mean and
        1/std; RMSNorm keeps its normalised x too: 3 B T C + 2 B T);
    Q, K, V (K and V after repeat_kv): 3 B T C;   the weights P: B h T^2;   the merged heads: B T C;
    FFN: its two (B, T, I) tensors (gelu: c_fc's output and the activation's; swiglu: four);
    with dropout p > 0 each dropout keeps its scale mask: 2 B T C + (B h T^2 on the weights, and the
        dropped weights, 2 B h T^2).
The head keeps ln_f's input and output, the logits (B, T, V) and exp(z - m) of the loss (B, T-1, V);
the embeddings keep the ids (8 bytes each) and, with dropout, one (B, T, C) mask. The peak adds
two (B, T, V) or two (B, h, T, T) gradients at the start of the backward (TrainingCost.peak).
"""
from __future__ import annotations

from common.train.accounting import FLOAT_BYTES, TrainingCost, attention_flops, linear_flops
from minigpt.config import GPTConfig


def parameters(c: GPTConfig) -> int:
    C, I, L, V = c.n_embd, c.n_inner, c.n_layer, c.vocab_size
    C_kv = c.n_kv_head * c.head_dim
    b = 1 if c.bias else 0
    n = 2 if (c.normalization == "layernorm" and c.bias) else 1
    ffn = (2 * C * I + b * (I + C)) if c.feed_forward == "gelu" else (3 * C * I + b * (2 * I + C))
    layer = 2 * n * C + C * (2 * C + 2 * C_kv) + b * (2 * C + 2 * C_kv) + ffn
    total = V * C + n * C + L * layer
    if c.position_embedding == "learned":
        total += c.block_size * C
    if not c.tie_word_embeddings:
        total += V * C
    return total


def estimate(config: GPTConfig, batch_size: int, seq_len: int, gradient_checkpointing: bool = False) -> TrainingCost:
    """Parameters, FLOPs and memory of one AdamW training step of GPT (LM loss) on (B, T) tokens;
    gradient_checkpointing: each block keeps its input only and runs its forward twice."""
    c, B, T = config, batch_size, seq_len
    C, I, L, V, h = c.n_embd, c.n_inner, c.n_layer, c.vocab_size, c.n_head
    C_kv = c.n_kv_head * c.head_dim
    D = B * T
    ffn_mats = 2 if c.feed_forward == "gelu" else 3
    block_flops = (linear_flops(D, C, 2 * C + 2 * C_kv) + linear_flops(D, C, ffn_mats * I)
                   + attention_flops(B, h, T, T, c.head_dim))
    flops = L * block_flops + linear_flops(D, C, V)
    norm = 2 * D * C + 2 * D if c.normalization == "layernorm" else 3 * D * C + 2 * D
    ffn = (2 if c.feed_forward == "gelu" else 4) * D * I
    layer = 2 * norm + 3 * D * C + B * h * T * T + D * C + ffn
    if c.dropout > 0:
        layer += 2 * D * C + 2 * B * h * T * T
    s = FLOAT_BYTES
    activations = {"embeddings": 8 * D * (2 if c.position_embedding == "learned" else 1)
                   + (s * D * C if c.dropout > 0 else 0)}
    activations.update({f"layer {i + 1}": s * layer for i in range(L)})
    activations["head"] = s * (norm + D * V + B * (T - 1) * V)
    # The backward pass starts with two (B, T, V) gradients of the loss (of exp(z - m) and of z - m)
    # and, in the last layer, two (B, h, T, T) ones (of P and of the scores).
    transient = s * 2 * max(D * V, B * h * T * T)
    cost = TrainingCost("minigpt", parameters(c), flops, activations, transient)
    if gradient_checkpointing:
        kept = {f"layer {i + 1}": s * D * C for i in range(L)}
        cost = cost.checkpointed(kept, s * 2 * B * h * T * T, L * block_flops // 3)
    return cost
