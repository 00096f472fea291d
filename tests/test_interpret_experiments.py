"""The experiments' identities: logit lens, induction / previous-token scores, rollout, probes.

Each test names a plausible wrong version that it catches: a lens that normalises the last state
twice or never; an induction score read one key off (t - n, or t - n + 2); a rollout without the
residual identity or without renormalisation; a control task that gives one word two labels.
"""
import pytest
import torch

import minibert
from interpret import induction, lens, probes, rollout
from minigpt import GPT, GPTConfig

TOL = 1e-5


@pytest.fixture(scope="module")
def gpt():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=3, n_head=2, n_embd=16, block_size=16, vocab_size=19))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model.eval()


def test_logit_lens_at_the_last_layer_is_the_models_logits(gpt):
    ids = torch.randint(0, 19, (2, 12), generator=torch.Generator().manual_seed(0))
    readings = lens.logit_lens(gpt, ids)
    assert readings.shape == (4, 2, 12, 19), f"(L + 1, B, T, V) expected, got {tuple(readings.shape)}"
    with torch.no_grad():
        out = gpt(ids, output_hidden_states=True)
        twice = gpt.lm_head(gpt.transformer.ln_f(out.hidden_states[-1]))  # the slip: LN_f applied again
    diff = (readings[-1] - out.logits).abs().max().item()
    assert diff <= TOL, f"lens at layer L differs from the logits by {diff:.2e}"
    assert (twice - out.logits).abs().max() > 1e-3, "a second LN_f must change the logits (else this test is blind)"
    first = gpt.lm_head(gpt.transformer.ln_f(out.hidden_states[0]))
    assert (readings[0] - first).abs().max() <= TOL, "layer 0 reads the embeddings through LN_f and W_U"
    raw = gpt.lm_head(out.hidden_states[0])
    assert (readings[0] - raw).abs().max() > 1e-3, "without LN_f the reading of layer 0 differs"


def test_lens_accuracy_counts_next_token_hits_per_layer():
    ids = torch.tensor([[1, 2, 3]])
    readings = torch.zeros(2, 1, 3, 4)
    readings[0, 0, 0, 2] = readings[0, 0, 1, 3] = 1  # layer 0 predicts both next tokens
    readings[1, 0, 0, 2] = readings[1, 0, 1, 0] = 1  # layer 1 only the first
    assert lens.lens_accuracy(readings, ids).tolist() == [1.0, 0.5]


def perfect(T, L=2, H=3, where=None):
    """Uniform causal patterns, with head (l, h) in `where` replaced by A[t, key(t)] = 1."""
    A = torch.tril(torch.ones(T, T))
    A = (A / A.sum(-1, keepdim=True)).expand(L, 1, H, T, T).clone()
    for (l, h), key in (where or {}).items():
        A[l, 0, h] = 0
        for t in range(T):
            A[l, 0, h, t, key(t)] = 1
    return A


@pytest.mark.parametrize("start", [0, 2])
def test_induction_score_is_one_for_a_perfect_induction_head_and_not_for_off_by_one_keys(start):
    n, T = 5, 14
    good = perfect(T, where={(1, 2): lambda t: t - n + 1 if t >= start + n else t})
    scores = induction.induction_score(good, period=n, start=start)
    assert scores.shape == (2, 3)
    assert scores[1, 2] == pytest.approx(1.0), f"the induction head scores {scores[1, 2]:.3f}"
    assert scores[0].max() < 0.5, "uniform heads must score low"
    for wrong in (lambda t: t - n if t >= start + n else t, lambda t: min(t - n + 2, t) if t >= start + n else t):
        off = induction.induction_score(perfect(T, where={(1, 2): wrong}), period=n, start=start)
        assert off[1, 2] < 0.5, f"a head attending one key off scores {off[1, 2]:.3f}"


def test_previous_token_score_is_one_for_a_previous_token_head():
    A = perfect(8, where={(0, 1): lambda t: max(t - 1, 0)})
    scores = induction.previous_token_score(A)
    assert scores[0, 1] == pytest.approx(1.0)
    assert scores[1].max() < 0.6


def test_repeated_tokens_repeat_and_the_loss_halves_are_of_the_right_positions():
    ids = induction.repeated_tokens(3, 6, 10)
    assert torch.equal(ids[:, :6], ids[:, 6:])
    logits = torch.full((3, 12, 10), -20.0)
    logits[:, 6:-1].scatter_(-1, ids[:, 7:, None], 20.0)  # perfect on the repeat only
    first, repeat = induction.loss_per_half(logits, ids, 6)
    assert repeat < 1e-6 and first == pytest.approx(2.302585, abs=1e-4), (first, repeat)  # ln 10: uniform


