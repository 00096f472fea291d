"""minit5's T5Tokenizer against transformers' (test-only oracle), on one small spiece.model.

The SentencePiece model is trained here (T5Tokenizer.train: unigram, <pad> 0, </s> 1, <unk> 2) on a
few hundred lines of Multi30k English (generated sentences when the data is absent), saved with our
save_pretrained, and read by transformers from that folder. Both must then agree on everything a
seq2seq user touches: input_ids with </s> appended, attention_mask, batch padding and truncation,
decode with and without special tokens, the sentinel ids <extra_id_k> = len(tokenizer) - 1 - k, and
the pad / eos / unk ids. The texts include what tokenizers tend to disagree on: runs of spaces, tabs
and newlines, characters the model never saw (<unk>), sentinels typed next to words, an empty text.
"""
import random
import shutil
import warnings
from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers")
pytest.importorskip("google.protobuf", reason="transformers reads a spiece.model with protobuf")

from common.errors import DataError  # noqa: E402
from minit5.tokenizer import T5Tokenizer  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "multi30k" / "train.en"
PIECES = 300  # SentencePiece pieces; the 100 sentinels come on top
EXTRA_IDS = 100


def training_lines() -> list[str]:
    """400 lines of Multi30k English, or generated sentences of the same kind without the data."""
    if DATA.is_file():
        return DATA.read_text(encoding="utf-8").splitlines()[:400]
    rng = random.Random(0)
    words = ("a man woman dog child in the red blue shirt is walking running on street near water "
             "with two young people are playing ball at park sitting bench while others watch").split()
    return [" ".join(rng.choice(words) for _ in range(rng.randint(5, 14))).capitalize() + "." for _ in range(400)]


