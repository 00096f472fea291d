"""python -m minigpt.sft (instruction tuning) and python -m minigpt.chat (the terminal chat).

The SFT runs are tiny (a 1-layer GPT with a character tokenizer, a few steps on records the test
writes): they check what the tool writes and loads. The chat is driven the way a person uses it:
through a pseudo-terminal (the pty module), typing lines and reading the screen.
"""
from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from common.data.instructions import CHAT_TEMPLATE_NAME
from common.errors import run_cli
from minigpt.model import GPT
from minigpt.sft import main as sft_main
from minigpt.train import main as train_main

REPO = Path(__file__).resolve().parent.parent
RECORDS = [{"instruction": "say hi", "input": "", "output": "hi there"},
           {"instruction": "add one", "input": "two", "output": "three"},
           {"instruction": "name a colour", "input": "", "output": "red"},
           {"instruction": "spell cat", "input": "", "output": "c a t"}] * 5
FAST = ["--per_device_train_batch_size", "4", "--use_cpu", "--disable_tqdm", "--seed", "3"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("sft")
    text = root / "text.txt"
    letters = "abcdefghijklmnopqrstuvwxyz"
    text.write_text("".join(f"{letters[i % 26:]} {letters[:i % 26]} hello, world!\n" for i in range(40)),
                    encoding="utf-8")
    base = root / "base"
    assert train_main(["--train_file", str(text), "--output_dir", str(base), "--config_overrides",
                       "n_layer=1,n_head=2,n_embd=16,block_size=48", "--max_steps", "3", "--sample_tokens", "0",
                       "--bf16", "false", "--save_strategy", "no", *FAST]) == 0
    data = root / "alpaca.json"
    data.write_text(json.dumps(RECORDS), encoding="utf-8")
    sft = root / "sft"
    assert sft_main(["--model_name_or_path", str(base), "--train_file", str(data), "--output_dir", str(sft),
                     "--max_steps", "20", "--learning_rate", "1e-2", "--validation_split_percentage", "20", *FAST]) == 0
    return {"root": root, "base": base, "data": data, "sft": sft}


def test_sft_writes_model_template_and_assistant_only_eval_loss(folders):
    sft = folders["sft"]
    names = sorted(p.name for p in sft.iterdir())
    for name in ("model.safetensors", "config.json", CHAT_TEMPLATE_NAME, "eval_results.json", "train_results.json"):
        assert name in names, f"{name} not written; the folder holds {names}"
    model = GPT.from_pretrained(sft)
    base = GPT.from_pretrained(folders["base"])
    assert model.config.vocab_size == base.config.vocab_size + 4, "the four template tokens get embeddings"
    results = json.loads((sft / "eval_results.json").read_text())
    assert results["eval_conversations"] == 4 and results["eval_loss"] > 0, results


def test_sft_with_lora_saves_an_adapter_that_reloads(folders, tmp_path, capsys):
    out = tmp_path / "lora"
    capsys.readouterr()
    assert sft_main(["--model_name_or_path", str(folders["base"]), "--train_file", str(folders["data"]),
                     "--output_dir", str(out), "--max_steps", "3", "--lora_r", "2", *FAST]) == 0
    err = capsys.readouterr().err
    assert "trainable params:" in err and "trained in full: ['wte']" in err, err[-600:]
    assert (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()
    model = GPT.from_pretrained(out)  # base (V embeddings) + adapter (V + 4 rows of wte, trained in full)
    assert model.transformer.wte.weight.shape[0] == GPT.from_pretrained(folders["base"]).config.vocab_size + 4


def test_sft_record_without_output_is_one_error_line(folders, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"instruction": "x", "input": ""}]))
    with pytest.raises(SystemExit) as info:
        run_cli(sft_main, ["--model_name_or_path", str(folders["base"]), "--train_file", str(bad),
                           "--output_dir", str(tmp_path / "o"), "--use_cpu"])
    errors = [l for l in capsys.readouterr().err.splitlines() if l.startswith("error:")]
    assert info.value.code == 2 and len(errors) == 1 and "record 0: no \"output\"" in errors[0], errors