def test_rollout_rows_sum_to_one_and_reduce_to_the_mixed_attention_for_one_layer():
    g = torch.Generator().manual_seed(0)
    atts = [torch.softmax(torch.randn(2, 4, 7, 7, generator=g), -1) for _ in range(3)]
    R = rollout.rollout(atts)
    rows = R.sum(-1)
    assert torch.allclose(rows, torch.ones_like(rows), atol=1e-6), f"rows sum to {rows.min():.4f}..{rows.max():.4f}"
    one = rollout.rollout(atts[:1])
    expected = 0.5 * atts[0].mean(1) + 0.5 * torch.eye(7)
    assert torch.allclose(one, expected, atol=1e-6)
    raw_product = atts[2].mean(1) @ atts[1].mean(1) @ atts[0].mean(1)
    assert (R - raw_product).abs().max() > 1e-3, "the residual identity must matter"


def test_control_task_gives_every_word_type_one_label_from_the_real_tags():
    words = ["the", "The", "cat", "sat", "the", "dog"]
    tags = ["DT", "DT", "NN", "VBD", "DT", "NN"]
    control = probes.control_labels(words, tags, seed=3)
    assert control[0] == control[1] == control[4], "one word type, one control label"
    assert set(control) <= set(tags)


def test_a_linear_probe_reads_a_linear_label_and_not_a_random_one():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 8, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 3] > 0).long()
    acc = probes.probe_accuracy(x[:400], y[:400], x[400:], y[400:], 2)
    assert acc > 0.95, f"a linearly separable label probed at {acc:.3f}"
    noise = torch.randint(0, 2, (600,), generator=g)
    chance = probes.probe_accuracy(x[:400], noise[:400], x[400:], noise[400:], 2)
    assert chance < 0.65, f"random labels probed at {chance:.3f}: the probe memorises"


def test_read_conll_and_word_features_take_the_first_piece_of_every_word(tmp_path):
    conll = tmp_path / "tiny.txt"
    conll.write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nPeter NNP B-NP B-PER\n",
                     encoding="utf-8")
    sentences = probes.read_conll(conll)
    assert [s.words for s in sentences] == [["EU", "rejects"], ["Peter"]]
    assert sentences[0].ner == ["B-ORG", "O"] and sentences[1].pos == ["NNP"]
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "eu", "re", "##jects", "peter"]) + "\n")
    tokenizer = minibert.BertTokenizer(vocab_file=str(vocab))
    torch.manual_seed(0)
    model = minibert.BertModel(minibert.BertConfig(vocab_size=9, hidden_size=8, num_hidden_layers=1,
                                                   num_attention_heads=2, intermediate_size=16)).eval()
    feats, kept = probes.word_features(model, tokenizer, sentences)
    assert feats.shape == (2, 3, 8) and kept == [2, 1]
    with torch.no_grad():
        h = model(torch.tensor([[2, 5, 6, 7, 3]]), output_hidden_states=True).hidden_states[-1]
    assert torch.allclose(feats[-1, 1], h[0, 2], atol=1e-6), "'rejects' is read at its first piece 're'"
    bad = tmp_path / "bad.txt"
    bad.write_text("EU NNP\n", encoding="utf-8")
    with pytest.raises(probes.DataError, match="bad.txt:1"):
        probes.read_conll(bad)


def test_induction_data_repeats_each_line_with_lengths_in_range(tmp_path):
    from interpret.induction_data import main as data_main, repeated_random_lines
    lines = repeated_random_lines(50, 9, min_length=4, seed=1)
    for line in lines:
        half = len(line) // 2
        assert line[:half] == line[half:] and 4 <= half <= 9, line
    assert len({len(line) for line in lines}) > 1, "the period must vary (else a positional head copies)"
    out = tmp_path / "r.txt"
    with pytest.raises(SystemExit) as e:
        from common.errors import run_cli
        run_cli(data_main, ["--output", str(out), "--lines", "5", "--length", "6", "--min_length", "3"])
    assert e.value.code == 0 and len(out.read_text().splitlines()) == 5


def test_figures_induction_reports_the_grid_and_the_ablated_loss(tmp_path, capsys):
    from common.errors import run_cli
    from common.text.char import CharTokenizer
    from interpret.figures import main as figures_main
    tokenizer = CharTokenizer.from_text("abcdefghij")
    torch.manual_seed(0)
    GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=32, vocab_size=tokenizer.vocab_size,
                  feed_forward="none")).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(SystemExit) as e:
        run_cli(figures_main, ["induction", "--model_name_or_path", str(tmp_path), "--period", "8", "--batch", "4"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    assert "| layer 1 |" in out and "best induction head" in out and "zero-ablated" in out, out
