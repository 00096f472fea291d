"""An attention page that works offline: ONE self-contained HTML file, every layer x head of a BERT,
GPT or T5 folder (ours or Hugging Face's), tokens hoverable.

    python -m interpret --model_name_or_path DIR --text "The cat sat on the mat." --output page.html

Everything is inline: the styles, the script (plain DOM, no library) and the data, so the page opens
from a disk, an e-mail or a machine without a network (bertviz's views load d3 and require.js from a
CDN and stay blank offline). The data is one JSON block other tools can read:

    <script type="application/json" id="attention-data">
      {"model_type": ..., "tokens": [...], "attentions": [layer][head][query][key],
       T5 only: "decoder_tokens": [...], "decoder_attentions": [l][h][q][k],
                "cross_attentions": [layer][head][decoder query][encoder key]}

Each weight is rounded to 4 decimals (rows then sum to 1 within 5e-4). Hovering a token selects it
as the query: every head's panel shows that query's weights over the keys.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import torch

from common.errors import CheckpointError, UserError
from common.text.auto import load_tokenizer

GPT_TYPES = (None, "minigpt", "gpt2", "llama")
BERT_TYPES = ("bert",)
T5_TYPES = ("t5",)
DECIMALS = 4


def read_model_type(folder: Path) -> Optional[str]:
    config = folder / "config.json"
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is not a folder; pass a model folder (config.json, weights, tokenizer)")
    if not config.is_file():
        raise CheckpointError(f"{folder} has no config.json; pass a folder saved by save_pretrained")
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{config} is not valid JSON ({e}); save the model again") from None


def load(folder) -> tuple[str, torch.nn.Module, object]:
    """('gpt' | 'bert' | 't5', model in eval mode, tokenizer) from a model folder."""
    folder = Path(folder)
    model_type = read_model_type(folder)
    if model_type in GPT_TYPES:
        from minigpt import GPT
        kind, model = "gpt", GPT.from_pretrained(folder)
    elif model_type in BERT_TYPES:
        import minibert
        kind, model = "bert", minibert.BertModel.from_pretrained(folder)
    elif model_type in T5_TYPES:
        from minit5 import T5ForConditionalGeneration
        from minit5.tokenizer import T5Tokenizer
        model = T5ForConditionalGeneration.from_pretrained(folder).eval()
        return "t5", model, T5Tokenizer.from_pretrained(folder)  # sentinels and </s> as T5 reads them
    else:
        known = ", ".join(repr(t) for t in GPT_TYPES + BERT_TYPES + T5_TYPES if t)
        raise UserError(f"{folder}/config.json: model_type {model_type!r} is not a model this page reads; "
                        f"it reads {known} (GPT, BERT and T5 folders)")
    return kind, model.eval(), load_tokenizer(folder)


def _truncate(ids: list[int], limit: int, what: str, warn) -> list[int]:
    if len(ids) > limit:
        warn(f"note: {what} is {len(ids)} tokens, longer than the model's context of {limit}; "
             f"the page shows the first {limit}")
        return ids[:limit]
    return ids


def _rounded(t: torch.Tensor) -> list:
    return torch.round(t.double(), decimals=DECIMALS).tolist()  # float64: short reprs in the JSON


def attention_data(kind: str, model, tokenizer, text: str, target: Optional[str] = None,
                   warn=lambda m: print(m, file=sys.stderr)) -> dict:
    """The page's JSON: tokens and attentions [layer][head][query][key] (batch of one)."""
    if not text.strip():
        raise UserError("--text is empty; give the text whose attention to show")
    data = {"model_type": kind}
    if kind == "gpt":
        ids = _truncate(tokenizer.encode(text, add_special_tokens=False), model.config.block_size, "the text", warn)
        with torch.no_grad():
            out = model(torch.tensor([ids]), output_attentions=True)
        data.update(tokens=tokenizer.convert_ids_to_tokens(ids), attentions=[_rounded(a[0]) for a in out.attentions])
    elif kind == "bert":
        ids = tokenizer.encode(text)
        ids = _truncate(ids, model.config.max_position_embeddings, "the text with [CLS] and [SEP]", warn)
        with torch.no_grad():
            out = model(torch.tensor([ids]), output_attentions=True)
        data.update(tokens=tokenizer.convert_ids_to_tokens(ids), attentions=[_rounded(a[0]) for a in out.attentions])
    else:  # t5: the encoder reads the text, the decoder its target (given, or the model's greedy output)
        ids = torch.tensor([tokenizer.encode(text)])
        with torch.no_grad():
            if target is None:
                decoder_ids = model.generate(ids, max_new_tokens=20)
            else:
                labels = tokenizer.encode(target)
                decoder_ids = torch.tensor([[model.config.decoder_start_token_id] + labels[:-1]])
            out = model(input_ids=ids, decoder_input_ids=decoder_ids, output_attentions=True)
        data.update(tokens=tokenizer.convert_ids_to_tokens(ids[0].tolist()),
                    decoder_tokens=tokenizer.convert_ids_to_tokens(decoder_ids[0].tolist()),
                    attentions=[_rounded(a[0]) for a in out.encoder_attentions],
                    decoder_attentions=[_rounded(a[0]) for a in out.decoder_attentions],
                    cross_attentions=[_rounded(a[0]) for a in out.cross_attentions])
    return data


