"""What training a GPT costs, from its config and the batch shape (B sequences of T tokens).

Parameters (d = n_embd, I = n_inner, d_kv = n_kv_head * head_dim, b = 1 with biases else 0,
n = 2 parameters per LayerNorm with bias, 1 for RMSNorm or LayerNorm without bias):
    V d  (+ T_max d learned positions)  (+ V d untied head)  + n d (final norm)
    + L [ 2 n d + d (d + d_kv + d_kv + d) + b (2 d + 2 d_kv) + FFN ]
    FFN gelu: 2 d I + b (I + d);   swiglu: 3 d I + b (2 I + d)

FLOPs per step (common/train/accounting.py): 6 D N_mat + 12 B h T^2 d_k L, D = B T,
    N_mat = L (2 d^2 + 2 d d_kv + (2 or 3) d I) + d V.

Activations autograd keeps per layer, in numbers (x 4 bytes in float32), GPT-2 shape:
    each norm keeps its input and output (2 B T d) and two numbers per row (LayerNorm's mean and
        1/std; RMSNorm keeps its normalised x too: 3 B T d + 2 B T);
    Q, K, V (K and V after repeat_kv): 3 B T d;   the weights P: B h T^2;   the merged heads: B T d;
    FFN: its two (B, T, I) tensors (gelu: c_fc's output and the activation's; swiglu: four);
    with dropout p > 0 each dropout keeps its scale mask: 2 B T d + (B h T^2 on the weights, and the
        dropped weights, 2 B h T^2).
The head keeps ln_f's input and output, the logits (B, T, V) and exp(z - m) of the loss (B, T-1, V);
the embeddings keep the ids (8 bytes each) and, with dropout, one (B, T, d) mask. The peak adds
two (B, T, V) or two (B, h, T, T) gradients at the start of the backward (TrainingCost.peak).
"""
from __future__ import annotations

from common.train.accounting import FLOAT_BYTES, TrainingCost, attention_flops, linear_flops
from minigpt.config import GPTConfig


def parameters(c: GPTConfig) -> int:
    d, I, L, V = c.n_embd, c.n_inner, c.n_layer, c.vocab_size
    d_kv = c.n_kv_head * c.head_dim
    b = 1 if c.bias else 0
    n = 2 if (c.normalization == "layernorm" and c.bias) else 1
    ffn = (2 * d * I + b * (I + d)) if c.feed_forward == "gelu" else (3 * d * I + b * (2 * I + d))
    layer = 2 * n * d + d * (2 * d + 2 * d_kv) + b * (2 * d + 2 * d_kv) + ffn
    total = V * d + n * d + L * layer
    if c.position_embedding == "learned":
        total += c.block_size * d
    if not c.tie_word_embeddings:
        total += V * d
    return total


def estimate(config: GPTConfig, batch_size: int, seq_len: int, gradient_checkpointing: bool = False) -> TrainingCost:
    """Parameters, FLOPs and memory of one AdamW training step of GPT (LM loss) on (B, T) tokens;
    gradient_checkpointing: each block keeps its input only and runs its forward twice."""
    c, B, T = config, batch_size, seq_len
    d, I, L, V, h = c.n_embd, c.n_inner, c.n_layer, c.vocab_size, c.n_head
    d_kv = c.n_kv_head * c.head_dim
    D = B * T
    ffn_mats = 2 if c.feed_forward == "gelu" else 3
    block_flops = (linear_flops(D, d, 2 * d + 2 * d_kv) + linear_flops(D, d, ffn_mats * I)
                   + attention_flops(B, h, T, T, c.head_dim))
    flops = L * block_flops + linear_flops(D, d, V)
    norm = 2 * D * d + 2 * D if c.normalization == "layernorm" else 3 * D * d + 2 * D
    ffn = (2 if c.feed_forward == "gelu" else 4) * D * I
    layer = 2 * norm + 3 * D * d + B * h * T * T + D * d + ffn
    if c.dropout > 0:
        layer += 2 * D * d + 2 * B * h * T * T
    s = FLOAT_BYTES
    activations = {"embeddings": 8 * D * (2 if c.position_embedding == "learned" else 1)
                   + (s * D * d if c.dropout > 0 else 0)}
    activations.update({f"layer {i + 1}": s * layer for i in range(L)})
    activations["head"] = s * (norm + D * V + B * (T - 1) * V)
    # The backward pass starts with two (B, T, V) gradients of the loss (of exp(z - m) and of z - m)
    # and, in the last layer, two (B, h, T, T) ones (of P and of the scores).
    transient = s * 2 * max(D * V, B * h * T * T)
    cost = TrainingCost("minigpt", parameters(c), flops, activations, transient)
    if gradient_checkpointing:
        kept = {f"layer {i + 1}": s * D * d for i in range(L)}
        cost = cost.checkpointed(kept, s * 2 * B * h * T * T, L * block_flops // 3)
    return cost
