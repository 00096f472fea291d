"""Language-modelling datasets and collators (common/data/language_modeling.py).

Checked: what each dataset cuts out of a file; that NSP pairs are built as BERT builds them and
really fit in block_size; that MLM masking selects ~p of the maskable tokens and splits them
80/10/10 (binomial tolerances of 5 sigma), never touches special tokens or padding, and that
causal-LM labels are the inputs with -100 at padding.
"""
import math
import random
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from common.data.language_modeling import (
    DataCollatorForLanguageModeling,
    DataCollatorForTokenClassification,
    DataCollatorWithPadding,
    GroupedTextDataset,
    LineByLineTextDataset,
    TextDataset,
    TextDatasetForNextSentencePrediction,
)
from common.errors import ConfigError, DataError
from common.text.auto import BertTokenizer, CharTokenizer

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "play", "##ing", ",", ".", "!"]
SHAKESPEARE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "tinyshakespeare.txt"


def bert_tokenizer(folder: Path, words=WORDS) -> BertTokenizer:
    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(SPECIALS + list(words)) + "\n", encoding="utf-8")
    return BertTokenizer(str(vocab))


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return bert_tokenizer(tmp_path_factory.mktemp("vocab"))


# ---------------------------------------------------------------- LineByLineTextDataset


def test_line_by_line_gives_one_example_per_nonempty_line_with_special_tokens(tok, tmp_path):
    path = write(tmp_path / "lines.txt", "the cat sat\n\n   \non the mat .\ndog\n")
    ds = LineByLineTextDataset(tok, path, block_size=16)
    got = [ds[i]["input_ids"].tolist() for i in range(len(ds))]
    want = [tok.build_inputs_with_special_tokens(tok.convert_tokens_to_ids(tok.tokenize(line)))
            for line in ("the cat sat", "on the mat .", "dog")]
    assert got == want, f"examples {got} != expected {want}"
    assert got[0][0] == tok.cls_token_id and got[0][-1] == tok.sep_token_id, f"no [CLS] ... [SEP]: {got[0]}"


def test_line_by_line_truncates_to_block_size_and_keeps_the_final_sep(tok, tmp_path):
    path = write(tmp_path / "long.txt", " ".join(["the cat"] * 20) + "\n")
    ds = LineByLineTextDataset(tok, path, block_size=7)
    ids = ds[0]["input_ids"].tolist()
    assert len(ids) == 7, f"length {len(ids)}, block_size 7"
    assert ids[-1] == tok.sep_token_id, f"last token {ids[-1]} is not [SEP] {tok.sep_token_id}"


@pytest.mark.parametrize("content", ["", "  \n\t\n\n"])
def test_empty_or_whitespace_file_is_a_data_error_naming_the_file(tok, tmp_path, content):
    path = write(tmp_path / "empty.txt", content)
    for make in (lambda: LineByLineTextDataset(tok, path, 8), lambda: GroupedTextDataset(tok, path, 8),
                 lambda: TextDatasetForNextSentencePrediction(tok, path, 16)):
        with pytest.raises(DataError, match="empty.txt"):
            make()


def test_missing_file_is_a_data_error(tok, tmp_path):
    with pytest.raises(DataError, match="not found"):
        LineByLineTextDataset(tok, tmp_path / "nope.txt", 8)


