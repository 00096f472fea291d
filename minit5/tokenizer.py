"""T5's tokenizer: a SentencePiece model with <pad> = 0, </s> = 1, <unk> = 2, and the span-corruption
sentinels <extra_id_0> .. <extra_id_{N-1}> appended AFTER the pieces, counting down:

    <extra_id_k> = sp_size + N - 1 - k,   so <extra_id_0> = len(tokenizer) - 1

A Hugging Face T5 folder (spiece.model + tokenizer_config.json with extra_ids) loads as is; a text
gets </s> appended (A </s>, pairs A </s> B </s>). As in transformers' T5Tokenizer, a special token
typed in a text (<extra_id_k> with k < extra_ids, <pad>, </s>, <unk>) is that token, each stretch of
text between them is encoded on its own (so it gets its own leading "▁"), and decode writes special
tokens glued to their neighbours: "<extra_id_0> a dog<extra_id_1></s>".
T5Tokenizer.train learns the pieces from your text with those ids (unigram, as T5's).
"""
from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Any, Optional

from common.errors import DataError, ConfigError
from common.text.base import special_kwargs
from common.text.sentencepiece import SentencePieceTokenizer, _sentencepiece, _training_sentences

SENTINEL = re.compile(r"<extra_id_(\d+)>")
T5_SPECIALS = {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}


