"""The three stages of `make demo`; each trains with common.train.trainer.Trainer and returns its numbers.

    pretrain_bert     BERT on sentence pairs [CLS] A [SEP] B [SEP] with  L = L_MLM + L_NSP
                      (Devlin et al. 2019, section 3.1). Every `eval_every` steps, and before the
                      first, it is scored on held-out pairs with fixed masks:
                          MLM loss      -1/|I| sum_{i in I} log p(x_i | x~)   (I = masked positions, x~ the corrupted pair)
                          MLM accuracy  share of i in I with argmax_v p(v | x~) = x_i
                          NSP accuracy  share of pairs whose IsNext / NotNext is predicted right
    finetune_compare  one classifier, logits = C W + b on the [CLS] vector, fine-tuned twice on
                      the same few labels: from the pretrained encoder and from random weights
                      (the same seed, so the classifier heads start equal); dev accuracy per epoch
    train_gpt         a GPT on the same text, trained on
                      L_LM = -(1/N) sum over the N predicted positions t of log p(x_t | x_<t);
                      validation loss, perplexity exp(L_LM), and greedy / sampled continuations

Sizes live in `DemoSizes` (FULL for `make demo`, QUICK for the tests). The full pretraining
recipe is fragile on purpose of its size: the adjectives' polarity appears in the embeddings only
after 2000-3000 steps, so it is a fixed number of steps (never a time budget), with no dropout.

Measured figures and how to read them: docs/results/demo.md.
"""
from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from common.data.language_modeling import (DataCollatorForLanguageModeling, DataCollatorWithPadding, GroupedTextDataset,
                         TextDatasetForNextSentencePrediction)
from demo.inputs import DemoCorpus
from common.data.labeled import ClassificationDataset, ClassificationExample, build_label_list
from common.data.switches import WithSwitches
from common.train.trainer import Trainer
from common.train.utils import EvalPrediction, TrainerCallback
from common.train.args import TrainingArguments
from minibert import BertConfig, BertForPreTraining, BertForSequenceClassification
from minibert.metrics import evaluate_pretraining
from minigpt import GPT, GPTConfig


@dataclass(frozen=True)
class DemoSizes:
    num_documents: int = 4000       # built-in corpus: training stories
    heldout_documents: int = 200    # built-in corpus: held-out stories
    spm_vocab_size: int = 2000      # --data: SentencePiece pieces
    # BERT (H, L, A, feed-forward) and pretraining
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 2
    intermediate_size: int = 256
    block_size: int = 32            # tokens per NSP pair, also the longest fine-tuning sentence
    pretrain_steps: int = 6000
    pretrain_batch_size: int = 32
    pretrain_learning_rate: float = 2e-3
    pretrain_warmup_steps: int = 100
    pretrain_eval_every: int = 500
    # fine-tuning (built-in task: n_train labels, n_dev to measure)
    n_train: int = 400
    n_dev: int = 1000
    finetune_epochs: int = 10
    finetune_batch_size: int = 16
    finetune_learning_rate: float = 5e-4
    # GPT
    gpt_layers: int = 2
    gpt_heads: int = 2
    gpt_embd: int = 64
    gpt_block_size: int = 64
    gpt_steps: int = 1500
    gpt_batch_size: int = 32
    gpt_learning_rate: float = 2e-3
    gpt_eval_every: int = 150
    sample_tokens: int = 30


FULL = DemoSizes()
QUICK = DemoSizes(num_documents=60, heldout_documents=8, spm_vocab_size=300, hidden_size=32, intermediate_size=64,
                  pretrain_steps=20, pretrain_batch_size=8, pretrain_warmup_steps=2, pretrain_eval_every=10,
                  n_train=48, n_dev=48, finetune_epochs=2, gpt_embd=32, gpt_block_size=16, gpt_steps=20,
                  gpt_batch_size=8, gpt_eval_every=10, sample_tokens=8)


def _training_arguments(output_dir: Path, seed: int, **kwargs) -> TrainingArguments:
    """The demo keeps no checkpoints: each stage saves its final model once, by hand."""
    return TrainingArguments(output_dir=str(output_dir), overwrite_output_dir=True, save_strategy="no",
                             seed=seed, lr_scheduler_type="linear", **kwargs)


def _metric_history(trainer: Trainer, key: str) -> list[tuple[float, float]]:
    """[(step, value)] of every log record that has `key`."""
    return [(r["step"], r[key]) for r in trainer.state.log_history if key in r]


# ---------------------------------------------------------------- stage 1: BERT pretraining



class HeldoutEvaluation(TrainerCallback):
    """Score the model before the first step and every `every` steps; the scores go to log.jsonl."""

    def __init__(self, evaluate: Callable[[torch.nn.Module], dict], every: int):
        self.evaluate, self.every = evaluate, every

    def on_train_begin(self, trainer) -> None:
        trainer.log(self.evaluate(trainer.model))

    def on_step_end(self, trainer) -> None:
        step = trainer.state.global_step
        if step % self.every == 0 or step == trainer.state.max_steps:
            trainer.log(self.evaluate(trainer.model))


