"""Instruction tuning (supervised fine-tuning, SFT) data: a chat template, records, assistant-only labels.

The chat template. A conversation is a list of turns {"role": "system" | "user" | "assistant",
"content": str}; each turn becomes its role marker, the content's tokens, and the end-of-turn token:

    <|system|> You are terse. <|end|> <|user|> Name a colour. <|end|> <|assistant|> Red. <|end|>

(spaces above only for reading: nothing is inserted between a marker and the content). To ask the
model for an answer, the prompt is the turns so far followed by <|assistant|>; generation stops when
it emits <|end|>. The four markers are single tokens added AFTER the tokenizer's vocabulary (ids V,
V + 1, V + 2, V + 3 for a tokenizer of V tokens, by ChatTokenizer), so the model needs V + 4
embeddings, and no text can turn into a marker: a user who types "<|end|>" gets its characters,
not the end of the turn. The same wrapper works for every tokenizer of the project (char,
SentencePiece, WordPiece, BPE), and chat_template.json in the model folder records it.

The loss. Only the assistant's tokens are learned: labels[t] = input_ids[t] for the content of an
assistant turn and its <|end|> (so the model learns to stop), -100 everywhere else (system and user
turns, every role marker). With GPT's causal shift the loss is the mean, over those n_A positions, of
-log p(x_t | x_<t): the prompt is given, never predicted.

Records. Alpaca's {"instruction", "input", "output"} is one user turn (the instruction, then a blank
line and the input when there is one) and one assistant turn (the output). Multi-turn data is JSONL,
one {"messages": [...]} per line. Batches are padded (DataCollatorForChat) or packed
(pack_examples: conversations concatenated and cut into block_size windows, no padding at all).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch.utils.data import Dataset

from common.errors import CheckpointError, DataError

IGNORE_INDEX = -100
SYSTEM, USER, ASSISTANT, END = "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"
CHAT_TOKENS = (SYSTEM, USER, ASSISTANT, END)
ROLE_MARKERS = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT}
CHAT_TEMPLATE_NAME = "chat_template.json"


class ChatTokenizer:
    """A tokenizer of the project plus the template's four tokens, ids len(base) .. len(base) + 3.

    encode(text) is the base tokenizer's (no special tokens of its own); decode shows the markers as
    their strings, or drops them with skip_special_tokens=True. save_pretrained writes the base
    tokenizer's files and chat_template.json.
    """

    def __init__(self, base):
        self.base = base
        first = len(base)
        self.token_ids = {token: first + i for i, token in enumerate(CHAT_TOKENS)}
        self.id_to_token = {i: t for t, i in self.token_ids.items()}
        self.assistant_id, self.end_id = self.token_ids[ASSISTANT], self.token_ids[END]

    def __len__(self) -> int:
        return len(self.base) + len(CHAT_TOKENS)

    @property
    def eos_token_id(self) -> int:
        return self.end_id

    @property
    def pad_token_id(self) -> int:
        pad = getattr(self.base, "pad_token_id", None)
        return pad if pad is not None else self.end_id  # padded positions are masked anyway

    def encode(self, text: str) -> list[int]:
        return self.base.encode(text, add_special_tokens=False)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """Text of the ids; runs of base ids go through the base tokenizer (a character may span tokens)."""
        pieces, run = [], []
        for i in (ids.tolist() if hasattr(ids, "tolist") else ids):
            if i in self.id_to_token:
                pieces.append(self.base.decode(run, skip_special_tokens=skip_special_tokens))
                run = []
                if not skip_special_tokens:
                    pieces.append(self.id_to_token[i])
            else:
                run.append(i)
        pieces.append(self.base.decode(run, skip_special_tokens=skip_special_tokens))
        return "".join(pieces)

    def save_pretrained(self, folder) -> None:
        self.base.save_pretrained(folder)
        record = {"tokens": list(CHAT_TOKENS), "first_id": len(self.base),
                  "template": "per turn: role marker, content tokens, <|end|>; prompt ends with <|assistant|>"}
        Path(folder, CHAT_TEMPLATE_NAME).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def from_folder(cls, folder, base) -> "ChatTokenizer":
        """Check chat_template.json against the base tokenizer loaded from the same folder."""
        path = Path(folder) / CHAT_TEMPLATE_NAME
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{path}: not readable ({e}); save the model again with minigpt.sft") from None
        if record.get("tokens") != list(CHAT_TOKENS) or record.get("first_id") != len(base):
            raise CheckpointError(f"{path}: records tokens {record.get('tokens')} from id {record.get('first_id')}, "
                                  f"but this template has {list(CHAT_TOKENS)} after the {len(base)} tokens of the "
                                  "tokenizer; the folder's tokenizer and template do not belong together")
        return cls(base)


def has_chat_template(folder) -> bool:
    return (Path(folder) / CHAT_TEMPLATE_NAME).is_file()


# BEGIN EXERCISE assistant_labels
def assistant_labels(input_ids: Sequence[int], assistant_id: int, end_id: int) -> list[int]:
    """labels[t] = input_ids[t] inside an assistant turn (after its <|assistant|> marker, up to and
    including the <|end|> that closes it), else -100. The marker itself is prompt: it is given.

    (T,) ids -> (T,) labels. The label mask depends on the markers only: the content of a prompt turn
    never changes a label.
    """
    labels, inside = [], False
    for token in input_ids:
        if inside:
            labels.append(token)  # an assistant token (or the <|end|> closing the turn): learn it
            inside = token != end_id
        else:
            labels.append(IGNORE_INDEX)  # prompt: system/user turns and every role marker
            inside = token == assistant_id
    return labels
# END EXERCISE assistant_labels


def encode_conversation(tokenizer: ChatTokenizer, messages: Sequence[dict], where: str = "conversation",
                        max_length: Optional[int] = None, for_generation: bool = False) -> list[int]:
    """The template's ids for a list of turns (see the module docstring). for_generation=True
    appends <|assistant|>: the prompt for the next answer. A conversation longer than max_length
    tokens is a DataError naming `where` (one line)."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise DataError(f"{where}: expected a non-empty list of messages {{\"role\": ..., \"content\": ...}}")
    ids = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLE_MARKERS:
            role = message.get("role") if isinstance(message, dict) else message
            raise DataError(f"{where}: message {i} has role {role!r}; use one of {sorted(ROLE_MARKERS)}")
        content = message.get("content")
        if not isinstance(content, str):
            raise DataError(f"{where}: message {i} ({message['role']}) has no text \"content\"")
        try:
            content_ids = tokenizer.encode(content)
        except DataError as e:
            raise DataError(f"{where}: message {i}: {e}") from None
        ids += [tokenizer.token_ids[ROLE_MARKERS[message["role"]]], *content_ids, tokenizer.end_id]
    if for_generation:
        ids.append(tokenizer.assistant_id)
    if max_length is not None and len(ids) > max_length:
        raise DataError(f"{where}: the conversation is {len(ids)} tokens, longer than the context window of "
                        f"{max_length}; shorten it, or drop such records with --drop_long_examples")
    return ids


def alpaca_to_messages(record, where: str) -> list[dict]:
    """{"instruction", "input", "output"} -> a user turn (instruction [+ blank line + input]) and an
    assistant turn (output)."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object with instruction/input/output, got {type(record).__name__}")
    instruction, extra, output = record.get("instruction"), record.get("input") or "", record.get("output")
    if not isinstance(instruction, str) or not instruction.strip():
        raise DataError(f"{where}: no \"instruction\" text; every Alpaca record needs one")
    if not isinstance(output, str) or not output.strip():
        raise DataError(f"{where}: no \"output\" text; instruction tuning learns the output, so every record "
                        "needs one (remove the record or write its answer)")
    if not isinstance(extra, str):
        raise DataError(f"{where}: \"input\" must be text, got {type(extra).__name__}")
    user = instruction + ("\n\n" + extra if extra.strip() else "")
    return [{"role": "user", "content": user}, {"role": "assistant", "content": output}]


def record_to_messages(record, where: str) -> list[dict]:
    """A {"messages": [...]} conversation or an Alpaca record; it must contain an assistant turn."""
    if isinstance(record, dict) and "messages" in record:
        messages = record["messages"]
        if not isinstance(messages, list) or not any(isinstance(m, dict) and m.get("role") == "assistant"
                                                     for m in messages):
            raise DataError(f"{where}: \"messages\" has no assistant turn; there is nothing to learn")
        return messages
    return alpaca_to_messages(record, where)


def read_records(path, encoding: str = "utf-8", what: str = "records") -> list[tuple[object, str]]:
    """[(record, where)] from a .json array or a .jsonl file; `where` is "file:line" or "file: record i"."""
    path = Path(path)
    try:
        text = path.read_text(encoding=encoding)
    except OSError as e:
        raise DataError(f"{path}: cannot read the {what} file ({e.strerror})") from None
    if path.suffix == ".jsonl":
        records = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append((json.loads(line), f"{path}:{number}"))
                except ValueError as e:
                    raise DataError(f"{path}:{number}: not valid JSON ({e})") from None
    else:
        try:
            data = json.loads(text)
        except ValueError as e:
            raise DataError(f"{path}: not valid JSON ({e}); use a JSON array of records or a .jsonl file") from None
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON array of records, got {type(data).__name__}")
        records = [(r, f"{path}: record {i}") for i, r in enumerate(data)]
    if not records:
        raise DataError(f"{path}: no records")
    return records


def load_instruction_file(path, encoding: str = "utf-8") -> list[tuple[list[dict], str]]:
    """[(messages, where)] from a .json array (Alpaca records or {"messages"} objects) or a .jsonl
    file (one record per line); `where` names the file and record for error lines."""
    return [(record_to_messages(r, where), where) for r, where in read_records(path, encoding, "instruction")]


class InstructionDataset(Dataset):
    """One example per conversation: {"input_ids": (T,), "labels": (T,)} with assistant-only labels."""

    def __init__(self, tokenizer: ChatTokenizer, conversations: Sequence[tuple[list[dict], str]],
                 max_length: int, drop_long: bool = False):
        self.examples, self.dropped = [], 0
        for messages, where in conversations:
            try:
                ids = encode_conversation(tokenizer, messages, where, max_length)
            except DataError:
                if not drop_long or len(encode_conversation(tokenizer, messages, where)) <= max_length:
                    raise
                self.dropped += 1
                continue
            self.examples.append({"input_ids": torch.tensor(ids),
                                  "labels": torch.tensor(assistant_labels(ids, tokenizer.assistant_id,
                                                                          tokenizer.end_id))})

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict:
        return self.examples[i]


class DataCollatorForChat:
    """Right padding to the longest example: input_ids with pad_token_id, attention_mask 0 and labels
    -100 at the padded positions. (B examples of length T_b) -> (B, max T_b) tensors."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, examples: list[dict]) -> dict:
        T = max(len(e["input_ids"]) for e in examples)
        batch = {"input_ids": torch.full((len(examples), T), self.pad_token_id, dtype=torch.long),
                 "attention_mask": torch.zeros(len(examples), T, dtype=torch.long),
                 "labels": torch.full((len(examples), T), IGNORE_INDEX, dtype=torch.long)}
        for b, e in enumerate(examples):
            n = len(e["input_ids"])
            batch["input_ids"][b, :n] = e["input_ids"]
            batch["attention_mask"][b, :n] = 1
            batch["labels"][b, :n] = e["labels"]
        return batch


def pack_examples(examples: Sequence[dict], block_size: int) -> list[dict]:
    """Concatenate every example's ids and labels and cut them into windows of block_size (the last,
    shorter window is kept). No padding; a window may hold the end of one conversation and the start
    of the next, which attends to the earlier one (the usual price of simple packing)."""
    ids = torch.cat([e["input_ids"] for e in examples])
    labels = torch.cat([e["labels"] for e in examples])
    return [{"input_ids": ids[s:s + block_size], "labels": labels[s:s + block_size]}
            for s in range(0, len(ids), block_size) if (labels[s:s + block_size] != IGNORE_INDEX).any()]
