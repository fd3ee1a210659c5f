"""A fake OpenAI-compatible chat server over real HTTP on loopback (a thread in the test process):
`POST /v1/chat/completions` streams server-sent chunks in the official shape, one word every
`delay_s`, so a test can act while an answer is still arriving; without `stream` it answers in one
reply. Test doubles live here only."""

from __future__ import annotations

import json
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.loopback import LoopbackServer, send_json

ANSWER = " ".join(f"word{i}" for i in range(60)) + " [1]"


class ChatServer(LoopbackServer):
    """Start with `with ChatServer(delay_s=0.2) as server:`; `server.base_url` ends in /v1."""

    protocol_version = "HTTP/1.0"  # a streamed body ends when the connection closes

    def __init__(self, delay_s: float = 0.0, model: str = "fake-chat"):
        super().__init__()
        self.delay_s = delay_s
        self.model = model
        self.streams_cut = 0  # streams whose reader went away before the end

    def post(self, handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        if not handler.path.endswith("/chat/completions"):
            return send_json(handler, 404, {"error": {"message": "not found", "type": "none"}})
        if not body.get("stream"):
            return send_json(handler, 200, self.completion())
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.end_headers()
        try:
            for chunk in self.chunks():
                handler.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                handler.wfile.flush()
                time.sleep(self.delay_s)
            handler.wfile.write(b"data: [DONE]\n\n")
        except (BrokenPipeError, ConnectionResetError):
            self.streams_cut += 1

    def completion(self) -> dict[str, Any]:
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 1700000000,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": ANSWER},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 50, "completion_tokens": 61, "total_tokens": 111},
        }

    def chunks(self) -> list[dict[str, Any]]:
        words = ANSWER.split(" ")
        out = []
        for i, word in enumerate(words):
            delta = {"content": (" " if i else "") + word}
            if not i:
                delta["role"] = "assistant"
            out.append(self._chunk(delta, None))
        out.append(self._chunk({}, "stop"))
        return out

    def _chunk(self, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
