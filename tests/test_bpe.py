"""GPT-2's byte-level BPE written by hand (common/text/bpe.py): the same ids as
transformers.GPT2Tokenizer and tiktoken on GPT-2's real vocabulary and on vocabularies we train;
training that equals the plain rescanning loop, merge for merge; exact round trips; files that
transformers reads; corrupt files named by file and line."""
from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from common.errors import CheckpointError, ConfigError, DataError
from common.text.auto import load_tokenizer
from common.text.bpe import (ENDOFTEXT, BPETokenizer, bpe_encode, bpe_merge, bytes_to_unicode, pretokenize,
                             train_bpe)

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
GPT2 = DATA / "gpt2"
needs_gpt2 = pytest.mark.skipif(not (GPT2 / "merges.txt").is_file(),
                                reason=f"GPT-2's vocab.json/merges.txt not found in {GPT2}")
needs_data = pytest.mark.skipif(not (DATA / "tinyshakespeare.txt").is_file(), reason=f"no real data in {DATA}")

HARD_STRINGS = [
    "Hello world", "  a   b\n\n\n c  \n", "\n\n\n", "   ", " ", "", "tab\tthen\r\nCRLF",
    "I'll he's we'd they're I've I'm can't", "HE'S SHE'LL 'S 'll 'Ll", "''s 's's",
    "12345 3.14159 1,000,000 ４２", "emoji 😀👍🏽 x 🇫🇷", "中文字符 日本語 한국어", "e\u0301 n\u0303 combining\u0308",
    "\x00\x01\x1f\x7f ctrl \u200b zero-width", "<|endoftext|>", "a<|endoftext|>b", "x <|endoftext|> y",
    "<|endoftext|><|endoftext|>", "  <|endoftext|>  ", "<|endoftext", "endoftext|>", "<|",
]


def _slice(path: Path, n: int = 20_000) -> str:
    return path.read_text(encoding="utf-8")[:n]


@pytest.fixture(scope="module")
def real_texts():
    if not (DATA / "tinyshakespeare.txt").is_file():
        pytest.skip(f"no real data in {DATA}")
    return {"shakespeare": _slice(DATA / "tinyshakespeare.txt"), "sst2": _slice(DATA / "sst2" / "dev.tsv"),
            "conll": _slice(DATA / "conll2003" / "valid.txt")}


@pytest.fixture(scope="module")
def gpt2_pair():
    if not (GPT2 / "merges.txt").is_file():
        pytest.skip(f"GPT-2's vocab.json/merges.txt not found in {GPT2}")
    from transformers import GPT2Tokenizer
    return load_tokenizer(GPT2), GPT2Tokenizer(str(GPT2 / "vocab.json"), str(GPT2 / "merges.txt"))


TRAIN_TEXT = ("The quick brown fox jumps over the lazy dog. It's the fox's 2nd jump; they'll see.\n"
              "Naïve café, 東京 and 😀 too.<|endoftext|>Another document:   spaces\n\n") * 30


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small vocabulary trained here (real text when present), saved, and transformers' reading of it."""
    from transformers import GPT2Tokenizer
    text = _slice(DATA / "tinyshakespeare.txt", 60_000) if (DATA / "tinyshakespeare.txt").is_file() else TRAIN_TEXT
    tok = BPETokenizer.train([text, TRAIN_TEXT], 600)
    folder = tmp_path_factory.mktemp("bpe")
    tok.save_pretrained(folder)
    return tok, GPT2Tokenizer(str(folder / "vocab.json"), str(folder / "merges.txt")), folder


def _tiktoken_for(tok: BPETokenizer):
    """tiktoken built offline from the same ranks: a token's rank is its id (merges come in id order)."""
    tiktoken = pytest.importorskip("tiktoken")
    decoder = tok.byte_decoder
    ranks = {bytes(decoder[c] for c in t): i for t, i in tok.get_vocab().items() if t not in tok.all_special_tokens}
    from common.text.bpe import GPT2_PATTERN
    return tiktoken.Encoding("ours", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={t: tok.convert_tokens_to_ids(t) for t in tok.all_special_tokens})


# ---------------------------------------------------------------- the byte map and the pattern
def test_bytes_to_unicode_is_transformers_map_and_gpt2_vocabulary_order():
    from transformers.convert_slow_tokenizer import bytes_to_unicode as reference
    ours = bytes_to_unicode()
    assert ours == reference(), "byte -> character map differs from GPT-2's"
    assert len(set(ours.values())) == 256 and ours[32] == "Ġ" and ours[10] == "Ċ"
    if (GPT2 / "vocab.json").is_file():
        vocab = json.loads((GPT2 / "vocab.json").read_text(encoding="utf-8"))
        assert [vocab[c] for c in ours.values()] == list(range(256)), "ids 0..255 are not the bytes in map order"


