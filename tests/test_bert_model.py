"""Properties of minibert's model that need no oracle: BERT's initialisation, padding that changes
nothing, the weighted pre-training loss L = alpha * L_MLM + beta * L_NSP, dropout only in training,
and clear errors for malformed input."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import minibert
from common.errors import UserError
from common.nn.losses import mlm_loss, nsp_loss

TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=37, max_position_embeddings=64)


def test_initialisation_is_berts():
    """Linear/Embedding weights ~ N(0, 0.02^2), biases 0, LayerNorm 1 and 0, [PAD] row 0."""
    config = minibert.BertConfig(**{**TINY, "hidden_size": 256, "intermediate_size": 512})
    model = minibert.BertForPreTraining(config)
    for name, p in model.named_parameters():
        if name.endswith("LayerNorm.weight"):
            assert torch.all(p == 1), f"{name} should start at 1"
        elif name.endswith("bias"):
            assert torch.all(p == 0), f"{name} should start at 0"
        elif p.numel() >= 4096:
            std = p.std().item()
            assert abs(std - 0.02) < 0.002, f"{name}: std {std:.4f}, expected 0.02 +- 0.002"
    pad_row = model.bert.embeddings.word_embeddings.weight[config.pad_token_id]
    assert torch.all(pad_row == 0), f"[PAD] embedding should be 0, max |x| = {pad_row.abs().max():.2e}"


@settings(deadline=None, max_examples=10)
@given(lengths=st.lists(st.integers(1, 9), min_size=1, max_size=3), extra=st.integers(1, 4),
       seed=st.integers(0, 1000))
def test_padding_does_not_change_real_tokens(lengths, extra, seed):
    """Appending [PAD] keys (attention_mask 0) leaves every real token's output unchanged."""
    torch.manual_seed(seed)
    model = minibert.BertModel(minibert.BertConfig(**TINY)).eval()
    T = max(lengths)
    mask = (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).long()  # (B, T)
    ids = torch.randint(1, 99, mask.shape) * mask
    padded_ids = torch.cat([ids, torch.zeros(len(lengths), extra, dtype=torch.long)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(len(lengths), extra, dtype=torch.long)], dim=1)
    with torch.no_grad():
        short = model(ids, attention_mask=mask)
        long = model(padded_ids, attention_mask=padded_mask)
    real = mask.bool()
    err = (short.last_hidden_state[real] - long.last_hidden_state[:, :T][real]).abs().max().item()
    assert err <= 1e-5, f"{extra} extra pad tokens changed real outputs by {err:.2e}"
    err = (short.pooler_output - long.pooler_output).abs().max().item()
    assert err <= 1e-5, f"{extra} extra pad tokens changed the pooled [CLS] by {err:.2e}"


@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (0.5, 2.0), (1.0, 0.0)])
def test_pretraining_loss_is_alpha_mlm_plus_beta_nsp(alpha, beta):
    model = minibert.BertForPreTraining(minibert.BertConfig(**TINY, mlm_alpha=alpha, nsp_beta=beta)).eval()
    input_ids = torch.randint(1, 99, (2, 6))
    labels = torch.full_like(input_ids, -100)
    labels[:, 2] = input_ids[:, 2]
    nsp = torch.tensor([0, 1])
    with torch.no_grad():
        out = model(input_ids, labels=labels, next_sentence_label=nsp)
        mlm_only = model(input_ids, labels=labels).loss
    l_mlm, l_nsp = mlm_loss(out.prediction_logits, labels), nsp_loss(out.seq_relationship_logits, nsp)
    expected = alpha * l_mlm + beta * l_nsp
    assert torch.allclose(out.loss, expected), f"L = {out.loss:.6f}, alpha*L_MLM + beta*L_NSP = {expected:.6f}"
    assert torch.allclose(mlm_only, alpha * l_mlm), f"MLM-only loss {mlm_only:.6f} != alpha*L_MLM"
    assert out.logits is out.prediction_logits, "`.logits` is the MLM logits under the common name"


