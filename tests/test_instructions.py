"""The chat template and the assistant-only labels of instruction tuning (common/data/instructions.py).

Properties: only assistant tokens (and the <|end|> closing each assistant turn) carry labels;
changing any prompt token changes no label; GPT's loss on such a batch equals the mean over the
assistant tokens computed by hand; bad records and too-long conversations end in one clear line.
"""
import json

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from common.data.instructions import (CHAT_TOKENS, IGNORE_INDEX, ChatTokenizer, DataCollatorForChat,
                                      InstructionDataset, alpaca_to_messages, assistant_labels,
                                      encode_conversation, load_instruction_file, pack_examples)
from common.errors import DataError
from common.text.char import CharTokenizer
from minigpt import GPT, GPTConfig

CHARS = "abcdefghijklmnopqrstuvwxyz .,?!\n"
TOKENIZER = ChatTokenizer(CharTokenizer(sorted(CHARS)))
A, E = TOKENIZER.assistant_id, TOKENIZER.end_id

turn_text = st.text(alphabet=CHARS, min_size=0, max_size=12)
conversation = st.lists(st.tuples(st.sampled_from(["system", "user", "assistant"]), turn_text),
                        min_size=1, max_size=6)


def as_messages(turns):
    return [{"role": r, "content": c} for r, c in turns]


def test_template_is_marker_content_end_per_turn():
    ids = encode_conversation(TOKENIZER, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}])
    t = TOKENIZER.token_ids
    assert ids == [t["<|user|>"], *TOKENIZER.encode("hi"), E, A, *TOKENIZER.encode("yo"), E], ids
    assert TOKENIZER.decode(ids) == "<|user|>hi<|end|><|assistant|>yo<|end|>"
    assert TOKENIZER.decode(ids, skip_special_tokens=True) == "hiyo"
    assert len(TOKENIZER) == len(CHARS) + len(CHAT_TOKENS) and min(TOKENIZER.token_ids.values()) == len(CHARS)


def test_labels_are_the_assistant_tokens_and_their_end_only():
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "yo"}, {"role": "user", "content": "ok"},
                {"role": "assistant", "content": "k"}]
    ids = encode_conversation(TOKENIZER, messages)
    labels = assistant_labels(ids, A, E)
    learned = [i for i, label in zip(ids, labels) if label != IGNORE_INDEX]
    assert learned == [*TOKENIZER.encode("yo"), E, *TOKENIZER.encode("k"), E], TOKENIZER.decode(learned)
    assert all(label in (IGNORE_INDEX, i) for i, label in zip(ids, labels))


@given(conversation, st.data())
def test_changing_any_prompt_token_changes_no_label(turns, data):
    ids = encode_conversation(TOKENIZER, as_messages(turns))
    labels = assistant_labels(ids, A, E)
    prompt = [t for t, label in enumerate(labels) if label == IGNORE_INDEX and ids[t] not in TOKENIZER.id_to_token]
    if not prompt:
        return
    t = data.draw(st.sampled_from(prompt))
    changed = list(ids)
    changed[t] = data.draw(st.integers(0, len(CHARS) - 1))  # any ordinary token
    assert assistant_labels(changed, A, E) == labels, f"changing prompt token {t} changed the labels"


@given(conversation)
def test_every_assistant_content_token_is_labeled_with_itself(turns):
    ids = encode_conversation(TOKENIZER, as_messages(turns))
    labels = assistant_labels(ids, A, E)
    expected = []
    for role, content in turns:
        content_ids = TOKENIZER.encode(content)
        expected += [IGNORE_INDEX] * (1 + (len(content_ids) + 1 if role != "assistant" else 0))
        if role == "assistant":
            expected += [*content_ids, E]
    assert labels == expected


def test_loss_equals_the_mean_over_assistant_tokens_by_hand():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=64, vocab_size=len(TOKENIZER))).eval()
    conversations = [(alpaca_to_messages({"instruction": "add one", "input": "two", "output": "three"}, "r0"), "r0"),
                     ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}], "r1")]
    batch = DataCollatorForChat(TOKENIZER.pad_token_id)(list(InstructionDataset(TOKENIZER, conversations, 64)))
    with torch.no_grad():
        out = model(**batch)
    log_p = torch.log_softmax(out.logits, dim=-1)
    terms = []
    for b in range(2):
        for t in range(1, batch["input_ids"].size(1)):
            if batch["labels"][b, t] != IGNORE_INDEX:
                terms.append(-log_p[b, t - 1, batch["labels"][b, t]])  # predicted from position t - 1
    by_hand = torch.stack(terms).mean()
    assert len(terms) == len("three") + 1 + len("hello there") + 1, len(terms)
    assert abs(out.loss.item() - by_hand.item()) < 1e-6, f"loss {out.loss.item():.6f} vs by hand {by_hand.item():.6f}"


def test_packing_keeps_every_label_and_pads_nothing():
    conversations = [([{"role": "user", "content": "q" * k}, {"role": "assistant", "content": "a" * k}], f"r{k}")
                     for k in range(1, 8)]
    examples = list(InstructionDataset(TOKENIZER, conversations, 64))
    windows = pack_examples(examples, 16)
    assert all(len(w["input_ids"]) == 16 for w in windows[:-1])
    total = sum(int((e["labels"] != IGNORE_INDEX).sum()) for e in examples)
    assert sum(int((w["labels"] != IGNORE_INDEX).sum()) for w in windows) == total


def test_a_record_without_output_is_one_line_naming_it(tmp_path):
    path = tmp_path / "data.json"
    path.write_text(json.dumps([{"instruction": "a", "input": "", "output": "b"},
                                {"instruction": "say hi", "input": ""}]))
    with pytest.raises(DataError, match=r"data\.json: record 1: no \"output\"") as info:
        load_instruction_file(path)
    assert "\n" not in str(info.value)


def test_a_conversation_over_the_context_window_is_one_line(tmp_path):
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                             {"role": "assistant", "content": "a" * 40}]}) + "\n")
    with pytest.raises(DataError, match=r"chat\.jsonl:1: the conversation is 46 tokens, longer than the context "
                                        r"window of 32") as info:
        InstructionDataset(TOKENIZER, load_instruction_file(path), 32)
    assert "\n" not in str(info.value)
    assert len(InstructionDataset(TOKENIZER, load_instruction_file(path), 32, drop_long=True)) == 0


def test_the_shared_alpaca_file_loads():
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "instructions" / "instruction-data.json"
    if not path.is_file():
        pytest.skip(f"{path} is absent (the shared data folder is not beside the checkout)")
    conversations = load_instruction_file(path)
    assert len(conversations) == 1100
    assert [m["role"] for m in conversations[0][0]] == ["user", "assistant"]
