"""Checks a training file before anything is uploaded or trained, and estimates its cost: pure
functions over the file's lines. Every format error is reported by type with its line number;
token counts are held against the base model's limit; fewer than 10 examples are refused."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

MIN_EXAMPLES = 10
ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
EXAMPLE_KEYS = {"messages", "tools", "parallel_tool_calls", "functions"}
MESSAGE_KEYS = {"role", "content", "name", "weight", "tool_calls", "function_call", "tool_call_id"}
DPO_KEYS = {"input", "preferred_output", "non_preferred_output"}
# Tokens the chat format adds per message and per example (OpenAI's counting recipe).
PER_MESSAGE, PER_EXAMPLE = 4, 3

Method = Literal["supervised", "dpo"]
CountTokens = Callable[[str], int]


class FormatError(BaseModel):
    line: int = Field(description="1-based line number in the file; 0 for the file as a whole.")
    kind: str = Field(
        description="invalid_json, not_an_object, missing_messages, bad_messages, bad_role, "
        "missing_content, unknown_key, no_assistant, bad_weight, missing_input, "
        "missing_preferred_output, missing_non_preferred_output, too_few_examples"
    )
    message: str


class ValidationReport(BaseModel):
    method: Method
    examples: int = 0
    valid_examples: int = 0
    errors: list[FormatError] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    token_limit: int
    total_tokens: int = 0
    billed_tokens: int = Field(
        default=0, description="Tokens billed per epoch: each example counted up to the limit."
    )
    max_tokens: int = 0
    over_limit: int = Field(default=0, description="Examples truncated in training.")
    no_system: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors

    def errors_by_kind(self) -> dict[str, int]:
        return dict(Counter(e.kind for e in self.errors))

    def summary(self) -> str:
        if self.ok:
            head = f"valid: {self.examples} examples"
        else:
            kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.errors_by_kind().items()))
            head = f"INVALID: {len(self.errors)} errors ({kinds}) in {self.examples} examples"
        return f"{head}, {self.billed_tokens} billed tokens per epoch" + (
            f", {len(self.warnings)} warnings" if self.warnings else ""
        )


class CostEstimate(BaseModel):
    epochs: int
    billed_tokens_per_epoch: int
    training_tokens: int = Field(description="epochs x billed tokens")
    price_per_million: float | None
    usd: float | None = Field(description="None when the price table has no entry for the model.")

    def summary(self) -> str:
        cost = "price unknown" if self.usd is None else f"about ${self.usd:,.2f}"
        return f"{self.training_tokens:,} training tokens ({self.epochs} epochs): {cost}"


def _content_text(content: Any) -> str | None:
    """The text of a message's content (a string, or a list of text parts); None if unusable."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict)]
        if parts and all(isinstance(p, str) for p in parts):
            return "".join(parts)
    return None


def _check_messages(
    messages: Any, line: int, errors: list[FormatError], need_assistant: bool, where: str
) -> list[str] | None:
    """Errors of one messages list; the texts to count tokens of when it is usable."""
    if not isinstance(messages, list) or not messages:
        errors.append(
            FormatError(
                line=line,
                kind="bad_messages",
                message=f"{where} must be a non-empty list of messages",
            )
        )
        return None
    texts: list[str] = []
    has_assistant = False
    good = True
    for n, message in enumerate(messages, start=1):
        if not isinstance(message, dict):
            errors.append(
                FormatError(
                    line=line, kind="bad_messages", message=f"{where} item {n} is not an object"
                )
            )
            good = False
            continue
        role = message.get("role")
        if role not in ROLES:
            errors.append(
                FormatError(
                    line=line,
                    kind="bad_role",
                    message=f"{where} item {n} has "
                    f"role {role!r}; use one of {', '.join(sorted(ROLES))}",
                )
            )
            good = False
        unknown = set(message) - MESSAGE_KEYS
        if unknown:
            errors.append(
                FormatError(
                    line=line,
                    kind="unknown_key",
                    message=f"{where} item {n} has unknown keys: {', '.join(sorted(unknown))}",
                )
            )
            good = False
        text = _content_text(message.get("content"))
        if (
            (text is None or not text.strip())
            and not message.get("tool_calls")
            and not message.get("function_call")
        ):
            errors.append(
                FormatError(
                    line=line,
                    kind="missing_content",
                    message=f"{where} item {n} ({role}) has no text content",
                )
            )
            good = False
        if "weight" in message:
            weight = message["weight"]
            if role != "assistant" or isinstance(weight, bool) or weight not in (0, 1):
                errors.append(
                    FormatError(
                        line=line,
                        kind="bad_weight",
                        message=f"{where} item {n}"
                        f": weight must be 0 or 1, on assistant messages only",
                    )
                )
                good = False
        if role == "assistant":
            has_assistant = True
        texts.append(text or "")
    if need_assistant and not has_assistant:
        errors.append(
            FormatError(
                line=line,
                kind="no_assistant",
                message=f"{where} has no assistant message to learn from",
            )
        )
        good = False
    return texts if good else None