def test_encoding_argument_reads_latin1_and_utf8_default_names_the_line(tok, tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("the caf\xe9 cat\n".encode("latin-1"))
    with pytest.raises(DataError, match="line 1"):
        LineByLineTextDataset(tok, path, 8)
    assert len(LineByLineTextDataset(tok, path, 8, encoding="latin-1")) == 1


# ---------------------------------------------------------------- GroupedTextDataset (causal LM)


def test_grouped_blocks_are_consecutive_windows_of_one_stored_stream(tmp_path):
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 5
    char_tok = CharTokenizer.from_text(text)
    path = write(tmp_path / "play.txt", text)
    ds = GroupedTextDataset(char_tok, path, block_size=16)
    stream = char_tok.convert_tokens_to_ids(char_tok.tokenize(text))
    assert len(ds) == len(stream) // 16, f"{len(ds)} blocks for {len(stream)} tokens of block 16"
    joined = torch.cat([ds[i]["input_ids"] for i in range(len(ds))]).tolist()
    assert joined == stream[: len(ds) * 16], "blocks do not concatenate back to the token stream"
    storage = ds.ids.untyped_storage().data_ptr()
    assert ds[3]["input_ids"].untyped_storage().data_ptr() == storage, "a block is a copy, not a view of the stream"
    assert TextDataset is GroupedTextDataset


def test_grouped_with_bert_tokenizer_wraps_each_block_in_cls_sep(tok, tmp_path):
    path = write(tmp_path / "t.txt", "the cat sat on the mat . " * 6)
    ds = GroupedTextDataset(tok, path, block_size=8)
    for i in range(len(ds)):
        ids = ds[i]["input_ids"].tolist()
        assert len(ids) == 8 and ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id, f"block {i}: {ids}"


def test_grouped_file_shorter_than_one_block_is_a_data_error(tok, tmp_path):
    path = write(tmp_path / "short.txt", "the cat")
    with pytest.raises(DataError, match="fewer than one block"):
        GroupedTextDataset(tok, path, block_size=64)


@pytest.mark.skipif(not SHAKESPEARE.exists(), reason=f"tiny shakespeare not found at {SHAKESPEARE}")
def test_grouped_tiny_shakespeare_with_char_tokenizer_is_one_long_tensor():
    text = SHAKESPEARE.read_text(encoding="utf-8")
    char_tok = CharTokenizer.from_text(text)
    ds = GroupedTextDataset(char_tok, SHAKESPEARE, block_size=256)
    assert ds.ids.numel() == len(text) == 1_115_394, f"{ds.ids.numel()} tokens for {len(text)} characters"
    assert len(ds) == len(text) // 256, f"{len(ds)} blocks"
    first = char_tok.decode(ds[0]["input_ids"].tolist())
    assert first == text[:256], f"first block decodes to {first[:40]!r}..."


# ---------------------------------------------------------------- next-sentence prediction pairs


def nsp_corpus(n_docs=8, n_sentences=12, seed=0):
    """Every word is unique (d<doc>w<k>), so a token id tells its document and position."""
    rng = random.Random(seed)
    docs, k = [], 0
    for d in range(n_docs):
        sentences = []
        for _ in range(rng.randint(1, n_sentences)):
            n = rng.randint(1, 7)
            sentences.append([f"d{d}w{k + j}" for j in range(n)])
            k += n
        docs.append(sentences)
    return docs


@pytest.fixture(scope="module")
def nsp_setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nsp")
    docs = nsp_corpus()
    words = [w for doc in docs for sentence in doc for w in sentence]
    tokenizer = bert_tokenizer(folder, words)
    path = write(folder / "docs.txt", "\n\n".join("\n".join(" ".join(s) for s in doc) for doc in docs) + "\n")
    where = {tokenizer.convert_tokens_to_ids(w): (int(w[1:w.index("w")]), int(w[w.index("w") + 1:])) for w in words}
    return tokenizer, path, where


def split_pair(example, tokenizer):
    """[CLS] A [SEP] B [SEP] -> (A, B), checking the layout and the segment ids on the way."""
    ids, types = example["input_ids"].tolist(), example["token_type_ids"].tolist()
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    assert ids[0] == cls and ids[-1] == sep and ids.count(sep) == 2, f"not [CLS] A [SEP] B [SEP]: {ids}"
    first_sep = ids.index(sep)
    a, b = ids[1:first_sep], ids[first_sep + 1:-1]
    assert types == [0] * (len(a) + 2) + [1] * (len(b) + 1), f"token_type_ids {types} for |A|={len(a)} |B|={len(b)}"
    return a, b


@settings(max_examples=15)
@given(block_size=st.integers(5, 40), seed=st.integers(0, 10_000),
       short=st.sampled_from([0.0, 0.1, 1.0]), nsp=st.sampled_from([0.0, 0.5, 1.0]))
def test_nsp_pairs_fit_block_size_and_b_follows_a_or_comes_from_another_document(
        nsp_setup, block_size, seed, short, nsp):
    tokenizer, path, where = nsp_setup
    ds = TextDatasetForNextSentencePrediction(tokenizer, path, block_size, nsp_probability=nsp,
                                              short_seq_probability=short, seed=seed)
    assert len(ds) > 0
    for i in range(len(ds)):
        example = ds[i]
        n = len(example["input_ids"])
        assert n <= block_size, f"example {i} has {n} tokens > block_size {block_size}"
        a, b = split_pair(example, tokenizer)
        assert a and b, f"example {i}: empty segment |A|={len(a)} |B|={len(b)}"
        docs_a, docs_b = {where[t][0] for t in a}, {where[t][0] for t in b}
        assert len(docs_a) == 1 and len(docs_b) == 1, f"example {i}: a segment spans documents {docs_a} {docs_b}"
        label = example["next_sentence_label"].item()
        if label == 0:
            assert docs_a == docs_b, f"IsNext example {i} takes B from document {docs_b}, A from {docs_a}"
            last_a, first_b = max(where[t][1] for t in a), min(where[t][1] for t in b)
            assert first_b > last_a, f"IsNext example {i}: B starts at word {first_b}, before A ends ({last_a})"
        else:
            assert label == 1 and docs_a != docs_b, f"NotNext example {i} takes B from A's own document {docs_a}"


def one_word_sentences_setup(folder, n_docs, n_sentences, words_per_sentence):
    """Documents of equal sentences of unique words d<doc>w<k>: a token id tells its document
    and its position there."""
    docs = [[[f"d{d}w{s * words_per_sentence + j}" for j in range(words_per_sentence)]
             for s in range(n_sentences)] for d in range(n_docs)]
    words = [w for doc in docs for sentence in doc for w in sentence]
    tokenizer = bert_tokenizer(folder, words)
    path = write(folder / "docs.txt", "\n\n".join("\n".join(" ".join(s) for s in doc) for doc in docs) + "\n")
    ids = [[tokenizer.convert_tokens_to_ids(w) for sentence in doc for w in sentence] for doc in docs]
    return tokenizer, path, ids


def test_nsp_truncated_pair_fills_its_block_exactly(tmp_path):
    """Every sentence (20 tokens) is longer than a block's 9 tokens for A and B, so every pair is
    truncated, and truncation stops at exactly block_size tokens: not one more, not one less."""
    block_size = 12
    tokenizer, path, _ = one_word_sentences_setup(tmp_path, n_docs=3, n_sentences=4, words_per_sentence=20)
    for seed in range(3):
        ds = TextDatasetForNextSentencePrediction(tokenizer, path, block_size, seed=seed)
        lengths = [len(ds[i]["input_ids"]) for i in range(len(ds))]
        assert lengths and set(lengths) == {block_size}, (
            f"seed {seed}: truncated pairs have {sorted(set(lengths))} tokens, expected exactly {block_size}")
        for i in range(len(ds)):
            a, b = split_pair(ds[i], tokenizer)
            assert a and b, f"seed {seed}, example {i}: truncation emptied a segment (|A|={len(a)}, |B|={len(b)})"


@pytest.mark.parametrize("seed", range(4))
def test_nsp_pairs_use_every_sentence_of_a_document_once_in_order(tmp_path, seed):
    """With one-token sentences nothing is truncated; then the A segments (and the B segments of
    IsNext pairs) of a document's examples, in order, are the whole document: the sentences a
    NotNext pair did not use as A start the next pair."""
    tokenizer, path, docs = one_word_sentences_setup(tmp_path, n_docs=4, n_sentences=30, words_per_sentence=1)
    ds = TextDatasetForNextSentencePrediction(tokenizer, path, 12, nsp_probability=0.5, seed=seed)
    owner = {t: d for d, doc in enumerate(docs) for t in doc}
    used = {d: [] for d in range(len(docs))}
    for i in range(len(ds)):
        a, b = split_pair(ds[i], tokenizer)
        used[owner[a[0]]] += a + (b if ds[i]["next_sentence_label"].item() == 0 else [])
    for d, doc in enumerate(docs):
        missing = sorted(set(doc) - set(used[d]))
        assert used[d] == doc, (f"seed {seed}, document {d}: its pairs use {len(used[d])} of its "
                                f"{len(doc)} sentences in order, {len(missing)} never: ids {missing[:8]}")


def test_nsp_notnext_fraction_matches_nsp_probability(nsp_setup):
    tokenizer, path, _ = nsp_setup
    labels = []
    for seed in range(10):
        ds = TextDatasetForNextSentencePrediction(tokenizer, path, 12, nsp_probability=0.3, seed=seed)
        labels += [ds[i]["next_sentence_label"].item() for i in range(len(ds))]
    n, p = len(labels), 0.3
    observed = sum(labels) / n
    tolerance = 5 * math.sqrt(p * (1 - p) / n)
    assert abs(observed - p) <= tolerance, f"NotNext fraction {observed:.3f} over {n} pairs, want {p} +- {tolerance:.3f}"


def test_nsp_short_seq_probability_makes_shorter_pairs(nsp_setup):
    tokenizer, path, _ = nsp_setup
    mean = {}
    for short in (0.0, 1.0):
        ds = TextDatasetForNextSentencePrediction(tokenizer, path, 32, short_seq_probability=short, seed=1)
        mean[short] = sum(len(ds[i]["input_ids"]) for i in range(len(ds))) / len(ds)
    assert mean[1.0] < 0.8 * mean[0.0], f"mean length {mean[1.0]:.1f} (short always) vs {mean[0.0]:.1f} (never)"


def test_nsp_is_deterministic_from_seed(nsp_setup):
    tokenizer, path, _ = nsp_setup

    def pairs(seed):
        ds = TextDatasetForNextSentencePrediction(tokenizer, path, 16, seed=seed)
        return [{k: v.tolist() for k, v in ds[i].items()} for i in range(len(ds))]

    assert pairs(7) == pairs(7), "same seed, different pairs"
    assert pairs(7) != pairs(8), "different seeds gave identical pairs"


def test_nsp_single_document_is_a_data_error_unless_nsp_probability_is_zero(tok, tmp_path):
    path = write(tmp_path / "one_doc.txt", "the cat sat .\non the mat .\nthe dog ran .\n")
    with pytest.raises(DataError, match=r"one_doc.txt.*>= 2.*blank line"):
        TextDatasetForNextSentencePrediction(tok, path, 16)
    ds = TextDatasetForNextSentencePrediction(tok, path, 16, nsp_probability=0.0)
    assert all(ds[i]["next_sentence_label"].item() == 0 for i in range(len(ds)))


def test_nsp_block_size_too_small_is_a_config_error(nsp_setup):
    tokenizer, path, _ = nsp_setup
    with pytest.raises(ConfigError, match="block_size"):
        TextDatasetForNextSentencePrediction(tokenizer, path, 4)


# ---------------------------------------------------------------- MLM collator


@pytest.fixture(scope="module")
def big_tok(tmp_path_factory):
    """A 1005-token vocabulary, so the 80/10/10 split can be measured on a large batch."""
    return bert_tokenizer(tmp_path_factory.mktemp("big"), [f"w{i}" for i in range(1000)])


def random_examples(tokenizer, n, max_len, seed=0):
    """Examples of random length with [CLS] ... [SEP] and a few [UNK] inside (specials in the text)."""
    g = torch.Generator().manual_seed(seed)
    special = set(tokenizer.all_special_ids)
    normal = torch.tensor([i for i in range(len(tokenizer)) if i not in special])
    examples = []
    for _ in range(n):
        length = int(torch.randint(max_len // 2, max_len - 1, (1,), generator=g))
        ids = normal[torch.randint(len(normal), (length,), generator=g)]
        ids[torch.rand(length, generator=g) < 0.02] = tokenizer.unk_token_id
        examples.append({"input_ids": tokenizer.build_inputs_with_special_tokens(ids.tolist())})
    return examples


def binomial_check(what, count, n, p, sigmas=5.0):
    observed = count / n
    tolerance = sigmas * math.sqrt(p * (1 - p) / n)
    assert abs(observed - p) <= tolerance, f"{what}: {observed:.4f} ({count}/{n}), expected {p:.4f} +- {tolerance:.4f}"


def test_mlm_selection_rate_and_exact_80_10_10_split(big_tok):
    examples = random_examples(big_tok, 128, 512)
    collator = DataCollatorForLanguageModeling(big_tok, mlm_probability=0.15, seed=0)
    original = DataCollatorWithPadding(big_tok)(examples)["input_ids"]
    batch = collator(examples)
    special = torch.isin(original, torch.tensor(big_tok.all_special_ids))
    eligible = ~special & (batch["attention_mask"] == 1)
    selected = batch["labels"] != -100
    n_eligible, n_selected = int(eligible.sum()), int(selected.sum())
    binomial_check("selected fraction of maskable tokens", n_selected, n_eligible, 0.15)

    corrupted = batch["input_ids"][selected]
    masked = corrupted == big_tok.mask_token_id
    unchanged = corrupted == original[selected]
    randomized = ~masked & ~unchanged
    V = len(big_tok) - len(set(big_tok.all_special_ids))
    # The random branch draws the original token again with probability 1/V; that shows as "unchanged".
    binomial_check("[MASK] fraction of selected", int(masked.sum()), n_selected, 0.8)
    binomial_check("random-token fraction of selected", int(randomized.sum()), n_selected, 0.1 * (1 - 1 / V))
    binomial_check("unchanged fraction of selected", int(unchanged.sum()), n_selected, 0.1 + 0.1 / V)


def test_mlm_never_selects_specials_or_padding_and_random_tokens_are_never_special(big_tok):
    examples = random_examples(big_tok, 64, 64, seed=1)
    examples.append({"input_ids": [big_tok.cls_token_id, big_tok.sep_token_id]})  # only specials, much padding
    original = DataCollatorWithPadding(big_tok)(examples)["input_ids"]
    batch = DataCollatorForLanguageModeling(big_tok, mlm_probability=0.9, seed=3)(examples)
    special_ids = torch.tensor(big_tok.all_special_ids)
    special = torch.isin(original, special_ids) | (batch["attention_mask"] == 0)
    selected = batch["labels"] != -100
    assert not (selected & special).any(), f"{int((selected & special).sum())} special/padding positions selected"
    assert torch.equal(batch["labels"][selected], original[selected]), "labels are not the original tokens"
    assert torch.equal(batch["input_ids"][~selected], original[~selected]), "an unselected token was changed"
    replaced = batch["input_ids"][selected & (batch["input_ids"] != original)]
    replaced = replaced[replaced != big_tok.mask_token_id]
    assert len(replaced) > 0, "no random replacement happened at p=0.9"
    assert not torch.isin(replaced, special_ids).any(), "the random branch produced a special token"


def test_mlm_respects_a_given_special_tokens_mask_and_passes_nsp_fields_through(tok):
    features = [{"input_ids": [2, 5, 6, 3, 7, 3], "token_type_ids": [0, 0, 0, 0, 1, 1],
                 "special_tokens_mask": [1, 1, 1, 1, 0, 1], "next_sentence_label": 1},
                {"input_ids": [2, 8, 3, 9, 3], "token_type_ids": [0, 0, 0, 1, 1],
                 "special_tokens_mask": [1, 0, 1, 0, 1], "next_sentence_label": 0}]
    batch = DataCollatorForLanguageModeling(tok, mlm_probability=1.0, seed=0)(features)
    selected = (batch["labels"] != -100).int().tolist()
    assert selected == [[0, 0, 0, 0, 1, 0], [0, 1, 0, 1, 0, 0]], f"selected {selected}: mask ignored"
    assert "special_tokens_mask" not in batch
    assert batch["next_sentence_label"].tolist() == [1, 0]
    assert batch["token_type_ids"].tolist() == [[0, 0, 0, 0, 1, 1], [0, 0, 0, 1, 1, 0]]
    assert batch["attention_mask"].tolist() == [[1] * 6, [1] * 5 + [0]]


def test_mlm_is_reproducible_from_seed(big_tok):
    examples = random_examples(big_tok, 8, 64, seed=2)
    one = DataCollatorForLanguageModeling(big_tok, seed=5)(examples)
    two = DataCollatorForLanguageModeling(big_tok, seed=5)(examples)
    three = DataCollatorForLanguageModeling(big_tok, seed=6)(examples)
    assert torch.equal(one["input_ids"], two["input_ids"]) and torch.equal(one["labels"], two["labels"])
    assert not torch.equal(one["labels"], three["labels"]), "seeds 5 and 6 gave the same masks"


def test_mlm_seeded_dataloader_workers_draw_different_masks(big_tok):
    examples = random_examples(big_tok, 4, 64, seed=4) * 2  # the same 4 examples twice
    collator = DataCollatorForLanguageModeling(big_tok, mlm_probability=0.5, seed=0)
    collator(examples[:4])  # a generator made in the main process must not be shared by the workers
    loader = torch.utils.data.DataLoader(examples, batch_size=4, num_workers=2, collate_fn=collator)
    first, second = [batch["labels"] for batch in loader]  # worker 0 and worker 1, same inputs
    assert not torch.equal(first, second), "both DataLoader workers drew identical masks"


def test_mlm_without_mask_token_is_a_config_error():
    with pytest.raises(ConfigError, match="mask token"):
        DataCollatorForLanguageModeling(CharTokenizer.from_text("abc"))


def test_causal_lm_labels_are_the_inputs_with_minus_100_at_padding(tok):
    features = [[2, 5, 6, 7, 3], [2, 8, 3]]
    batch = DataCollatorForLanguageModeling(tok, mlm=False, pad_to_multiple_of=4)(features)
    assert batch["input_ids"].tolist() == [[2, 5, 6, 7, 3, 0, 0, 0], [2, 8, 3, 0, 0, 0, 0, 0]]
    assert batch["labels"].tolist() == [[2, 5, 6, 7, 3] + [-100] * 3, [2, 8, 3] + [-100] * 5]


# ---------------------------------------------------------------- padding collators


def test_padding_collator_renames_label_to_labels(tok):
    batch = DataCollatorWithPadding(tok)([{"input_ids": [2, 5, 3], "label": 1}, {"input_ids": [2, 3], "label": 0}])
    assert batch["labels"].tolist() == [1, 0] and "label" not in batch
    assert batch["input_ids"].tolist() == [[2, 5, 3], [2, 3, 0]]


def test_token_classification_collator_pads_labels_with_minus_100(tok):
    features = [{"input_ids": [2, 5, 6, 3], "labels": [-100, 1, 2, -100]}, {"input_ids": [2, 5, 3], "labels": [-100, 0, -100]}]
    batch = DataCollatorForTokenClassification(tok, pad_to_multiple_of=8)(features)
    assert batch["labels"].tolist() == [[-100, 1, 2, -100] + [-100] * 4, [-100, 0, -100] + [-100] * 5]
    assert batch["input_ids"].shape == (2, 8) and batch["labels"].dtype == torch.long
