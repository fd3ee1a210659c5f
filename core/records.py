"""Records that cross package or process boundaries: a retrieved source, a logged turn, feedback,
and the card of a training dataset."""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator


class SourceRef(BaseModel):
    """One retrieved passage as shown to the user and logged with the turn."""

    chunk_id: str
    source: str = Field(description="Source path or dataset name.")
    file_name: str | None = None
    page: int | None = None
    title: str | None = None
    heading_path: str | None = Field(
        default=None, description="`Title > Section > Subsection` the passage sits under."
    )
    score: float = Field(description="Cosine similarity to the (condensed) question.")
    rare_words: bool = Field(
        default=False,
        description="Found holding a word of the question that few passages hold (an exact "
        "name, an option): a keyword match, whatever its similarity.",
    )
    text: str
    quotes: list[str] = Field(
        default_factory=list,
        description="Sentences of this passage the answer quoted (extractive answers): verbatim, "
        "runs of whitespace as one space.",
    )


class TokenUsage(BaseModel):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class Feedback(BaseModel):
    rating: Literal["up", "down"]
    comment: str | None = None
    created_at: datetime | None = None


class Turn(BaseModel):
    """A logged question and answer; field names follow Ragas where they overlap."""

    id: int | None = None
    session_id: str
    user_input: str = Field(description="The question as the user asked it.")
    condensed_question: str | None = Field(
        default=None, description="The question rewritten with the chat history for retrieval."
    )
    retrieved_contexts: list[SourceRef] = Field(default_factory=list)
    response: str | None = None
    model_id: str | None = None
    provider: str | None = None
    prompt_version: str | None = None
    latency_ms: float | None = None
    usage: TokenUsage = Field(default_factory=TokenUsage)
    status: Literal["pending", "answered", "failed"] = "pending"
    error: str | None = None
    chat_version_id: int | None = Field(
        default=None, description="Registry id of the chat model version that answered."
    )
    embedding_version_id: int | None = Field(
        default=None, description="Registry id of the embedding model version that retrieved."
    )
    reranker_version_id: int | None = Field(
        default=None, description="Registry id of the reranker version that re-ranked, if any."
    )
    created_at: datetime | None = None
    answered_at: datetime | None = None
    feedback: Feedback | None = None

    def cited(self) -> list[SourceRef]:
        """The passages the answer cited, in the order it cites them (see cited_contexts); none
        when it cited nothing."""
        return cited_contexts(self.response, self.retrieved_contexts)


_CITE = re.compile(r"\[(\d{1,2})\]")
_QUOTE_CITE = re.compile(r"\[(\d{1,2})\][ \t]*$", re.M)


def cited_contexts(response: str | None, contexts: list[SourceRef]) -> list[SourceRef]:
    """The passages an answer cited: those it quoted (extractive answers), else those its `[n]`
    markers name, each once, in the order first cited. An extractive answer leads with the
    passage holding its best quote, which need not be the first retrieved: that one comes first
    (a training recipe that takes one positive per question takes it)."""
    quoted = [c for c in contexts if c.quotes]
    # An extracted answer marks each quote at the end of its line; a number in brackets inside
    # a quote (a footnote) is the document's, not a citation.
    marked = _marked(_QUOTE_CITE if quoted else _CITE, response or "", contexts)
    if quoted:
        order = {c.chunk_id: n for n, c in enumerate(marked)}
        return sorted(quoted, key=lambda c: order.get(c.chunk_id, len(order)))
    return marked


def _marked(pattern: re.Pattern[str], response: str, contexts: list[SourceRef]) -> list[SourceRef]:
    marked: list[SourceRef] = []
    for n in pattern.findall(response):
        i = int(n) - 1
        if 0 <= i < len(contexts) and all(c.chunk_id != contexts[i].chunk_id for c in marked):
            marked.append(contexts[i])
    return marked


class DatasetCard(BaseModel):
    """Where a training dataset came from and what was kept, for either kind: chat examples (from
    the chat log or a `datasets` source, graded by a teacher) or embedding pairs (question ->
    passage). Enough to trace a model version back to the turns and files that trained it."""

    kind: Literal["chat", "embedding"] = "chat"
    name: str
    source: str = Field(
        default="chatlog", description="`chatlog`, or the `datasets` source it was mapped from."
    )
    mode: str = Field(default="none", description="Teacher mode: none, grade, distill, relabel.")
    filters: dict[str, Any] = Field(default_factory=dict)
    teacher_model: str | None = None
    rubric_version: str | None = None
    prompt_version: str | None = None
    seen: int = 0
    kept: int = 0
    dropped: dict[str, int] = Field(
        default_factory=dict, description="What was left out, by reason (turns or pairs)."
    )
    train_examples: int = 0
    validation_examples: int = 0
    preference_pairs: int = 0
    pairs: int = Field(default=0, description="Embedding pairs (question -> passages).")
    by_source: dict[str, int] = Field(
        default_factory=dict, description="Embedding pairs by the source that made them."
    )
    negatives: dict[str, int] = Field(
        default_factory=dict, description="Hard negatives by how they were found."
    )
    inputs: dict[str, Any] = Field(
        default_factory=dict, description="Collection, chat log range, files and their hashes."
    )
    redactions: dict[str, int] = Field(default_factory=dict, description="Redactions by kind.")
    source_turn_ids: list[int] = Field(default_factory=list)
    train_question_keys: list[str] = Field(
        default_factory=list, description="Normalised question hashes (kept out of eval sets)."
    )
    files: dict[str, str] = Field(default_factory=dict, description="Role -> file name.")
    settings: dict[str, Any] = Field(default_factory=dict)
    content_hash: str = Field(default="", description="sha256 of the data files.")
    created_at: datetime | None = None

    @model_validator(mode="before")
    @classmethod
    def _earlier_embedding_cards(cls, data: Any) -> Any:
        # Embedding cards written before the two kinds shared one card.
        if isinstance(data, dict) and "data_sha256" in data:
            data = dict(data)
            data.setdefault("kind", "embedding")
            data.setdefault("content_hash", data.pop("data_sha256"))
            if "skipped" in data:
                data.setdefault("dropped", data.pop("skipped"))
        return data

    def card_hash(self) -> str:
        """sha256 of the card itself (what a model version's provenance points at)."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()
