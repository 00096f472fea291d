"""Labeled data for fine-tuning: sentence classification, token classification (NER), extractive QA.

    classification  TSV / CSV / JSONL with a header (text, optional text pair, label); the delimiter
                    (TAB, ',' or ';') is read from the header line, an unnamed index column dropped
                    -> load_classification_file -> ClassificationDataset        item labels: ()
    NER             CoNLL: `TOKEN ... TAG` per line, blank line between sentences
                    -> load_conll_file -> TokenClassificationDataset             item labels: (T,)
    QA              SQuAD JSON (data / paragraphs / qas / answers)
                    -> load_squad_file -> QADataset (windows over long contexts) item start/end_positions: ()

The label list comes from the training file (sorted; labels that look like integers become ints)
and is passed when loading the validation file, so that a label never seen in training is an
error naming the file and the line, not a silent new class.

Metrics written out: entity_f1 (entity-level, conlleval / seqeval style) and squad_metrics
(exact match and token F1 after SQuAD's answer normalisation).
"""
from __future__ import annotations

import csv
import io
import json
import re
import string
import warnings
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Optional, Sequence, Union

import torch
from torch.utils.data import Dataset

from common.data.language_modeling import num_special_tokens, read_nonempty_text, token_ids, warn_truncated
from common.errors import ConfigError, DataError
from common.nn.losses import IGNORE_INDEX

Label = Union[int, str]
PUNCTUATION = frozenset(string.punctuation)


