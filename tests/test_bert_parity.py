"""minibert against Hugging Face transformers (the test-only oracle): same weights, same numbers.

For every head, a randomly initialised transformers model of a tiny config is saved with its own
`save_pretrained` and loaded with minibert's `from_pretrained`. Then, in eval mode and float32, on
a batch WITH padding, with and without token_type_ids:
    outputs (logits, hidden states, attentions)  agree to 1e-5
    losses, given the same labels                agree to 1e-5
    gradients of named parameters                agree to 1e-5 (relative to their size)
and the other way round: a folder written by minibert loads in transformers.
"""
import warnings

import pytest
import torch

import minibert

transformers = pytest.importorskip("transformers", reason="transformers (test-only oracle) is not installed")

TOL = 1e-5
TINY = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=37, max_position_embeddings=64, type_vocab_size=2)
HEAD_CONFIG = {
    "BertModel": {},
    "BertForPreTraining": {},
    "BertForMaskedLM": {},
    "BertForSequenceClassification": dict(num_labels=3),
    "BertForTokenClassification": dict(num_labels=5),
    "BertForQuestionAnswering": {},
}
OUTPUT_FIELDS = {
    "BertModel": ("last_hidden_state", "pooler_output"),
    "BertForPreTraining": ("loss", "prediction_logits", "seq_relationship_logits"),
    "BertForMaskedLM": ("loss", "logits"),
    "BertForSequenceClassification": ("loss", "logits"),
    "BertForTokenClassification": ("loss", "logits"),
    "BertForQuestionAnswering": ("loss", "start_logits", "end_logits"),
}
# A few parameters per model whose gradients must agree: embeddings, attention, FFN, the head.
ENCODER_PARAMS = ("embeddings.word_embeddings.weight", "embeddings.token_type_embeddings.weight",
                  "encoder.layer.0.attention.self.query.weight",
                  "encoder.layer.1.output.LayerNorm.weight")
HEAD_PARAMS = {
    "BertModel": ("pooler.dense.weight",),
    "BertForPreTraining": ("cls.predictions.transform.dense.weight", "cls.predictions.bias",
                           "cls.seq_relationship.weight"),
    "BertForMaskedLM": ("cls.predictions.transform.LayerNorm.weight", "cls.predictions.bias"),
    "BertForSequenceClassification": ("classifier.weight", "bert.pooler.dense.bias"),
    "BertForTokenClassification": ("classifier.weight", "classifier.bias"),
    "BertForQuestionAnswering": ("qa_outputs.weight", "qa_outputs.bias"),
}
HEADS = list(HEAD_CONFIG)


def hf_config(head, **overrides):
    config = transformers.BertConfig(**{**TINY, **HEAD_CONFIG[head], **overrides})
    config._attn_implementation = "eager"  # the oracle runs the plain softmax(QK^T/sqrt(d)+M)V
    return config


def save_hf_model(head, folder, seed=0, **overrides):
    """A transformers model with random weights - biases and LayerNorms too, so a bug in any
    of them shows - saved by transformers itself."""
    torch.manual_seed(seed)
    model = getattr(transformers, head)(hf_config(head, **overrides))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(folder)
    return model.eval()


@pytest.fixture(scope="module")
def hf_models(tmp_path_factory):
    """{head: (transformers model, folder it was saved to)}"""
    models = {}
    for i, head in enumerate(HEADS):
        folder = tmp_path_factory.mktemp(head)
        models[head] = (save_hf_model(head, folder, seed=i), folder)
    return models


