"""What reaches the model (common/train/columns.py): datasets as users bring them.

A `datasets.Dataset` tokenized with `.map(...)` keeps its text column; a list of dicts and a torch
Dataset carry ids and `label` / `label_ids`. With remove_unused_columns (default True, as
transformers) the Trainer drops what `forward` does not take, once, says so, and trains exactly as
on the clean data. A bare model given labels says which classes of its package compute a loss.
"""
from __future__ import annotations

import re

import datasets
import pytest
import torch
from torch.utils.data import Dataset

from _trainer_toys import ToyClassifier, ToyOutput, ToyTokenizer
from common.errors import ConfigError
from common.train.args import TrainingArguments
from common.train.columns import classes_with_a_loss, forward_arguments, model_columns
from common.train.trainer import Trainer

TEXTS = ["the cat sat", "a dog ran", "who is it", "the mat", "good film", "bad film", "it ran", "a cat"]


def tokenize(text: str) -> list[int]:
    """A fixed-length toy tokenization (4 ids in 1..12), so no padding is needed."""
    ids = [1 + (sum(map(ord, word)) % 12) for word in text.split()]
    return (ids + [1, 1, 1, 1])[:4]


def clean_items() -> list[dict]:
    return [{"input_ids": tokenize(t), "labels": i % 3} for i, t in enumerate(TEXTS)]


def args(tmp_path, name: str, **extra) -> TrainingArguments:
    return TrainingArguments(output_dir=str(tmp_path / name), max_steps=4, per_device_train_batch_size=2,
                             learning_rate=0.1, save_strategy="no", logging_steps=1, use_cpu=True,
                             disable_tqdm=True, seed=5, **extra)


def train(tmp_path, name: str, dataset, **extra) -> dict:
    torch.manual_seed(0)
    model = ToyClassifier()
    Trainer(model, args(tmp_path, name, **extra), train_dataset=dataset, tokenizer=ToyTokenizer()).train()
    return model.state_dict()


class ItemsDataset(Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def hf_dataset():
    """The user's script: a datasets.Dataset with a text column, tokenized with .map."""
    raw = datasets.Dataset.from_dict({"text": TEXTS, "label": [i % 3 for i in range(len(TEXTS))]})
    return raw.map(lambda example: {"input_ids": tokenize(example["text"])})


def user_datasets():
    with_ids = [{"id": f"ex{i}", "input_ids": tokenize(t), "label_ids": i % 3, "text": t} for i, t in enumerate(TEXTS)]
    return {"datasets.Dataset": hf_dataset(), "list of dicts": with_ids, "torch Dataset": ItemsDataset(with_ids)}


@pytest.mark.parametrize("kind", ["datasets.Dataset", "list of dicts", "torch Dataset"])
def test_unused_columns_are_dropped_and_training_equals_the_clean_data_bit_for_bit(tmp_path, kind, capsys):
    reference = train(tmp_path, "clean", clean_items())
    weights = train(tmp_path, "user", user_datasets()[kind])
    for key in reference:
        assert torch.equal(reference[key], weights[key]), f"{kind}: {key} differs from training on the clean data"
    lines = [line for line in capsys.readouterr().err.splitlines() if "remove_unused_columns" in line]
    assert len(lines) == 1, f"the dropped columns should be named once, got {lines}"
    assert "text" in lines[0] and "ToyClassifier.forward does not take them" in lines[0], lines[0]


def test_without_remove_unused_columns_the_text_column_reaches_the_collator(tmp_path):
    with pytest.raises((ValueError, TypeError), match="str"):
        train(tmp_path, "kept", hf_dataset(), remove_unused_columns=False)


def test_label_and_label_ids_become_labels_and_a_given_labels_wins():
    accepted = forward_arguments(ToyClassifier())
    assert accepted == {"input_ids", "labels", "attention_mask"}
    assert model_columns({"input_ids": [1], "label": 2, "text": "a"}, accepted) == ({"input_ids": [1], "labels": 2},
                                                                                    ["text"])
    assert model_columns({"input_ids": [1], "label_ids": 2}, accepted)[0] == {"input_ids": [1], "labels": 2}
    assert model_columns({"input_ids": [1], "labels": 1, "label": 2}, accepted)[0] == {"input_ids": [1], "labels": 1}


def test_a_forward_with_kwargs_keeps_every_column():
    class TakesAnything(torch.nn.Module):
        def forward(self, input_ids, **kwargs):
            ...

    assert forward_arguments(TakesAnything()) is None
    assert model_columns({"input_ids": [1], "text": "a"}, None) == ({"input_ids": [1], "text": "a"}, [])


def test_evaluation_drops_the_same_columns(tmp_path):
    torch.manual_seed(0)
    trainer = Trainer(ToyClassifier(), args(tmp_path, "eval"), tokenizer=ToyTokenizer())
    metrics = trainer.evaluate(hf_dataset())
    assert metrics["eval_loss"] > 0, metrics


# ------------------------------------------------------------ a model without a loss


def bare_bert_listing(tmp_path):
    """The write-up's pretraining listing: a bare BertModel, an MLM collator, a Trainer."""
    from common.data.language_modeling import DataCollatorForLanguageModeling
    from common.text.auto import BertTokenizer
    from minibert import BertConfig, BertModel

    tokenizer = BertTokenizer(vocab=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat"])
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=16)
    examples = [{"input_ids": tokenizer("the cat sat on the mat")["input_ids"]} for _ in range(4)]
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.5, seed=0)
    return Trainer(BertModel(config), args(tmp_path, "bare"), train_dataset=examples, data_collator=collator,
                   tokenizer=tokenizer)


