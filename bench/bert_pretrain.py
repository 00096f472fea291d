"""Row 2: one BERT pre-training step (MLM + NSP loss, backward, AdamW), ours against
transformers' BertForPreTraining with the same weights, batches and optimizer.

Ours runs with forward's mlm_logits_at_masked_only=True: the vocabulary projection (B T x d) (d x V), the
largest product of a small BERT, runs on the N ≈ 0.15 B T masked positions only. L_MLM only
scores those positions, so the loss is the same number; the benchmark checks it on the first
batch (eval mode, same weights): ours masked-only vs transformers, and vs ours on all positions.
"""
from __future__ import annotations

import torch

from bench.data import bert_batches
from bench.gpt_train import train_step
from bench.timing import interleaved, per_repeat_ms, ratio
from minibert import BertConfig, BertForPreTraining

FULL = dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024,
            vocab_size=8000, seq_len=128, batch_size=16)
QUICK = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
             vocab_size=200, seq_len=16, batch_size=2)
MODEL_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")


def hf_bert(size: dict, seed: int = 0, attn_implementation: str = "sdpa"):
    """transformers' BertForPreTraining (BERT's default dropout 0.1), initialised with `seed`."""
    import transformers

    transformers.logging.set_verbosity_error()
    config = transformers.BertConfig(**{k: size[k] for k in MODEL_KEYS},
                                     max_position_embeddings=max(512, size["seq_len"]))
    torch.manual_seed(seed)
    model = transformers.BertForPreTraining(config)
    model.config._attn_implementation = attn_implementation
    return model


def ours_from_hf(hf, masked_only: bool = True, attn_impl: str = "eager") -> BertForPreTraining:
    """Our BertForPreTraining with the same weights (the parameter names are identical)."""
    c = hf.config
    config = BertConfig(vocab_size=c.vocab_size, hidden_size=c.hidden_size,
                        num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
                        intermediate_size=c.intermediate_size,
                        max_position_embeddings=c.max_position_embeddings,
                        attn_impl=attn_impl)
    model = BertForPreTraining(config)
    model.masked_only = masked_only  # read by pretraining_loss: a forward argument, not a config field
    state = {k: v for k, v in hf.state_dict().items() if not k.endswith("position_ids")}
    model.load_state_dict(state)
    return model


def pretraining_loss(model, batch):
    return model(**batch, mlm_logits_at_masked_only=getattr(model, "masked_only", False)).loss


def run(quick: bool = False, repeats: int = 5, steps: int = 2, peak_flops: float | None = None) -> dict:
    size = QUICK if quick else FULL
    B, T = size["batch_size"], size["seq_len"]
    batches = bert_batches(4, B, T, size["vocab_size"])
    hf = hf_bert(size)
    ours = ours_from_hf(hf)
    ours_sdpa = ours_from_hf(hf, attn_impl="sdpa")
    with torch.no_grad():  # eval mode: no dropout, so the three losses must be the same number
        batch = batches[0]
        hf_value = pretraining_loss(hf.eval(), batch).item()
        ours_value = pretraining_loss(ours.eval(), batch).item()
        all_positions = pretraining_loss(ours_from_hf(hf, masked_only=False).eval(), batch).item()
    candidates = {
        "transformers": train_step(hf, batches, pretraining_loss, lr=1e-4),
        "ours": train_step(ours, batches, pretraining_loss, lr=1e-4),
        "ours sdpa": train_step(ours_sdpa, batches, pretraining_loss, lr=1e-4),
    }
    timings = interleaved(candidates, repeats=1 if quick else repeats, steps=1 if quick else steps,
                          warmup=1 if quick else 2)
    base = timings["transformers"]
    rows = {name: dict(ms=t.median * 1e3, spread=t.spread, tokens_per_s=B * T / t.median,
                       ratio=ratio(base, t)) for name, t in timings.items()}
    return dict(row="BERT pre-training step", size=size, target=2.0,
                losses=dict(transformers=hf_value, ours_masked_only=ours_value,
                            ours_all_positions=all_positions),
                loss_gap=max(abs(hf_value - ours_value), abs(all_positions - ours_value)),
                candidates=rows,
                per_repeat_ms=per_repeat_ms(timings))
