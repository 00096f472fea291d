"""SentencePiece: a subword vocabulary learned from your own text (Kudo & Richardson, 2018).

Spaces are kept as the piece "▁", so decoding is exact and no language-specific word splitter is
needed. Two ways to learn the pieces:
    unigram (default): start from many candidate pieces and repeatedly drop those whose removal
        lowers the corpus likelihood  L = sum_s log sum_{x in S(s)} prod_i p(x_i)  the least, until
        vocab_size remain; a text is split into its most probable segmentation (Viterbi).
    bpe: start from characters and repeatedly merge the most frequent adjacent pair.

Special tokens sit at fixed ids so the models and collators need no configuration:
    style "bert": [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4, and texts become [CLS] A [SEP] (B [SEP]).
        [CLS] [SEP] [MASK] are user-defined pieces: "[MASK]" typed in a text is the mask token.
    style "gpt":  <pad>=0 <unk>=1 <|endoftext|>=2 (the eos token, never produced from text);
        nothing is added around a text.
"""
from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path
from typing import Any, Iterable, Optional, Union

from common.errors import CheckpointError, ConfigError, DataError, read_text
from common.text.base import BaseTokenizer, special_kwargs, write_file_atomic

SPM_NAME = "tokenizer.model"
STYLES = {
    "bert": {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
             "mask_token": "[MASK]"},
    "gpt": {"pad_token": "<pad>", "unk_token": "<unk>", "eos_token": "<|endoftext|>"},
}


def _sentencepiece():
    try:
        import sentencepiece
    except ImportError:
        raise ConfigError("the sentencepiece package is not installed: pip install sentencepiece") from None
    return sentencepiece


