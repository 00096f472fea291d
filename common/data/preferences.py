"""Preference data for DPO: (prompt x, chosen answer y_w, rejected answer y_l) rendered with the chat template.

Records (a .json array or .jsonl, one object per line), either of
    {"instruction": ..., "input": ..., "chosen": ..., "rejected": ...}   (rasbt's preference file; the
        user turn is built as for SFT: the instruction, a blank line and the input when there is one)
    {"prompt": ..., "chosen": ..., "rejected": ...}                       (TRL's format; prompt a string
        or a list of turns, chosen / rejected a string or a list holding one assistant turn)

Each record gives two conversations that share the prompt, prompt + [assistant: y_w] and prompt +
[assistant: y_l], encoded with common/data/instructions.py: only the answer's tokens (and its
<|end|>) carry labels, so sequence_log_probs (common/nn/dpo.py) scores log pi(y | x) and nothing of
the prompt. A record missing chosen or rejected, or with the same text for both (the pair then
teaches nothing and its margin is always 0), is a DataError naming the record.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch.utils.data import Dataset

from common.data.instructions import (IGNORE_INDEX, ChatTokenizer, alpaca_to_messages, assistant_labels,
                                      encode_conversation, read_records)
from common.errors import DataError


def _answer_text(value, field: str, where: str) -> str:
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict) \
            and value[0].get("role") == "assistant":
        value = value[0].get("content")  # TRL's conversational form: [{"role": "assistant", ...}]
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: no \"{field}\" answer text; every preference record needs \"chosen\" and "
                        "\"rejected\" answers (remove the record or write both)")
    return value


class IdenticalAnswers(DataError):
    """A record whose chosen and rejected answers are the same text."""


def preference_to_messages(record, where: str) -> tuple[list[dict], str, str]:
    """(prompt turns, chosen text, rejected text) of one record of either format."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object with chosen/rejected, got {type(record).__name__}")
    chosen = _answer_text(record.get("chosen"), "chosen", where)
    rejected = _answer_text(record.get("rejected"), "rejected", where)
    if chosen.strip() == rejected.strip():
        raise IdenticalAnswers(f"{where}: \"chosen\" and \"rejected\" are the same text; the pair teaches nothing "
                               "(its DPO margin is always 0); remove the record, fix one answer, or skip such "
                               "records with --drop_identical_pairs")
    if "prompt" in record:
        prompt = record["prompt"]
        if isinstance(prompt, str) and prompt.strip():
            return [{"role": "user", "content": prompt}], chosen, rejected
        if isinstance(prompt, list) and prompt:
            return list(prompt), chosen, rejected
        raise DataError(f"{where}: \"prompt\" must be text or a non-empty list of turns")
    user = alpaca_to_messages({**record, "output": chosen}, where)[0]  # instruction [+ blank line + input]
    return [user], chosen, rejected


class PreferenceRecords(list):
    """[(prompt turns, chosen, rejected, where)]; .dropped counts the records skipped as identical pairs."""
    dropped = 0


def load_preference_file(path, encoding: str = "utf-8", drop_identical: bool = False) -> PreferenceRecords:
    """[(prompt turns, chosen, rejected, where)] of a preference file (see the module docstring).
    drop_identical=True skips (and counts) records whose two answers are the same text instead of stopping."""
    out = PreferenceRecords()
    for record, where in read_records(path, encoding, "preference"):
        try:
            out.append((*preference_to_messages(record, where), where))
        except IdenticalAnswers:
            if not drop_identical:
                raise
            out.dropped += 1
    return out


def encode_answer(tokenizer: ChatTokenizer, prompt: Sequence[dict], answer: str, where: str,
                  max_length: Optional[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids (T,), labels (T,)) of prompt + [assistant: answer], labels -100 outside the answer."""
    ids = encode_conversation(tokenizer, [*prompt, {"role": "assistant", "content": answer}], where, max_length)
    return torch.tensor(ids), torch.tensor(assistant_labels(ids, tokenizer.assistant_id, tokenizer.end_id))


class PreferenceDataset(Dataset):
    """One example per pair: chosen_input_ids, chosen_labels, rejected_input_ids, rejected_labels
    (each (T,)), and after add_reference: reference_chosen_logps, reference_rejected_logps (scalars)."""

    def __init__(self, tokenizer: ChatTokenizer, records: Sequence[tuple], max_length: int, drop_long: bool = False):
        self.examples, self.prompts, self.dropped = [], [], 0
        for prompt, chosen, rejected, where in records:
            try:
                pair = {}
                for side, answer in (("chosen", chosen), ("rejected", rejected)):
                    pair[f"{side}_input_ids"], pair[f"{side}_labels"] = encode_answer(
                        tokenizer, prompt, answer, where, max_length)
            except DataError:
                if not drop_long:
                    raise
                for answer in (chosen, rejected):  # re-raises what is not about the length
                    encode_conversation(tokenizer, [*prompt, {"role": "assistant", "content": answer}], where)
                self.dropped += 1
                continue
            self.examples.append(pair)
            self.prompts.append((prompt, chosen, rejected))

    def add_reference(self, chosen_logps: torch.Tensor, rejected_logps: torch.Tensor) -> None:
        """Store log pi_ref(y_w | x) and log pi_ref(y_l | x) of every pair (computed once, before training)."""
        for example, w, l in zip(self.examples, chosen_logps.tolist(), rejected_logps.tolist()):
            example["reference_chosen_logps"] = torch.tensor(w)
            example["reference_rejected_logps"] = torch.tensor(l)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict:
        return self.examples[i]


class DataCollatorForPreference:
    """B pairs -> one (2B, T) batch: the B chosen sequences, then the B rejected ones, right padded to
    the longest of all 2B (one forward pass scores both sides); reference log-probs stacked (B,)."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, examples: list[dict]) -> dict:
        rows = [(e["chosen_input_ids"], e["chosen_labels"]) for e in examples] + \
               [(e["rejected_input_ids"], e["rejected_labels"]) for e in examples]
        T = max(len(ids) for ids, _ in rows)
        batch = {"input_ids": torch.full((len(rows), T), self.pad_token_id, dtype=torch.long),
                 "attention_mask": torch.zeros(len(rows), T, dtype=torch.long),
                 "preference_labels": torch.full((len(rows), T), IGNORE_INDEX, dtype=torch.long)}
        for b, (ids, labels) in enumerate(rows):
            batch["input_ids"][b, :len(ids)] = ids
            batch["attention_mask"][b, :len(ids)] = 1
            batch["preference_labels"][b, :len(ids)] = labels
        if "reference_chosen_logps" in examples[0]:
            batch["reference_chosen_logps"] = torch.stack([e["reference_chosen_logps"] for e in examples])
            batch["reference_rejected_logps"] = torch.stack([e["reference_rejected_logps"] for e in examples])
        return batch
