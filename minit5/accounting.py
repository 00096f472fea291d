"""What training T5 costs, from its config and the batch shape: B pairs of S source and T target tokens.

Parameters (d = d_model, A = num_heads * d_kv the attention's inner width, F = d_ff, n_b =
relative_attention_num_buckets; g = 3 matrices in the gated feed-forward, else 2):
    V d (+ V d untied head)
    + L_enc [ 4 d A + g d F + 2 d ] + n_b h + d               encoder: layer 0 holds the bias table
    + L_dec [ 8 d A + g d F + 3 d ] + n_b h + d               decoder: self- and cross-attention

FLOPs per step (common/train/accounting.py), D_e = B S, D_d = B T:
    6 D_e L_enc (4 d A + g d F) + 6 D_d L_dec (6 d A + g d F) + 6 D_e L_dec 2 d A + 6 D_d d V
    + 12 B h d_kv (L_enc S^2 + L_dec (T^2 + T S))

Activations, in numbers (x 4 bytes): each RMSNorm keeps its input, its normalised x and its output
(3 D d) and 2 D statistics; each attention its Q, K, V, merged heads and weights; the feed-forward
its (D, F) tensors (2, gated 4). The cross-attention computes K and V from the encoder's output
in every decoder layer (2 D_e A each). The head keeps the decoder output (rescaled by d^-1/2 when
tied), the logits and exp(z - m) of the loss. Dropout is counted as in minigpt/accounting.py.
"""
from __future__ import annotations

from common.train.accounting import FLOAT_BYTES, TrainingCost, attention_flops, linear_flops
from minit5.config import T5Config


def parameters(c: T5Config) -> int:
    d, A, F, V, h = c.d_model, c.inner_dim, c.d_ff, c.vocab_size, c.num_heads
    g = 3 if c.is_gated_act else 2
    bias_table = c.relative_attention_num_buckets * h
    encoder = c.num_layers * (4 * d * A + g * d * F + 2 * d) + bias_table + d
    decoder = c.num_decoder_layers * (8 * d * A + g * d * F + 3 * d) + bias_table + d
    return V * d * (1 if c.tie_word_embeddings else 2) + encoder + decoder


def estimate(config: T5Config, batch_size: int, seq_len: int, target_len: int | None = None) -> TrainingCost:
    """One AdamW step of T5ForConditionalGeneration on (B, S) sources and (B, T) labels (T = S if not given)."""
    c, B, S = config, batch_size, seq_len
    T = S if target_len is None else target_len
    d, A, F, V, h, d_k = c.d_model, c.inner_dim, c.d_ff, c.vocab_size, c.num_heads, c.d_kv
    g = 3 if c.is_gated_act else 2
    De, Dd = B * S, B * T
    L_e, L_d = c.num_layers, c.num_decoder_layers
    flops = (L_e * (linear_flops(De, d, 4 * A) + linear_flops(De, d, g * F) + attention_flops(B, h, S, S, d_k))
             + L_d * (linear_flops(Dd, d, 6 * A) + linear_flops(De, d, 2 * A) + linear_flops(Dd, d, g * F)
                      + attention_flops(B, h, T, T, d_k) + attention_flops(B, h, T, S, d_k))
             + linear_flops(Dd, d, V))
    p = c.dropout_rate > 0

    def norm(D):
        return 3 * D * d + 2 * D

    def self_attention(D, n):
        return norm(D) + 4 * D * A + B * h * n * n + (2 * D * d + 2 * B * h * n * n if p else 0)

    ffn = 4 if c.is_gated_act else 2
    s = FLOAT_BYTES
    activations = {"embeddings": 8 * (De + Dd) + s * (De * d + Dd * d if p else 0)}
    for i in range(L_e):
        layer = self_attention(De, S) + norm(De) + ffn * De * F + (De * d + De * F if p else 0)
        activations[f"encoder {i + 1}"] = s * layer
    activations["encoder norm"] = s * (norm(De) + (De * d if p else 0))
    for i in range(L_d):
        cross = norm(Dd) + 2 * Dd * A + 2 * De * A + B * h * T * S + (Dd * d + 2 * B * h * T * S if p else 0)
        layer = self_attention(Dd, T) + cross + norm(Dd) + ffn * Dd * F + (Dd * d + Dd * F if p else 0)
        activations[f"decoder {i + 1}"] = s * layer
    activations["head"] = s * (norm(Dd) + (Dd * d if c.tie_word_embeddings else 0) + (Dd * d if p else 0)
                               + 2 * Dd * V)
    transient = s * 2 * max(Dd * V, B * h * max(S, T) ** 2)  # see minigpt/accounting.py
    return TrainingCost("minit5", parameters(c), flops, activations, transient)
