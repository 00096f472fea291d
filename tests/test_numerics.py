"""Edge cases of the numbers, at the level of whole models: nothing becomes NaN or inf.

    a fully padded sequence     attention_mask all 0: every attention row is fully blocked; outputs,
                                losses and gradients stay finite, and the other sequences of the batch
                                are exactly what they are without it
    an all-masked MLM batch     no label != -100: the MLM loss is defined as 0 (an empty sum divided by
                                max(|I|, 1), see common/losses.cross_entropy), its gradients are 0, and a
                                Trainer step on such a batch changes no weight
    bf16 / fp16                 the same models cast to half precision (and under bf16 autocast, as
                                --bf16 trains) give finite outputs, losses and gradients with masks

The attention-level versions of these cases are in test_masks.py / test_attention.py, the loss-level
ones in test_losses.py; here the whole stack (embeddings, LayerNorm, heads, losses) is exercised.
"""
from __future__ import annotations

import pytest
import torch

import minibert
from common.data.language_modeling import DataCollatorForLanguageModeling
from common.nn.losses import IGNORE_INDEX
from minigpt import GPT, GPTConfig, GPTForSequenceClassification

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
BERT = dict(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
            max_position_embeddings=16, num_labels=3)
GPT_SIZES = dict(n_layer=2, n_head=2, n_embd=16, block_size=16, vocab_size=60, num_labels=3, pad_token_id=0)
B, T = 3, 7


def padded_batch(full_padding_row: int = 1) -> dict:
    """Row 0 full, row `full_padding_row` entirely padding, row 2 half padding."""
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(5, 60, (B, T), generator=g)
    attention_mask = torch.ones(B, T, dtype=torch.long)
    attention_mask[2, 4:] = 0
    attention_mask[full_padding_row] = 0
    input_ids = input_ids.masked_fill(attention_mask == 0, 0)
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def labels_for(name: str, batch: dict) -> dict:
    """Labels of each head; padding positions get -100 (ignored)."""
    token_labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, IGNORE_INDEX)
    if name == "BertForPreTraining":
        return {"labels": token_labels, "next_sentence_label": torch.tensor([0, 1, 0])}
    if name in ("BertForMaskedLM", "GPT"):
        return {"labels": token_labels}
    if name == "BertForTokenClassification":
        return {"labels": (token_labels % 3).masked_fill(token_labels == IGNORE_INDEX, IGNORE_INDEX)}
    if name == "BertForQuestionAnswering":
        return {"start_positions": torch.tensor([1, 0, 2]), "end_positions": torch.tensor([3, 0, 2])}
    return {"labels": torch.tensor([0, 2, 1])}  # sequence classification


def build(name: str, attn_impl: str):
    torch.manual_seed(0)
    if name.startswith("Bert"):
        return getattr(minibert, name)(minibert.BertConfig(**BERT, attn_impl=attn_impl))
    config = GPTConfig(**GPT_SIZES, attn_impl=attn_impl)
    return GPT(config) if name == "GPT" else GPTForSequenceClassification(config)


def output_tensors(output) -> dict[str, torch.Tensor]:
    return {k: v for k, v in vars(output).items() if isinstance(v, torch.Tensor)}


HEADS = ["BertForPreTraining", "BertForMaskedLM", "BertForSequenceClassification", "BertForTokenClassification",
         "BertForQuestionAnswering", "GPT", "GPTForSequenceClassification"]