def bert_config(vocab_size: int, sizes: DemoSizes) -> BertConfig:
    return BertConfig(vocab_size=vocab_size, hidden_size=sizes.hidden_size, num_hidden_layers=sizes.num_layers,
                      num_attention_heads=sizes.num_heads, intermediate_size=sizes.intermediate_size,
                      max_position_embeddings=sizes.block_size, hidden_dropout_prob=0.0,
                      attention_probs_dropout_prob=0.0)


def pretrain_bert(corpus: DemoCorpus, tokenizer, sizes: DemoSizes, out_dir: Path, seed: int) -> dict:
    """Pretrain, save the model and tokenizer to out_dir/bert_pretrained, return the numbers."""
    train_pairs = TextDatasetForNextSentencePrediction(tokenizer, corpus.train_file, sizes.block_size, seed=seed)
    heldout_pairs = TextDatasetForNextSentencePrediction(tokenizer, corpus.heldout_file, sizes.block_size,
                                                         seed=seed + 1)
    print(f"  {len(train_pairs)} training pairs, {len(heldout_pairs)} held-out pairs, vocabulary {len(tokenizer)}")
    torch.manual_seed(seed)
    model = BertForPreTraining(bert_config(len(tokenizer), sizes))
    args = _training_arguments(out_dir / "bert_pretraining", seed, max_steps=sizes.pretrain_steps,
                               per_device_train_batch_size=sizes.pretrain_batch_size,
                               learning_rate=sizes.pretrain_learning_rate, warmup_steps=sizes.pretrain_warmup_steps,
                               weight_decay=0.01, logging_steps=max(1, sizes.pretrain_steps // 100))

    def evaluate(m):
        return evaluate_pretraining(m, heldout_pairs, lambda: DataCollatorForLanguageModeling(tokenizer, seed=seed))

    trainer = Trainer(model, args, train_dataset=train_pairs,
                      data_collator=WithSwitches(DataCollatorForLanguageModeling(tokenizer, mlm=True, seed=seed),
                                                 mlm_logits_at_masked_only=True),  # common/data/switches.py
                      callbacks=[HeldoutEvaluation(evaluate, sizes.pretrain_eval_every)])
    output = trainer.train()
    folder = out_dir / "bert_pretrained"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    heldout = _metric_history(trainer, "heldout_mlm_loss")
    return {
        "steps": output.global_step, "train_loss": _metric_history(trainer, "loss")[-1][1],
        "num_parameters": model.num_parameters(), "train_pairs": len(train_pairs), "heldout_pairs": len(heldout_pairs),
        "heldout_mlm_loss_before": heldout[0][1], "heldout_mlm_loss": heldout[-1][1],
        "heldout_mlm_accuracy_before": _metric_history(trainer, "heldout_mlm_accuracy")[0][1],
        "heldout_mlm_accuracy": _metric_history(trainer, "heldout_mlm_accuracy")[-1][1],
        "heldout_nsp_accuracy_before": _metric_history(trainer, "heldout_nsp_accuracy")[0][1],
        "heldout_nsp_accuracy": _metric_history(trainer, "heldout_nsp_accuracy")[-1][1],
        "model_dir": str(folder),
        "curves": {key: _metric_history(trainer, key)
                   for key in ("loss", "heldout_mlm_loss", "heldout_mlm_accuracy", "heldout_nsp_accuracy")},
    }


# ---------------------------------------------------------------- stage 2: fine-tuning, pretrained vs scratch


def accuracy(prediction: EvalPrediction) -> dict:
    """Share of examples whose argmax logit is the label."""
    logits, labels = prediction
    return {"accuracy": float(np.mean(np.argmax(logits, axis=-1) == labels))}


def classifier_pair(pretrained_dir: Path, id2label: dict, seed: int) -> dict[str, BertForSequenceClassification]:
    """{"pretrained": encoder from pretrained_dir + a new classifier, "scratch": all random}; both
    draw the classifier from the same seed, so the only difference is the encoder's weights."""
    torch.manual_seed(seed)
    # The classifier is new and the MLM/NSP heads go unused: from_pretrained warns about both,
    # which is the point here, so the warnings are replaced by the line finetune_compare prints.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pretrained = BertForSequenceClassification.from_pretrained(pretrained_dir, num_labels=len(id2label),
                                                                   id2label=id2label)
    torch.manual_seed(seed)
    return {"pretrained": pretrained, "scratch": BertForSequenceClassification(pretrained.config)}


def finetune_compare(pretrained_dir: Path, tokenizer, train: Sequence[ClassificationExample],
                     dev: Sequence[ClassificationExample], sizes: DemoSizes, out_dir: Path, seed: int) -> dict:
    """Fine-tune from the pretrained encoder and from scratch, on the same data and seed."""
    label_list = build_label_list([example.label for example in train])
    label2id = {label: i for i, label in enumerate(label_list)}
    train_set = ClassificationDataset(tokenizer, train, label2id, max_seq_length=sizes.block_size)
    dev_set = ClassificationDataset(tokenizer, dev, label2id, max_seq_length=sizes.block_size)
    id2label = {i: str(label) for i, label in enumerate(label_list)}
    results = {"n_train": len(train_set), "n_dev": len(dev_set), "labels": [str(x) for x in label_list]}
    models = classifier_pair(pretrained_dir, id2label, seed)
    print(f"  [pretrained] encoder loaded from {pretrained_dir}; the classifier ({len(label_list)} classes) starts "
          "from random weights\n  [scratch] the same model with every weight random (the same classifier start)")
    for name, model in models.items():
        args = _training_arguments(out_dir / f"finetune_{name}", seed, num_train_epochs=sizes.finetune_epochs,
                                   per_device_train_batch_size=sizes.finetune_batch_size,
                                   per_device_eval_batch_size=256, learning_rate=sizes.finetune_learning_rate,
                                   warmup_ratio=0.1, eval_strategy="epoch", logging_steps=10)
        trainer = Trainer(model, args, train_dataset=train_set, eval_dataset=dev_set,
                          data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=accuracy)
        trainer.train()
        curve = [(r["epoch"], r["eval_accuracy"]) for r in trainer.state.log_history if "eval_accuracy" in r]
        results[f"{name}_accuracy"] = curve[-1][1]
        results[f"{name}_curve"] = curve
        results[f"{name}_train_loss"] = _metric_history(trainer, "loss")[-1][1]
    return results


# ---------------------------------------------------------------- stage 3: GPT


def gpt_config(vocab_size: int, sizes: DemoSizes) -> GPTConfig:
    return GPTConfig(n_layer=sizes.gpt_layers, n_head=sizes.gpt_heads, n_embd=sizes.gpt_embd,
                     block_size=sizes.gpt_block_size, vocab_size=vocab_size, dropout=0.0)


def sample(model: GPT, tokenizer, prompts: Sequence[str], max_new_tokens: int, seed: int) -> list[dict]:
    """Greedy (argmax at every step) and sampled (temperature 0.8, top-k 20, seeded) continuations."""
    samples = []
    for prompt in prompts:
        ids = torch.tensor([tokenizer.encode(prompt, add_special_tokens=False)])  # (1, T0)
        greedy = model.generate(ids, max_new_tokens)
        sampled = model.generate(ids, max_new_tokens, do_sample=True, temperature=0.8, top_k=20, seed=seed)
        samples.append({"prompt": prompt, "greedy": tokenizer.decode(greedy[0].tolist()),
                        "sampled": tokenizer.decode(sampled[0].tolist())})
    return samples


def train_gpt(corpus: DemoCorpus, tokenizer, sizes: DemoSizes, out_dir: Path, seed: int,
              prompts: Sequence[str]) -> dict:
    """Train on the training documents, evaluate on the held-out ones, save, sample."""
    train_blocks = GroupedTextDataset(tokenizer, corpus.train_file, sizes.gpt_block_size)
    val_blocks = GroupedTextDataset(tokenizer, corpus.heldout_file, sizes.gpt_block_size)
    print(f"  {len(train_blocks)} training blocks and {len(val_blocks)} validation blocks of "
          f"{sizes.gpt_block_size} tokens, vocabulary {len(tokenizer)}")
    torch.manual_seed(seed)
    model = GPT(gpt_config(len(tokenizer), sizes))
    args = _training_arguments(out_dir / "gpt_training", seed, max_steps=sizes.gpt_steps,
                               per_device_train_batch_size=sizes.gpt_batch_size, per_device_eval_batch_size=64,
                               learning_rate=sizes.gpt_learning_rate, warmup_steps=max(1, sizes.gpt_steps // 20),
                               weight_decay=0.01, logging_steps=max(1, sizes.gpt_steps // 100),
                               eval_strategy="steps", eval_steps=sizes.gpt_eval_every)
    trainer = Trainer(model, args, train_dataset=train_blocks, eval_dataset=val_blocks,
                      data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
    output = trainer.train()
    folder = out_dir / "gpt"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    val_loss = _metric_history(trainer, "eval_loss")[-1][1]
    return {
        "steps": output.global_step, "train_loss": _metric_history(trainer, "loss")[-1][1],
        "num_parameters": model.num_parameters(), "train_blocks": len(train_blocks), "val_blocks": len(val_blocks),
        "val_loss": val_loss, "val_perplexity": math.exp(val_loss), "model_dir": str(folder),
        "samples": sample(model, tokenizer, prompts, sizes.sample_tokens, seed),
        "curves": {key: _metric_history(trainer, key) for key in ("loss", "eval_loss")},
    }


def timed(function: Callable, *args, **kwargs) -> dict:
    """function's result (a dict) with `seconds` (wall clock) and `cpu_seconds` (summed over this
    process's threads) added: on a busy machine the wall clock stretches, the CPU time does not."""
    start, cpu_start = time.monotonic(), time.process_time()
    result = function(*args, **kwargs)
    return {"seconds": time.monotonic() - start, "cpu_seconds": time.process_time() - cpu_start, **result}
