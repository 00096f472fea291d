"""The chat page of python -m minigpt.chat --web: one local page, replies streamed as they are generated.

    python -m minigpt.chat --model_name_or_path out/sft --web [--port 8000]
    -> open http://127.0.0.1:8000/

A server of the standard library (http.server.ThreadingHTTPServer) on 127.0.0.1 only, never on a
public address. Routes:

    GET  /          the page (HTML + a little JavaScript, nothing fetched from elsewhere)
    POST /chat      {"message": "..."} -> text/event-stream: one server-sent event per piece of text,
                    `data: {"text": "..."}`, then `event: done` (or `event: error` with a message)
    POST /reset     forget the conversation (the page's Reset button, or typing /reset)
    GET  /history   the conversation so far, as JSON turns

The page reads the stream with fetch() and appends each piece to the reply as it arrives. The
conversation lives in the server (one conversation: this is a local, single-user page), in
minigpt.chat's Conversation, so old turns are dropped the same way as in the terminal; one reply
is generated at a time (a lock). The text pieces come from stream_pieces, the one place that
asks the model for tokens.
"""
from __future__ import annotations

import errno
import json
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import torch

from common.errors import UserError
from minigpt.chat import Conversation, stream_reply

HOST = "127.0.0.1"


def stream_pieces(model, tokenizer, prompt: list[int], settings: dict, generator, write: Callable[[str], None]) -> str:
    """Generate the reply to `prompt` (ids), calling write(piece) for each new piece of text; returns the
    whole reply. The one function that produces the tokens of the page: minigpt.chat.stream_reply, which
    streams through generate's streamer (common/generation/streamers.py)."""
    reply = stream_reply(model, tokenizer, prompt, settings["max_new_tokens"], settings["do_sample"],
                         settings["temperature"], settings["top_k"], settings["top_p"], generator, write)
    return tokenizer.decode(reply, skip_special_tokens=True)


