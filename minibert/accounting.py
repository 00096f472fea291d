"""What training BERT with the MLM head costs, from its config and the batch shape (B, T).

Parameters (d = hidden_size, I = intermediate_size, P = max_position_embeddings, t = type_vocab_size;
BertForMaskedLM: no pooler, the decoder's weight is the token table, its bias V numbers):
    (V + P + t) d + 2 d                                   embeddings and their LayerNorm
    + L [ 4 (d^2 + d) + 2 d I + I + d + 4 d ]             Q, K, V, W^O; W_1, W_2; two LayerNorms
    + d^2 + d + 2 d + V                                   the MLM transform, its LayerNorm, the decoder bias

FLOPs per step (common/train/accounting.py): 6 D (L (4 d^2 + 2 d I) + d^2 + d V) + 12 B h T^2 d_k L.

Activations per layer, in numbers (x 4 bytes): the layer's input, Q, K, V, the merged heads, the two
LayerNorms' inputs and the first one's output (7 B T d), the two (B, T, I) tensors of the
feed-forward, the weights P (B h T^2) and the LayerNorms' statistics (4 B T); with dropout p > 0
two (B, T, d) masks and two (B, h, T, T) tensors more (the mask and the dropped weights).
The head keeps H_L, the transform's output, the activation's output and the LayerNorm's output
(4 B T d), the logits and exp(z - m) of the loss (2 B T V).
"""
from __future__ import annotations

from common.train.accounting import FLOAT_BYTES, TrainingCost, attention_flops, linear_flops
from minibert.config import BertConfig


def parameters(c: BertConfig) -> int:
    d, I, L, V = c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.vocab_size
    embeddings = (V + c.max_position_embeddings + c.type_vocab_size) * d + 2 * d
    layer = 4 * (d * d + d) + 2 * d * I + I + d + 4 * d
    head = d * d + d + 2 * d + V
    return embeddings + L * layer + head


def estimate(config: BertConfig, batch_size: int, seq_len: int) -> TrainingCost:
    """One AdamW step of BertForMaskedLM (MLM loss over every position's logits) on (B, T) tokens."""
    c, B, T = config, batch_size, seq_len
    d, I, L, V, h = c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.vocab_size, c.num_attention_heads
    D = B * T
    flops = (L * (linear_flops(D, d, 4 * d) + linear_flops(D, d, 2 * I)
                  + attention_flops(B, h, T, T, d // h))
             + linear_flops(D, d, d) + linear_flops(D, d, V))
    layer = 7 * D * d + 2 * D * I + B * h * T * T + 4 * D
    if c.hidden_dropout_prob > 0:
        layer += 2 * D * d
    if c.attention_probs_dropout_prob > 0:
        layer += 2 * B * h * T * T
    s = FLOAT_BYTES
    activations = {"embeddings": 8 * 2 * D + s * (D * d + 2 * D + (D * d if c.hidden_dropout_prob > 0 else 0))}
    activations.update({f"layer {i + 1}": s * layer for i in range(L)})
    activations["head"] = s * (4 * D * d + 2 * D + 2 * D * V)
    # The loss's two (B, T, V) gradients, or the gradient of P (no mask: nothing padded, see BertModel.embed).
    transient = s * max(2 * D * V, B * h * T * T)
    return TrainingCost("minibert", parameters(c), flops, activations, transient)