def validate_lines(
    lines: Iterable[str],
    count_tokens: CountTokens,
    token_limit: int,
    method: Method = "supervised",
    min_examples: int = MIN_EXAMPLES,
) -> ValidationReport:
    """Check the lines of a JSONL training file (chat format for `supervised`, OpenAI's
    preference format for `dpo`). Pure: the token counter is passed in."""
    report = ValidationReport(method=method, token_limit=token_limit)
    errors = report.errors
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        report.examples += 1
        try:
            example = json.loads(line)
        except json.JSONDecodeError as exc:
            errors.append(FormatError(line=line_no, kind="invalid_json", message=exc.msg))
            continue
        if not isinstance(example, dict):
            errors.append(
                FormatError(
                    line=line_no, kind="not_an_object", message="each line must be one JSON object"
                )
            )
            continue
        texts: list[str] | None = None
        has_system = False
        if method == "supervised":
            unknown = set(example) - EXAMPLE_KEYS
            if unknown:
                errors.append(
                    FormatError(
                        line=line_no,
                        kind="unknown_key",
                        message=f"unknown keys: {', '.join(sorted(unknown))}",
                    )
                )
            if "messages" not in example:
                errors.append(
                    FormatError(line=line_no, kind="missing_messages", message="no `messages` list")
                )
                continue
            messages = example["messages"]
            texts = _check_messages(messages, line_no, errors, True, "messages")
            has_system = isinstance(messages, list) and any(
                isinstance(m, dict) and m.get("role") in ("system", "developer") for m in messages
            )
        else:
            unknown = set(example) - DPO_KEYS
            if unknown:
                errors.append(
                    FormatError(
                        line=line_no,
                        kind="unknown_key",
                        message=f"unknown keys: {', '.join(sorted(unknown))}",
                    )
                )
            prompt = example.get("input")
            if not isinstance(prompt, dict) or "messages" not in prompt:
                errors.append(
                    FormatError(
                        line=line_no,
                        kind="missing_input",
                        message="no `input` object with `messages`",
                    )
                )
                continue
            texts = _check_messages(prompt["messages"], line_no, errors, False, "input.messages")
            for key in ("preferred_output", "non_preferred_output"):
                if key not in example:
                    errors.append(
                        FormatError(line=line_no, kind=f"missing_{key}", message=f"no `{key}`")
                    )
                    texts = None
                    continue
                out = _check_messages(example[key], line_no, errors, True, key)
                texts = None if out is None or texts is None else texts + out
            messages = prompt["messages"]
            has_system = isinstance(messages, list) and any(
                isinstance(m, dict) and m.get("role") in ("system", "developer") for m in messages
            )
        if texts is None:
            continue
        report.valid_examples += 1
        if not has_system:
            report.no_system += 1
        tokens = PER_EXAMPLE + sum(PER_MESSAGE + count_tokens(t) for t in texts)
        report.total_tokens += tokens
        report.billed_tokens += min(tokens, token_limit)
        report.max_tokens = max(report.max_tokens, tokens)
        if tokens > token_limit:
            report.over_limit += 1
    if report.valid_examples < min_examples:
        errors.append(
            FormatError(
                line=0,
                kind="too_few_examples",
                message=f"{report.valid_examples} usable examples; at least {min_examples} are "
                "needed",
            )
        )
    if report.no_system:
        report.warnings.append(
            f"{report.no_system} examples have no system message (the app always sends one)"
        )
    if report.over_limit:
        report.warnings.append(
            f"{report.over_limit} examples exceed {token_limit} tokens and will be truncated in "
            "training"
        )
    return report


def validate_file(
    path: Path, count_tokens: CountTokens, token_limit: int, method: Method = "supervised"
) -> ValidationReport:
    """validate_lines over a file, read line by line."""
    with path.open(encoding="utf-8", errors="replace") as f:
        return validate_lines(f, count_tokens, token_limit, method)


def lookup(table: dict[str, Any], model: str) -> Any:
    """The entry of the longest key that `model` starts with (fine-tuned names `ft:<base>:...`
    are looked up by their base); None if none."""
    name = model.removeprefix("ft:")
    best = max((k for k in table if name.startswith(k)), key=len, default=None)
    return table[best] if best is not None else None


def estimate_cost(
    report: ValidationReport, epochs: int, price_per_million: float | None
) -> CostEstimate:
    """epochs x billed tokens x price per million tokens."""
    training = epochs * report.billed_tokens
    usd = None if price_per_million is None else training * price_per_million / 1_000_000
    return CostEstimate(
        epochs=epochs,
        billed_tokens_per_epoch=report.billed_tokens,
        training_tokens=training,
        price_per_million=price_per_million,
        usd=usd,
    )


def openai_token_counter() -> CountTokens:
    """Token counts for OpenAI models: the cl100k_base encoding when it is on this machine
    (llama-index ships it), else about four characters per token. Never downloads anything."""
    try:
        import tiktoken
        from llama_index.core import utils as li_utils

        cache = Path(li_utils.__file__).parent / "_static" / "tiktoken_cache"
        os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(cache))
        encoding = tiktoken.get_encoding("cl100k_base")
        return lambda text: len(encoding.encode(text, disallowed_special=()))
    except Exception:  # no cached encoding: an estimate is what this is for anyway
        return lambda text: max(1, (len(text) + 3) // 4)


def hf_token_counter(model_dir: str) -> CountTokens:
    """Token counts with a local model's own tokenizer."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])