HELD_OUT = [
    "Two dogs are playing in the snow.",
    "A woman in a blue dress sits on a bench, reading.",
    "  leading and trailing spaces  ",
    "many    spaces\tand a tab\nand a newline",
    "UPPER case, digits 12345 and punctuation: (a) [b] {c}!?",
    "never seen: 日本語 ©®ß∑ and émoji 🙂",
    "The <extra_id_0> sat on the <extra_id_1>.",
    "glued<extra_id_0>to<extra_id_99>words",
    "<extra_id_5> at the start and at the end <extra_id_2>",
    "a sentinel that does not exist: <extra_id_100>",
    "typed specials: a </s> b<pad>c <unk> d</s>",
    "  <extra_id_0>  spaced  <extra_id_1>\t<extra_id_2>\n",
    "",
    "   ",
    "x",
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Our tokenizer, trained and saved: the folder both libraries load."""
    path = tmp_path_factory.mktemp("t5_tokenizer")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a small text may give fewer pieces than asked for
        T5Tokenizer.train(training_lines(), vocab_size=PIECES + EXTRA_IDS, extra_ids=EXTRA_IDS,
                          num_threads=1, output_dir=path)
    return path


@pytest.fixture(scope="module")
def ours(folder):
    return T5Tokenizer.from_pretrained(folder)


def transformers_classes():
    """T5Tokenizer (in transformers >= 5 the tokenizers-backed one), T5TokenizerFast where it is a
    class of its own (transformers < 5), and AutoTokenizer (what a user of a checkpoint calls)."""
    classes = {"T5Tokenizer": transformers.T5Tokenizer, "AutoTokenizer": transformers.AutoTokenizer}
    fast = getattr(transformers, "T5TokenizerFast", None)
    if fast is not None and fast is not transformers.T5Tokenizer:
        classes["T5TokenizerFast"] = fast
    return classes


@pytest.fixture(scope="module", params=sorted(transformers_classes()))
def theirs(request, folder):
    return transformers_classes()[request.param].from_pretrained(folder)


def test_the_trained_model_has_t5s_layout(ours):
    if DATA.is_file():  # the generated fallback text may hold fewer than PIECES pieces
        assert ours.sp_size == PIECES, f"expected {PIECES} SentencePiece pieces, the text gave {ours.sp_size}"
    assert (ours.pad_token_id, ours.eos_token_id, ours.unk_token_id) == (0, 1, 2)
    assert len(ours) == ours.sp_size + EXTRA_IDS, f"len {len(ours)} != {ours.sp_size} pieces + {EXTRA_IDS} sentinels"


def test_special_ids_and_vocabulary_size_equal_transformers(ours, theirs):
    for role in ("pad_token", "eos_token", "unk_token"):
        assert getattr(ours, role) == getattr(theirs, role), f"{role}: {getattr(ours, role)!r} vs {getattr(theirs, role)!r}"
        mine, ref = getattr(ours, role + "_id"), getattr(theirs, role + "_id")
        assert mine == ref, f"{role}_id: ours {mine}, transformers {ref}"
    assert len(ours) == len(theirs), f"len(tokenizer): ours {len(ours)}, transformers {len(theirs)}"


@pytest.mark.parametrize("k", [0, 1, 2, 50, 98, 99])
def test_sentinel_ids_count_down_from_the_top_as_in_transformers(ours, theirs, k):
    token = f"<extra_id_{k}>"
    expected = len(ours) - 1 - k
    assert ours.convert_tokens_to_ids(token) == expected, f"{token}: ours {ours.convert_tokens_to_ids(token)}, want {expected}"
    assert theirs.convert_tokens_to_ids(token) == expected, f"{token}: transformers gives {theirs.convert_tokens_to_ids(token)}"
    assert ours.convert_ids_to_tokens(expected) == theirs.convert_ids_to_tokens(expected) == token


def test_every_id_names_the_same_token(ours, theirs):
    ids = list(range(len(ours)))
    mine, ref = ours.convert_ids_to_tokens(ids), theirs.convert_ids_to_tokens(ids)
    differ = [(i, a, b) for i, a, b in zip(ids, mine, ref) if a != b]
    assert not differ, f"{len(differ)} ids name different tokens (id, ours, transformers): {differ[:5]}"


@pytest.mark.parametrize("text", HELD_OUT + training_lines()[:3], ids=repr)
def test_input_ids_with_eos_and_attention_mask_equal_transformers(ours, theirs, text):
    mine, ref = ours(text), theirs(text)
    assert mine["input_ids"] == ref["input_ids"], (
        f"{text!r}: ours {ours.convert_ids_to_tokens(mine['input_ids'])}, "
        f"transformers {theirs.convert_ids_to_tokens(ref['input_ids'])}")
    assert mine["input_ids"][-1] == ours.eos_token_id, "a T5 input ends with </s>"
    assert mine["attention_mask"] == ref["attention_mask"]
    # A character SentencePiece never saw: transformers' tokenize() shows the character itself, ours
    # shows "<unk>"; both give it the id of <unk>, so only the tokens of known pieces are compared.
    unk = [i == ours.unk_token_id for i in mine["input_ids"][:-1]]
    mine_tokens = [t for t, u in zip(ours.tokenize(text), unk) if not u]
    their_tokens = [t for t, u in zip(theirs.tokenize(text), unk) if not u]
    assert mine_tokens == their_tokens, f"{text!r}: tokens differ: ours {mine_tokens}, transformers {their_tokens}"


def test_unseen_lines_give_the_ids_of_transformers(ours, theirs):
    """Lines 400..599 of the data: the pieces were not fitted to them."""
    lines = (DATA.read_text(encoding="utf-8").splitlines()[400:600] if DATA.is_file()
             else [line.lower() for line in training_lines()[:200]])
    mine, ref = ours(lines)["input_ids"], theirs(lines)["input_ids"]
    differ = [line for line, a, b in zip(lines, mine, ref) if a != b]
    assert not differ, f"{len(differ)} of {len(lines)} lines tokenize differently, e.g. {differ[:2]}"


@pytest.mark.parametrize("skip_special_tokens", [False, True])
@pytest.mark.parametrize("text", HELD_OUT, ids=repr)
def test_decode_equals_transformers(ours, theirs, text, skip_special_tokens):
    ids = theirs(text)["input_ids"]
    mine, ref = ours.decode(ids, skip_special_tokens=skip_special_tokens), theirs.decode(
        ids, skip_special_tokens=skip_special_tokens)
    assert mine == ref, f"decode of {text!r} (skip_special_tokens={skip_special_tokens}): ours {mine!r}, " \
                        f"transformers {ref!r}"


def test_decode_of_sentinels_pads_and_unk_equals_transformers(ours, theirs):
    """Ids a model writes, not ones a text gives: a span-corruption target, padding, an <unk>."""
    words = ours("a dog runs")["input_ids"][:-1]
    target = [ours.convert_tokens_to_ids("<extra_id_0>")] + words + [ours.convert_tokens_to_ids("<extra_id_1>"),
                                                                     ours.unk_token_id, 1, 0, 0]
    for skip in (False, True):
        mine, ref = ours.decode(target, skip_special_tokens=skip), theirs.decode(target, skip_special_tokens=skip)
        assert mine == ref, f"skip_special_tokens={skip}: ours {mine!r}, transformers {ref!r}"
    assert ours.batch_decode([target, words]) == theirs.batch_decode([target, words])


@pytest.mark.parametrize("settings", [
    dict(padding=True),
    dict(padding="max_length", max_length=24),
    dict(padding=True, truncation=True, max_length=8),
    dict(padding="max_length", truncation=True, max_length=12, pad_to_multiple_of=4),
    dict(truncation=True, max_length=5),
], ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_batch_padding_and_truncation_equal_transformers(ours, theirs, settings):
    texts = [t for t in HELD_OUT if t.strip()][:8]
    mine, ref = ours(texts, **settings), theirs(texts, **settings)
    assert sorted(mine.keys()) == sorted(ref.keys()), f"keys: ours {sorted(mine.keys())}, transformers {sorted(ref.keys())}"
    for key in ref.keys():
        assert list(mine[key]) == list(ref[key]), f"{key} with {settings}: ours {mine[key]}, transformers {ref[key]}"
    if settings.get("truncation"):
        assert all(row[-1] == ours.eos_token_id for row in mine["input_ids"] if len(row) == settings["max_length"]
                   and row[-1] != ours.pad_token_id), "a truncated T5 input still ends with </s>"


def test_pairs_get_eos_after_each_text_as_in_transformers(ours, theirs):
    first, second = ["The dog runs.", "A man"], ["Ein Hund.", "sits on a bench <extra_id_0>"]
    for settings in (dict(), dict(truncation=True, max_length=9), dict(padding=True)):
        mine, ref = ours(first, second, **settings), theirs(first, second, **settings)
        assert mine["input_ids"] == ref["input_ids"], f"{settings}: ours {mine['input_ids']}, transformers {ref['input_ids']}"
        assert mine["attention_mask"] == ref["attention_mask"]


def test_tensors_equal_transformers(ours, theirs):
    texts = ["A dog.", "Two people walk along the beach at sunset."]
    mine = ours(texts, padding=True, return_tensors="pt")
    ref = theirs(texts, padding=True, return_tensors="pt")
    for key in ("input_ids", "attention_mask"):
        assert mine[key].tolist() == ref[key].tolist() and mine[key].dtype == ref[key].dtype, key


def test_a_transformers_folder_with_its_spiece_model_loads_into_ours(ours, theirs, folder, tmp_path):
    """A hub T5 folder: transformers' tokenizer_config.json and tokenizer.json, plus spiece.model.
    (transformers >= 5 save_pretrained writes no spiece.model; the hub checkpoints ship one.)"""
    theirs.save_pretrained(tmp_path)
    shutil.copy(folder / "tokenizer.model", tmp_path / "spiece.model")
    again = T5Tokenizer.from_pretrained(tmp_path)
    assert (len(again), again.extra_ids) == (len(ours), EXTRA_IDS)
    for text in HELD_OUT:
        assert again(text)["input_ids"] == theirs(text)["input_ids"], text


def test_a_folder_with_only_tokenizer_json_is_one_clear_error(theirs, tmp_path):
    theirs.save_pretrained(tmp_path)
    with pytest.raises(DataError, match="only tokenizer.json.*spiece.model"):
        T5Tokenizer.from_pretrained(tmp_path)