def make_batch(head, with_token_types=True, B=3, T=8):
    """Right-padded batch: lengths 8, 5 and 2, pad id 0, second half of each row is segment B."""
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([T, 5, 2])
    attention_mask = (torch.arange(T)[None, :] < lengths[:, None]).long()  # (B, T)
    input_ids = torch.randint(1, TINY["vocab_size"], (B, T), generator=g) * attention_mask
    batch = dict(input_ids=input_ids, attention_mask=attention_mask)
    if with_token_types:
        batch["token_type_ids"] = (torch.arange(T)[None, :] >= lengths[:, None] // 2).long() * attention_mask
    if head in ("BertForPreTraining", "BertForMaskedLM"):
        picked = (torch.rand(B, T, generator=g) < 0.4) & attention_mask.bool()
        picked[:, 0] = True
        batch["labels"] = torch.where(picked, input_ids, torch.full_like(input_ids, -100))
    if head == "BertForPreTraining":
        batch["next_sentence_label"] = torch.tensor([0, 1, 1])
    if head == "BertForSequenceClassification":
        batch["labels"] = torch.tensor([2, 0, 1])
    if head == "BertForTokenClassification":
        labels = torch.randint(0, 5, (B, T), generator=g)
        batch["labels"] = labels.masked_fill(attention_mask == 0, -100)
    if head == "BertForQuestionAnswering":
        # 20 lies outside the 8 tokens: clamped to T and ignored, as transformers does
        batch["start_positions"] = torch.tensor([1, 3, 20])
        batch["end_positions"] = torch.tensor([2, 4, 1])
    return batch


def max_diff(a, b):
    return (a.detach() - b.detach()).abs().max().item()


def scalar_objective(head, out):
    """The loss when the head has one; for the bare encoder a fixed weighted sum of its outputs."""
    if head != "BertModel":
        return out.loss
    g = torch.Generator().manual_seed(2)
    weights = torch.randn(out.last_hidden_state.shape, generator=g)
    return (out.last_hidden_state * weights).sum() + out.pooler_output.sum()


@pytest.mark.parametrize("with_token_types", [True, False], ids=["token_types", "no_token_types"])
@pytest.mark.parametrize("head", HEADS)
def test_outputs_and_loss_match_transformers(hf_models, head, with_token_types):
    hf_model, folder = hf_models[head]
    ours = getattr(minibert, head).from_pretrained(folder)
    batch = make_batch(head, with_token_types)
    with torch.no_grad():
        expected, got = hf_model(**batch), ours(**batch)
    for field in OUTPUT_FIELDS[head]:
        a, b = getattr(got, field), getattr(expected, field)
        assert a.shape == b.shape, f"{head}.{field}: shape {tuple(a.shape)}, transformers {tuple(b.shape)}"
        err = max_diff(a, b)
        assert err <= TOL, f"{head}.{field} differs from transformers by {err:.2e} (tolerance {TOL:g})"


@pytest.mark.parametrize("head", HEADS)
def test_gradients_match_transformers(hf_models, head):
    hf_model, folder = hf_models[head]
    ours = getattr(minibert, head).from_pretrained(folder)
    batch = make_batch(head)
    scalar_objective(head, hf_model(**batch)).backward()
    scalar_objective(head, ours(**batch)).backward()
    prefix = "" if head == "BertModel" else "bert."
    theirs, mine = dict(hf_model.named_parameters()), dict(ours.named_parameters())
    grads = {name: (theirs[name].grad.clone(), mine[name].grad)
             for name in [prefix + p for p in ENCODER_PARAMS] + list(HEAD_PARAMS[head])}
    hf_model.zero_grad()  # the transformers models are shared by the tests of this module
    for name, (g_theirs, g_mine) in grads.items():
        assert g_mine is not None, f"{head}: {name} got no gradient"
        scale = max(1.0, g_theirs.abs().max().item())
        err = max_diff(g_mine, g_theirs) / scale
        assert err <= TOL, (f"{head}: gradient of {name} differs from transformers by {err:.2e} "
                            f"(relative to max |grad| {scale:.2e}; tolerance {TOL:g})")


def test_hidden_states_and_attentions_match_transformers(hf_models):
    hf_model, folder = hf_models["BertModel"]
    ours = minibert.BertModel.from_pretrained(folder)
    batch = make_batch("BertModel")
    with torch.no_grad():
        expected = hf_model(**batch, output_hidden_states=True, output_attentions=True)
        got = ours(**batch, output_hidden_states=True, output_attentions=True)
    L = TINY["num_hidden_layers"]
    assert len(got.hidden_states) == L + 1, f"{len(got.hidden_states)} hidden states, expected L+1 = {L + 1}"
    assert len(got.attentions) == L, f"{len(got.attentions)} attention maps, expected L = {L}"
    for i, (a, b) in enumerate(zip(got.hidden_states, expected.hidden_states)):
        err = max_diff(a, b)
        assert err <= TOL, f"hidden_states[{i}] differs from transformers by {err:.2e}"
    for i, (a, b) in enumerate(zip(got.attentions, expected.attentions)):
        err = max_diff(a, b)
        assert err <= TOL, f"attentions[{i}] differs from transformers by {err:.2e}"
    padded_key_weight = got.attentions[0][2, :, :, 2:].abs().max().item()
    assert padded_key_weight == 0.0, f"padded keys received attention weight {padded_key_weight:.2e}"


@pytest.mark.parametrize("head", HEADS)
def test_transformers_checkpoint_loads_with_nothing_missing_or_unexpected(hf_models, head):
    _, folder = hf_models[head]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        getattr(minibert, head).from_pretrained(folder)
    messages = [str(w.message) for w in caught]
    assert not messages, f"loading a transformers {head} warned: {messages}"


@pytest.mark.parametrize("head", ["BertForPreTraining", "BertForSequenceClassification",
                                  "BertForQuestionAnswering"])
def test_our_checkpoint_loads_in_transformers(hf_models, head, tmp_path):
    _, folder = hf_models[head]
    ours = getattr(minibert, head).from_pretrained(folder)
    ours.save_pretrained(tmp_path)
    reloaded = getattr(transformers, head).from_pretrained(tmp_path, attn_implementation="eager").eval()
    batch = make_batch(head)
    with torch.no_grad():
        expected, got = reloaded(**batch), ours(**batch)
    for field in OUTPUT_FIELDS[head]:
        err = max_diff(getattr(got, field), getattr(expected, field))
        assert err <= TOL, f"{head}.{field}: transformers on our checkpoint differs by {err:.2e}"


@pytest.mark.parametrize("head", ["BertModel", "BertForPreTraining"])
def test_sdpa_attention_equals_eager(hf_models, head):
    _, folder = hf_models[head]
    eager = getattr(minibert, head).from_pretrained(folder)
    sdpa = getattr(minibert, head).from_pretrained(folder, attn_impl="sdpa")
    assert sdpa.config.attn_impl == "sdpa"
    batch = make_batch(head)
    with torch.no_grad():
        a, b = eager(**batch), sdpa(**batch)
    for field in OUTPUT_FIELDS[head]:
        err = max_diff(getattr(a, field), getattr(b, field))
        assert err <= TOL, f"{head}.{field}: sdpa differs from eager by {err:.2e}"


@pytest.mark.parametrize("problem_type,labels", [
    ("regression", torch.tensor([[0.5], [-1.0], [2.0]])),
    ("multi_label_classification", torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])),
], ids=["regression", "multi_label"])
def test_sequence_classification_problem_types_match_transformers(tmp_path, problem_type, labels):
    num_labels = labels.size(1)
    head = "BertForSequenceClassification"
    hf_model = save_hf_model(head, tmp_path, num_labels=num_labels, problem_type=problem_type)
    ours = minibert.BertForSequenceClassification.from_pretrained(tmp_path)
    assert ours.config.problem_type == problem_type and ours.config.num_labels == num_labels
    batch = {**make_batch(head), "labels": labels}
    with torch.no_grad():
        expected, got = hf_model(**batch), ours(**batch)
    err = max_diff(got.loss, expected.loss)
    assert err <= TOL, f"{problem_type} loss {got.loss:.6f} vs transformers {expected.loss:.6f} ({err:.2e})"


