"""A fake OpenAI-compatible chat server over real HTTP on loopback (a thread in the test process):
`POST /v1/chat/completions` streams server-sent chunks in the official shape, one word every
`delay_s`, so a test can act while an answer is still arriving; without `stream` it answers in one
reply. Test doubles live here only."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ANSWER = " ".join(f"word{i}" for i in range(60)) + " [1]"


class ChatServer:
    """Start with `with ChatServer(delay_s=0.2) as server:`; `server.base_url` ends in /v1."""

    def __init__(self, delay_s: float = 0.0, model: str = "fake-chat"):
        self.delay_s = delay_s
        self.model = model
        self.requests: list[dict[str, Any]] = []
        self.streams_cut = 0  # streams whose reader went away before the end
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # a streamed body ends when the connection closes

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def setup(self) -> None:
                super().setup()
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                if not self.path.endswith("/chat/completions"):
                    return self._json(404, {"error": {"message": "not found", "type": "none"}})
                if not body.get("stream"):
                    return self._json(200, outer.completion())
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                try:
                    for chunk in outer.chunks():
                        self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                        self.wfile.flush()
                        time.sleep(outer.delay_s)
                    self.wfile.write(b"data: [DONE]\n\n")
                except (BrokenPipeError, ConnectionResetError):
                    outer.streams_cut += 1

            def _json(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> ChatServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

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
