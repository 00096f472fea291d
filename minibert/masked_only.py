"""A speed trick of MLM pre-training, in one place: compute only what the loss reads.

L_MLM reads the MLM head at I = {i : labels_i != -100} only (about 15% of the tokens) and L_NSP reads
only c = tanh(H_L[:, 0] W_p + b_p). So once layers 1..L-1 have run at every position, the LAST layer
is needed only at [CLS] and at I: its queries come from those K positions, its keys and values from
all T, so each row it returns is exactly the row the full layer would give there. Its feed-forward
and W^O then run on K rows instead of T, and the vocabulary projection (B T x d)(d x V), the
largest matrix product of a small BERT, on the N = |I| masked rows only.

What it trades: the loss and every gradient are the same (pinned by
tests/test_bert_parity.py::test_mlm_logits_at_masked_only_keeps_loss_and_gradients and
tests/test_bench.py::test_encoder_block_at_equals_the_block_at_those_positions), but the MLM logits
come back as (N, V) for the masked positions, in order, instead of (B, T, V), and there are no
per-layer outputs (with output_attentions or output_hidden_states the textbook path runs instead).

Switched on by the forward argument `mlm_logits_at_masked_only` (minibert.pretrain passes it with
every batch; it is never saved in config.json) and read in one place: the first line of
BertForPreTraining.forward and BertForMaskedLM.forward (minibert/heads.py), which hand the batch
here. Everything else - BertModel, BertEncoder, EncoderBlock - is the textbook computation.
"""
from __future__ import annotations

from typing import Optional

import torch

from common.nn.blocks import EncoderBlock
from common.nn.losses import IGNORE_INDEX


def applies(switch: bool, labels: Optional[torch.Tensor], output_attentions: bool, output_hidden_states: bool) -> bool:
    """The trick runs when it is switched on, a loss will read the labels, and no per-layer output is asked."""
    return (bool(switch) and labels is not None
            and not output_attentions and not output_hidden_states)


def loss_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The positions of I = {i : labels_i != -100} of each row, in order, padded to the longest row.

    labels (B, T) -> positions (B, K) long, K = max_b |I_b|, and valid (B, K) bool (False = padding
    slot, position 0). hidden[b, positions[b]][valid[b]] are the rows of hidden[b][labels[b] != -100].
    """
    in_loss = labels != IGNORE_INDEX  # (B, T)
    counts = in_loss.sum(dim=1)  # (B,)
    K = int(counts.max()) if labels.numel() else 0
    order = torch.argsort((~in_loss).to(torch.uint8), dim=1, stable=True)  # I_b first, in order
    slots = torch.arange(K, device=labels.device)[None, :]  # (1, K)
    valid = slots < counts[:, None]  # (B, K)
    positions = order[:, :K].masked_fill(~valid, 0)  # (B, K)
    return positions, valid


def encoder_block_at(block: EncoderBlock, x: torch.Tensor, positions: torch.Tensor,
                     mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """EncoderBlock.forward(x)[b, positions[b]] for every b, computed at those K positions only.

    x (B, T, d), positions (B, K) -> (B, K, d). Queries from the K positions, keys and values from all
    T: h = LayerNorm(x_K + Dropout(MultiHead(x_K, x) W^O)), y = LayerNorm(h + FFN(h)).
    """
    index = positions[..., None].expand(-1, -1, x.size(-1))  # (B, K, d)
    x_at = x.gather(1, index)  # (B, K, d)
    context, _ = block.attention.self(x_at, key_value_states=x, mask=mask)  # (B, K, d)
    h = block.attention.output(context, x_at)  # (B, K, d)
    return block.output(block.intermediate(h), h)  # (B, K, d)


def last_hidden_at(bert, positions: torch.Tensor, input_ids, attention_mask=None, token_type_ids=None,
                   position_ids=None) -> torch.Tensor:
    """H_L at `positions` (B, K) -> (B, K, d): BertModel's forward with its last layer run at K positions."""
    hidden, mask = bert.embed(input_ids, attention_mask, token_type_ids, position_ids)  # (B, T, d)
    for layer in bert.encoder.layer[:-1]:
        hidden, _ = layer(hidden, mask=mask)
    return encoder_block_at(bert.encoder.layer[-1], hidden, positions, mask)


def pretraining_logits(model, input_ids, attention_mask, token_type_ids, position_ids, labels):
    """BertForPreTraining at the loss's positions -> (MLM logits (N, V), their labels (N,), NSP logits (B, 2))."""
    positions, valid = loss_positions(labels)  # (B, K)
    cls_first = torch.cat([positions.new_zeros(len(positions), 1), positions], dim=1)  # (B, 1 + K)
    hidden = last_hidden_at(model.bert, cls_first, input_ids, attention_mask, token_type_ids, position_ids)
    prediction_logits = model.cls.predictions(hidden[:, 1:][valid])  # (N, V)
    seq_relationship_logits = model.cls.seq_relationship(model.bert.pooler(hidden))  # pooler reads [CLS]: (B, 2)
    return prediction_logits, labels.gather(1, positions)[valid], seq_relationship_logits


def masked_lm_logits(model, input_ids, attention_mask, token_type_ids, position_ids, labels):
    """BertForMaskedLM at the masked positions -> (logits (N, V), their labels (N,))."""
    positions, valid = loss_positions(labels)  # (B, K)
    hidden = last_hidden_at(model.bert, positions, input_ids, attention_mask, token_type_ids, position_ids)
    return model.cls(hidden[valid]), labels.gather(1, positions)[valid]  # (N, V), (N,)
