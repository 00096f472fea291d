"""minit5/logits_at_labels.py: the head only at the scored positions gives the textbook loss and gradients.

The textbook path (forward's logits_at_labels_only=False, the default) computes the logits at all B T positions
and lets the cross-entropy skip labels == -100; the trick computes them at the N scored positions.
Same model, same batch, both switches: the loss to 1e-6 and every gradient to 1e-5 (relative to the
tensor's largest value when that exceeds 1), the trick's (N, V) logits equal to the textbook's at
the scored positions, in row-major order, and equal to the head's formula written out here
(h * d_model^-0.5 E^T tied, h W_lm^T untied). Every parameter is moved by 0.3 N(0, 1) so a wrong
weight, a missing rescale or a wrong order shows up.
"""
import json
import types

import pytest
import torch

from minit5 import finetune
from minit5.config import T5Config
from minit5.model import T5ForConditionalGeneration, shift_right

SMALL = dict(vocab_size=37, d_model=16, d_kv=6, d_ff=24, num_layers=2, num_heads=3,
             relative_attention_num_buckets=8, relative_attention_max_distance=12, dropout_rate=0.0)
LOSS_TOL, GRAD_TOL = 1e-6, 1e-5


def perturbed_model(feed_forward_proj="relu", tie=True, seed=0, **sizes):
    """A T5 whose every parameter is its initial value plus 0.3 N(0, 1) (RMSNorm weights away from 1)."""
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(T5Config(**{**SMALL, "feed_forward_proj": feed_forward_proj,
                                                   "tie_word_embeddings": tie, **sizes}))
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=generator))
    return model.eval()


def padded_batch(seed=0, B=4, S=7, T=9):
    """Sources right-padded; labels -100 at the end (a shorter target), scattered, everywhere in a row,
    nowhere in row 0."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, SMALL["vocab_size"], (B, S), generator=g)
    mask = torch.ones_like(ids)
    mask[1, -3:] = 0
    mask[2, -1:] = 0
    ids = ids.masked_fill(mask == 0, 0)
    labels = torch.randint(2, SMALL["vocab_size"], (B, T), generator=g)
    labels[1, -4:] = -100  # padded target, as DataCollatorForSeq2Seq writes it
    labels[2, [0, 3, 4, 8]] = -100  # scattered, the first position included
    labels[3, :] = -100  # a row with nothing scored
    return dict(input_ids=ids, attention_mask=mask, labels=labels)


def relative_diff(a, b):
    """max |a - b| / max(1, max |b|)."""
    if b.numel() == 0:
        return 0.0
    return ((a - b).abs().max() / b.abs().max().clamp_min(1.0)).item()


def loss_logits_grads(model, batch, trick: bool):
    model.zero_grad(set_to_none=True)
    out = model(**batch, logits_at_labels_only=trick)
    out.loss.backward()
    grads = {name: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
             for name, p in model.named_parameters()}
    return out.loss.detach(), out.logits.detach(), grads


def head_formula(model, batch):
    """The logits at the scored positions written out: RMS_f(d_L)[I] (* d_model^-0.5 when tied) W^T."""
    with torch.no_grad():
        c = model.config
        encoded = model.encoder(batch["input_ids"], batch["attention_mask"])
        decoder_ids = shift_right(batch["labels"], c.decoder_start_token_id, c.pad_token_id)
        hidden = model.decoder(decoder_ids, None, encoded, batch["attention_mask"])  # (B, T, d)
        h = hidden[batch["labels"] != -100]  # (N, d), row-major
        if c.tie_word_embeddings:
            return (h * c.d_model ** -0.5) @ model.shared.weight.T
        return h @ model.lm_head.weight.T


@pytest.mark.parametrize("feed_forward_proj", ["relu", "gated-gelu"])
@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_logits_at_labels_keeps_loss_gradients_and_scored_logits(feed_forward_proj, tie):
    model, batch = perturbed_model(feed_forward_proj, tie), padded_batch()
    scored = batch["labels"] != -100
    N, V = int(scored.sum()), model.config.vocab_size
    loss_0, logits_0, grads_0 = loss_logits_grads(model, batch, trick=False)
    loss_1, logits_1, grads_1 = loss_logits_grads(model, batch, trick=True)

    assert logits_0.shape == (*batch["labels"].shape, V), f"textbook logits {tuple(logits_0.shape)}"
    assert logits_1.shape == (N, V), f"logits at the {N} scored positions should be ({N}, {V}), got {tuple(logits_1.shape)}"
    gap = abs(loss_1 - loss_0).item() / max(1.0, abs(loss_0.item()))
    assert gap <= LOSS_TOL, f"loss {loss_1.item():.8f} with the trick, {loss_0.item():.8f} textbook (gap {gap:.2e})"
    bad = {name: d for name in grads_0 if (d := relative_diff(grads_1[name], grads_0[name])) > GRAD_TOL}
    assert not bad, f"gradients differ from the textbook path (relative gap > {GRAD_TOL}): {bad}"

    at_scored = logits_0[scored]  # (N, V) in row-major order
    diff = relative_diff(logits_1, at_scored)
    assert diff <= GRAD_TOL, f"logits differ from the textbook logits at the scored positions by {diff:.2e}"
    formula = relative_diff(logits_1, head_formula(model, batch))
    assert formula <= GRAD_TOL, (f"logits differ from h{' * d_model^-0.5' if tie else ''} W^T at the scored "
                                 f"positions by {formula:.2e}")
    # The batch tells the orders apart: the same positions taken t-major (column-major) give other rows.
    column_major = logits_0.transpose(0, 1)[scored.T]
    assert relative_diff(column_major, at_scored) > 1e-3, "test batch cannot tell row-major from column-major order"


def test_a_batch_with_no_scored_position_gives_zero_loss_and_zero_gradients():
    model, batch = perturbed_model(), padded_batch()
    batch["labels"][:] = -100
    loss_0, _, grads_0 = loss_logits_grads(model, batch, trick=False)
    loss_1, logits_1, grads_1 = loss_logits_grads(model, batch, trick=True)
    assert loss_1.item() == 0.0 == loss_0.item(), f"no scored position: loss {loss_1.item()} (textbook {loss_0.item()})"
    assert logits_1.shape == (0, model.config.vocab_size), f"logits {tuple(logits_1.shape)}, expected (0, V)"
    largest = max(g.abs().max().item() for g in grads_1.values())
    assert largest == 0.0, f"no scored position, yet a gradient of size {largest}"
    assert not torch.isnan(loss_1), "loss is NaN"


def test_dropout_draws_the_same_masks_so_training_losses_match():
    """The rows are picked after the decoder's dropout: both paths draw the same random numbers."""
    model, batch = perturbed_model(dropout_rate=0.2).train(), padded_batch()
    losses = []
    for trick in (False, True):
        torch.manual_seed(7)
        losses.append(model(**batch, logits_at_labels_only=trick).loss.item())
    gap = abs(losses[1] - losses[0]) / max(1.0, abs(losses[0]))
    assert gap <= LOSS_TOL, f"training loss with dropout: {losses[1]:.8f} trick vs {losses[0]:.8f} textbook"