def test_pretokenize_splits_contractions_letters_numbers_symbols_and_spaces():
    assert pretokenize("I'll go  now!!") == ["I", "'ll", " go", " ", " now", "!!"]
    assert pretokenize("HE'S 42") == ["HE", "'", "S", " 42"], "upper-case contractions are not split off in GPT-2"
    assert pretokenize("a\n\n b") == ["a", "\n\n", " b"]


# ---------------------------------------------------------------- GPT-2's real vocabulary
@needs_gpt2
@pytest.mark.parametrize("text", HARD_STRINGS)
def test_gpt2_vocabulary_gives_transformers_ids_on_hard_strings(gpt2_pair, text):
    ours, ref = gpt2_pair
    assert ours.encode(text) == ref.encode(text), f"{text!r}: ours {ours.encode(text)} vs {ref.encode(text)}"
    assert ours.decode(ours.encode(text)) == text


@needs_gpt2
def test_gpt2_vocabulary_gives_transformers_ids_on_real_text(gpt2_pair, real_texts):
    ours, ref = gpt2_pair
    for name, text in real_texts.items():
        a, b = ours.encode(text), ref.encode(text)
        first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        assert a == b, f"{name}: {len(a)} vs {len(b)} ids, first difference at {first}"
    assert ours.encode("Hello world") == [15496, 995]


@needs_gpt2
def test_gpt2_vocabulary_gives_tiktoken_ids_built_offline_from_the_same_ranks(gpt2_pair, real_texts):
    ours, _ = gpt2_pair
    enc = _tiktoken_for(ours)
    for text in [*HARD_STRINGS, *real_texts.values()]:
        assert ours.encode(text) == enc.encode(text, allowed_special="all"), f"{text[:40]!r}"


@needs_gpt2
def test_invalid_utf8_decodes_to_replacement_characters_like_gpt2(gpt2_pair):
    ours, ref = gpt2_pair
    ids = ours.encode("𠀀")  # four bytes, more than one token
    assert len(ids) > 1
    for cut in ([ids[0]], ids[1:], ids[:1] + ours.encode("x")):
        assert ours.decode(cut) == ref.decode(cut, clean_up_tokenization_spaces=False), cut
    assert "\ufffd" in ours.decode(ids[:1])


@needs_gpt2
def test_a_folder_saved_by_transformers_with_only_tokenizer_json_loads(gpt2_pair, tmp_path):
    _, ref = gpt2_pair
    ref.save_pretrained(tmp_path)
    assert not (tmp_path / "vocab.json").exists(), "transformers wrote vocab.json after all: test the other path"
    tok = load_tokenizer(tmp_path)
    text = "Hello world<|endoftext|> 東京 it's"
    assert isinstance(tok, BPETokenizer) and tok.encode(text) == ref.encode(text)


def test_a_tokenizer_json_of_another_kind_is_refused_in_one_line(tmp_path):
    (tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"type": "WordPiece", "vocab": {}},
                                                         "pre_tokenizer": {"type": "BertPreTokenizer"}}))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "GPT2Tokenizer"}))
    with pytest.raises(CheckpointError, match="not GPT-2's byte-level BPE"):
        load_tokenizer(tmp_path)


@needs_gpt2
def test_a_hugging_face_gpt2_folder_loads_with_load_tokenizer(gpt2_pair, tmp_path):
    _, ref = gpt2_pair
    ref.save_pretrained(tmp_path)  # transformers' own tokenizer_config.json (tokenizer_class GPT2Tokenizer)
    for name in ("vocab.json", "merges.txt"):  # as in a GPT-2 folder from the hub, beside tokenizer.json
        (tmp_path / name).write_bytes((GPT2 / name).read_bytes())
    tok = load_tokenizer(tmp_path)
    assert isinstance(tok, BPETokenizer) and tok.eos_token_id == 50256 and tok.vocab_size == 50257
    assert tok.encode("Hello world<|endoftext|>") == [15496, 995, 50256]


