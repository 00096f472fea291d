"""The byte-level BPE in the GPT tools: `minigpt.train --tokenizer bpe --vocab_size N` trains one on
the training split and saves it with the model; `minigpt.sample --prompt "text"` reads a Hugging
Face GPT-2 folder's vocab.json + merges.txt and continues the text as transformers does."""
from __future__ import annotations

import json

import pytest
import torch

from common.text.auto import load_tokenizer
from common.text.bpe import BPETokenizer
from minigpt.sample import main as sample_main
from minigpt.train import main as train_main

TINY = ["--config_overrides", "n_layer=1,n_head=2,n_embd=16,block_size=16", "--per_device_train_batch_size", "4",
        "--max_steps", "3", "--warmup_steps", "1", "--bf16", "false", "--use_cpu", "--disable_tqdm",
        "--save_strategy", "no", "--sample_tokens", "5", "--seed", "3"]
TEXT = "".join(f"{i}: The cat sat on the mat. A dog ran in the park! Who goes there? Friend.\n" for i in range(80))


def test_train_with_bpe_saves_the_tokenizer_and_sizes_the_model_to_it(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(TEXT, encoding="utf-8")
    out = tmp_path / "out"
    assert train_main(["--train_file", str(path), "--output_dir", str(out), "--tokenizer", "bpe",
                       "--vocab_size", "300", *TINY]) == 0
    tok = load_tokenizer(out)
    config = json.loads((out / "config.json").read_text())
    assert isinstance(tok, BPETokenizer) and (out / "merges.txt").is_file() and (out / "vocab.json").is_file()
    assert tok.vocab_size == config["vocab_size"] == 300, (tok.vocab_size, config["vocab_size"])
    assert config["eos_token_id"] == tok.eos_token_id == 299
    assert tok.encode(" cat sat") == [tok.get_vocab()["Ġcat"], tok.get_vocab()["Ġsat"]], "a frequent word is one token"


@pytest.mark.slow
def test_sample_prompts_a_hugging_face_gpt2_folder_with_text(tmp_path, capsys):
    transformers = pytest.importorskip("transformers", reason="transformers (test-only oracle) is not installed")
    tok = BPETokenizer.train(TEXT, 320)
    folder = tmp_path / "gpt2"
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=32, n_positions=64, vocab_size=tok.vocab_size,
                                     eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)
    config._attn_implementation = "eager"
    hf = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.05 * torch.randn_like(p))  # perturbed: every parameter random
    hf.save_pretrained(folder)
    tok.save_pretrained(folder)
    hf_tok = transformers.GPT2Tokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    prompt = "The cat sat"
    ids = hf_tok.encode(prompt)
    expected = hf.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                           max_new_tokens=10, do_sample=False, eos_token_id=None,
                           pad_token_id=tok.eos_token_id)[0].tolist()
    assert sample_main(["--model_name_or_path", str(folder), "--prompt", prompt, "--greedy",
                        "--max_new_tokens", "10", "--use_cpu"]) == 0
    printed = capsys.readouterr().out
    want = hf_tok.decode(expected, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    if tok.eos_token_id in expected[len(ids):]:  # our sampler stops at the end-of-text token
        want = hf_tok.decode(expected[:expected.index(tok.eos_token_id, len(ids))], clean_up_tokenization_spaces=False)
    assert printed == want + "\n", f"minigpt.sample printed {printed!r}\ntransformers generated {want!r}"
    assert printed.startswith(prompt)
