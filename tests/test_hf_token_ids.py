"""Special-token ids outside the vocabulary load as transformers loads them: kept, warned once, unused.

`GPT2Config(vocab_size=300)` keeps GPT-2's eos_token_id = bos_token_id = 50256, as countless
tutorials save it. transformers loads such a folder; so does minigpt, with one warning, and the id
never stops generation (no sampled token can equal it) nor marks padding.
"""
from __future__ import annotations

import json
import warnings

import pytest
import torch

from common.errors import ConfigError
from common.hub.config import in_vocab_token_id
from minibert import BertConfig, BertModel
from minigpt import GPT, GPTConfig
from minigpt.sample import main as sample_main

transformers = pytest.importorskip("transformers", reason="transformers (test-only oracle) is not installed")


@pytest.fixture(scope="module")
def small_vocab_gpt2(tmp_path_factory):
    """A GPT-2 folder saved by transformers with vocab_size=300 and the default eos/bos 50256,
    every weight perturbed."""
    folder = tmp_path_factory.mktemp("gpt2_300")
    config = transformers.GPT2Config(vocab_size=300, n_positions=32, n_embd=16, n_layer=1, n_head=2)
    model = transformers.GPT2LMHeadModel(config).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(folder)
    return folder, model


def out_of_vocab_warnings(record) -> list[str]:
    return [str(w.message) for w in record if "is not a token id of this vocabulary" in str(w.message)]


def test_a_small_vocab_gpt2_folder_loads_keeps_the_id_and_warns_once(small_vocab_gpt2):
    folder, hf = small_vocab_gpt2
    assert json.loads((folder / "config.json").read_text())["eos_token_id"] == 50256, "transformers kept it"
    from common.hub import config as hub_config
    hub_config._WARNED_TOKEN_IDS.clear()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model = GPT.from_pretrained(folder).eval()
        GPT.from_pretrained(folder)  # a second load says nothing new
    messages = out_of_vocab_warnings(record)
    assert messages == ["GPTConfig: eos_token_id=50256 is not a token id of this vocabulary (vocab_size=300); "
                        "kept in the config as transformers keeps it, and unused: generation does not stop on "
                        "it and no position is treated as padding"], messages
    assert model.config.eos_token_id == 50256 and in_vocab_token_id(model.config, "eos_token_id") is None
    ids = torch.randint(0, 300, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = model(ids).logits, hf(ids).logits
    assert torch.allclose(ours, theirs, atol=1e-5), f"max |diff| {(ours - theirs).abs().max():.2e}"


def test_sampling_from_it_never_stops_on_the_out_of_vocabulary_id(small_vocab_gpt2, capsys):
    folder, hf = small_vocab_gpt2
    prompt = [5, 17, 42]
    assert sample_main(["--model_name_or_path", str(folder), "--prompt_ids", *map(str, prompt), "--greedy",
                        "--max_new_tokens", "10", "--use_cpu"]) == 0
    printed = [int(t) for t in capsys.readouterr().out.split()]
    expected = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, 3, dtype=torch.long),
                           max_new_tokens=10, do_sample=False, pad_token_id=0)[0].tolist()
    assert printed == expected, f"minigpt.sample {printed}, transformers {expected}"
    assert len(printed) == 13 and max(printed) < 300, printed


def test_a_bert_pad_token_id_outside_the_vocabulary_is_kept_and_marks_no_padding_row():
    with pytest.warns(UserWarning, match=r"BertConfig: pad_token_id=64 is not a token id"):
        config = BertConfig(vocab_size=64, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=16, pad_token_id=64)
    model = BertModel(config)
    assert config.pad_token_id == 64 and model.embeddings.word_embeddings.padding_idx is None
    assert model(torch.tensor([[1, 2, 3]])).last_hidden_state.shape == (1, 3, 8)


@pytest.mark.parametrize("value", [-1, "0", 1.5, True])
def test_an_id_that_is_not_a_non_negative_integer_is_still_a_config_error(value):
    with pytest.raises(ConfigError, match=r"^eos_token_id: must be null or a token id in \[0, vocab_size=50\)"):
        GPTConfig(n_layer=1, n_head=2, n_embd=8, block_size=8, vocab_size=50, eos_token_id=value)
