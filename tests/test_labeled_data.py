"""Labeled data for fine-tuning (common/data/labeled.py): loaders, datasets and the two metrics.

Loaders: each bad file gives a DataError that names the file and the line or column.
Datasets: what the model sees (special tokens, segment ids, label alignment, answer positions).
Metrics: entity-level F1 and SQuAD EM/F1 on examples worked out by hand.
"""
import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from common.data.language_modeling import DataCollatorForTokenClassification, DataCollatorWithPadding
from common.errors import ConfigError, DataError
from minibert.metrics import entity_f1, entity_spans, normalize_answer, squad_metrics
from common.data.labeled import (
    ClassificationDataset,
    QADataset,
    TokenClassificationDataset,
    align_token_predictions,
    build_label_list,
    load_classification_file,
    load_conll_file,
    load_squad_file,
    postprocess_qa_predictions,
)
from common.text.auto import BertTokenizer

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "play", "##ing", "john", "lives", "in",
         "new", "york", "where", "does", "who", "is", "it", "good", "bad", "film", "paris", "##ian",
         "in", "1996", ",", ".", "?", "!", "-"]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    vocab = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    vocab.write_text("\n".join(SPECIALS + list(dict.fromkeys(WORDS))) + "\n", encoding="utf-8")
    return BertTokenizer(str(vocab))


# ---------------------------------------------------------------- classification files


def test_sst2_style_tsv_loads_with_the_defaults_and_int_labels(tmp_path):
    path = write(tmp_path / "train.tsv", 'sentence\tlabel\nit is " good " \t1\nbad film \t0\ngood\t1\n')
    examples = load_classification_file(path)
    assert [(e.text, e.text_pair, e.label) for e in examples] == [
        ('it is " good " ', None, 1), ("bad film ", None, 0), ("good", None, 1)]
    assert build_label_list([e.label for e in examples]) == [0, 1]


def test_labels_that_look_like_ints_sort_numerically_and_strings_stay_strings():
    assert build_label_list([10, 9, 2, 9]) == [2, 9, 10]
    assert build_label_list(["pos", "neg", "neutral"]) == ["neg", "neutral", "pos"]


def test_csv_with_quotes_and_a_text_pair_column(tmp_path):
    path = write(tmp_path / "pairs.csv", 'premise,hypothesis,gold\n"the cat, it sat",a cat sat,entailment\n'
                                         'the dog,"no, a cat",contradiction\n')
    examples = load_classification_file(path, text_column_name="premise", text_pair_column_name="hypothesis",
                                        label_column_name="gold")
    assert examples[0] == ("the cat, it sat", "a cat sat", "entailment")
    assert examples[1] == ("the dog", "no, a cat", "contradiction")


def test_jsonl_format_from_extension_and_labels_agree_with_tsv(tmp_path):
    path = write(tmp_path / "train.jsonl", '{"sentence": "good film", "label": 1}\n\n{"sentence": "bad", "label": "0"}\n')
    examples = load_classification_file(path)
    assert [e.label for e in examples] == [1, 0], "JSON 1 and string '0' should both become ints"


def test_unseen_validation_label_is_a_data_error_naming_file_line_and_label(tmp_path):
    train = load_classification_file(write(tmp_path / "train.tsv", "sentence\tlabel\na\t0\nb\t1\n"))
    dev = write(tmp_path / "dev.tsv", "sentence\tlabel\nc\t1\nd\t2\n")
    with pytest.raises(DataError, match=r"dev.tsv line 3: label 2 does not occur"):
        load_classification_file(dev, label_list=build_label_list([e.label for e in train]))


def test_missing_column_names_the_file_the_column_and_the_columns_present(tmp_path):
    path = write(tmp_path / "reviews.tsv", "text\tstars\ngood\t5\n")
    with pytest.raises(DataError, match=r"reviews.tsv.*'sentence'.*columns: text, stars"):
        load_classification_file(path)