class SentencePieceTokenizer(BaseTokenizer):
    """A trained SentencePiece model (`tokenizer.model`) with BERT- or GPT-style special tokens."""

    def __init__(self, model_file=None, *, model_proto: Optional[bytes] = None,
                 special_tokens_style: str = "bert", do_lower_case: bool = False, **kwargs):
        if special_tokens_style not in STYLES:
            raise ConfigError(f"special_tokens_style={special_tokens_style!r}: use 'bert' or 'gpt'")
        super().__init__(**{**STYLES[special_tokens_style], **kwargs})
        if model_proto is None:
            if model_file is None:
                raise ConfigError("SentencePieceTokenizer needs a model_file (a .model) or model_proto; "
                                  "to make one, use SentencePieceTokenizer.train(text_files, vocab_size)")
            model_proto = Path(model_file).read_bytes()
        self.sp = _sentencepiece().SentencePieceProcessor()
        try:
            self.sp.LoadFromSerializedProto(model_proto)
        except RuntimeError:
            raise CheckpointError(f"{model_file or 'model_proto'} is not a SentencePiece model (cannot parse it); "
                                  "train the tokenizer again or copy the right .model file") from None
        self.model_proto = model_proto
        self._offset_mapping_api = _has_offset_mapping_api(self.sp)
        self.special_tokens_style = special_tokens_style
        self.do_lower_case = do_lower_case
        if special_tokens_style == "gpt":
            self.model_input_names = ("input_ids", "attention_mask")
        missing = [t for t in self.all_special_tokens if self._token_to_id(t) is None]
        if missing:
            raise CheckpointError(f"{model_file or 'the SentencePiece model'} has no piece for the special "
                                  f"token(s) {missing} of style {special_tokens_style!r}; train it with "
                                  f"SentencePieceTokenizer.train(..., special_tokens_style={special_tokens_style!r})")

    # ------------------------------------------------------------ training
    @classmethod
    def train(cls, files_or_iterator: Union[str, os.PathLike, Iterable[str]], vocab_size: int,
              model_type: str = "unigram", special_tokens_style: str = "bert", output_dir=None,
              do_lower_case: bool = False, character_coverage: float = 1.0, hard_vocab_limit: bool = False,
              max_sentence_length: int = 16384, num_threads: Optional[int] = None,
              **trainer_options) -> "SentencePieceTokenizer":
        """Learn `vocab_size` pieces from text files (one path or a list) or an iterable of strings,
        in this process, quietly. Each line is one sentence; blank lines are skipped.

        On a small text SentencePiece may find fewer pieces than vocab_size: with
        hard_vocab_limit=False (default) it keeps what it found and warns (use tokenizer.vocab_size
        for the model); with True it is an error that says which vocab_size would work.
        do_lower_case folds case inside the model (normalization rule nmt_nfkc_cf)."""
        if model_type not in ("unigram", "bpe"):
            raise ConfigError(f"model_type={model_type!r}: use 'unigram' or 'bpe'")
        if special_tokens_style not in STYLES:
            raise ConfigError(f"special_tokens_style={special_tokens_style!r}: use 'bert' or 'gpt'")
        n_special = len(STYLES[special_tokens_style])
        if not isinstance(vocab_size, int) or vocab_size <= n_special:
            raise ConfigError(f"vocab_size={vocab_size!r} must be an integer above the {n_special} special tokens")
        sentences = _training_sentences(files_or_iterator)
        if special_tokens_style == "bert":
            ids = dict(pad_id=0, unk_id=1, bos_id=-1, eos_id=-1, pad_piece="[PAD]", unk_piece="[UNK]",
                       user_defined_symbols=["[CLS]", "[SEP]", "[MASK]"])
        else:
            ids = dict(pad_id=0, unk_id=1, eos_id=2, bos_id=-1, pad_piece="<pad>", unk_piece="<unk>",
                       eos_piece="<|endoftext|>")
        options = dict(vocab_size=vocab_size, model_type=model_type, character_coverage=character_coverage,
                       hard_vocab_limit=hard_vocab_limit, max_sentence_length=max_sentence_length,
                       num_threads=num_threads or min(4, os.cpu_count() or 1), minloglevel=2,
                       normalization_rule_name="nmt_nfkc_cf" if do_lower_case else "nmt_nfkc",
                       **ids, **trainer_options)
        model = io.BytesIO()
        try:
            _sentencepiece().SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_writer=model,
                                                        **options)
        except RuntimeError as e:
            raise DataError(_explain_training_error(str(e), vocab_size)) from None
        tokenizer = cls(model_proto=model.getvalue(), special_tokens_style=special_tokens_style,
                        do_lower_case=do_lower_case)
        if tokenizer.vocab_size < vocab_size:
            warnings.warn(f"SentencePiece found only {tokenizer.vocab_size} pieces in this text, fewer than "
                          f"vocab_size={vocab_size}; the tokenizer (and the model) use {tokenizer.vocab_size}",
                          stacklevel=2)
        if output_dir is not None:
            tokenizer.save_pretrained(output_dir)
        return tokenizer

    # ------------------------------------------------------------ vocabulary
    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def get_vocab(self) -> dict[str, int]:
        return {self.sp.id_to_piece(i): i for i in range(self.vocab_size)}

    def _token_to_id(self, token: str) -> Optional[int]:
        index = self.sp.piece_to_id(token)
        return None if index == self.sp.unk_id() and token != self.sp.id_to_piece(index) else index

    def _id_to_token(self, index: int) -> str:
        return self.sp.id_to_piece(index)

    # ------------------------------------------------------------ text <-> tokens
    def _tokenize_with_offsets(self, text: str) -> list[tuple[str, tuple[int, int], int]]:
        """Pieces with character spans (leading spaces left out); a word starts at every "▁" piece
        and at every special token."""
        out, word = [], -1
        special = set(self.all_special_ids)
        previous_special = True
        for index, (start, end) in self._ids_with_offsets(text):
            piece = self._id_to_token(index)  # a subclass may name ids SentencePiece has no piece for
            is_special = index in special and index != self.unk_token_id
            if piece.startswith("▁") or is_special or previous_special:
                word += 1
            previous_special = is_special
            while start < end - 1 and text[start].isspace():
                start += 1
            out.append((piece, (start, end), word))
        return out

    def _ids_with_offsets(self, text: str) -> list[tuple[int, tuple[int, int]]]:
        if self._offset_mapping_api:
            result = self.sp.encode(text, out_type="offset_mapping")
            return list(zip(result["ids"], [tuple(o) for o in result["offsets"]]))
        # sentencepiece < 0.2.2: a proto whose pieces carry character offsets
        return [(p.id, (p.begin, p.end)) for p in self.sp.encode(text, out_type="immutable_proto").pieces]

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """Runs of ordinary pieces are decoded by SentencePiece ("▁" -> space); special tokens are
        written as themselves, one space either side."""
        special = set(self.all_special_tokens)
        parts, run = [], []
        for token in tokens + [None]:
            if token is None or token in special:
                if run:
                    parts.append(self.sp.decode_pieces(run))
                    run = []
                if token is not None:
                    parts.append(token)
            else:
                run.append(token)
        return "".join(parts) if len(parts) <= 1 else " ".join(part.strip() for part in parts)

    # ------------------------------------------------------------ files
    def _init_kwargs(self) -> dict[str, Any]:
        return {"special_tokens_style": self.special_tokens_style, "do_lower_case": self.do_lower_case}

    def _save_vocabulary(self, folder: Path) -> list[str]:
        write_file_atomic(folder / SPM_NAME, self.model_proto)
        return [SPM_NAME]

    @classmethod
    def _from_folder(cls, folder: Path, config: dict[str, Any]) -> "SentencePieceTokenizer":
        candidates = [folder / SPM_NAME] if (folder / SPM_NAME).is_file() else sorted(folder.glob("*.model"))
        if not candidates:
            raise CheckpointError(f"no {SPM_NAME} (or other *.model) in {folder}; save the tokenizer with "
                                  "tokenizer.save_pretrained(folder), or train one with SentencePieceTokenizer.train")
        options = {k: config[k] for k in ("special_tokens_style", "do_lower_case") if k in config}
        return cls(candidates[0], **options, **special_kwargs(config))


