"""Linear probes on every layer, with Hewitt and Liang's (2019) control task.

A probe is a linear classifier p(y | h) = softmax(h W + b) trained on frozen hidden states h_l of
one layer to predict a word's tag (part of speech, named-entity tag). High accuracy says the tag can
be read off linearly, but a probe may also just memorise words. The control task tells the two
apart: every word TYPE gets a random tag, drawn once from the real tags' frequencies, so the only
way to predict it is to recognise the word. Selectivity = accuracy(real) - accuracy(control): high
when the layer encodes the property, not merely the word.

Each word is represented by the hidden state of its first word piece. Shapes: features (N, d) per
layer; labels (N,) long.
"""
from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Optional

import torch

from common.errors import DataError, check_file


@dataclasses.dataclass
class TaggedSentence:
    words: list[str]
    pos: list[str]
    ner: list[str]


def read_conll(path, max_sentences: Optional[int] = None) -> list[TaggedSentence]:
    """CoNLL-2003 columns `word POS chunk NER`, sentences separated by blank lines, -DOCSTART- skipped."""
    path = Path(check_file(path, "CoNLL file"))
    sentences, rows = [], []

    def flush():
        if rows:
            sentences.append(TaggedSentence(*map(list, zip(*rows))))
            rows.clear()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts or parts[0] == "-DOCSTART-":
            flush()
            if max_sentences is not None and len(sentences) >= max_sentences:
                break
            continue
        if len(parts) < 4:
            raise DataError(f"{path}:{number}: expected 4 columns `word POS chunk NER`, got {line!r}")
        rows.append((parts[0], parts[1], parts[3]))
    flush()
    return sentences[:max_sentences]


def word_features(model, tokenizer, sentences: list[TaggedSentence], max_length: int = 128,
                  batch_size: int = 32) -> tuple[torch.Tensor, list[int]]:
    """(L + 1, N, d): each layer's hidden state at the first word piece of every word (words cut
    off by max_length are dropped); and, per sentence, how many of its words were kept."""
    per_layer, kept = [], []
    for start in range(0, len(sentences), batch_size):
        chunk = sentences[start:start + batch_size]
        ids, firsts = [], []
        for s in chunk:
            row, first = [tokenizer.cls_token_id], []
            for word in s.words:
                pieces = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(word)) or [tokenizer.unk_token_id]
                if len(row) + len(pieces) >= max_length:
                    break
                first.append(len(row))
                row += pieces
            ids.append(row + [tokenizer.sep_token_id])
            firsts.append(first)
            kept.append(len(first))
        T = max(map(len, ids))
        input_ids = torch.tensor([r + [tokenizer.pad_token_id] * (T - len(r)) for r in ids])
        mask = torch.tensor([[1] * len(r) + [0] * (T - len(r)) for r in ids])
        with torch.no_grad():
            states = torch.stack(model(input_ids, attention_mask=mask, output_hidden_states=True).hidden_states)
        b = torch.cat([torch.full((len(f),), i) for i, f in enumerate(firsts)])
        t = torch.cat([torch.tensor(f, dtype=torch.long) for f in firsts])
        per_layer.append(states[:, b, t])  # (L + 1, n, d)
    return torch.cat(per_layer, dim=1), kept


def control_labels(words: list[str], tags: list[str], seed: int = 0) -> list[str]:
    """Hewitt-Liang control task: each word type (lower-cased) gets one tag drawn from the empirical
    distribution of `tags`; every occurrence of the type carries it."""
    rng = random.Random(seed)
    assigned = {}
    for word in words:
        key = word.lower()
        if key not in assigned:
            assigned[key] = rng.choice(tags)  # a draw from the tags' frequencies
    return [assigned[w.lower()] for w in words]


def train_probe(features: torch.Tensor, labels: torch.Tensor, num_classes: int, steps: int = 100,
                weight_decay: float = 1e-4, seed: int = 0) -> torch.nn.Linear:
    """Multinomial logistic regression h -> softmax(h W + b), full-batch L-BFGS on the mean
    cross-entropy + weight_decay |W|^2. features (N, d), labels (N,)."""
    torch.manual_seed(seed)
    probe = torch.nn.Linear(features.size(1), num_classes)
    optimizer = torch.optim.LBFGS(probe.parameters(), lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(probe(features), labels) + weight_decay * probe.weight.pow(2).sum()
        loss.backward()
        return loss
    optimizer.step(closure)
    return probe


def probe_accuracy(train_x, train_y, test_x, test_y, num_classes: int, **kwargs) -> float:
    """Train on (train_x, train_y), return accuracy on (test_x, test_y). Features are standardised
    with the training set's mean and std (a linear map: the probe's power is unchanged)."""
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    probe = train_probe((train_x - mean) / std, train_y, num_classes, **kwargs)
    with torch.no_grad():
        return (probe((test_x - mean) / std).argmax(-1) == test_y).float().mean().item()


def encode_tags(*tag_lists: list[str]) -> tuple[list[torch.Tensor], list[str]]:
    """Tag strings -> long tensors over one shared tag list (sorted)."""
    names = sorted(set(t for tags in tag_lists for t in tags))
    index = {t: i for i, t in enumerate(names)}
    return [torch.tensor([index[t] for t in tags]) for tags in tag_lists], names


def probe_layers(train_feats, test_feats, train_tags, test_tags, train_words, test_words, seed=0, **kwargs):
    """Per layer: (accuracy on the real tags, accuracy on the control task, selectivity)."""
    control_all = control_labels(train_words + test_words, train_tags + test_tags, seed)
    control_train, control_test = control_all[:len(train_words)], control_all[len(train_words):]
    (y_tr, y_te), names = encode_tags(train_tags, test_tags)
    (c_tr, c_te), c_names = encode_tags(control_train, control_test)
    rows = []
    for layer in range(train_feats.size(0)):
        real = probe_accuracy(train_feats[layer], y_tr, test_feats[layer], y_te, len(names), **kwargs)
        control = probe_accuracy(train_feats[layer], c_tr, test_feats[layer], c_te, len(c_names), **kwargs)
        rows.append((real, control, real - control))
    return rows