def test_the_switch_is_off_by_default_and_never_changes_logits_without_labels():
    model, batch = perturbed_model(), padded_batch()
    assert model(**batch).logits.shape == (*batch["labels"].shape, model.config.vocab_size), (
        "the textbook (B, T, V) logits must be forward's default")
    decoder_input_ids = shift_right(batch["labels"], 0, 0)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       decoder_input_ids=decoder_input_ids, logits_at_labels_only=True).logits
        decoded = model.decode(decoder_input_ids, model.encode(batch["input_ids"], batch["attention_mask"]),
                               batch["attention_mask"])
    assert logits.shape == (*decoder_input_ids.shape, model.config.vocab_size), (
        f"without labels the logits must stay (B, T, V), got {tuple(logits.shape)}")
    assert torch.equal(logits, decoded), "forward without labels should be decode()"


def test_the_switch_is_not_a_config_field_and_an_old_config_json_loads_with_it_ignored(tmp_path):
    assert not hasattr(T5Config(), "logits_at_labels_only"), "a training switch must not be a config field"
    model = perturbed_model()
    model.save_pretrained(tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    assert "logits_at_labels_only" not in written, f"config.json holds a training switch: {written}"
    written["logits_at_labels_only"] = True  # a folder saved before the switch left the config
    (tmp_path / "config.json").write_text(json.dumps(written))
    with pytest.warns(UserWarning, match="ignoring logits_at_labels_only") as caught:
        loaded = T5ForConditionalGeneration.from_pretrained(tmp_path)
    assert len([w for w in caught if "logits_at_labels_only" in str(w.message)]) == 1, "expected one warning"
    batch = padded_batch()
    assert loaded(**batch).logits.shape == (*batch["labels"].shape, SMALL["vocab_size"]), (
        "an old folder with the switch set must reload giving (B, T, V) logits with labels")


class FakeTokenizer:
    """What the tools read of a tokenizer here: its size and two ids."""

    pad_token_id, eos_token_id = 0, 1

    def __len__(self):
        return SMALL["vocab_size"]


def test_finetune_passes_the_switch_to_our_model_only(monkeypatch):
    monkeypatch.setattr(finetune.T5Tokenizer, "from_pretrained", classmethod(lambda cls, folder: FakeTokenizer()))
    sizes = "d_model=16,d_kv=4,num_heads=2,d_ff=16,num_layers=1"
    opts = types.SimpleNamespace(tokenizer_name="any", model_name_or_path=None, config_overrides=sizes)
    _, model = finetune.load_tokenizer_and_model(opts, [], seed=0)
    collate = finetune.training_collator(model, lambda features: {"labels": features})
    assert collate([1])["logits_at_labels_only"] is True, "minit5.finetune should pass the switch with every batch"
    bare = finetune.training_collator(torch.nn.Linear(1, 1), lambda features: {"labels": features})
    assert "logits_at_labels_only" not in bare([1]), "a replaced model (transformers' T5) takes no such argument"


def test_folders_written_by_the_training_tools_reload_with_full_logits(tmp_path):
    """minit5.finetune trains with the switch; the folder it writes gives (B, T, V) logits with labels."""
    from test_minit5_cli import TINY, parallel

    de, en = parallel(tmp_path, n=8)
    out = tmp_path / "de-en"
    assert finetune.main(["--source_file", str(de), "--target_file", str(en), "--output_dir", str(out),
                          "--max_target_length", "8", *TINY]) == 0
    assert "logits_at_labels_only" not in json.loads((out / "config.json").read_text())
    model = T5ForConditionalGeneration.from_pretrained(out)
    labels = torch.full((2, 5), 4)
    labels[1, 3:] = -100
    out = model(input_ids=torch.full((2, 4), 5), labels=labels)
    assert out.logits.shape == (2, 5, model.config.vocab_size), f"logits {tuple(out.logits.shape)}, expected (2, 5, V)"
