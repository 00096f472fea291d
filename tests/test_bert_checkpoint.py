"""Saving and loading BERT folders: round trips, moving weights between heads, and unsafe or broken files.

A folder is config.json + model.safetensors. Weights move between heads by name (`bert.` prefix
added or stripped); what a head lacks is initialised and named in one warning, what it does not
use is listed. A pickle that carries code is refused without running it; a truncated file is a
CheckpointError, not a crash deep inside a library.
"""
import dataclasses
import os
import warnings

import pytest
import torch

import minibert
from common.errors import CheckpointError

TINY = minibert.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=37, max_position_embeddings=64)


def load_recording_warnings(cls, folder, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = cls.from_pretrained(folder, **kwargs)
    return model, [str(w.message) for w in caught]


def batch():
    input_ids = torch.tensor([[2, 5, 7, 9, 3], [2, 8, 3, 0, 0]])
    return dict(input_ids=input_ids, attention_mask=(input_ids != 0).long())


def same_tensors(a: torch.nn.Module, b: torch.nn.Module, prefix_a="", prefix_b=""):
    """Names of a's parameters under prefix_a that differ from b's under prefix_b."""
    sa, sb = a.state_dict(), b.state_dict()
    return [k for k in sa if k.startswith(prefix_a)
            and not torch.equal(sa[k], sb[prefix_b + k[len(prefix_a):]])]


def test_save_then_load_gives_the_same_model(tmp_path):
    model = minibert.BertForPreTraining(TINY).eval()
    model.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"], os.listdir(tmp_path)
    loaded, messages = load_recording_warnings(minibert.BertForPreTraining, tmp_path)
    assert not messages, f"reloading our own checkpoint warned: {messages}"
    assert not same_tensors(model, loaded), f"weights changed: {same_tensors(model, loaded)}"
    assert loaded.cls.predictions.decoder.weight is loaded.bert.embeddings.word_embeddings.weight, \
        "the MLM decoder must stay tied to the token embeddings after loading"
    with torch.no_grad():
        err = (model(**batch()).prediction_logits - loaded(**batch()).prediction_logits).abs().max().item()
    assert err == 0.0, f"reloaded model's logits differ by {err:.2e}"


def test_pretraining_checkpoint_loads_into_sequence_classification(tmp_path):
    pretrained = minibert.BertForPreTraining(TINY)
    pretrained.save_pretrained(tmp_path)
    model, messages = load_recording_warnings(minibert.BertForSequenceClassification, tmp_path, num_labels=3)
    changed = same_tensors(model, pretrained, "bert.", "bert.")
    assert not changed, f"encoder weights were not reused: {changed}"
    assert model.classifier.weight.shape == (3, 32), f"classifier {tuple(model.classifier.weight.shape)}"
    missing = [m for m in messages if "newly initialised" in m]
    unused = [m for m in messages if "not used" in m]
    assert len(missing) == 1 and "classifier.weight" in missing[0], f"warnings: {messages}"
    assert len(unused) == 1 and "9 weights" in unused[0] and "cls.predictions.bias" in unused[0], \
        f"the 9 pre-training head weights should be listed as unused: {messages}"


def test_bare_encoder_checkpoint_loads_into_a_head_and_back(tmp_path):
    encoder = minibert.BertModel(TINY)
    encoder.save_pretrained(tmp_path / "encoder")
    mlm, messages = load_recording_warnings(minibert.BertForMaskedLM, tmp_path / "encoder")
    changed = same_tensors(encoder, mlm, "embeddings.", "bert.embeddings.")
    assert not changed, f"`bert.` prefix not added on load: {changed}"
    assert any("cls.predictions.transform.dense.weight" in m for m in messages), messages
    assert not any("cls.predictions.decoder.weight" in m for m in messages), \
        f"a tied weight must not be reported missing: {messages}"
    mlm.save_pretrained(tmp_path / "mlm")
    back, _ = load_recording_warnings(minibert.BertModel, tmp_path / "mlm")
    assert not same_tensors(back, mlm, "encoder.", "bert.encoder."), "`bert.` prefix not stripped on load"


def test_pytorch_model_bin_loads_with_weights_only(tmp_path):
    model = minibert.BertForTokenClassification(TINY)
    TINY.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    loaded, messages = load_recording_warnings(minibert.BertForTokenClassification, tmp_path)
    assert not messages and not same_tensors(model, loaded), f"warnings {messages}"


class RunsCodeWhenUnpickled:
    """A pickle payload: unpickling calls open(path, "w"), which would create the file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickle_with_code_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "payload_ran"
    TINY.save_pretrained(tmp_path)
    torch.save({"bert.embeddings.word_embeddings.weight": torch.zeros(99, 32),
                "payload": RunsCodeWhenUnpickled(str(marker))}, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="refused to load") as info:
        minibert.BertModel.from_pretrained(tmp_path)
    assert not marker.exists(), "loading the checkpoint executed the pickled code"
    assert "pytorch_model.bin" in str(info.value), f"the error should name the file: {info.value}"


def test_truncated_safetensors_is_a_checkpoint_error(tmp_path):
    minibert.BertModel(TINY).save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupted") as info:
        minibert.BertModel.from_pretrained(tmp_path)
    assert "model.safetensors" in str(info.value), f"the error should name the file: {info.value}"


def test_other_vocabulary_size_is_a_clear_error(tmp_path):
    minibert.BertModel(TINY).save_pretrained(tmp_path)
    other = dataclasses.replace(TINY, vocab_size=120)
    with pytest.raises(CheckpointError, match=r"word_embeddings\.weight has shape \(99, 32\)"):
        minibert.BertModel.from_pretrained(tmp_path, config=other)


def test_hub_name_is_found_in_the_local_cache_and_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    snapshot = tmp_path / "models--tiny-org--tiny-bert" / "snapshots" / "0123abc"
    model = minibert.BertModel(TINY)
    model.save_pretrained(snapshot)
    loaded = minibert.BertModel.from_pretrained("tiny-org/tiny-bert")
    assert not same_tensors(model, loaded), "the cached snapshot was not the one loaded"
    with pytest.raises(CheckpointError, match="Nothing is downloaded"):
        minibert.BertModel.from_pretrained("bert-base-uncased")
