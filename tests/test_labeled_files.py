"""Classification files as users bring them (common/data/labeled.py:load_classification_file).

Course files named .csv that are tab-separated, pandas' to_csv with its unnamed index column,
Excel's semicolons with a byte-order mark and CRLF, quoted fields holding newlines: each reads
to the same examples. The delimiter comes from the header line; --delimiter overrides it; a file
that still does not parse says what was detected and how to override it.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from common.data.labeled import detect_delimiter, load_classification_file, parse_delimiter
from common.errors import ConfigError, DataError

pandas = pytest.importorskip("pandas")

TEXTS = ["a film, with commas", 'she said "wow"', "two\nlines", "tab\tinside", "plain"]
LABELS = [1, 0, 1, 0, 1]


def pairs(examples):
    return [(e.text, e.label) for e in examples]


@pytest.mark.parametrize("sep, name", [("\t", "course.csv"), (",", "pandas.csv"), (";", "excel.csv"),
                                       ("\t", "pandas.tsv"), (",", "commas.tsv")])
def test_pandas_to_csv_files_read_back_whatever_the_delimiter_and_the_extension(tmp_path, sep, name):
    path = tmp_path / name
    pandas.DataFrame({"sentence": TEXTS, "label": LABELS}).to_csv(path, sep=sep)  # index column first, unnamed
    assert path.read_text().splitlines()[0] == sep.join(["", "sentence", "label"]), "pandas writes an unnamed index"
    assert pairs(load_classification_file(path)) == list(zip(TEXTS, LABELS))


def test_a_pandas_round_trip_column_named_unnamed_0_is_an_index_too(tmp_path):
    path = tmp_path / "again.csv"
    pandas.DataFrame({"Unnamed: 0": [0, 1], "sentence": ["good", "bad"], "label": [1, 0]}).to_csv(path, index=False)
    assert pairs(load_classification_file(path)) == [("good", 1), ("bad", 0)]


def test_excel_semicolons_with_a_byte_order_mark_and_crlf_line_ends(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffsentence;label\r\n\"un film; beau\";1\r\nmauvais;0\r\n".encode("utf-8"))
    assert pairs(load_classification_file(path)) == [("un film; beau", 1), ("mauvais", 0)]


def test_a_quoted_field_with_an_embedded_newline_in_a_tab_file(tmp_path):
    path = tmp_path / "quoted.tsv"
    path.write_text('sentence\tlabel\n"first line\nsecond line"\t1\nok\t0\n', encoding="utf-8")
    assert pairs(load_classification_file(path)) == [("first line\nsecond line", 1), ("ok", 0)]


def test_glue_tsv_keeps_quotes_as_text(tmp_path):
    path = tmp_path / "glue.tsv"
    path.write_text('sentence\tlabel\n"good" , he said\t1\nit is " fine\t0\n', encoding="utf-8")
    assert pairs(load_classification_file(path)) == [('"good" , he said', 1), ('it is " fine', 0)]


def test_r_write_table_rows_with_a_number_the_header_does_not_name(tmp_path):
    path = tmp_path / "r.tsv"
    path.write_text("sentence\tlabel\n1\tgood\t1\n2\tbad\t0\n", encoding="utf-8")
    assert pairs(load_classification_file(path)) == [("good", 1), ("bad", 0)]


def test_delimiter_overrides_the_detection_and_reads_any_extension(tmp_path):
    path = tmp_path / "pipes.txt"
    path.write_text("sentence|label\na, b; c\t d|1\n", encoding="utf-8")
    assert pairs(load_classification_file(path, delimiter="|")) == [("a, b; c\t d", 1)]
    both = tmp_path / "both.csv"
    both.write_text("sentence\tlabel;x\nfine\t1;2\n", encoding="utf-8")
    assert pairs(load_classification_file(both, label_column_name="label;x")) == [("fine", "1;2")]
    assert pairs(load_classification_file(both, delimiter="tab", label_column_name="label;x")) == [("fine", "1;2")]
    assert parse_delimiter("\\t") == parse_delimiter("tab") == "\t" and parse_delimiter("semicolon") == ";"


@pytest.mark.parametrize("header, suffix, want", [("sentence\tlabel", ".csv", "\t"), ("a,b", ".tsv", ","),
                                                  ("a;b;c", ".csv", ";"), ("sentence", ".tsv", "\t"),
                                                  ("sentence", ".csv", ","), ('"a,b"\tc', ".csv", "\t")])
def test_the_delimiter_is_the_most_frequent_of_tab_comma_semicolon_outside_quotes(header, suffix, want):
    assert detect_delimiter(header, suffix) == want


def test_a_file_that_still_cannot_be_read_says_what_was_detected_and_how_to_override(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("sentence,label\na, b,1\n", encoding="utf-8")
    with pytest.raises(DataError) as raised:
        load_classification_file(path)
    assert str(raised.value) == (
        f"{path} line 2: 3 fields, but the header has 2 (sentence, label); read as comma-separated (detected "
        "from the header line; pass --delimiter tab, comma, semicolon or the character to override it); or is "
        "there a stray delimiter in the text?")


def test_a_missing_column_names_the_delimiter_read(tmp_path):
    path = tmp_path / "spaces.csv"
    path.write_text("sentence label\ngood 1\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"no column 'sentence' \(columns: sentence label\) \(read as "
                                        r"comma-separated \(detected from the header line; pass --delimiter"):
        load_classification_file(path)


def test_a_delimiter_that_is_not_one_character_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^delimiter: 'ab' is not one character; pass tab, comma, semicolon"):
        parse_delimiter("ab")


# ------------------------------------------------------------ through minibert.finetune, as a user runs it

BERT_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + "the a cat dog sat ran on mat good bad".split()


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory) -> Path:
    import torch

    from common.text.auto import BertTokenizer
    from minibert import BertConfig, BertForPreTraining

    folder = tmp_path_factory.mktemp("bert")
    torch.manual_seed(0)
    BertForPreTraining(BertConfig(vocab_size=len(BERT_VOCAB), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=16, max_position_embeddings=32)).save_pretrained(folder)
    BertTokenizer(vocab=BERT_VOCAB).save_pretrained(folder)
    return folder


def finetune(bert_folder, tmp_path, train, dev, *extra) -> tuple[int, str]:
    from common.errors import run_cli
    from minibert.finetune import main

    argv = ["--task", "classification", "--model_name_or_path", str(bert_folder), "--train_file", str(train),
            "--validation_file", str(dev), "--output_dir", str(tmp_path / "out"), "--max_steps", "1",
            "--disable_tqdm", "--use_cpu", *extra]
    try:
        return run_cli(main, argv) or 0, ""
    except SystemExit as e:
        return e.code, ""


def test_the_cli_fine_tunes_on_a_course_file_a_tab_separated_csv_with_an_index(bert_folder, tmp_path, capsys):
    frame = pandas.DataFrame({"sentence": ["the cat sat, a dog ran", "a bad mat", "good cat", "the dog ran"],
                              "label": [1, 0, 1, 0]})
    frame.to_csv(tmp_path / "train.csv", sep="\t")
    frame.to_csv(tmp_path / "dev.csv", sep="\t")
    code, _ = finetune(bert_folder, tmp_path, tmp_path / "train.csv", tmp_path / "dev.csv")
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "eval_results.json").exists()


def test_the_cli_delimiter_flag_reads_a_pipe_separated_txt(bert_folder, tmp_path, capsys):
    rows = "sentence|label\nthe cat sat, a dog ran|1\na bad mat|0\n"
    (tmp_path / "train.txt").write_text(rows)
    code, _ = finetune(bert_folder, tmp_path, tmp_path / "train.txt", tmp_path / "train.txt", "--delimiter", "|")
    assert code == 0, capsys.readouterr().err