# -------------------------------------------------------------- a fully padded sequence
@pytest.mark.parametrize("attn_impl", ["eager", "sdpa"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", HEADS)
def test_a_fully_padded_sequence_gives_finite_outputs_losses_and_gradients(name, dtype, attn_impl):
    model = build(name, attn_impl).to(dtype).train()
    batch = padded_batch()
    output = model(**batch, **labels_for(name, batch))
    bad = {k: v.float().abs().max().item() for k, v in output_tensors(output).items() if not torch.isfinite(v).all()}
    assert not bad, f"{name} {dtype} {attn_impl}: non-finite outputs {sorted(bad)}"
    assert output.loss is not None and torch.isfinite(output.loss), f"{name} {dtype} {attn_impl}: loss {output.loss}"
    output.loss.backward()
    bad_grads = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad_grads, f"{name} {dtype} {attn_impl}: non-finite gradients in {bad_grads[:5]}"


@pytest.mark.parametrize("name", ["BertForMaskedLM", "GPT"])
def test_a_fully_padded_sequence_does_not_change_the_other_sequences_of_the_batch(name):
    model = build(name, "eager").eval()
    batch = padded_batch()
    with torch.no_grad():
        together = model(**batch).logits  # (B, T, V)
        keep = torch.tensor([0, 2])
        alone = model(**{k: v[keep] for k, v in batch.items()}).logits
    mask = batch["attention_mask"][keep].bool()  # compare real tokens only
    err = (together[keep][mask] - alone[mask]).abs().max().item()
    assert err <= 1e-5, f"{name}: adding a fully padded row changed the other rows' logits by {err:.2e}"


# -------------------------------------------------------------- an all-masked MLM batch
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_an_all_masked_mlm_batch_has_loss_zero_and_zero_gradients_not_nan(dtype):
    model = build("BertForMaskedLM", "eager").to(dtype).train()
    batch = padded_batch()
    output = model(**batch, labels=torch.full((B, T), IGNORE_INDEX))
    assert output.loss.item() == 0.0, f"{dtype}: L_MLM over no masked position should be 0, got {output.loss.item()}"
    output.loss.backward()
    largest = max(p.grad.abs().max().item() for p in model.parameters() if p.grad is not None)
    assert largest == 0.0, f"{dtype}: an empty MLM loss should give zero gradients, largest |grad| = {largest}"


def test_an_all_masked_pretraining_batch_is_the_nsp_loss_alone():
    model = build("BertForPreTraining", "eager").eval()
    batch = padded_batch()
    nsp = torch.tensor([0, 1, 0])
    only_nsp = model(**batch, labels=torch.full((B, T), IGNORE_INDEX), next_sentence_label=nsp)
    from common.nn.losses import nsp_loss
    expected = nsp_loss(only_nsp.seq_relationship_logits, nsp)
    assert torch.isfinite(only_nsp.loss) and torch.allclose(only_nsp.loss, expected), \
        f"L = L_MLM + L_NSP with no masked token should be L_NSP = {expected.item():.6f}, got {only_nsp.loss.item():.6f}"


def test_a_batch_of_special_tokens_only_gets_no_mlm_label_from_the_collator_and_a_zero_loss():
    tokenizer = minibert.BertTokenizer(vocab=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(55)])
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=1.0, seed=0)
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    batch = collator([{"input_ids": [cls, sep]}, {"input_ids": [cls, sep, sep]}])
    assert (batch["labels"] == IGNORE_INDEX).all(), f"special tokens must never be selected: {batch['labels']}"
    loss = build("BertForMaskedLM", "eager")(**batch).loss
    assert loss.item() == 0.0, f"a batch with nothing to predict should have loss 0, got {loss.item()}"


def test_a_trainer_step_on_an_all_masked_batch_logs_loss_zero_and_changes_no_weight(tmp_path):
    from common.train.trainer import Trainer
    from common.train.args import TrainingArguments

    model = build("BertForMaskedLM", "eager")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = padded_batch(full_padding_row=2)
    dataset = [{"input_ids": batch["input_ids"][i], "attention_mask": batch["attention_mask"][i],
                "labels": torch.full((T,), IGNORE_INDEX)} for i in range(B)]
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=3, use_cpu=True,
                             disable_tqdm=True, save_strategy="no", logging_steps=1, learning_rate=1e-2)
    trainer = Trainer(model, args, train_dataset=dataset)
    trainer.train()
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    assert losses == [0.0, 0.0], f"logged training losses {losses}, expected [0.0, 0.0]"
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert not changed, f"zero gradients must leave the weights as they were (AdamW, no decay); changed: {changed[:5]}"


# -------------------------------------------------------------- bf16 autocast, as --bf16 trains
@pytest.mark.parametrize("name", ["BertForPreTraining", "GPT"])
def test_bf16_autocast_with_padding_masks_gives_a_finite_loss_close_to_float32(name):
    model = build(name, "eager").train()
    model.eval()  # no dropout: compare the two precisions on the same function
    batch = padded_batch()
    labels = labels_for(name, batch)
    reference = model(**batch, **labels).loss
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(**batch, **labels).loss
    assert loss.dtype == torch.float32, f"the loss should be computed in float32 under autocast, got {loss.dtype}"
    assert torch.isfinite(loss), f"{name}: bf16 autocast loss {loss.item()}"
    err = abs(loss.item() - reference.item())
    assert err <= 0.05 * abs(reference.item()) + 1e-3, \
        f"{name}: bf16 autocast loss {loss.item():.4f} vs float32 {reference.item():.4f} (difference {err:.2e})"
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None), \
        f"{name}: non-finite gradient under bf16 autocast"
