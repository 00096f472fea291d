"""The task heads on top of BertModel, each a few lines over H_L (B, T, d) or the pooled c (B, d).

Pre-training (Devlin et al. 2019, section 3.1), I = the masked positions (labels != -100):
    MLM:  p(x_i | x~) = softmax(LayerNorm(act(H_L[i] W_t + b_t)) E_token^T + b),  i in I, x~ the corrupted input
          (the output layer reuses the token embedding table E_token: "weight tying")
    NSP:  p(IsNext | A, B) = softmax(c W_nsp + b_nsp)
    L = w_MLM * L_MLM + w_NSP * L_NSP                                   (common.nn.losses.pretraining_loss)
Fine-tuning (section 4):
    sequence classification   logits = Dropout(c) W + b                 (B, K)
    token classification      logits = Dropout(H_L) W + b               (B, T, K)
    question answering        start, end = H_L W_qa + b_qa              (B, T) each

Module names are transformers' (`cls.predictions.transform.dense`, `cls.seq_relationship`,
`classifier`, `qa_outputs`), so checkpoints of either library load into the other.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn

from common.nn.blocks import get_activation
from common.nn.dropout import Dropout
from common.nn.losses import (classification_loss, cross_entropy, mlm_loss, nsp_loss,
                           pretraining_loss)
from minibert import masked_only
from minibert.config import BertConfig
from minibert.model import BertModel, BertPreTrainedModel


@dataclass
class PreTrainingOutput:
    """BertForPreTraining's result (transformers: BertForPreTrainingOutput).
    prediction_logits (B, T, V) - or (N, V) for the N labelled positions when
    mlm_logits_at_masked_only is passed and labels are given; seq_relationship_logits (B, 2)."""

    loss: Optional[torch.Tensor] = None
    prediction_logits: Optional[torch.Tensor] = None
    seq_relationship_logits: Optional[torch.Tensor] = None
    hidden_states: Optional[tuple[torch.Tensor, ...]] = None
    attentions: Optional[tuple[torch.Tensor, ...]] = None

    @property
    def logits(self) -> Optional[torch.Tensor]:
        """The MLM logits, under the name every other head uses (what a Trainer reads)."""
        return self.prediction_logits


@dataclass
class HeadOutput:
    """What BertForMaskedLM, BertForSequenceClassification and BertForTokenClassification return
    (transformers: MaskedLMOutput, SequenceClassifierOutput, TokenClassifierOutput - same fields)."""

    loss: Optional[torch.Tensor] = None
    logits: Optional[torch.Tensor] = None
    hidden_states: Optional[tuple[torch.Tensor, ...]] = None
    attentions: Optional[tuple[torch.Tensor, ...]] = None


@dataclass
class QuestionAnsweringOutput:
    """BertForQuestionAnswering's result (transformers: QuestionAnsweringModelOutput):
    start_logits, end_logits (B, T) score each token as the first / last token of the answer."""

    loss: Optional[torch.Tensor] = None
    start_logits: Optional[torch.Tensor] = None
    end_logits: Optional[torch.Tensor] = None
    hidden_states: Optional[tuple[torch.Tensor, ...]] = None
    attentions: Optional[tuple[torch.Tensor, ...]] = None


class BertPredictionHeadTransform(nn.Module):
    """h -> LayerNorm(act(h W_t + b_t)), (..., d) -> (..., d)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = get_activation(config.hidden_act, fused=True)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.act(self.dense(hidden_states)))


class BertLMPredictionHead(nn.Module):
    """MLM scores over the vocabulary: transform(h) E_token^T + b, (..., d) -> (..., V).

    `decoder.weight` is the token embedding table itself (tied by the model's tie_weights) and
    `decoder.bias` is the same Parameter as `bias`; both names exist because checkpoints use both.
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.decoder.bias = self.bias

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(hidden_states))


class BertOnlyMLMHead(nn.Module):
    """`cls` of BertForMaskedLM: just the MLM predictions."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.predictions(hidden_states)