@pytest.mark.parametrize("head", ["BertForPreTraining", "BertForMaskedLM"])
def test_mlm_logits_at_masked_only_keeps_loss_and_gradients(hf_models, head):
    """The speed option scores only the positions in I = {labels != -100}: same loss, same
    gradients, and the logits it returns are the full logits' rows at those positions."""
    hf_model, folder = hf_models[head]
    ours = getattr(minibert, head).from_pretrained(folder)
    batch = make_batch(head)
    expected, got = hf_model(**batch), ours(**batch, mlm_logits_at_masked_only=True)
    full_logits = getattr(expected, "prediction_logits", None)
    full_logits = expected.logits if full_logits is None else full_logits
    in_loss = batch["labels"] != -100
    assert got.logits.shape == (int(in_loss.sum()), TINY["vocab_size"]), f"logits {tuple(got.logits.shape)}"
    err = max_diff(got.logits, full_logits[in_loss])
    assert err <= TOL, f"masked-only logits differ from the full ones at those positions by {err:.2e}"
    err = max_diff(got.loss, expected.loss)
    assert err <= TOL, f"masked-only loss {got.loss:.6f} vs full {expected.loss:.6f} ({err:.2e})"
    expected.loss.backward()
    got.loss.backward()
    name = "bert.encoder.layer.0.attention.self.query.weight"
    g_theirs = dict(hf_model.named_parameters())[name].grad.clone()
    g_mine = dict(ours.named_parameters())[name].grad
    hf_model.zero_grad()
    err = max_diff(g_mine, g_theirs)
    assert err <= TOL, f"masked-only gradient of {name} differs by {err:.2e}"
    with torch.no_grad():
        unlabeled = ours(**{k: v for k, v in batch.items() if k != "labels"})
    assert unlabeled.logits.shape == full_logits.shape, "without labels the logits must be (B, T, V)"


def test_embedding_hidden_states_in_training_are_dropout_applied_after_the_layer_norm(hf_models):
    """E = Dropout(LayerNorm(...)): in training every element is 0 or LayerNorm(...) / (1 - p).
    (Eval-mode parity cannot see the order: dropout is the identity there.)"""
    _, folder = hf_models["BertModel"]
    ours = minibert.BertModel.from_pretrained(folder)
    emb, p = ours.embeddings, ours.config.hidden_dropout_prob
    batch = make_batch("BertModel")
    args = (batch["input_ids"], batch["token_type_ids"])
    with torch.no_grad():
        clean = emb.eval()(*args)
        noisy = emb.train()(*args)
    kept = noisy != 0
    err = max_diff(noisy[kept], clean[kept] / (1 - p))
    assert err <= TOL, (f"kept embedding values differ from LayerNorm(E) / (1 - p) by {err:.2e}; "
                        f"p = {p}: is the dropout applied before the LayerNorm?")
    dropped = 1 - kept.double().mean().item()
    assert abs(dropped - p) <= 0.06, f"{dropped:.3f} of the values are dropped, expected p = {p}"