class ChatSession:
    """The model, its settings and the one conversation the page talks in."""

    def __init__(self, model, tokenizer, settings: dict, system=None, seed=None):
        self.model, self.tokenizer, self.settings = model, tokenizer, settings
        self.conversation = Conversation(tokenizer, model.config.block_size, settings["max_new_tokens"], system)
        self.generator = torch.Generator(device=next(model.parameters()).device)
        if seed is not None:
            self.generator.manual_seed(seed)
        self.lock = threading.Lock()

    def reply(self, message: str, write: Callable[[str], None]) -> None:
        with self.lock:
            self.conversation.turns.append({"role": "user", "content": message})
            prompt, _ = self.conversation.prompt_ids()  # a too-long message: UserError, the turn removed
            text = stream_pieces(self.model, self.tokenizer, prompt, self.settings, self.generator, write)
            self.conversation.turns.append({"role": "assistant", "content": text})

    def reset(self) -> None:
        with self.lock:
            self.conversation.turns.clear()


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>minigpt chat</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem; }
#log { border: 1px solid #ccc; border-radius: 6px; padding: .5rem; min-height: 12rem; }
.message { margin: .4rem 0; white-space: pre-wrap; }
.user { color: #114; } .user::before { content: "you: "; font-weight: bold; }
.assistant { color: #141; } .assistant::before { content: "assistant: "; font-weight: bold; }
.error { color: #a00; }
form { display: flex; gap: .5rem; margin-top: .6rem; } #input { flex: 1; padding: .4rem; }
</style></head>
<body>
<h1>minigpt chat</h1>
<p>__MODEL__ &middot; <span id="status">ready</span></p>
<div id="log"></div>
<form id="form"><input id="input" autocomplete="off" placeholder="Type a message (/reset starts over)">
<button id="send" type="submit">Send</button><button id="reset" type="button">Reset</button></form>
<script>
const log = document.getElementById("log"), input = document.getElementById("input");
const status = document.getElementById("status");
function add(cls, text) {
  const div = document.createElement("div");
  div.className = "message " + cls; div.textContent = text; log.appendChild(div); return div;
}
async function reset() {
  await fetch("/reset", {method: "POST"}); log.innerHTML = ""; status.textContent = "ready";
}
async function send(text) {
  add("user", text);
  const reply = add("assistant", ""); reply.dataset.pieces = "0";
  status.textContent = "writing...";
  const response = await fetch("/chat", {method: "POST", headers: {"Content-Type": "application/json"},
                                         body: JSON.stringify({message: text})});
  const reader = response.body.getReader(), decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, {stream: true});
    let cut;
    while ((cut = buffer.indexOf("\\n\\n")) >= 0) {
      const block = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
      let event = "message", data = "";
      for (const line of block.split("\\n")) {
        if (line.startsWith("event: ")) event = line.slice(7);
        if (line.startsWith("data: ")) data += line.slice(6);
      }
      const payload = data ? JSON.parse(data) : {};
      if (event === "message") {
        reply.textContent += payload.text;
        reply.dataset.pieces = String(Number(reply.dataset.pieces) + 1);
      } else if (event === "error") {
        reply.classList.add("error"); reply.textContent = payload.error;
      }
    }
  }
  reply.dataset.done = "1"; status.textContent = "ready";
}
document.getElementById("form").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = input.value.trim(); input.value = "";
  if (!text) return;
  if (text === "/reset") reset(); else send(text);
});
document.getElementById("reset").addEventListener("click", reset);
</script></body></html>
"""


def make_handler(session: ChatSession, model_name: str):
    page = PAGE.replace("__MODEL__", model_name.replace("&", "&amp;").replace("<", "&lt;")).encode("utf-8")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # quiet: the terminal shows the chat's own lines
            pass

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, value, status: int = HTTPStatus.OK) -> None:
            self._send(status, json.dumps(value).encode("utf-8"), "application/json")

        def do_GET(self):
            if self.path == "/":
                self._send(HTTPStatus.OK, page, "text/html; charset=utf-8")
            elif self.path == "/history":
                self._json(session.conversation.turns)
            else:
                self._json({"error": f"no page {self.path}"}, HTTPStatus.NOT_FOUND)

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if self.path == "/reset":
                session.reset()
                self._json({"ok": True})
                return
            if self.path != "/chat":
                self._json({"error": f"no route {self.path}"}, HTTPStatus.NOT_FOUND)
                return
            try:
                message = json.loads(body or b"{}").get("message")
            except (ValueError, AttributeError):
                message = None
            if not isinstance(message, str) or not message.strip():
                self._json({"error": 'send {"message": "some text"}'}, HTTPStatus.BAD_REQUEST)
                return
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True

            def event(name: str, value: dict) -> None:
                head = "" if name == "message" else f"event: {name}\n"
                self.wfile.write(f"{head}data: {json.dumps(value, ensure_ascii=False)}\n\n".encode("utf-8"))
                self.wfile.flush()

            try:
                session.reply(message, lambda piece: event("message", {"text": piece}))
                event("done", {})
            except UserError as e:
                event("error", {"error": str(e)})
            except (BrokenPipeError, ConnectionResetError):
                pass  # the page went away mid-reply

    return Handler


def serve(model, tokenizer, settings: dict, port: int, model_name: str, system=None, seed=None,
          ready: Callable[[ThreadingHTTPServer], None] = None) -> int:
    """Serve the page on 127.0.0.1:port until Ctrl-C. A port in use is a UserError (one line)."""
    session = ChatSession(model, tokenizer, settings, system, seed)
    try:
        server = ThreadingHTTPServer((HOST, port), make_handler(session, model_name))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise UserError(f"port {port} on {HOST} is already in use (another chat or server?); "
                            "pick another with --port, e.g. --port 8001") from None
        raise
    server.daemon_threads = True
    print(f"chat page for {model_name} at http://{HOST}:{server.server_address[1]}/ (Ctrl-C stops)", flush=True)
    if ready is not None:
        ready(server)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("\nbye", file=sys.stderr)
    finally:
        server.server_close()
    return 0
