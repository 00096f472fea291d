"""Streamers: text as it is written (transformers' TextStreamer idea).

generate(..., streamer=s) calls s.put(ids) with the prompt first, then with each new token (1-D
tensors of ids), and s.end() once at the end. TextStreamer decodes the tokens so far and hands the
text not handed out yet to on_text (print by default, or your callback); a piece that ends inside a
multi-byte character (a byte-level BPE token half of a character decodes to U+FFFD) waits for the
next token.
"""
from __future__ import annotations

import sys
from typing import Callable, Optional

import torch


class BaseStreamer:
    """What generate calls: put(ids) for the prompt and every new token, end() at the end."""

    def put(self, value: torch.Tensor) -> None:
        raise NotImplementedError

    def end(self) -> None:
        raise NotImplementedError


class TextStreamer(BaseStreamer):
    """Decode as tokens arrive. skip_prompt: do not hand out the prompt's text; stop_ids: ids never
    decoded (an end-of-reply token, say); decode_kwargs go to tokenizer.decode (skip_special_tokens=True,
    say). on_text(text, stream_end): print by default, or the callback given."""

    def __init__(self, tokenizer, skip_prompt: bool = False, on_text: Optional[Callable[[str, bool], None]] = None,
                 stop_ids: tuple[int, ...] = (), **decode_kwargs):
        self.tokenizer, self.skip_prompt, self.stop_ids = tokenizer, skip_prompt, set(stop_ids)
        self.callback, self.decode_kwargs = on_text, decode_kwargs
        self.ids: list[int] = []
        self.printed = 0  # characters of decode(self.ids) handed out
        self.prompt_pending = True

    def put(self, value: torch.Tensor) -> None:
        ids = [i for i in value.reshape(-1).tolist() if i not in self.stop_ids]
        if self.prompt_pending:
            self.prompt_pending = False
            if self.skip_prompt:
                return
        self.ids += ids
        text = self.tokenizer.decode(self.ids, **self.decode_kwargs)
        if text.endswith("\ufffd"):
            return  # inside a character: wait for its other bytes
        if len(text) > self.printed:
            self.on_text(text[self.printed:], False)
            self.printed = len(text)

    def end(self) -> None:
        text = self.tokenizer.decode(self.ids, **self.decode_kwargs) if self.ids else ""
        self.on_text(text[self.printed:], True)
        self.ids, self.printed, self.prompt_pending = [], 0, True

    def on_text(self, text: str, stream_end: bool = False) -> None:
        if self.callback is not None:
            self.callback(text, stream_end)
            return
        print(text, end="\n" if stream_end else "", flush=True, file=sys.stdout)