STYLE = """
body { font: 14px system-ui, sans-serif; margin: 16px; color: #222; }
h1 { font-size: 18px; } h2 { font-size: 15px; margin: 18px 0 6px; }
.tokens { display: flex; flex-wrap: wrap; gap: 3px; margin: 6px 0 10px; }
.token { padding: 2px 4px; border: 1px solid #bbb; border-radius: 3px; cursor: default; white-space: pre; }
.token.selected { background: #ffd54f; border-color: #e0a800; }
.grid { display: grid; gap: 6px; }
.panel { border: 1px solid #ddd; border-radius: 4px; padding: 4px; }
.panel .label { font-size: 11px; color: #666; margin-bottom: 3px; }
.keys { display: flex; flex-wrap: wrap; gap: 1px; }
.key { font-size: 10px; padding: 1px 2px; white-space: pre; border-radius: 2px; }
.note { color: #666; font-size: 12px; }
"""

SCRIPT = r"""
(function () {
  const t0 = performance.now();
  const data = JSON.parse(document.getElementById('attention-data').textContent);
  const root = document.getElementById('views');
  const sections = [{title: data.model_type === 't5' ? 'Encoder self-attention' : 'Self-attention',
                     queries: data.tokens, keys: data.tokens, att: data.attentions}];
  if (data.model_type === 't5') {
    sections.push({title: 'Decoder self-attention', queries: data.decoder_tokens, keys: data.decoder_tokens,
                   att: data.decoder_attentions});
    sections.push({title: 'Cross-attention (decoder queries, encoder keys)', queries: data.decoder_tokens,
                   keys: data.tokens, att: data.cross_attentions});
  }
  function show(section, q) {
    section.strip.querySelectorAll('.token').forEach(function (el, i) {
      el.classList.toggle('selected', i === q);
    });
    section.cells.forEach(function (row, l) {
      row.forEach(function (cells, h) {
        const w = section.att[l][h][q];
        cells.forEach(function (cell, k) {
          cell.style.backgroundColor = 'rgba(33, 99, 224, ' + w[k].toFixed(4) + ')';
          cell.style.color = w[k] > 0.5 ? '#fff' : '#222';
          cell.title = 'L' + l + ' H' + h + ': ' + section.queries[q] + ' -> ' + section.keys[k] + ' ' + w[k].toFixed(4);
        });
      });
    });
    section.root.dataset.query = String(q);
  }
  sections.forEach(function (section, s) {
    const box = document.createElement('section');
    box.className = 'view';
    box.id = 'view-' + s;
    const title = document.createElement('h2');
    title.textContent = section.title + ' \u2014 ' + section.att.length + ' layers \u00d7 ' +
      section.att[0].length + ' heads; hover a query token';
    box.appendChild(title);
    const strip = document.createElement('div');
    strip.className = 'tokens';
    section.queries.forEach(function (tok, i) {
      const span = document.createElement('span');
      span.className = 'token';
      span.dataset.index = String(i);
      span.textContent = tok;
      span.addEventListener('mouseenter', function () { show(section, i); });
      strip.appendChild(span);
    });
    box.appendChild(strip);
    const grid = document.createElement('div');
    grid.className = 'grid';
    grid.style.gridTemplateColumns = 'repeat(' + section.att[0].length + ', minmax(120px, 1fr))';
    section.cells = section.att.map(function (layer, l) {
      return layer.map(function (head, h) {
        const panel = document.createElement('div');
        panel.className = 'panel';
        panel.dataset.layer = String(l);
        panel.dataset.head = String(h);
        const label = document.createElement('div');
        label.className = 'label';
        label.textContent = 'layer ' + l + ', head ' + h;
        panel.appendChild(label);
        const keys = document.createElement('div');
        keys.className = 'keys';
        const cells = section.keys.map(function (tok) {
          const cell = document.createElement('span');
          cell.className = 'key';
          cell.textContent = tok;
          keys.appendChild(cell);
          return cell;
        });
        panel.appendChild(keys);
        grid.appendChild(panel);
        return cells;
      });
    });
    box.appendChild(grid);
    root.appendChild(box);
    section.strip = strip;
    section.root = box;
    show(section, section.queries.length - 1);
  });
  window.attentionRenderMs = performance.now() - t0;
  document.body.dataset.ready = 'true';
})();
"""


def render_html(data: dict, title: str) -> str:
    """The one self-contained page: styles, data and script inline."""
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")
    safe_title = title.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>Attention: {safe_title}</title><style>{STYLE}</style></head><body>\n"
            f"<h1>Attention of {safe_title}</h1>\n"
            "<p class=\"note\">Each panel is one head; the colour of a key is the weight the selected "
            "query gives it (rows sum to 1). Hover a token to select it as the query.</p>\n"
            "<div id=\"views\"></div>\n"
            f"<script type=\"application/json\" id=\"attention-data\">{payload}</script>\n"
            f"<script>{SCRIPT}</script>\n</body></html>\n")