def _has_offset_mapping_api(sp) -> bool:
    """sentencepiece >= 0.2.2 gives offsets as out_type="offset_mapping"; older versions as
    out_type="immutable_proto" (since removed), and reject the new name."""
    try:
        sp.encode("a", out_type="offset_mapping")
    except (RuntimeError, ValueError):
        return False
    return True


def _training_sentences(source) -> list[str]:
    """Non-blank lines of the text. `source` is one file (str or Path), a list of files (Paths, or
    strs that all name existing files), or an iterable of text strings."""
    if isinstance(source, (str, os.PathLike)):
        source = [Path(source)]
    items = list(source)
    is_files = bool(items) and (isinstance(items[0], os.PathLike) or
                                all(isinstance(x, str) and os.path.isfile(x) for x in items))
    texts = [read_text(x, what="training text") for x in items] if is_files else items
    sentences = [line for text in texts for line in _check_text(text).splitlines() if line.strip()]
    if not sentences:
        raise DataError(f"no text to train the tokenizer on: {[str(x) for x in items[:3]] if is_files else 'the iterable'} "
                        "gave no non-blank lines")
    return sentences


def _check_text(text) -> str:
    if not isinstance(text, str):
        raise DataError(f"training text must be str, got {type(text).__name__}: pass file paths or strings")
    return text


def _explain_training_error(message: str, vocab_size: int) -> str:
    needed = re.search(r"smaller than required_chars\. \d+ vs (\d+)", message)
    if needed:  # every kept character needs a piece of its own: Chinese or Japanese text has thousands
        return (f"vocab_size={vocab_size} is smaller than the {needed.group(1)} characters the tokenizer must keep "
                f"(character_coverage of the training text); raise vocab_size (--vocab_size) above "
                f"{needed.group(1)}, or lower character_coverage (--character_coverage 0.9995 for Chinese or "
                "Japanese lets the rarest characters be [UNK])")
    if "Vocabulary size too high" in message:
        most = message.rsplit("<=", 1)[-1].strip(" .")
        return (f"the training text is too small for vocab_size={vocab_size}: SentencePiece can make at most "
                f"{most} pieces from it; pass --vocab_size {most} or less, or train on more text")
    return f"SentencePiece training failed: {message.strip()}"