# ---------------------------------------------------------------- special tokens
def test_special_token_semantics_follow_tiktoken(trained):
    tok = trained[0]
    enc = _tiktoken_for(tok)
    text = "say <|endoftext|> twice<|endoftext|>"
    eos = tok.eos_token_id
    assert tok.encode(text).count(eos) == 2, "by default (as transformers) a special in the text is the special"
    with pytest.raises(DataError, match="disallowed"):
        tok.encode(text, allowed_special=set())
    with pytest.raises(ValueError):
        enc.encode(text)  # tiktoken's default: the same refusal
    plain = tok.encode(text, allowed_special=set(), disallowed_special=())
    assert eos not in plain and plain == enc.encode(text, disallowed_special=()) == tok.encode_ordinary(text)
    assert tok.decode(plain) == tok.decode(tok.encode(text)) == text
    with pytest.raises(ConfigError, match="not special tokens"):
        tok.encode(text, allowed_special={"<|nope|>"})


def test_special_tokens_are_never_split_nor_merged_across_in_training():
    text = "ab<|endoftext|>cd<|sep|>" * 200
    tok = BPETokenizer.train(text, 300, special_tokens=[ENDOFTEXT, "<|sep|>"])
    decoder = tok.byte_decoder
    learned = [bytes(decoder[c] for c in t) for t, i in tok.get_vocab().items() if 256 <= i and t not in tok.all_special_tokens]
    assert learned, "no merge learned"
    bad = [b for b in learned if b"<|" in b or b"|>" in b or b"b<" in b or b">c" in b]
    assert not bad, f"merges reached into special tokens: {bad}"
    ids = tok.encode("ab<|endoftext|>cd<|sep|>")
    assert ids[1] == tok.eos_token_id and ids[-1] == tok.convert_tokens_to_ids("<|sep|>") and len(ids) == 4, ids
    assert tok.vocab_size == 256 + len(tok.merges) + 2 and tok.get_vocab()["<|sep|>"] == tok.vocab_size - 1


# ---------------------------------------------------------------- training
def test_incremental_training_equals_rescanning_bpe_merge_step_by_step():
    text = TRAIN_TEXT[:3000]
    token_bytes, merges = train_bpe([text], 256 + 60 + 1)
    from common.text.bpe import _PRETOKENIZE, word_counts
    order = list(bytes_to_unicode())
    byte_id = {b: i for i, b in enumerate(order)}
    words = {tuple(byte_id[b] for b in w.encode()): n for w, n in word_counts([text], [ENDOFTEXT]).items()}
    plain_bytes = [bytes([b]) for b in order]
    plain = []
    for _ in range(60):
        pair, words = bpe_merge(words, plain_bytes, len(plain_bytes))
        plain.append(pair)
        plain_bytes.append(plain_bytes[pair[0]] + plain_bytes[pair[1]])
    assert merges == plain, f"first difference at merge {next(i for i, (a, b) in enumerate(zip(merges, plain)) if a != b)}"
    assert token_bytes == plain_bytes and _PRETOKENIZE is not None


def test_ties_go_to_the_lexicographically_greatest_pair_of_byte_strings():
    # every pair occurs once: (a, b) (c, d) (x, y); the greatest is (x, y), then (c, d)
    _, merges = train_bpe(["ab cd xy"], 256 + 2 + 1)
    token = [bytes([b]) for b in bytes_to_unicode()]
    assert [token[a] + token[b] for a, b in merges] == [b"xy", b"cd"]
    byte_id = {b[0]: i for i, b in enumerate(token)}
    pair, _ = bpe_merge({(byte_id[ord("a")], byte_id[ord("b")]): 1, (byte_id[ord("c")], byte_id[ord("d")]): 1},
                        token, 256)
    assert token[pair[0]] + token[pair[1]] == b"cd"
    # a higher count beats the tie-break: "ab" twice
    _, merges = train_bpe(["ab ab xy"], 256 + 1 + 1)
    assert [token[a] + token[b] for a, b in merges] == [b"ab"]


def test_overlapping_pairs_are_counted_per_position_and_merged_left_to_right():
    token = [bytes([b]) for b in bytes_to_unicode()]
    a = {b[0]: i for i, b in enumerate(token)}[ord("a")]
    pair, words = bpe_merge({(a, a, a): 1}, token, 256)
    assert pair == (a, a) and words == {(256, a): 1}


def test_training_is_deterministic_and_independent_of_text_order():
    texts = [TRAIN_TEXT[:2000], "zebra zebra quagga " * 20, "1234 5678 " * 30]
    first = BPETokenizer.train(texts, 400)
    again = BPETokenizer.train(texts, 400)
    reordered = BPETokenizer.train(texts[::-1], 400)
    assert first.merges == again.merges == reordered.merges and first.get_vocab() == reordered.get_vocab()