class BertPreTrainingHeads(nn.Module):
    """`cls` of BertForPreTraining: MLM predictions and the NSP classifier on C."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)


class BertForPreTraining(BertPreTrainedModel):
    """BERT with both pre-training heads. loss = alpha * L_MLM + beta * L_NSP when both `labels`
    (B, T) and `next_sentence_label` (B,) are given; alpha * L_MLM or beta * L_NSP alone when only
    one is (transformers returns no loss then).

    With mlm_logits_at_masked_only=True and labels, minibert/masked_only.py computes only what the
    loss reads (prediction_logits (N, V)); same loss, same gradients."""

    _tied_weights_keys = ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias")

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.cls = BertPreTrainingHeads(config)
        self.init_weights()

    def tie_weights(self) -> None:
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None,
                labels=None, next_sentence_label=None, output_attentions: bool = False,
                output_hidden_states: bool = False, mlm_logits_at_masked_only: bool = False) -> PreTrainingOutput:
        hidden_states = attentions = None
        if masked_only.applies(mlm_logits_at_masked_only, labels, output_attentions, output_hidden_states):  # speed trick
            prediction_logits, mlm_labels, seq_relationship_logits = masked_only.pretraining_logits(
                self, input_ids, attention_mask, token_type_ids, position_ids, labels)  # (N, V), (N,), (B, 2)
        else:
            out = self.bert(input_ids, attention_mask, token_type_ids, position_ids,
                            output_attentions=output_attentions, output_hidden_states=output_hidden_states)
            prediction_logits, mlm_labels = self.cls.predictions(out.last_hidden_state), labels  # (B, T, V)
            seq_relationship_logits = self.cls.seq_relationship(out.pooler_output)  # (B, 2)
            hidden_states, attentions = out.hidden_states, out.attentions
        alpha, beta = self.config.mlm_alpha, self.config.nsp_beta
        loss = None
        if labels is not None and next_sentence_label is not None:
            loss = pretraining_loss(prediction_logits, mlm_labels, seq_relationship_logits,
                                    next_sentence_label, alpha=alpha, beta=beta)
        elif labels is not None:
            loss = alpha * mlm_loss(prediction_logits, mlm_labels)
        elif next_sentence_label is not None:
            loss = beta * nsp_loss(seq_relationship_logits, next_sentence_label)
        return PreTrainingOutput(loss, prediction_logits, seq_relationship_logits, hidden_states, attentions)


class BertForMaskedLM(BertPreTrainedModel):
    """BERT with the MLM head only (no pooler, no NSP). loss = L_MLM (mean over I) given `labels`.
    logits (B, T, V), or (N, V) with labels and mlm_logits_at_masked_only=True (minibert/masked_only.py)."""

    _tied_weights_keys = ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias")

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooling_layer=False)
        self.cls = BertOnlyMLMHead(config)
        self.init_weights()

    def tie_weights(self) -> None:
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None,
                labels=None, output_attentions: bool = False,
                output_hidden_states: bool = False, mlm_logits_at_masked_only: bool = False) -> HeadOutput:
        if masked_only.applies(mlm_logits_at_masked_only, labels, output_attentions, output_hidden_states):  # speed trick
            logits, mlm_labels = masked_only.masked_lm_logits(
                self, input_ids, attention_mask, token_type_ids, position_ids, labels)  # (N, V), (N,)
            return HeadOutput(mlm_loss(logits, mlm_labels), logits)
        out = self.bert(input_ids, attention_mask, token_type_ids, position_ids,
                        output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        logits = self.cls(out.last_hidden_state)  # (B, T, V)
        loss = mlm_loss(logits, labels) if labels is not None else None
        return HeadOutput(loss, logits, out.hidden_states, out.attentions)


def _classifier_dropout(config: BertConfig) -> Dropout:
    """classifier_dropout, or hidden_dropout_prob when it is None (transformers' rule)."""
    p = config.classifier_dropout
    return Dropout(config.hidden_dropout_prob if p is None else p)


class BertForSequenceClassification(BertPreTrainedModel):
    """logits = Dropout(c) W + b, (B, num_labels). The loss follows config.problem_type
    (regression: MSE; single-label: CE; multi-label: BCE), inferred from labels when unset.
    C is the pooler on [CLS], or on the mean of H_L when config.classifier_pooling = "mean"."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.num_labels = config.num_labels
        self.bert = BertModel(config)
        self.dropout = _classifier_dropout(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.init_weights()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None,
                labels=None, output_attentions: bool = False,
                output_hidden_states: bool = False) -> HeadOutput:
        out = self.bert(input_ids, attention_mask, token_type_ids, position_ids,
                        output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        pooled = out.pooler_output  # (B, d)
        if self.config.classifier_pooling == "mean":
            pooled = self.bert.pooler.mean_pooled(out.last_hidden_state, attention_mask)  # (B, d)
        logits = self.classifier(self.dropout(pooled))  # (B, K)
        loss = None
        if labels is not None:
            loss = classification_loss(logits, labels, self.num_labels, self.config.problem_type)
        return HeadOutput(loss, logits, out.hidden_states, out.attentions)


class BertForTokenClassification(BertPreTrainedModel):
    """logits = Dropout(H_L) W + b, (B, T, num_labels); loss = CE over tokens whose label != -100
    (padding and the non-first word pieces of a word carry -100)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.num_labels = config.num_labels
        self.bert = BertModel(config, add_pooling_layer=False)
        self.dropout = _classifier_dropout(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.init_weights()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None,
                labels=None, output_attentions: bool = False,
                output_hidden_states: bool = False) -> HeadOutput:
        out = self.bert(input_ids, attention_mask, token_type_ids, position_ids,
                        output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        logits = self.classifier(self.dropout(out.last_hidden_state))  # (B, T, K)
        loss = None
        if labels is not None:
            loss = cross_entropy(logits.reshape(-1, self.num_labels), labels.reshape(-1))
        return HeadOutput(loss, logits, out.hidden_states, out.attentions)


class BertForQuestionAnswering(BertPreTrainedModel):
    """Extractive QA (SQuAD, section 4.2): start_logits, end_logits = split(H_L W_qa + b_qa).

    loss = (CE(start_logits, start_positions) + CE(end_logits, end_positions)) / 2. Positions are
    clamped to [0, T] and T itself is ignored, so an answer truncated out of the window is skipped.
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.init_weights()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None,
                start_positions=None, end_positions=None, output_attentions: bool = False,
                output_hidden_states: bool = False) -> QuestionAnsweringOutput:
        out = self.bert(input_ids, attention_mask, token_type_ids, position_ids,
                        output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        logits = self.qa_outputs(out.last_hidden_state)  # (B, T, 2)
        start_logits, end_logits = logits[..., 0], logits[..., 1]  # (B, T) each
        loss = None
        if start_positions is not None and end_positions is not None:
            T = start_logits.size(1)
            start = start_positions.reshape(-1).clamp(0, T)  # (B,)
            end = end_positions.reshape(-1).clamp(0, T)  # (B,)
            loss = (cross_entropy(start_logits, start, ignore_index=T)
                    + cross_entropy(end_logits, end, ignore_index=T)) / 2
        return QuestionAnsweringOutput(loss, start_logits, end_logits, out.hidden_states, out.attentions)
