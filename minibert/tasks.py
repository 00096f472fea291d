"""The three fine-tuning tasks of minibert.finetune: data, head, collator and metrics of each.

    classification  [CLS] text [SEP] (pair [SEP]) -> BertForSequenceClassification on the [CLS] vector
                    eval_accuracy = share of examples with argmax_c logits_c = label
    ner             one tag per word, scored on the word's first sub-token -> BertForTokenClassification
                    eval_precision / eval_recall / eval_f1 over entities (type and span must match,
                    common/data/labeled.py:entity_f1), eval_accuracy over words
    qa              [CLS] question [SEP] context window [SEP] -> BertForQuestionAnswering
                    answer = argmax_{s <= e} start_s + end_e over an example's windows;
                    eval_exact_match, eval_f1 (SQuAD v1.1, in percent)

Each Task builds its datasets from the files and the label list of the training file, and
`evaluate(trainer, dataset, examples, prefix)` returns the metrics with `prefix_` keys.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch.utils.data import DataLoader

from common.data.language_modeling import DataCollatorForTokenClassification, DataCollatorWithPadding
from common.data.labeled import (ClassificationDataset, QADataset, TokenClassificationDataset,
                                 align_token_predictions, build_label_list, load_classification_file,
                                 load_conll_file, load_squad_file, postprocess_qa_predictions)
from common.nn.losses import IGNORE_INDEX
from common.train.device import move_to_device
from minibert import BertForQuestionAnswering, BertForSequenceClassification, BertForTokenClassification
from minibert.metrics import accuracy, entity_f1, squad_metrics


class ClassificationTask:
    model_class = BertForSequenceClassification
    head = "a classification head on the [CLS] vector"

    def __init__(self, opts):
        self.opts = opts
        self.label_list: list = []

    def load(self, path, with_labels: bool = True):
        o = self.opts
        examples = load_classification_file(path, text_column_name=o.text_column_name,
                                            text_pair_column_name=o.text_pair_column_name,
                                            label_column_name=o.label_column_name,
                                            label_list=self.label_list or None, encoding=o.encoding,
                                            delimiter=getattr(o, "delimiter", None))
        if not self.label_list:
            self.label_list = build_label_list([e.label for e in examples])
        return examples

    @property
    def id2label(self) -> dict:
        return {i: str(label) for i, label in enumerate(self.label_list)}

    def dataset(self, tokenizer, examples):
        label2id = {label: i for i, label in enumerate(self.label_list)}
        return ClassificationDataset(tokenizer, examples, label2id, max_seq_length=self.opts.max_seq_length)

    def collator(self, tokenizer):
        return DataCollatorWithPadding(tokenizer)

    def compute_metrics(self):
        return accuracy

    def evaluate(self, trainer, dataset, examples, prefix: str) -> dict:
        return trainer.evaluate(dataset, metric_key_prefix=prefix)


class NerTask(ClassificationTask):
    model_class = BertForTokenClassification
    head = "a token-classification head"

    def load(self, path, with_labels: bool = True):
        examples = load_conll_file(path, tag_list=self.label_list or None, encoding=self.opts.encoding)
        if not self.label_list:
            self.label_list = sorted({tag for e in examples for tag in e.tags})
        return examples

    def dataset(self, tokenizer, examples):
        label2id = {label: i for i, label in enumerate(self.label_list)}
        return TokenClassificationDataset(tokenizer, examples, label2id, max_seq_length=self.opts.max_seq_length)

    def collator(self, tokenizer):
        return DataCollatorForTokenClassification(tokenizer)

    def compute_metrics(self):
        id2label = self.id2label

        def metrics(prediction) -> dict:
            logits, labels = prediction  # (N, T, num_labels), (N, T) with -100 where no word starts
            predicted = torch.as_tensor(np.argmax(logits, axis=-1))  # (N, T)
            labels = torch.as_tensor(labels)
            true_tags, pred_tags = align_token_predictions(predicted, labels, id2label)
            scores = entity_f1(true_tags, pred_tags)
            scored = labels != IGNORE_INDEX
            scores["accuracy"] = float((predicted[scored] == labels[scored]).float().mean()) if scored.any() else 0.0
            return scores
        return metrics


class QaTask(ClassificationTask):
    model_class = BertForQuestionAnswering
    head = "a span (start/end) head"

    def load(self, path, with_labels: bool = True):
        return load_squad_file(path, encoding=self.opts.encoding)

    @property
    def id2label(self) -> Optional[dict]:
        return None

    def dataset(self, tokenizer, examples):
        o = self.opts
        return QADataset(tokenizer, examples, max_seq_length=o.max_seq_length, doc_stride=o.doc_stride,
                         max_query_length=o.max_query_length)

    def compute_metrics(self):
        return None

    @torch.no_grad()
    def evaluate(self, trainer, dataset, examples, prefix: str) -> dict:
        """eval_loss from the Trainer; exact match and F1 from the best span of every question."""
        metrics = trainer.evaluate(dataset, metric_key_prefix=prefix)
        model = trainer.model
        was_training = model.training
        model.eval()
        F, T = len(dataset), max(len(f["input_ids"]) for f in dataset.features)
        start_logits = torch.full((F, T), -1e4)  # (F, T); padding never starts an answer
        end_logits = torch.full((F, T), -1e4)
        row = 0
        loader = DataLoader(dataset, batch_size=trainer.args.per_device_eval_batch_size,
                            collate_fn=self.collator(trainer.tokenizer))
        for batch in loader:
            batch = move_to_device({k: v for k, v in batch.items() if not k.endswith("_positions")},
                                   trainer.ctx.device)
            out = model(**batch)
            B, t = out.start_logits.shape
            start_logits[row: row + B, :t] = out.start_logits.float().cpu()
            end_logits[row: row + B, :t] = out.end_logits.float().cpu()
            row += B
        model.train(was_training)
        answers = postprocess_qa_predictions(examples, dataset, start_logits, end_logits)
        scores = squad_metrics(answers, {e.id: [a["text"] for a in e.answers] for e in examples})
        metrics.update({f"{prefix}_{k}": v for k, v in scores.items()})
        trainer.log({f"{prefix}_{k}": v for k, v in scores.items()})
        return metrics


TASKS = {"classification": ClassificationTask, "ner": NerTask, "qa": QaTask}