def test_vocab_size_counts_bytes_merges_and_special_tokens():
    tok = BPETokenizer.train(TRAIN_TEXT, 300)
    assert tok.vocab_size == 300 and len(tok.merges) == 300 - 256 - 1 and tok.eos_token_id == 299
    with pytest.raises(ConfigError, match="at least 256"):
        BPETokenizer.train(TRAIN_TEXT, 200)


def test_training_reads_files_given_as_paths_or_as_strings_naming_files(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(TRAIN_TEXT, encoding="utf-8")
    from_text = BPETokenizer.train(TRAIN_TEXT, 300)
    for source in (path, str(path), [path], [str(path)]):
        assert BPETokenizer.train(source, 300).merges == from_text.merges, source


def test_training_stops_when_no_pair_is_left():
    tok = BPETokenizer.train("ab", 1000)
    assert len(tok.merges) == 1 and tok.vocab_size == 256 + 1 + 1


# ---------------------------------------------------------------- vocabularies we train
def test_trained_vocabulary_gives_transformers_and_tiktoken_ids(trained, real_texts):
    tok, ref, _ = trained
    enc = _tiktoken_for(tok)
    for text in [*HARD_STRINGS, TRAIN_TEXT[:2000], *(t[:10_000] for t in real_texts.values())]:
        ours = tok.encode(text)
        assert ours == ref.encode(text), f"{text[:40]!r}: transformers disagrees"
        assert ours == enc.encode(text, allowed_special="all"), f"{text[:40]!r}: tiktoken disagrees"


def test_trained_tokenizer_round_trips_through_its_files(trained):
    tok, _, folder = trained
    lines = (folder / "merges.txt").read_text(encoding="utf-8").split("\n")
    assert lines[0] == "#version: 0.2" and lines[-1] == "" and len(lines) == len(tok.merges) + 2
    again = load_tokenizer(folder)
    assert isinstance(again, BPETokenizer) and again.get_vocab() == tok.get_vocab() and again.merges == tok.merges
    assert again.encode(TRAIN_TEXT) == tok.encode(TRAIN_TEXT)


def test_bpe_encode_merges_by_rank_not_by_position():
    # ranks: (b, c) first, then (a, b): "abc" -> a + bc, although (a, b) comes first in the text
    a, b, c, bc, ab = 0, 1, 2, 3, 4
    ranks = {(b, c): (0, bc), (a, b): (1, ab)}
    assert bpe_encode([a, b, c], ranks) == [a, bc]
    assert bpe_encode([a, b, a, b], ranks) == [ab, ab]
    assert bpe_encode([c, a], ranks) == [c, a]


def test_call_returns_batch_encoding_with_offsets_covering_each_character(trained):
    tok = trained[0]
    text = "héllo 😀 wörld<|endoftext|>!"
    batch = tok(text, return_offsets_mapping=True)
    assert "token_type_ids" not in batch and batch["input_ids"] == tok.encode(text)
    covered = set()
    for start, end in batch["offset_mapping"]:
        covered.update(range(start, end))
    assert covered == set(range(len(text))), batch["offset_mapping"]
    padded = BPETokenizer.train(TRAIN_TEXT, 300, pad_token=ENDOFTEXT)(["a", "a b c"], padding=True)
    assert padded["attention_mask"][0][-1] == 0


@given(st.text(max_size=60))
def test_decode_inverts_encode_for_any_unicode_string(text):
    tok = _SMALL
    assert tok.decode(tok.encode(text)) == text


@needs_gpt2
@given(st.text(max_size=40))
def test_decode_inverts_encode_with_gpt2_vocabulary(gpt2_pair, text):
    assert gpt2_pair[0].decode(gpt2_pair[0].encode(text)) == text


_SMALL = BPETokenizer.train(TRAIN_TEXT, 320)
_PIECES = st.lists(st.one_of(st.text(max_size=8), st.sampled_from(
    [ENDOFTEXT, "<|", "|>", " ", "\n", "'s", "'S", "  ", "é", "😀", "東", "12"])), max_size=10).map("".join)


@given(_PIECES)
def test_decode_inverts_encode_with_special_tokens_and_their_fragments_mixed_in(text):
    ids = _SMALL.encode(text)
    assert _SMALL.decode(ids) == text
    assert ids.count(_SMALL.eos_token_id) == text.count(ENDOFTEXT)


@given(_PIECES)
def test_any_text_gets_tiktokens_ids_from_the_same_ranks(text):
    assert _SMALL.encode(text) == _small_tiktoken().encode(text, allowed_special="all"), repr(text)


@functools.lru_cache(maxsize=None)
def _small_tiktoken():
    return _tiktoken_for(_SMALL)


def test_a_lone_surrogate_is_a_one_line_data_error():
    with pytest.raises(DataError, match="surrogate"):
        _SMALL.encode("a\ud800b")


# ---------------------------------------------------------------- corrupt files
def _write(folder: Path, vocab_text: str, merges_text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(vocab_text, encoding="utf-8")
    (folder / "merges.txt").write_text(merges_text, encoding="utf-8")
    return folder


@pytest.mark.parametrize("line, fault", [("Ġ t x", "two tokens"), ("Ġ", "two tokens"), ("Ġ ☃", "'☃'"),
                                         ("", None)])
def test_corrupt_merges_line_names_the_file_and_line(tmp_path, line, fault):
    _SMALL.save_pretrained(tmp_path)
    lines = (tmp_path / "merges.txt").read_text(encoding="utf-8").split("\n")
    lines[3] = line
    (tmp_path / "merges.txt").write_text("\n".join(lines), encoding="utf-8")
    if fault is None:  # a blank line is skipped
        load_tokenizer(tmp_path)
        return
    with pytest.raises(CheckpointError) as info:
        load_tokenizer(tmp_path)
    message = str(info.value)
    assert f"merges.txt:4:" in message and fault in message and "\n" not in message, message


def test_corrupt_vocab_json_names_the_file_and_line(tmp_path):
    vocab = _SMALL.get_vocab()
    merges = (_SMALL.save_pretrained(tmp_path / "ok"), (tmp_path / "ok" / "merges.txt").read_text(encoding="utf-8"))[1]
    text = json.dumps(vocab, ensure_ascii=False, indent=0)
    cases = {"not JSON": (text[:-1] + ",\n", "not valid JSON"),
             "string id": (text.replace('"Ġ": 220', '"Ġ": "220"'), "the id of 'Ġ'"),
             "duplicate id": (text.replace('"Ġ": 220', '"Ġ": 0'), "id 0 is given to both"),
             "a list": ("[1, 2]", "expected a JSON object")}
    for name, (content, fault) in cases.items():
        folder = _write(tmp_path / name.replace(" ", "_"), content, merges)
        with pytest.raises(CheckpointError) as info:
            load_tokenizer(folder)
        message = str(info.value)
        assert "vocab.json:" in message and fault in message and "\n" not in message, f"{name}: {message}"
    line = next(i for i, l in enumerate(text.split("\n"), 1) if '"Ġ"' in l)
    with pytest.raises(CheckpointError, match=f"vocab.json:{line}:"):
        load_tokenizer(_write(tmp_path / "line", text.replace('"Ġ": 220', '"Ġ": -1'), merges))


def test_vocabulary_without_every_byte_is_refused(tmp_path):
    vocab = {t: i for t, i in _SMALL.get_vocab().items()}
    vocab.pop("Ġ")
    with pytest.raises(CheckpointError, match="byte tokens"):
        BPETokenizer({t: i for i, t in enumerate(vocab)}, [])


def test_bpe_encode_merges_by_rank_again_and_again_until_no_pair_is_known():
    # a chain of merges: (a, b) -> ab, then (ab, c) -> abc, then (abc, d) -> abcd: "abcd" is one token
    a, b, c, d, ab, abc, abcd = range(7)
    ranks = {(a, b): (0, ab), (ab, c): (1, abc), (abc, d): (2, abcd)}
    assert bpe_encode([a, b, c, d], ranks) == [abcd], f"{bpe_encode([a, b, c, d], ranks)}: three merges expected"
    assert bpe_encode([a, b, c, d, a, b], ranks) == [abcd, ab]
    assert bpe_encode([d, c, b, a], ranks) == [d, c, b, a], "no adjacent pair has a rank: nothing merges"


def test_overlapping_pairs_count_once_per_position_so_aaa_beats_a_pair_seen_once():
    # (a, a) occurs at 2 positions of "aaa", (b, c) at 1: counted per position, (a, a) wins;
    # counted once per word they would tie and the tie-break would pick the greater (b, c)
    token = [bytes([b]) for b in bytes_to_unicode()]
    ids = {b[0]: i for i, b in enumerate(token)}
    a, b, c = ids[ord("a")], ids[ord("b")], ids[ord("c")]
    pair, _ = bpe_merge({(a, a, a): 1, (b, c): 1}, token, 256)
    assert pair == (a, a), f"merged {token[pair[0]] + token[pair[1]]!r}; (a, a) occurs twice, (b, c) once"