def test_jsonl_line_that_is_not_json_names_the_line(tmp_path):
    path = write(tmp_path / "bad.jsonl", '{"sentence": "a", "label": 0}\n{"sentence": "b", label: 1}\n')
    with pytest.raises(DataError, match=r"bad.jsonl line 2: not valid JSON"):
        load_classification_file(path)


def test_tsv_row_with_a_stray_tab_names_the_line(tmp_path):
    path = write(tmp_path / "bad.tsv", "sentence\tlabel\na\t0\nb\tc\t1\n")
    with pytest.raises(DataError, match=r"bad.tsv line 3: 3 fields, but the header has 2"):
        load_classification_file(path)


@pytest.mark.parametrize("name, content", [("e.tsv", ""), ("e.jsonl", " \n\n"), ("e.txt", "x\n"),
                                           ("h.tsv", "sentence\tlabel\n")])
def test_empty_header_only_or_unknown_format_files_are_data_errors(tmp_path, name, content):
    with pytest.raises(DataError, match=name.replace(".", r"\.")):
        load_classification_file(write(tmp_path / name, content))


def test_encoding_argument_is_used(tmp_path):
    path = tmp_path / "latin.tsv"
    path.write_bytes("sentence\tlabel\ncaf\xe9\t1\n".encode("latin-1"))
    with pytest.raises(DataError, match="line 2"):
        load_classification_file(path)
    assert load_classification_file(path, encoding="latin-1")[0].text == "caf\xe9"


def test_classification_dataset_builds_pairs_truncates_and_maps_labels(tok, tmp_path):
    examples = load_classification_file(write(tmp_path / "p.tsv", "a\tb\ty\nthe cat sat\tthe dog ran\tyes\n"
                                                                    + "the cat sat on the mat\tthe dog\tno\n"),
                                        text_column_name="a", text_pair_column_name="b", label_column_name="y")
    ds = ClassificationDataset(tok, examples, {"no": 0, "yes": 1}, max_seq_length=8)
    ids = tok.convert_tokens_to_ids
    first = ds[0]
    # 3 + 3 tokens for a budget of 8 - 3 = 5: "longest_first" cuts one; on a tie the first text loses it.
    want = ["[CLS]", "the", "cat", "[SEP]", "the", "dog", "ran", "[SEP]"]
    assert first["input_ids"].tolist() == ids(want), f"got {tok.convert_ids_to_tokens(first['input_ids'].tolist())}"
    assert first["token_type_ids"].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert first["labels"].item() == 1 and ds[1]["labels"].item() == 0
    assert all(len(ds[i]["input_ids"]) <= 8 for i in range(len(ds)))
    batch = DataCollatorWithPadding(tok)([ds[0], ds[1]])
    assert batch["labels"].tolist() == [1, 0] and batch["input_ids"].shape == (2, 8)


@pytest.mark.skipif(not (DATA / "sst2" / "dev.tsv").exists(), reason=f"SST-2 not found under {DATA}")
def test_real_sst2_dev_loads_872_binary_examples():
    train_labels = [0, 1]
    dev = load_classification_file(DATA / "sst2" / "dev.tsv", label_list=train_labels)
    assert len(dev) == 872, f"{len(dev)} dev examples, GLUE has 872"
    assert build_label_list([e.label for e in dev]) == [0, 1]


@pytest.mark.parametrize("split, count", [("train", 6212), ("dev", 776), ("test", 777)])
def test_real_chnsenticorp_csv_loads_whole_reviews_with_commas_and_quotes(split, count):
    """ChnSentiCorp (header label,review; reviews hold commas, quotes and full-width punctuation): the
    reader gives what Python's csv module gives, every row, binary int labels."""
    import csv
    path = DATA / "chnsenticorp" / f"{split}.csv"
    if not path.exists():
        pytest.skip(f"ChnSentiCorp data not found at {path}")
    examples = load_classification_file(path, text_column_name="review", label_list=[0, 1])
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(examples) == len(rows) == count, f"{split}: {len(examples)} examples, {len(rows)} csv rows, expected {count}"
    wrong = [i for i, (e, r) in enumerate(zip(examples, rows)) if (e.text, e.label) != (r["review"], int(r["label"]))]
    assert not wrong, f"{split}: row {wrong[0] + 2} read as {examples[wrong[0]]} but the csv module gives {rows[wrong[0]]}"