class T5Tokenizer(SentencePieceTokenizer):
    """SentencePiece pieces, then extra_ids sentinels at the top of the id range (module docstring)."""

    def __init__(self, model_file=None, *, model_proto: Optional[bytes] = None, extra_ids: int = 100, **kwargs):
        if not isinstance(extra_ids, int) or extra_ids < 0:
            raise ConfigError(f"extra_ids must be an integer >= 0, got {extra_ids!r}")
        self.extra_ids = extra_ids
        kwargs = {k: v for k, v in kwargs.items() if k not in ("special_tokens_style", "additional_special_tokens")}
        super().__init__(model_file, model_proto=model_proto, special_tokens_style="gpt", **{**T5_SPECIALS, **kwargs})

    # ------------------------------------------------------------ sentinels
    @property
    def sp_size(self) -> int:
        return self.sp.get_piece_size()

    @property
    def vocab_size(self) -> int:
        return self.sp_size + self.extra_ids

    def sentinel_id(self, k: int) -> int:
        """The id of <extra_id_k>: len(tokenizer) - 1 - k."""
        if not 0 <= k < self.extra_ids:
            raise DataError(f"<extra_id_{k}> does not exist: this tokenizer has {self.extra_ids} sentinels")
        return self.sp_size + self.extra_ids - 1 - k

    @property
    def all_special_tokens(self) -> list[str]:
        return super().all_special_tokens + [f"<extra_id_{k}>" for k in range(self.extra_ids)]

    def get_vocab(self) -> dict[str, int]:
        return {self._id_to_token(i): i for i in range(self.vocab_size)}

    def _token_to_id(self, token: str) -> Optional[int]:
        match = SENTINEL.fullmatch(token)
        if match and int(match.group(1)) < self.extra_ids:
            return self.sentinel_id(int(match.group(1)))
        return super()._token_to_id(token)

    def _id_to_token(self, index: int) -> str:
        if index >= self.sp_size:
            return f"<extra_id_{self.sp_size + self.extra_ids - 1 - index}>"
        return super()._id_to_token(index)

    def _special_tokens_in(self, text: str) -> list[tuple[int, tuple[int, int]]]:
        """(id, span) of each special token typed in `text`. "<extra_id_100>" with 100 sentinels
        names no token: it stays text, for SentencePiece to encode."""
        names = [re.escape(t) for t in (self.pad_token, self.eos_token, self.unk_token) if t]
        found = []
        for match in re.finditer("|".join([SENTINEL.pattern, *names]), text):
            index = self._token_to_id(match.group(0))
            if index is not None:
                found.append((index, match.span()))
        return found

    def _ids_with_offsets(self, text: str) -> list[tuple[int, tuple[int, int]]]:
        """Special tokens typed in the text are cut out first; SentencePiece encodes the text between."""
        out, start = [], 0
        for index, (begin, end) in self._special_tokens_in(text) + [(None, (len(text), len(text)))]:
            if text[start:begin].strip():
                out += [(i, (a + start, b + start)) for i, (a, b) in super()._ids_with_offsets(text[start:begin])]
            if index is not None:
                out.append((index, (begin, end)))
            start = end
        return out

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """transformers' T5 rule: join the tokens as they are, "▁" -> " ", and drop the space of the
        first token only. So special tokens sit glued to the text ("runs<extra_id_1></s>") and a
        piece after one keeps its space ("<extra_id_0> a dog")."""
        text = "".join(tokens).replace("▁", " ")
        return text[1:] if tokens and tokens[0].startswith("▁") else text

    def build_inputs_with_special_tokens(self, token_ids_0: list[int],
                                         token_ids_1: Optional[list[int]] = None) -> list[int]:
        """T5: A </s> (B </s>)."""
        out = list(token_ids_0) + [self.eos_token_id]
        return out + list(token_ids_1) + [self.eos_token_id] if token_ids_1 is not None else out

    def get_special_tokens_mask(self, token_ids_0, token_ids_1=None, already_has_special_tokens: bool = True):
        if already_has_special_tokens:
            return super().get_special_tokens_mask(token_ids_0, token_ids_1, True)
        mask = [0] * len(token_ids_0) + [1]
        return mask + [0] * len(token_ids_1) + [1] if token_ids_1 is not None else mask

    # ------------------------------------------------------------ training and files
    @classmethod
    def train(cls, files_or_iterator, vocab_size: int, extra_ids: int = 100, output_dir=None,
              character_coverage: float = 1.0, num_threads: Optional[int] = None, **trainer_options) -> "T5Tokenizer":
        """Learn vocab_size - extra_ids unigram pieces (pad 0, eos 1, unk 2 among them) from text
        files or strings; the extra_ids sentinels come on top, so len(tokenizer) = vocab_size (or
        fewer pieces, with hard_vocab_limit off, when the text is small)."""
        pieces = vocab_size - extra_ids
        if not isinstance(vocab_size, int) or pieces <= 3:
            raise ConfigError(f"vocab_size={vocab_size!r} must exceed extra_ids ({extra_ids}) + 3 special pieces")
        model = io.BytesIO()
        try:
            _sentencepiece().SentencePieceTrainer.train(
                sentence_iterator=iter(_training_sentences(files_or_iterator)), model_writer=model,
                vocab_size=pieces, model_type="unigram", character_coverage=character_coverage,
                hard_vocab_limit=False, pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>",
                eos_piece="</s>", unk_piece="<unk>", minloglevel=2,
                num_threads=num_threads or min(4, os.cpu_count() or 1), **trainer_options)
        except RuntimeError as e:
            raise DataError(f"SentencePiece could not train on this text ({e}); give more text or a smaller "
                            "--vocab_size") from None
        tokenizer = cls(model_proto=model.getvalue(), extra_ids=extra_ids)
        if output_dir is not None:
            tokenizer.save_pretrained(output_dir)
        return tokenizer

    def _init_kwargs(self) -> dict[str, Any]:
        return {"extra_ids": self.extra_ids}

    @classmethod
    def _from_folder(cls, folder: Path, config: dict[str, Any]) -> "T5Tokenizer":
        names = ["tokenizer.model", "spiece.model"]
        candidates = [folder / n for n in names if (folder / n).is_file()] or sorted(folder.glob("*.model"))
        if not candidates:
            only_json = (" (it has only tokenizer.json, which transformers >= 5 save_pretrained writes: copy the "
                         "spiece.model of the original checkpoint next to it)") if (folder / "tokenizer.json").is_file() else ""
            raise DataError(f"no spiece.model (or other *.model) in {folder}{only_json}; a T5 folder holds its "
                            "SentencePiece model; train one with python -m minit5.pretrain, or pass --tokenizer_name")
        extra = config.get("extra_ids", 100)
        specials = {k: v for k, v in special_kwargs(config).items() if k in T5_SPECIALS}
        return cls(candidates[0], extra_ids=extra, **specials)
