"""How each BERT task is scored, written out:

    accuracy       mean(argmax(logits) == label)
    entity_f1      CoNLL's entity-level P, R, F1: an entity counts when its type and its span both match
    squad_metrics  SQuAD's exact match and token F1 against the best of the reference answers
    evaluate_pretraining  held-out L_MLM and MLM accuracy over the masked tokens, NSP accuracy
"""
from __future__ import annotations

import collections
import re
import string
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from common.nn.losses import IGNORE_INDEX, cross_entropy

PUNCTUATION = frozenset(string.punctuation)


def _split_tag(tag: str) -> tuple[str, str]:
    if tag == "O":
        return "O", ""
    prefix, sep, entity_type = tag.partition("-")
    if not sep or prefix not in ("B", "I") or not entity_type:
        raise ValueError(f"tag {tag!r} is not IOB (expected O, B-TYPE or I-TYPE)")
    return prefix, entity_type


def entity_spans(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """IOB tags -> entities {(type, first, last)}.

    An entity starts at B-X, or at I-X when the previous tag is O or another type (IOB1 and
    ill-formed IOB2 are read leniently, as conlleval does); it continues over I-X of the same type.
    """
    spans, start, current = set(), None, None
    for j, tag in enumerate(list(tags) + ["O"]):  # the sentinel O closes an entity at the end
        prefix, entity_type = _split_tag(tag)
        continues = prefix == "I" and entity_type == current
        if current is not None and not continues:
            spans.add((current, start, j - 1))
            current = None
        if prefix == "B" or (prefix == "I" and not continues):
            start, current = j, entity_type
    return spans


def entity_f1(true_tag_seqs: Sequence[Sequence[str]], pred_tag_seqs: Sequence[Sequence[str]]) -> dict[str, float]:
    """Entity-level micro scores over all sentences; an entity counts only if type AND span match.

        precision = |true ∩ pred| / |pred|,  recall = |true ∩ pred| / |true|,  F1 = 2PR / (P + R)
    (each 0 when its denominator is 0).
    """
    if len(true_tag_seqs) != len(pred_tag_seqs):
        raise ValueError(f"{len(true_tag_seqs)} true sequences but {len(pred_tag_seqs)} predicted ones")
    n_true = n_pred = n_correct = 0
    for i, (true_tags, pred_tags) in enumerate(zip(true_tag_seqs, pred_tag_seqs)):
        if len(true_tags) != len(pred_tags):
            raise ValueError(f"sentence {i}: {len(true_tags)} true tags but {len(pred_tags)} predicted")
        true, pred = entity_spans(true_tags), entity_spans(pred_tags)
        n_true, n_pred, n_correct = n_true + len(true), n_pred + len(pred), n_correct + len(true & pred)
    precision = n_correct / n_pred if n_pred else 0.0
    recall = n_correct / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, drop punctuation, drop the articles a/an/the, squeeze whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _token_f1(prediction: str, truth: str) -> float:
    pred, true = normalize_answer(prediction).split(), normalize_answer(truth).split()
    if not pred or not true:
        return float(pred == true)  # an empty answer scores 1 only against an empty answer
    common = sum((collections.Counter(pred) & collections.Counter(true)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(true)
    return 2 * precision * recall / (precision + recall)


def squad_metrics(predictions: dict[str, str], references: dict[str, Sequence[str]]) -> dict[str, float]:
    """SQuAD v1.1 scores in percent, each the best over an example's reference answers, averaged:

        exact_match = 100 * mean_i max_r [normalize(pred_i) == normalize(r)]
        f1          = 100 * mean_i max_r F1(bag of normalized tokens of pred_i, of r)
    A question with no prediction scores 0. An empty reference list means "no answer" (SQuAD 2.0).
    """
    if not references:
        raise ValueError("squad_metrics: no references")
    exact = f1 = 0.0
    for qid, truths in references.items():
        truths = list(truths) or [""]
        if qid not in predictions:
            continue
        prediction = predictions[qid]
        exact += max(float(normalize_answer(prediction) == normalize_answer(t)) for t in truths)
        f1 += max(_token_f1(prediction, t) for t in truths)
    return {"exact_match": 100.0 * exact / len(references), "f1": 100.0 * f1 / len(references)}


def accuracy(prediction) -> dict:
    """Share of examples whose argmax logit is the label."""
    logits, labels = prediction
    return {"accuracy": float(np.mean(np.argmax(logits, axis=-1) == labels))}


@torch.no_grad()
def evaluate_pretraining(model, dataset, make_collator: Callable, batch_size: int = 128) -> dict:
    """Held-out MLM loss and accuracy over the masked tokens, NSP accuracy over the pairs (see the
    module docstring). `make_collator()` must give a freshly seeded collator: the same masks every call."""
    was_training = model.training
    model.eval()
    mlm_loss_sum, mlm_correct, num_masked, nsp_correct, num_pairs = 0.0, 0, 0, 0, 0
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=make_collator()):
        out = model(**batch)
        labels = batch["labels"]  # (B, T), -100 where not masked
        logits = out.prediction_logits  # (N, V) at the masked positions, or (B, T, V)
        targets = labels[labels != IGNORE_INDEX] if logits.dim() == 2 else labels.reshape(-1)
        logits = logits.reshape(-1, logits.size(-1))
        kept = targets != IGNORE_INDEX
        mlm_loss_sum += cross_entropy(logits[kept], targets[kept], reduction="sum").item()
        mlm_correct += (logits[kept].argmax(-1) == targets[kept]).sum().item()
        num_masked += int(kept.sum())
        nsp_correct += (out.seq_relationship_logits.argmax(-1) == batch["next_sentence_label"]).sum().item()
        num_pairs += len(batch["next_sentence_label"])
    model.train(was_training)
    return {"heldout_mlm_loss": mlm_loss_sum / max(num_masked, 1),
            "heldout_mlm_accuracy": mlm_correct / max(num_masked, 1),
            "heldout_nsp_accuracy": nsp_correct / max(num_pairs, 1)}