# ---------------------------------------------------------------- CoNLL and NER


CONLL = """-DOCSTART- -X- -X- O

John NNP B-NP B-PER
lives VBZ B-VP O
in IN B-PP O
New NNP B-NP B-LOC
York NNP I-NP I-LOC
. . O O

Paris NNP B-NP B-LOC
"""


def test_conll_reads_sentences_tag_from_last_column_and_skips_docstart(tmp_path):
    sentences = load_conll_file(write(tmp_path / "train.txt", CONLL))
    assert [s.words for s in sentences] == [["John", "lives", "in", "New", "York", "."], ["Paris"]]
    assert sentences[0].tags == ["B-PER", "O", "O", "B-LOC", "I-LOC", "O"]


def test_conll_line_with_wrong_field_count_names_the_line(tmp_path):
    path = write(tmp_path / "bad.txt", CONLL.replace("York NNP I-NP I-LOC", "York I-LOC"))
    with pytest.raises(DataError, match=r"bad.txt line 7: 2 fields, expected 4"):
        load_conll_file(path)


def test_conll_unseen_tag_and_empty_file_are_data_errors(tmp_path):
    with pytest.raises(DataError, match=r"line 3: tag 'B-PER' does not occur"):
        load_conll_file(write(tmp_path / "dev.txt", CONLL), tag_list=["O", "B-LOC", "I-LOC"])
    with pytest.raises(DataError, match="empty"):
        load_conll_file(write(tmp_path / "empty.txt", "\n \n"))


def test_first_subtoken_gets_the_word_label_and_the_rest_minus_100(tok):
    words, tags = ["John", "playing", "in", "Parisian", "york"], ["B-PER", "O", "O", "B-MISC", "B-LOC"]
    label2id = {tag: i for i, tag in enumerate(["B-LOC", "B-MISC", "B-PER", "O"])}
    ds = TokenClassificationDataset(tok, [type("E", (), {"words": words, "tags": tags})()], label2id)
    tokens = tok.convert_ids_to_tokens(ds[0]["input_ids"].tolist())
    assert tokens == ["[CLS]", "john", "play", "##ing", "in", "paris", "##ian", "york", "[SEP]"], tokens
    assert ds[0]["labels"].tolist() == [-100, 2, 3, -100, 3, 1, -100, 0, -100]


def test_ner_batches_pad_labels_and_predictions_align_back_to_words(tok):
    label_list = ["B-LOC", "I-LOC", "B-PER", "O"]
    label2id = {t: i for i, t in enumerate(label_list)}
    examples = [type("E", (), {"words": w, "tags": t})() for w, t in
                [(["John", "playing"], ["B-PER", "O"]), (["new", "york", "in", "paris"], ["B-LOC", "I-LOC", "O", "B-LOC"])]]
    ds = TokenClassificationDataset(tok, examples, label2id)
    batch = DataCollatorForTokenClassification(tok)([ds[0], ds[1]])
    assert batch["labels"][0].tolist() == [-100, 2, 3, -100, -100, -100]
    predictions = torch.full_like(batch["labels"], label2id["O"])
    true, pred = align_token_predictions(predictions, batch["labels"], dict(enumerate(label_list)))
    assert true == [["B-PER", "O"], ["B-LOC", "I-LOC", "O", "B-LOC"]]
    assert pred == [["O", "O"], ["O", "O", "O", "O"]]


def test_entity_spans_read_iob2_and_iob1_leniently():
    assert entity_spans(["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-ORG"]) == {
        ("PER", 0, 1), ("LOC", 3, 3), ("LOC", 4, 4), ("ORG", 5, 5)}
    assert entity_spans(["I-PER", "I-PER", "O", "I-LOC", "I-ORG"]) == {("PER", 0, 1), ("LOC", 3, 3), ("ORG", 4, 4)}
    with pytest.raises(ValueError, match="not IOB"):
        entity_spans(["PER"])


