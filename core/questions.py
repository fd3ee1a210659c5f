"""How a question is recognised again: normalised text (case, accents, punctuation, spacing) and
its short hash. Fine-tuning drops repeated questions and lists the keys of the questions it trained
on (`train_question_keys`); evaluation refuses sets that hold any of them."""

from __future__ import annotations

import hashlib
import re
import unicodedata

_PUNCT = re.compile(r"[\W_]+", re.UNICODE)


def normalise_question(text: str) -> str:
    """Lower case ASCII words separated by single spaces."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().casefold()
    return " ".join(_PUNCT.sub(" ", folded).split())


def question_key(text: str) -> str:
    """A question normalised and hashed; what a dataset card lists as `train_question_keys` and
    what overlap is judged on."""
    return hashlib.sha256(normalise_question(text).encode()).hexdigest()[:20]