def normalize_label(value: Any) -> Label:
    """'1' -> 1 and 1 -> 1 (so TSV and JSONL files agree); any other label is a stripped string."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip()
    return int(text) if re.fullmatch(r"[+-]?\d+", text) else text


def build_label_list(labels: Sequence[Label]) -> list[Label]:
    """Sorted distinct labels: integers in numeric order first, then strings."""
    return sorted(set(labels), key=lambda label: (isinstance(label, str), label))


def check_known_label(label: Label, known: Optional[set], where: str, what: str = "label") -> None:
    if known is not None and label not in known:
        raise DataError(f"{where}: {what} {label!r} does not occur in the training data "
                        f"(known: {', '.join(map(repr, sorted(known, key=str)))}); fix it or add it to the training file")


# ---------------------------------------------------------------- sentence classification


class ClassificationExample(NamedTuple):
    text: str
    text_pair: Optional[str]
    label: Optional[Label]


FORMATS = {".tsv": "table", ".csv": "table", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
DELIMITERS = {"\t": "tab", ",": "comma", ";": "semicolon"}  # the ones detected from a header line
DELIMITER_NAMES = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";"}  # what --delimiter accepts too


def parse_delimiter(text: str) -> str:
    """--delimiter value -> the character: 'tab' or '\\t' -> TAB, 'comma' -> ',', 'semicolon' -> ';',
    or any single character as it is."""
    delimiter = DELIMITER_NAMES.get(text.lower(), text) if isinstance(text, str) else text
    if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in "\r\n\"":
        raise ConfigError(f"delimiter: {text!r} is not one character; pass tab, comma, semicolon or the character "
                          "itself (--delimiter ';')")
    return delimiter


def detect_delimiter(header: str, suffix: str) -> str:
    """The delimiter of a table file, from its header line: whichever of TAB, ',' and ';' occurs
    most often outside quotes; on a tie (a one-column header) the extension's (.tsv TAB, else ',').
    The extension alone is not trusted: course and pandas files named .csv are often tab-separated."""
    unquoted = re.sub(r'"[^"]*"', "", header)
    counts = {d: unquoted.count(d) for d in DELIMITERS}
    best = max(counts.values())
    preferred = "\t" if suffix == ".tsv" else ","
    if counts[preferred] == best:
        return preferred
    return max(counts, key=counts.get)


def _describe(delimiter: str, detected: bool) -> str:
    name = DELIMITERS.get(delimiter, repr(delimiter))
    how = "detected from the header line" if detected else "given with --delimiter"
    return (f"read as {name}-separated ({how}; pass --delimiter tab, comma, semicolon or the character to "
            "override it)")


def _wholly_quoted(field: str) -> bool:
    """'"a ""b"" c"' is a CSV-quoted field: quotes at both ends, every inner quote doubled."""
    return len(field) >= 2 and field[0] == field[-1] == '"' and '"' not in field[1:-1].replace('""', "")


def _parse_table(text: str, delimiter: str) -> tuple[list[str], list[tuple[int, list[str]]], int]:
    """(header, [(line number, fields)] of the non-blank rows, csv quoting used).

    Comma and semicolon files use standard CSV quoting. A TAB file is read as GLUE writes them, with
    '"' an ordinary character, unless that misreads it: rows whose field count differs from the
    header's (a quoted field holding a TAB or a newline), or fields wholly in quotes (what pandas'
    to_csv writes); then standard quoting is used.
    """
    def parse(quoting):
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
        header = next(reader)
        rows = []
        for row in reader:
            if any(field.strip() for field in row):
                rows.append((reader.line_num, row))
        return header, rows

    if delimiter != "\t":
        return (*parse(csv.QUOTE_MINIMAL), csv.QUOTE_MINIMAL)
    header, rows = parse(csv.QUOTE_NONE)
    misread = any(len(row) != len(header) and len(row) != len(header) + 1 for _, row in rows) \
        or any(_wholly_quoted(field) for field in header) or any(_wholly_quoted(f) for _, row in rows for f in row)
    if misread:
        quoted = parse(csv.QUOTE_MINIMAL)
        if all(len(row) in (len(quoted[0]), len(quoted[0]) + 1) for _, row in quoted[1]):
            return (*quoted, csv.QUOTE_MINIMAL)
    return header, rows, csv.QUOTE_NONE


def _table_rows(path, text: str, delimiter: str, detected: bool) -> Iterator[tuple[int, dict]]:
    """(line number, {column: value}) for each row after the header of a delimited file.

    An index column is dropped: a first column with an empty name (what pandas' to_csv writes, or
    'Unnamed: 0' after a round trip through pandas), or one extra field on every row, always a
    number, while the header lacks its name (R's write.table).
    """
    header, rows, _ = _parse_table(text, delimiter)
    index_column = bool(header) and (header[0].strip() == "" or re.fullmatch(r"Unnamed: 0", header[0].strip()))
    if index_column and len(header) > 1:
        header = header[1:]
        rows = [(n, row[1:]) for n, row in rows]
    elif rows and all(len(row) == len(header) + 1 and row[0].strip().isdigit() for _, row in rows):
        rows = [(n, row[1:]) for n, row in rows]
    for line_number, row in rows:
        if len(row) != len(header):
            raise DataError(f"{path} line {line_number}: {len(row)} fields, but the header has {len(header)} "
                            f"({', '.join(header)}); {_describe(delimiter, detected)}; or is there a stray "
                            "delimiter in the text?")
        yield line_number, dict(zip(header, row))


def _jsonl_rows(path, text: str) -> Iterator[tuple[int, dict]]:
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path} line {line_number}: not valid JSON ({e.msg}); "
                            "a JSONL file holds one JSON object per line") from None
        if not isinstance(row, dict):
            raise DataError(f"{path} line {line_number}: expected a JSON object {{...}}, got {type(row).__name__}")
        yield line_number, row


def load_classification_file(path, format: Optional[str] = None, text_column_name: str = "sentence",
                             text_pair_column_name: Optional[str] = None,
                             label_column_name: Optional[str] = "label",
                             label_list: Optional[Sequence[Label]] = None,
                             encoding: str = "utf-8", delimiter: Optional[str] = None) -> list[ClassificationExample]:
    """Read (text, text_pair, label) examples from a .tsv, .csv or .jsonl file with named columns.

    Accepted: JSON lines (.jsonl, .ndjson, .json), and delimited text (.tsv, .csv) whose delimiter
    (TAB, ',' or ';') is detected from the header line, not from the extension; `delimiter`
    ('tab', 'comma', 'semicolon' or a character; --delimiter) overrides it, and then any extension
    is read as a table. A UTF-8 BOM, CRLF line ends, quoted fields holding delimiters or newlines,
    and an unnamed first index column (pandas' to_csv) are read as meant.
    format: "table" ("tsv" and "csv" are taken as "table") or "jsonl"; default from the extension.
    label_column_name=None reads an unlabeled file (label None).
    label_list: the training labels; a label outside it raises a DataError naming the line.
    The defaults read GLUE SST-2 (`sentence<TAB>label`) as is.
    """
    suffix = Path(path).suffix.lower()
    format = {"tsv": "table", "csv": "table"}.get(format, format) or FORMATS.get(suffix)
    if format is None and delimiter is not None:
        format = "table"
    if format not in ("table", "jsonl"):
        raise DataError(f"{path}: cannot tell the format from the extension {suffix!r}; name the file "
                        "*.tsv, *.csv or *.jsonl, or pass --delimiter to read it as delimited text "
                        "(in Python: load_classification_file(..., format='tsv'))")
    text = read_nonempty_text(path, encoding, "classification file")
    detected = delimiter is None
    if format == "table":
        delimiter = detect_delimiter(text.lstrip("\r\n").split("\n", 1)[0], suffix) if detected \
            else parse_delimiter(delimiter)
    rows = _jsonl_rows(path, text) if format == "jsonl" else _table_rows(path, text, delimiter, detected)
    wanted = [c for c in (text_column_name, text_pair_column_name, label_column_name) if c is not None]
    known = set(label_list) if label_list is not None else None

    examples = []
    for line_number, row in rows:
        missing = [c for c in wanted if c not in row]
        if missing:
            where = f"{path} line {line_number}" if format == "jsonl" else str(path)
            role = {text_column_name: "text", text_pair_column_name: "text_pair", label_column_name: "label"}[missing[0]]
            # one column: the delimiter is the likelier mistake, so say which one was used
            read_as = f" ({_describe(delimiter, detected)})" if format == "table" and len(row) == 1 else ""
            raise DataError(f"{where}: no column {missing[0]!r} (columns: {', '.join(map(str, row))}){read_as}; "
                            f"rename that column in the header to {missing[0]!r}, or pass its name as "
                            f"--{role}_column_name ({role}_column_name=... in Python)")
        label = None
        if label_column_name is not None:
            label = normalize_label(row[label_column_name])
            if label == "":
                raise DataError(f"{path} line {line_number}: empty label in column {label_column_name!r}")
            check_known_label(label, known, f"{path} line {line_number}")
        pair = str(row[text_pair_column_name]) if text_pair_column_name else None
        examples.append(ClassificationExample(str(row[text_column_name]), pair, label))
    if not examples:
        raise DataError(f"{path} has a header but no examples")
    return examples


class ClassificationDataset(Dataset):
    """Tokenized examples: [CLS] text [SEP] (text_pair [SEP]), truncated to max_seq_length.

    Item: {"input_ids": (T,), "token_type_ids": (T,), "attention_mask": (T,), "labels": ()} LongTensors
    ("labels" only for labeled examples); batch them with DataCollatorWithPadding.
    """

    def __init__(self, tokenizer, examples: Sequence[ClassificationExample], label2id: dict,
                 max_seq_length: int = 128):
        self.features, lengths = [], []
        for i, example in enumerate(examples):
            encoding = tokenizer(example.text, example.text_pair, truncation=True, max_length=max_seq_length)
            feature = {k: list(encoding[k]) for k in ("input_ids", "token_type_ids", "attention_mask") if k in encoding}
            length = len(feature["input_ids"])
            if length == max_seq_length:  # exactly full, or cut: only then is the whole length needed
                length = len(tokenizer(example.text, example.text_pair)["input_ids"])
            lengths.append(length)
            if example.label is not None:
                check_known_label(example.label, set(label2id), f"example {i}")
                feature["labels"] = label2id[example.label]
            self.features.append(feature)
        warn_truncated(lengths, max_seq_length, "classification examples", "--max_seq_length")

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: torch.tensor(v, dtype=torch.long) for k, v in self.features[i].items()}


# ---------------------------------------------------------------- token classification (NER)


class TokenClassificationExample(NamedTuple):
    words: list[str]
    tags: list[str]


def load_conll_file(path, tag_list: Optional[Sequence[str]] = None,
                    encoding: str = "utf-8") -> list[TokenClassificationExample]:
    """Sentences from a CoNLL file: `WORD ... TAG` per line (the tag is the last column), a blank line
    between sentences, `-DOCSTART-` lines skipped. Every token line must have as many fields as the first.
    tag_list: the training tags; a tag outside it raises a DataError naming the line.
    """
    text = read_nonempty_text(path, encoding, "CoNLL file")
    known = set(tag_list) if tag_list is not None else None
    sentences, words, tags, n_fields = [], [], [], None
    for line_number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0] == "-DOCSTART-":
            if words:
                sentences.append(TokenClassificationExample(words, tags))
            words, tags = [], []
            continue
        n_fields = n_fields or len(fields)
        if len(fields) < 2 or len(fields) != n_fields:
            raise DataError(f"{path} line {line_number}: {len(fields)} fields, expected {max(n_fields, 2)} "
                            f"(`TOKEN ... TAG` as on the first token line): {line.strip()!r}")
        check_known_label(fields[-1], known, f"{path} line {line_number}", "tag")
        words.append(fields[0])
        tags.append(fields[-1])
    if words:
        sentences.append(TokenClassificationExample(words, tags))
    if not sentences:
        raise DataError(f"{path} holds no sentences (only -DOCSTART- lines)")
    return sentences


class TokenClassificationDataset(Dataset):
    """Words -> sub-tokens, with one label per sub-token:

        labels_j = label2id[tag of word w]  if sub-token j is the FIRST piece of word w,
                   -100                     for later pieces and special tokens (ignored by the loss).

    Item: {"input_ids": (T,), "token_type_ids": (T,), "attention_mask": (T,), "labels": (T,)} LongTensors;
    batch them with DataCollatorForTokenClassification.
    """

    def __init__(self, tokenizer, examples: Sequence[TokenClassificationExample], label2id: dict,
                 max_seq_length: int = 128):
        self.features, cut_words = [], []
        for i, example in enumerate(examples):
            encoding = tokenizer(example.words, is_split_into_words=True, truncation=True, max_length=max_seq_length)
            words_kept = 1 + max((w for w in encoding.word_ids(0) if w is not None), default=-1)
            if words_kept < len(example.words):  # the tags of the cut words are never learned nor scored
                cut_words.append(len(example.words) - words_kept)
            labels, previous = [], None
            for word in encoding.word_ids(0):
                if word is None or word == previous:
                    labels.append(IGNORE_INDEX)
                else:
                    check_known_label(example.tags[word], set(label2id), f"sentence {i}", "tag")
                    labels.append(label2id[example.tags[word]])
                previous = word
            feature = {k: list(encoding[k]) for k in ("input_ids", "token_type_ids", "attention_mask") if k in encoding}
            feature["labels"] = labels
            self.features.append(feature)
        if cut_words:
            warnings.warn(f"{len(cut_words)} of {len(examples)} sentences are longer than --max_seq_length "
                          f"{max_seq_length} tokens and were truncated ({sum(cut_words)} word(s) and their tags dropped); "
                          "raise --max_seq_length (up to the model's max_position_embeddings) to keep them whole",
                          stacklevel=2)

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: torch.tensor(v, dtype=torch.long) for k, v in self.features[i].items()}


def align_token_predictions(predictions: torch.Tensor, labels: torch.Tensor,
                            id2label: dict) -> tuple[list[list[str]], list[list[str]]]:
    """(B, T) predicted ids and (B, T) labels with -100 -> (true tag sequences, predicted tag sequences),
    one tag per word (the positions whose label is not -100)."""
    true_seqs, pred_seqs = [], []
    for pred_row, label_row in zip(predictions.tolist(), labels.tolist()):
        keep = [j for j, label in enumerate(label_row) if label != IGNORE_INDEX]
        true_seqs.append([id2label[label_row[j]] for j in keep])
        pred_seqs.append([id2label[pred_row[j]] for j in keep])
    return true_seqs, pred_seqs



# ---------------------------------------------------------------- extractive question answering


class QAExample(NamedTuple):
    id: str
    question: str
    context: str
    answers: list[dict]  # [{"text": str, "answer_start": int}], empty when unanswerable


def load_squad_file(path, encoding: str = "utf-8") -> list[QAExample]:
    """Questions from a SQuAD-style JSON file: {"data": [{"paragraphs": [{"context", "qas": [
    {"id", "question", "answers": [{"text", "answer_start"}]}]}]}]}. Every answer must be found
    at its answer_start in the context."""
    text = read_nonempty_text(path, encoding, "SQuAD file")
    try:
        data = json.loads(text)["data"]
        examples = []
        for article in data:
            for paragraph in article["paragraphs"]:
                context = paragraph["context"]
                for qa in paragraph["qas"]:
                    answers = [{"text": a["text"], "answer_start": int(a["answer_start"])} for a in qa["answers"]]
                    for a in answers:
                        found = context[a["answer_start"]: a["answer_start"] + len(a["text"])]
                        if found != a["text"]:
                            raise DataError(f"{path}: question {qa['id']}: answer {a['text']!r} is not at "
                                            f"answer_start {a['answer_start']} (the context has {found!r} there)")
                    examples.append(QAExample(str(qa["id"]), qa["question"], context, answers))
    except json.JSONDecodeError as e:
        raise DataError(f"{path} line {e.lineno}: not valid JSON ({e.msg})") from None
    except (KeyError, TypeError) as e:
        raise DataError(f"{path}: not SQuAD-shaped ({type(e).__name__}: {e}); expected "
                        "data -> paragraphs -> context, qas -> id, question, answers -> text, answer_start") from None
    if not examples:
        raise DataError(f"{path} holds no questions")
    return examples


class QADataset(Dataset):
    """SQuAD examples -> features [CLS] question [SEP] context window [SEP] with answer token positions.

    A context longer than fits is covered by several windows; consecutive windows share
    `doc_stride` tokens (the meaning of doc_stride in transformers' run_qa; Google's BERT used it
    for the step between window starts). The question is cut to max_query_length tokens.
    start_positions / end_positions: the token indices of the first answer's first and last
    token; 0 ([CLS]) when the answer is not wholly inside the window, or there is no answer.

    Item: {"input_ids", "token_type_ids", "attention_mask": (T,), "start_positions", "end_positions": ()}.
    Kept beside the features for postprocessing: feature_example_index[f] (which example) and
    feature_offsets[f][j] = (first char, end char) of context token j in the context, None elsewhere.
    """

    def __init__(self, tokenizer, examples: Sequence[QAExample], max_seq_length: int = 384,
                 doc_stride: int = 128, max_query_length: int = 64):
        self.features, self.feature_example_index, self.feature_offsets = [], [], []
        n_special = num_special_tokens(tokenizer, pair=True)
        for example_index, example in enumerate(examples):
            question = token_ids(tokenizer, example.question)[:max_query_length]
            window = max_seq_length - len(question) - n_special
            if window <= doc_stride:
                raise ConfigError(f"max_seq_length {max_seq_length} leaves {window} context tokens per window after "
                                  f"the question, not more than doc_stride {doc_stride}; raise max_seq_length "
                                  "or lower doc_stride / max_query_length")
            context = tokenizer(example.context, add_special_tokens=False, return_offsets_mapping=True)
            context_ids, offsets = list(context["input_ids"]), [tuple(o) for o in context["offset_mapping"]]
            answer_tokens = self._answer_token_span(example, offsets)
            start = 0
            while True:
                self._add_feature(tokenizer, example_index, question, context_ids, offsets, start, window,
                                  answer_tokens)
                if start + window >= len(context_ids):
                    break
                start += window - doc_stride

    @staticmethod
    def _answer_token_span(example: QAExample, offsets: list) -> Optional[tuple[int, int]]:
        """(first, last) context-token index of the first answer: the last token starting at or before
        the answer's first char, and the first token ending at or after its end."""
        if not example.answers or not offsets:
            return None
        first_char = example.answers[0]["answer_start"]
        end_char = first_char + len(example.answers[0]["text"])
        first = max([j for j, (s, _) in enumerate(offsets) if s <= first_char], default=0)
        last = min([j for j, (_, e) in enumerate(offsets) if e >= end_char], default=len(offsets) - 1)
        return first, max(first, last)

    def _add_feature(self, tokenizer, example_index, question, context_ids, offsets, start, window, answer_tokens):
        piece = context_ids[start: start + window]
        input_ids = tokenizer.build_inputs_with_special_tokens(question, piece)
        # Where the context tokens land among the special tokens: build the same layout from markers.
        layout = tokenizer.build_inputs_with_special_tokens([-1] * len(question), [-2] * len(piece))
        positions = [j for j, marker in enumerate(layout) if marker == -2]
        feature_offsets = [None] * len(input_ids)
        for k, j in enumerate(positions):
            feature_offsets[j] = offsets[start + k]
        start_position = end_position = 0
        if answer_tokens is not None:
            first, last = answer_tokens
            if start <= first and last < start + len(piece):
                start_position, end_position = positions[first - start], positions[last - start]
        self.features.append({
            "input_ids": input_ids,
            "token_type_ids": tokenizer.create_token_type_ids_from_sequences(question, piece),
            "attention_mask": [1] * len(input_ids),
            "start_positions": start_position,
            "end_positions": end_position,
        })
        self.feature_example_index.append(example_index)
        self.feature_offsets.append(feature_offsets)

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: torch.tensor(v, dtype=torch.long) for k, v in self.features[i].items()}


def postprocess_qa_predictions(examples: Sequence[QAExample], dataset: QADataset, start_logits, end_logits,
                               n_best_size: int = 20, max_answer_length: int = 30) -> dict[str, str]:
    """Start/end logits (F, T) of every feature -> {example id: answer text}.

    Over all windows of an example, the answer is the context span (s, e) with e >= s,
    e - s + 1 <= max_answer_length and both ends context tokens, maximising
    start_logit[s] + end_logit[e]; only the n_best_size best starts and ends are tried.
    No valid span -> "".
    """
    start_logits, end_logits = torch.as_tensor(start_logits), torch.as_tensor(end_logits)
    if len(start_logits) != len(dataset) or len(end_logits) != len(dataset):
        raise ValueError(f"{len(start_logits)} start / {len(end_logits)} end logit rows for {len(dataset)} features")
    best = {}  # example index -> (score, text)
    for f, offsets in enumerate(dataset.feature_offsets):
        example = examples[dataset.feature_example_index[f]]
        starts, ends = start_logits[f, : len(offsets)], end_logits[f, : len(offsets)]
        k = min(n_best_size, len(offsets))
        for s in torch.topk(starts, k).indices.tolist():
            for e in torch.topk(ends, k).indices.tolist():
                if offsets[s] is None or offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                    continue
                score = (starts[s] + ends[e]).item()
                index = dataset.feature_example_index[f]
                if index not in best or score > best[index][0]:
                    best[index] = (score, example.context[offsets[s][0]: offsets[e][1]])
    return {example.id: best[i][1] if i in best else "" for i, example in enumerate(examples)}


