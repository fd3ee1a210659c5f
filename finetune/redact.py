"""Redaction of personal data and secrets before any text leaves the machine or enters a dataset:
e-mail addresses, phone numbers and key-like strings, each replaced by a typed placeholder."""

from __future__ import annotations

import re
from collections import Counter

# Order matters: keys first (a key can contain digit runs that look like a phone number), then
# e-mail addresses, then phone numbers.
_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "key",
        re.compile(
            r"\b(?:sk|pk|rk)-(?:[A-Za-z0-9_]+-)*[A-Za-z0-9_]{16,}"  # OpenAI-style and similar
            r"|\bAKIA[0-9A-Z]{16}\b"  # AWS access key id
            r"|\bgh[pousr]_[A-Za-z0-9]{30,}\b"  # GitHub tokens
            r"|\bxox[abposr]-[A-Za-z0-9-]{10,}"  # Slack tokens
            r"|\bAIza[0-9A-Za-z_\-]{35}"  # Google API keys
            r"|\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"  # JWT
            r"|\b[0-9a-fA-F]{32,}\b"  # long hex secrets
            # long base64-like tokens: upper and lower case letters and digits mixed
            r"|(?<![A-Za-z0-9+/_-])(?=[A-Za-z0-9+/_-]*\d)(?=[A-Za-z0-9+/_-]*[a-z])"
            r"(?=[A-Za-z0-9+/_-]*[A-Z])[A-Za-z0-9+/_-]{32,}={0,2}(?![A-Za-z0-9])"
        ),
    ),
    (
        "key",
        # `password: hunter2`, `api_key=...`, `token = ...`: the value after a secret's name.
        re.compile(r"(?i)(\b(?:password|passwd|api[_-]?key|secret|token)\b\s*[:=]\s*)(\S{6,})"),
    ),
    ("email", re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")),
    (
        "phone",
        re.compile(
            r"(?<![\w.])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?)?\d{2,4}(?:[\s.-]\d{2,4}){1,4}"
            r"(?![\w.])"
            r"|(?<![\w.])\+\d{8,15}(?!\w)"
        ),
    ),
)
PLACEHOLDERS = {"key": "[REDACTED_KEY]", "email": "[REDACTED_EMAIL]", "phone": "[REDACTED_PHONE]"}


def _looks_like_phone(match: str) -> bool:
    digits = sum(c.isdigit() for c in match)
    groups = re.findall(r"\d+", match)
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", match.strip()):
        return False  # an ISO date
    if all(len(g) == 4 and 1800 <= int(g) <= 2199 for g in groups):
        return False  # a list of years
    # With a country code 8 digits make a number; otherwise at least 9 (short digit runs are
    # counts, versions and page numbers).
    return digits >= (8 if match.lstrip().startswith(("+", "(")) else 9)


def redact(text: str) -> tuple[str, dict[str, int]]:
    """`text` with e-mail addresses, phone numbers and key-like strings replaced by
    `[REDACTED_EMAIL]`, `[REDACTED_PHONE]`, `[REDACTED_KEY]`; and how many of each were replaced."""
    counts: Counter[str] = Counter()
    for kind, pattern in _PATTERNS:
        if pattern.groups == 2:  # `name: value` secrets keep the name and the separator

            def keep_name(m: re.Match[str], kind: str = kind) -> str:
                if m.group(2).startswith("[REDACTED"):
                    return m.group(0)
                counts[kind] += 1
                return m.group(1) + PLACEHOLDERS[kind]

            text = pattern.sub(keep_name, text)
            continue

        def replace(m: re.Match[str], kind: str = kind) -> str:
            if kind == "phone" and not _looks_like_phone(m.group(0)):
                return m.group(0)
            counts[kind] += 1
            return PLACEHOLDERS[kind]

        text = pattern.sub(replace, text)
    return text, dict(counts)
