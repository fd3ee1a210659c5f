"""A fake OpenAI-compatible teacher served over real HTTP on loopback (a thread in the test or
benchmark process): chat completions in the official shape, answering the structured-output
schema it is asked for (a rubric grade or an answer). Scripted by the words of the question:
`[low]` grades 2, `[malformed]` always replies prose, `[malformed-once]` replies prose the first
time, `[refuse]` gets a 400. Test doubles live here only."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.loopback import LoopbackServer, send_json

_QUESTION = re.compile(r"Question: (.*?)(?:\n|$)")


class TeacherServer(LoopbackServer):
    """Start with `with TeacherServer() as server:`; `server.base_url` ends in /v1."""

    def __init__(self, model: str = "teacher-model"):
        super().__init__()
        self.model = model
        self.calls = 0
        self.seen: set[str] = set()
        self.requests: list[dict[str, Any]] = []
        self.keep_requests = True
        self._lock = threading.Lock()

    def post(self, handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        send_json(handler, *self.reply(body))

    def reply(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.calls += 1
            if self.keep_requests:
                self.requests.append(body)
        text = "\n".join(str(m.get("content") or "") for m in body.get("messages", []))
        found = _QUESTION.findall(text)
        question = found[-1] if found else ""
        schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("name")
        if "[refuse]" in question:
            return 400, {
                "error": {
                    "message": "This request was flagged by the content filter.",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "content_filter",
                }
            }
        malformed = "[malformed]" in question
        if "[malformed-once]" in question:
            key = f"{schema}:{question}"
            with self._lock:
                malformed = key not in self.seen
                self.seen.add(key)
        if malformed:
            content = "Sure! The answer looks pretty good to me."
        elif schema == "answer_grade":
            score = 2 if "[low]" in question else 5
            content = json.dumps(
                {
                    "faithfulness": score,
                    "correctness": score,
                    "helpfulness": max(score, 3),
                    "rationale": "Supported by passage [1]." if score > 2 else "Not supported.",
                }
            )
        else:
            content = json.dumps({"answer": f"Teacher answer to: {question.strip()} [1]"})
        return 200, {
            "id": f"chatcmpl-{self.calls}",
            "object": "chat.completion",
            "created": 1700000000,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": None},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 50, "completion_tokens": 20, "total_tokens": 70},
        }


def main() -> None:
    """Serve the fake teacher until killed, printing its base URL first (for benchmarks)."""
    import time

    server = TeacherServer()
    server.keep_requests = False
    with server:
        print(server.base_url, flush=True)
        while True:
            time.sleep(3600)


if __name__ == "__main__":
    main()