def test_entity_f1_on_a_hand_worked_example():
    true = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-MISC", "I-MISC"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O", "B-MISC", "O"]]
    # true: PER(0-1) LOC(3) | ORG(0) MISC(2-3)  pred: PER(0-1) ORG(3) | ORG(0) MISC(2): 2 of 4 correct each way
    scores = entity_f1(true, pred)
    assert scores == {"precision": 0.5, "recall": 0.5, "f1": 0.5}, scores
    scores = entity_f1([["B-PER", "O", "B-LOC"]], [["B-PER", "O", "O"]])
    assert scores["precision"] == 1.0 and scores["recall"] == 0.5 and abs(scores["f1"] - 2 / 3) < 1e-12, scores
    assert entity_f1([["O", "O"]], [["O", "O"]]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


@settings(max_examples=30)
@given(st.lists(st.lists(st.sampled_from(["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]), max_size=8), min_size=1, max_size=4))
def test_entity_f1_of_a_sequence_with_itself_is_one(tags):
    scores = entity_f1(tags, tags)
    has_entity = any(tag != "O" for seq in tags for tag in seq)
    assert scores["f1"] == (1.0 if has_entity else 0.0), f"{scores} for {tags}"


@pytest.mark.skipif(not (DATA / "conll2003" / "valid.txt").exists(), reason=f"CoNLL-2003 not found under {DATA}")
def test_real_conll2003_valid_has_3250_sentences_and_9_tags():
    train_tags = ["B-LOC", "B-MISC", "B-ORG", "B-PER", "I-LOC", "I-MISC", "I-ORG", "I-PER", "O"]
    sentences = load_conll_file(DATA / "conll2003" / "valid.txt", tag_list=train_tags)
    assert len(sentences) == 3250, f"{len(sentences)} sentences"
    assert build_label_list([t for s in sentences for t in s.tags]) == train_tags


# ---------------------------------------------------------------- extractive QA


def squad_json(path: Path, context: str, qas) -> Path:
    data = {"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": context, "qas": [
        {"id": qid, "question": q, "answers": [{"text": a, "answer_start": context.index(a)}] if a else []}
        for qid, q, a in qas]}]}]}
    return write(path, json.dumps(data))


CONTEXT = "John lives in New York. The cat sat on the mat. The dog ran in Paris in 1996."


def test_qa_positions_point_at_the_answer_tokens(tok, tmp_path):
    examples = load_squad_file(squad_json(tmp_path / "s.json", CONTEXT, [
        ("q1", "where does john play?", "New York"), ("q2", "who ran?", "The dog"), ("q3", "is it?", ""),
        ("q4", "where?", "aris"), ("q5", "where?", "New Yo")]))
    ds = QADataset(tok, examples, max_seq_length=64, doc_stride=8)
    assert len(ds) == 5, "a short context should give one window per question"
    # An answer that starts or ends inside a token widens to the whole token.
    for f, want in enumerate(["New York", "The dog", None, "Paris", "New York"]):
        item, offsets = ds[f], ds.feature_offsets[f]
        s, e = item["start_positions"].item(), item["end_positions"].item()
        if want is None:
            assert (s, e) == (0, 0), f"unanswerable question points at {(s, e)}, not [CLS]"
        else:
            assert CONTEXT[offsets[s][0]: offsets[e][1]] == want, f"feature {f}: positions {(s, e)}"
            assert item["token_type_ids"][s] == 1, "the answer is not in the second segment"


def test_qa_long_context_gets_overlapping_windows_and_truncated_answers_point_at_cls(tok, tmp_path):
    examples = load_squad_file(squad_json(tmp_path / "s.json", CONTEXT, [("q", "who ran?", "1996")]))
    ds = QADataset(tok, examples, max_seq_length=16, doc_stride=4)
    context_ids = tok(CONTEXT, add_special_tokens=False)["input_ids"]
    question_len = len(tok("who ran?", add_special_tokens=False)["input_ids"])
    window = 16 - question_len - 3
    windows = [[t for t, o in zip(ds[f]["input_ids"].tolist(), ds.feature_offsets[f]) if o is not None]
               for f in range(len(ds))]
    assert len(ds) > 1, "the context should not fit one window"
    assert all(len(ds[f]["input_ids"]) <= 16 for f in range(len(ds)))
    for a, b in zip(windows, windows[1:]):
        assert a[-4:] == b[:4], f"consecutive windows do not share doc_stride=4 tokens: {a} / {b}"
    assert windows[0] == context_ids[:window] and windows[-1] == context_ids[-len(windows[-1]):]
    positions = [(ds[f]["start_positions"].item(), ds[f]["end_positions"].item()) for f in range(len(ds))]
    hits = [f for f, p in enumerate(positions) if p != (0, 0)]
    assert hits and all(p == (0, 0) for f, p in enumerate(positions) if f not in hits), positions
    for f in hits:
        s, e = positions[f]
        assert CONTEXT[ds.feature_offsets[f][s][0]: ds.feature_offsets[f][e][1]] == "1996"
    with pytest.raises(ConfigError, match="doc_stride"):
        QADataset(tok, examples, max_seq_length=16, doc_stride=window)


def test_postprocess_recovers_the_answer_from_peaked_logits_across_windows(tok, tmp_path):
    examples = load_squad_file(squad_json(tmp_path / "s.json", CONTEXT, [("q", "who ran?", "The dog")]))
    ds = QADataset(tok, examples, max_seq_length=16, doc_stride=4)
    T = max(len(ds[f]["input_ids"]) for f in range(len(ds)))
    start, end = torch.zeros(len(ds), T), torch.zeros(len(ds), T)
    for f in range(len(ds)):
        s, e = ds[f]["start_positions"].item(), ds[f]["end_positions"].item()
        if (s, e) != (0, 0):
            start[f, s], end[f, e] = 5.0, 5.0
        start[f, 0] = end[f, 0] = 9.0  # [CLS] is never a valid answer span
    assert postprocess_qa_predictions(examples, ds, start, end) == {"q": "The dog"}


def test_squad_file_errors_name_the_problem(tmp_path):
    bad = {"data": [{"paragraphs": [{"context": "the cat", "qas": [
        {"id": "x", "question": "?", "answers": [{"text": "dog", "answer_start": 4}]}]}]}]}
    with pytest.raises(DataError, match=r"question x: answer 'dog' is not at answer_start 4"):
        load_squad_file(write(tmp_path / "bad.json", json.dumps(bad)))
    with pytest.raises(DataError, match=r"notsquad.json: not SQuAD-shaped"):
        load_squad_file(write(tmp_path / "notsquad.json", '{"rows": []}'))
    with pytest.raises(DataError, match=r"broken.json line 2: not valid JSON"):
        load_squad_file(write(tmp_path / "broken.json", '{"data":\n [}'))


def test_squad_normalisation_and_metrics_on_hand_worked_examples():
    assert normalize_answer("The  Cat, sat!") == "cat sat"
    assert normalize_answer("an apple a day") == "apple day"
    predictions = {"a": "the Eiffel Tower!", "b": "in Paris France", "c": "nothing"}
    references = {"a": ["Eiffel Tower"], "b": ["Paris", "France, Europe"], "c": ["x"], "d": ["y"]}
    # a: exact.  b: vs "paris": P=1/3 R=1 F1=1/2; vs "france europe": P=1/3 R=1/2 F1=2/5 -> 1/2.  c, d: 0.
    scores = squad_metrics(predictions, references)
    assert scores["exact_match"] == 25.0, scores
    assert abs(scores["f1"] - 100 * (1 + 0.5) / 4) < 1e-9, scores
    assert squad_metrics({"n": ""}, {"n": []}) == {"exact_match": 100.0, "f1": 100.0}