def test_a_bare_bert_model_with_an_mlm_collator_names_the_classes_that_compute_the_loss(tmp_path):
    with pytest.raises(ConfigError) as raised:
        bare_bert_listing(tmp_path).train()
    message = str(raised.value)
    assert message.startswith("BertModel.forward takes no 'labels', so BertModel computes no loss for a batch "
                              "with keys ['attention_mask', 'input_ids', 'labels']; train a class of minibert"), message
    named = re.search(r"compute?s? a loss from such a batch: (.*)$", message).group(1).split(", ")
    assert {"BertForMaskedLM", "BertForPreTraining"} <= set(named), message
    assert "BertForQuestionAnswering" not in named and "BertModel" not in named, message


def test_the_heads_named_are_those_whose_forward_takes_every_key_of_the_batch():
    from minibert import BertConfig, BertModel

    model = BertModel(BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=16))
    assert classes_with_a_loss(model, ["input_ids", "labels", "next_sentence_label"]) == ["BertForPreTraining"]
    assert classes_with_a_loss(model, ["input_ids", "start_positions", "end_positions"]) == \
        ["BertForQuestionAnswering"]


def test_a_model_that_takes_labels_but_returns_no_loss_says_so_in_one_line(tmp_path):
    class NoLoss(ToyClassifier):
        def forward(self, input_ids, labels=None, attention_mask=None):
            return ToyOutput(None, super().forward(input_ids).logits)

    with pytest.raises(ConfigError, match=r"^NoLoss returned no \.loss for a batch with keys \['input_ids', "
                                          r"'labels'\]; train a"):
        Trainer(NoLoss(), args(tmp_path, "noloss"), train_dataset=clean_items()).train()


def test_the_users_script_a_tokenized_datasets_dataset_fine_tunes_a_bert(tmp_path, capsys):
    """The issue's script: datasets.Dataset -> .map(tokenizer) -> Trainer with DataCollatorWithPadding."""
    from common.data.language_modeling import DataCollatorWithPadding
    from common.text.auto import BertTokenizer
    from minibert import BertConfig, BertForSequenceClassification

    tokenizer = BertTokenizer(vocab=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + "the a cat dog sat ran".split())
    raw = datasets.Dataset.from_dict({"sentence": ["the cat sat", "a dog ran", "the dog", "a cat ran sat"],
                                      "label": [1, 0, 0, 1], "idx": [0, 1, 2, 3]})
    tokenized = raw.map(lambda example: tokenizer(example["sentence"], truncation=True))
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=16, num_labels=2)
    trainer = Trainer(BertForSequenceClassification(config), args(tmp_path, "bert"), train_dataset=tokenized,
                      eval_dataset=tokenized, data_collator=DataCollatorWithPadding(tokenizer), tokenizer=tokenizer)
    trainer.train()
    assert "eval_loss" in trainer.evaluate()
    dropped = [line for line in capsys.readouterr().err.splitlines() if "remove_unused_columns" in line]
    assert dropped == ["remove_unused_columns: dropping the dataset column(s) sentence, idx "
                       "(BertForSequenceClassification.forward does not take them)"], dropped


def test_reading_the_first_example_to_report_columns_leaves_the_random_generators_alone():
    import random

    import numpy as np

    from common.train.columns import unused_columns

    class Draws(Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, i):
            return {"input_ids": [int(torch.randint(0, 9, ()))], "noise": random.random() + np.random.rand()}

    torch.manual_seed(0), random.seed(0), np.random.seed(0)
    expected = (torch.rand(3), random.random(), np.random.rand())
    accepted = forward_arguments(ToyClassifier())  # building the model draws numbers; the peek must not
    torch.manual_seed(0), random.seed(0), np.random.seed(0)
    assert unused_columns(Draws(), accepted) == ["noise"]
    after = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(after[0], expected[0]) and after[1:] == expected[1:], "the peek drew from a generator"
