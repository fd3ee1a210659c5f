"""An HTTP-level fake of an OpenAI-compatible judge server for respx: it reads the JSON schema that
the structured-output client puts in the prompt and replies with a valid instance (official chat
completion shape, with usage), or with a malformed reply, or with an API error status."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.support.fakes import completion

SCHEMA_MARK = "json_schema"


def _schema(request: httpx.Request) -> dict[str, Any] | None:
    body = json.loads(request.content)
    for message in body.get("messages", []):
        content = message.get("content")
        text = content if isinstance(content, str) else json.dumps(content)
        at = text.find(SCHEMA_MARK)
        if at < 0:
            continue
        start = text.find("{", at)
        schema, _ = json.JSONDecoder().raw_decode(text[start:])
        return schema
    return None


def instance(schema: dict[str, Any], defs: dict[str, Any] | None = None) -> Any:
    """A valid value for a JSON schema: one item per list, true verdicts, short strings."""
    defs = defs if defs is not None else schema.get("$defs", {})
    if "$ref" in schema:
        return instance(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            options = [o for o in schema[key] if o.get("type") != "null"]
            return instance(options[0], defs)
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        return {name: instance(sub, defs) for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return [instance(schema.get("items", {}), defs)]
    if kind == "integer":
        return 1
    if kind == "number":
        return 1.0
    if kind == "boolean":
        return True
    if "enum" in schema:
        return schema["enum"][0]
    return "The statement is supported by the context."


def judge(malformed_when: str | None = None, model: str = "judge-model"):
    """A respx side effect. Requests that mention `malformed_when` get prose, not JSON (every
    time, so the client's re-asking does not help)."""
    calls = {"n": 0}

    def reply(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if malformed_when and malformed_when in request.content.decode():
            return completion("I think the answer is mostly fine, honestly.", model)
        schema = _schema(request)
        return completion(json.dumps(instance(schema) if schema else {}), model)

    reply.calls = calls  # type: ignore[attr-defined]
    return reply
