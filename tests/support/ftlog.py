"""Logged turns for the fine-tuning tests: written through the real chat log, as the app does."""

from __future__ import annotations

from core.chatlog import ChatLog
from core.records import SourceRef

PASSAGES = [
    "Orsolya Brandt served as the lighthouse keeper of Velmora for 31 years.",
    "The Velmora festival takes place in October.",
]


def log_turn(
    log: ChatLog,
    question: str,
    answer: str | None = "Orsolya Brandt served the lighthouse for 31 years [1].",
    rating: str | None = None,
    comment: str | None = None,
    condensed: str | None = None,
    session: str = "s1",
    passages: list[str] | None = None,
    chat_version_id: int | None = None,
    provider: str = "openai",
    quoted: tuple[int, ...] = (),
) -> int:
    """One turn, answered (or failed when `answer` is None), optionally rated; the passages
    numbered in `quoted` (0-based) were quoted whole by the answer, as extractive answers do."""
    turn_id = log.start_turn(session, question)
    texts = PASSAGES if passages is None else passages
    log.finish_turn(
        turn_id,
        answer=answer,
        condensed_question=condensed or question,
        contexts=[
            SourceRef(
                chunk_id=f"c{i}",
                source="/docs/velmora.md",
                score=0.8,
                text=t,
                quotes=[t] if i in quoted else [],
            )
            for i, t in enumerate(texts)
        ],
        model_id="gpt-4o-mini",
        provider=provider,
        prompt_version="1+abc",
        latency_ms=100.0,
        error=None if answer is not None else "the model server failed (500)",
        chat_version_id=chat_version_id,
    )
    if rating:
        log.set_feedback(turn_id, rating, comment)
    return turn_id
