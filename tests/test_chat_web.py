"""python -m minigpt.chat --web: the chat page, driven over HTTP and in headless Chromium.

The server runs as a user starts it (a subprocess, --port 0 picks a free port on 127.0.0.1) on a tiny
random chat model (width 16, character tokenizer with the chat template): its replies are noise, but
they arrive as server-sent events, piece by piece, which is what the page must show.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from common.data.instructions import ChatTokenizer
from common.errors import run_cli
from common.text.char import CharTokenizer
from minigpt import GPT, GPTConfig
from minigpt.chat import main as chat_main

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("chatweb") / "model"
    tokenizer = ChatTokenizer(CharTokenizer(sorted(set("abcdefghijklmnopqrstuvwxyz ?!.,"))))
    torch.manual_seed(0)
    GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=64, vocab_size=len(tokenizer),
                  eos_token_id=tokenizer.end_id)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def server(model_folder):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-m", "minigpt.chat", "--model_name_or_path", str(model_folder),
                                "--web", "--port", "0", "--seed", "0", "--max_new_tokens", "12", "--use_cpu"],
                               cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = process.stdout.readline()
    if "http://127.0.0.1:" not in line:
        process.kill()
        pytest.fail(f"the chat server did not start: {line}{process.stdout.read()}")
    url = re.search(r"http://127\.0\.0\.1:\d+/", line).group(0)
    yield url
    process.terminate()
    process.wait(timeout=10)


def post(url: str, data: bytes = b"") -> urllib.request.Request:
    return urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})


def history(url: str) -> list:
    with urllib.request.urlopen(url + "history", timeout=30) as r:
        return json.loads(r.read())


def test_chat_streams_server_sent_events_and_reset_forgets(server):
    urllib.request.urlopen(post(server + "reset"), timeout=30).read()
    with urllib.request.urlopen(post(server + "chat", json.dumps({"message": "hi there"}).encode()), timeout=60) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream"), r.headers
        events = [block for block in r.read().decode("utf-8").split("\n\n") if block]
    pieces = [json.loads(e[len("data: "):])["text"] for e in events if e.startswith("data: ")]
    assert len(pieces) >= 2 and events[-1].startswith("event: done"), f"expected streamed pieces then done: {events}"
    turns = history(server)
    assert [t["role"] for t in turns] == ["user", "assistant"] and turns[1]["content"] == "".join(pieces), turns
    urllib.request.urlopen(post(server + "reset"), timeout=30).read()
    assert history(server) == [], "/reset should forget the conversation"


def test_port_in_use_is_one_error_line(model_folder, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        capsys.readouterr()
        with pytest.raises(SystemExit) as stop:
            run_cli(chat_main, ["--model_name_or_path", str(model_folder), "--web", "--port", str(port), "--use_cpu"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert stop.value.code == 2 and len(errors) == 1 and f"port {port}" in errors[0] and "--port" in errors[0], errors


def test_page_in_headless_chromium_types_streams_and_resets(server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tests._browser import chromium_driver

    urllib.request.urlopen(post(server + "reset"), timeout=30).read()
    with chromium_driver() as driver:
        driver.get(server)
        driver.find_element(By.ID, "input").send_keys("hello page")
        driver.find_element(By.ID, "send").click()
        wait = WebDriverWait(driver, 60)
        reply = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, ".assistant[data-done='1']"))
        assert driver.find_element(By.CSS_SELECTOR, ".user").text.endswith("hello page")
        pieces = int(reply.get_attribute("data-pieces"))
        text = driver.execute_script("return arguments[0].textContent", reply)
        assert pieces >= 2 and text, f"the reply should arrive in pieces: {pieces} pieces, text {text!r}"
        assert history(server)[1]["content"] == text, "the page shows the reply the server kept"
        driver.find_element(By.ID, "reset").click()
        wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, ".message"))
        deadline = time.monotonic() + 10
        while history(server) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert history(server) == [], "Reset on the page should clear the server's conversation"
