"""The pure parts of dataset building: redaction of personal data and keys, the chat-format
validator with its token counts and warnings, and the cost estimate."""

from __future__ import annotations

import json

import pytest

from finetune.redact import redact
from finetune.validate import estimate_cost, lookup, validate_lines
from tests.support.examples import good, words

# -- redaction -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected", "counts"),
    [
        (
            "write to jane.doe+x@example.co.uk today",
            "write to [REDACTED_EMAIL] today",
            {"email": 1},
        ),
        ("call +1 (555) 123-4567", "call [REDACTED_PHONE]", {"phone": 1}),
        (
            "or 020 7946 0958, or +442079460958",
            "or [REDACTED_PHONE], or [REDACTED_PHONE]",
            {"phone": 2},
        ),
        ("key sk-proj-abcdefghijklmnopqrstuvwx1234 here", "key [REDACTED_KEY] here", {"key": 1}),
        ("AKIAIOSFODNN7EXAMPLE", "[REDACTED_KEY]", {"key": 1}),
        ("ghp_abcdefghijklmnopqrstuvwxyz0123456789", "[REDACTED_KEY]", {"key": 1}),
        ("password: hunter22", "password: [REDACTED_KEY]", {"key": 1}),
        ("api_key=abcdef123456", "api_key=[REDACTED_KEY]", {"key": 1}),
        ("sha 3f786850e387550fdab836ed7e6dc881de23001b", "sha [REDACTED_KEY]", {"key": 1}),
    ],
)
def test_redaction_replaces_personal_data_and_keys(text, expected, counts):
    assert redact(text) == (expected, counts)


@pytest.mark.parametrize(
    "text",
    [
        "The festival is on 2026-10-12 and ran in 1998 2003.",
        "PostgreSQL 15.4 listens on port 5432; see page 345 of /usr/share/doc/pg-15/index.html",
        "1,234,567 visitors in 12 days",
    ],
)
def test_redaction_leaves_ordinary_text_alone(text):
    assert redact(text) == (text, {})


# -- validator and cost ----------------------------------------------------------------------------


def test_validator_reports_every_error_type_with_its_line():
    lines = [
        good(1),
        "{not json",
        json.dumps({"prompt": "x"}),
        json.dumps(
            {
                "messages": [
                    {"role": "robot", "content": "hi"},
                    {"role": "assistant", "content": "a"},
                ]
            }
        ),
        json.dumps({"messages": [{"role": "user"}, {"role": "assistant", "content": "a"}]}),
        json.dumps({"messages": [{"role": "user", "content": "q"}], "extra": 1}),
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a", "weight": 2},
                ]
            }
        ),
        json.dumps({"messages": []}),
        json.dumps([1, 2]),
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "q", "mood": "x"},
                    {"role": "assistant", "content": "a"},
                ]
            }
        ),
    ]
    report = validate_lines(lines, words, token_limit=100)
    found = {(e.line, e.kind) for e in report.errors}
    assert found == {
        (2, "invalid_json"),
        (3, "unknown_key"),
        (3, "missing_messages"),
        (4, "bad_role"),
        (5, "missing_content"),
        (6, "unknown_key"),
        (6, "no_assistant"),
        (7, "bad_weight"),
        (8, "bad_messages"),
        (9, "not_an_object"),
        (10, "unknown_key"),
        (0, "too_few_examples"),
    }
    assert not report.ok and report.examples == 10
    assert "INVALID" in report.summary()


def test_validator_counts_tokens_warns_and_needs_ten_examples():
    long = json.dumps(
        {
            "messages": [
                {"role": "user", "content": "w " * 60},
                {"role": "assistant", "content": "a"},
            ]
        }
    )
    report = validate_lines([good(i) for i in range(9)] + [long], words, token_limit=50)
    assert report.ok, report.errors
    # good(): 3 + (4+2) + (4+2) + (4+2) = 21 tokens; long: 3 + (4+60) + (4+1) = 72, billed 50
    assert report.total_tokens == 9 * 21 + 72
    assert report.billed_tokens == 9 * 21 + 50 and report.max_tokens == 72
    assert report.over_limit == 1 and report.no_system == 1
    assert any("truncated" in w for w in report.warnings)
    assert any("no system message" in w for w in report.warnings)
    few = validate_lines([good(i) for i in range(9)], words, token_limit=50)
    assert [e.kind for e in few.errors] == ["too_few_examples"]


def test_validator_checks_openai_preference_pairs():
    pair = {
        "input": {"messages": [{"role": "user", "content": "q"}]},
        "preferred_output": [{"role": "assistant", "content": "good"}],
        "non_preferred_output": [{"role": "assistant", "content": "bad"}],
    }
    broken = dict(pair)
    del broken["non_preferred_output"]
    report = validate_lines(
        [json.dumps(pair)] * 10 + [json.dumps(broken), json.dumps({"preferred_output": []})],
        words,
        token_limit=100,
        method="dpo",
    )
    assert {(e.line, e.kind) for e in report.errors} == {
        (11, "missing_non_preferred_output"),
        (12, "missing_input"),
    }


def test_cost_estimate_is_epochs_times_billed_tokens_times_price():
    report = validate_lines([good(i) for i in range(10)], words, token_limit=1000)
    assert report.billed_tokens == 210
    cost = estimate_cost(report, epochs=3, price_per_million=3.0)
    assert cost.training_tokens == 630
    assert cost.usd == pytest.approx(630 * 3.0 / 1_000_000)
    assert estimate_cost(report, 3, None).usd is None
    prices = {"gpt-4.1": 25.0, "gpt-4.1-mini": 5.0}
    assert lookup(prices, "gpt-4.1-mini-2025-04-14") == 5.0  # the longest prefix wins
    assert lookup(prices, "ft:gpt-4.1-2025-04-14:org::abc") == 25.0
    assert lookup(prices, "llama-3") is None


def test_the_default_price_table_knows_the_default_model_by_its_plain_name():
    """The chat model's default name has no date; its price is known all the same."""
    from core.settings import FineTuneSettings, LLMSettings

    prices = FineTuneSettings().price_per_million_tokens
    assert lookup(prices, LLMSettings().model) == 3.0  # gpt-4o-mini
    assert lookup(prices, "gpt-4o-mini-2024-07-18") == 3.0
    assert lookup(prices, "gpt-4o-2024-08-06") == 25.0 and lookup(prices, "gpt-4.1-nano") == 1.5