def test_dropout_acts_in_training_only():
    model = minibert.BertForSequenceClassification(minibert.BertConfig(**TINY))
    input_ids = torch.randint(1, 99, (2, 6))
    model.train()
    a, b = model(input_ids).logits, model(input_ids).logits
    assert not torch.equal(a, b), "two training-mode passes should differ (dropout)"
    model.eval()
    a, b = model(input_ids).logits, model(input_ids).logits
    assert torch.equal(a, b), "eval-mode passes must be deterministic (no dropout)"


def test_malformed_input_is_a_clear_error():
    model = minibert.BertModel(minibert.BertConfig(**TINY))
    with pytest.raises(UserError, match=r"input_ids must have shape \(batch, seq_len\), got \(6,\)"):
        model(torch.randint(1, 99, (6,)))
    with pytest.raises(UserError, match="input_ids has 65 tokens but max_position_embeddings is 64"):
        model(torch.randint(1, 99, (1, 65)))
    vocab_size = model.config.vocab_size
    for bad_id in (vocab_size, vocab_size + 1000, -1):
        with pytest.raises(UserError, match=rf"token id {bad_id}, outside .*\[0, vocab_size={vocab_size}\); "
                                            "the tokenizer does not match the model"):
            model(torch.tensor([[2, 5, bad_id, 3]]))
    model(torch.tensor([[0, vocab_size - 1]]))  # both ends of the table are fine


@settings(deadline=None, max_examples=8)
@given(lengths=st.lists(st.integers(1, 9), min_size=1, max_size=3), extra=st.integers(1, 4),
       seed=st.integers(0, 1000))
def test_mean_pooling_classifier_reads_the_mean_of_kept_positions(lengths, extra, seed):
    """classifier_pooling="mean": c = tanh(m W_p + b_p), m = sum_t a_t H_L[t] / sum_t a_t; the
    logits equal that formula and do not move when [PAD] positions are appended."""
    torch.manual_seed(seed)
    config = minibert.BertConfig(**TINY, classifier_pooling="mean", num_labels=3)
    model = minibert.BertForSequenceClassification(config).eval()
    T = max(lengths)
    ids = torch.randint(1, 99, (len(lengths), T))
    mask = torch.tensor([[1] * n + [0] * (T - n) for n in lengths])
    ids = ids * mask
    logits = model(ids, attention_mask=mask).logits  # (B, 3)
    hidden = model.bert(ids, attention_mask=mask).last_hidden_state  # (B, T, d)
    m = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
    expected = model.classifier(torch.tanh(model.bert.pooler.dense(m)))
    gap = (logits - expected).abs().max().item()
    assert gap < 1e-5, f"mean-pooled logits differ from tanh(mean W_p + b_p) W + b by {gap:.2e}"
    padded = model(torch.cat([ids, torch.zeros(len(lengths), extra, dtype=ids.dtype)], 1),
                   attention_mask=torch.cat([mask, torch.zeros(len(lengths), extra, dtype=mask.dtype)], 1)).logits
    gap = (padded - logits).abs().max().item()
    assert gap < 1e-5, f"{extra} appended [PAD] positions moved the mean-pooled logits by {gap:.2e}"
    cls_model = minibert.BertForSequenceClassification(minibert.BertConfig(**TINY, num_labels=3)).eval()
    cls_model.load_state_dict(model.state_dict())
    if T > 1:
        assert not torch.allclose(cls_model(ids, attention_mask=mask).logits, logits), \
            "classifier_pooling 'cls' and 'mean' gave the same logits: the option has no effect"


def test_classifier_pooling_is_checked_and_round_trips(tmp_path):
    with pytest.raises(Exception, match="classifier_pooling"):
        minibert.BertConfig(**TINY, classifier_pooling="max")
    minibert.BertConfig(**TINY, classifier_pooling="mean").save_pretrained(tmp_path)
    loaded = minibert.BertConfig.from_pretrained(tmp_path)
    assert loaded.classifier_pooling == "mean", f"config.json round trip gave {loaded.classifier_pooling!r}"
