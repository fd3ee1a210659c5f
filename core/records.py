"""Records that cross package or process boundaries: a retrieved source, a logged turn, feedback."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


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
    created_at: datetime | None = None
    answered_at: datetime | None = None
    feedback: Feedback | None = None