class Terminal:
    """A child process on a pseudo-terminal: type() writes keys, read_until() collects the screen."""

    def __init__(self, argv):
        self.master, slave = pty.openpty()
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TERM": "dumb"}
        self.process = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=REPO, env=env,
                                        close_fds=True)
        os.close(slave)
        self.screen, self.mark = "", 0

    def read_until(self, text: str, timeout: float = 60.0) -> str:
        """Wait for `text` to appear after what the previous read_until matched; returns the screen
        between the two."""
        end = time.monotonic() + timeout
        while text not in self.screen[self.mark:]:
            if time.monotonic() > end:
                raise AssertionError(f"{text!r} did not appear; the screen shows:\n{self.screen[-1500:]}")
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                try:
                    self.screen += os.read(self.master, 4096).decode("utf-8", "replace")
                except OSError:  # the child closed the terminal
                    if text not in self.screen[self.mark:]:
                        raise AssertionError(f"{text!r} never appeared:\n{self.screen[-1500:]}") from None
        start = self.mark
        self.mark = self.screen.index(text, self.mark) + len(text)
        return self.screen[start:self.mark]

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode("utf-8"))

    def close(self) -> int:
        try:
            return self.process.wait(timeout=30)
        finally:
            os.close(self.master)


@pytest.mark.slow  # a child process on a pty: torch's import alone takes seconds
def test_chat_streams_replies_drops_old_turns_resets_and_quits_on_ctrl_d(folders):
    term = Terminal([sys.executable, "-m", "minigpt.chat", "--model_name_or_path", str(folders["sft"]),
                     "--greedy", "--max_new_tokens", "6"])
    try:
        term.read_until("you> ")
        assert "/reset" in term.screen and "context 48 tokens" in term.screen, term.screen
        term.type("say hi\n")
        term.read_until("assistant> ")
        reply = term.read_until("you> ", timeout=30)
        assert reply.endswith("\r\nyou> ") and len(reply) <= 6 + len("\r\nyou> "), f"reply {reply!r}: <= 6 tokens"
        # 48 - 6 = 42 tokens for the prompt: 16 so far + 34 for this turn, so the first exchange goes
        term.type("add one to two and say it twice\n")
        term.read_until("(context full: dropped the 2 oldest turns to stay within 48 tokens)")
        term.read_until("you> ", timeout=30)
        term.type("/reset\n")
        term.read_until("(conversation cleared)")
        term.type("\x04")  # Ctrl-D
        term.read_until("bye")
        assert term.close() == 0, f"chat exited with {term.process.returncode}:\n{term.screen}"
    finally:
        if term.process.poll() is None:
            term.process.kill()


@pytest.mark.slow  # a child process on a pty: torch's import alone takes seconds
def test_chat_exit_command_and_a_model_without_template(folders):
    term = Terminal([sys.executable, "-m", "minigpt.chat", "--model_name_or_path", str(folders["sft"])])
    term.read_until("you> ")
    term.type("/exit\n")
    term.read_until("bye")
    assert term.close() == 0
    result = subprocess.run([sys.executable, "-m", "minigpt.chat", "--model_name_or_path", str(folders["base"])],
                            cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdin=subprocess.DEVNULL, timeout=120)
    errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "minigpt.sft" in errors[0], result.stderr


def test_sft_twice_with_the_same_seed_gives_the_same_weights(folders, tmp_path):
    from safetensors.torch import load_file
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert sft_main(["--model_name_or_path", str(folders["base"]), "--train_file", str(folders["data"]),
                         "--output_dir", str(out), "--max_steps", "4", "--packing", *FAST]) == 0
        runs.append(load_file(str(out / "model.safetensors")))
    differ = {k: float((runs[0][k] - runs[1][k]).abs().max()) for k in runs[0] if not torch.equal(runs[0][k], runs[1][k])}
    assert not differ, f"minigpt.sft twice with --seed 3: weights differ (max abs difference per tensor): {differ}"
