"""Where training turns come from: the chat log (streamed, filtered) or the rows of a `datasets`
source mapped to turns by column names."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from core.datasource import load_rows
from core.records import SourceRef, Turn
from finetune.dataset import TurnFilter, in_selection

if TYPE_CHECKING:
    from core.chatlog import ChatLog


# Among repeated questions the first one seen is kept: rated turns come before unrated ones, a
# thumbs-up before a thumbs-down, so a person's judgement always decides which copy counts.
ORDER = {"all": ("up", "down", "none"), "any": ("up", "down")}


def turns_from_log(chatlog: ChatLog, filt: TurnFilter) -> Iterator[Turn]:
    """The logged turns the filters select, streamed from the database: rated up, then rated
    down, then unrated, each in id order."""
    for feedback in ORDER.get(filt.feedback, (filt.feedback,)):
        for turn in chatlog.turns(since=filt.since, feedback=feedback):
            if in_selection(turn, filt):
                yield turn


def turns_from_dataset(
    source: str,
    question_field: str = "question",
    answer_field: str = "correct_answer",
    explanation_field: str | None = "support",
    context_field: str | None = None,
    split: str | None = None,
    limit: int | None = None,
) -> Iterator[Turn]:
    """Rows of a `datasets` source (hub name or local file) as turns: question -> user, answer
    (+ " Explanation: " + explanation) -> assistant, an optional context column -> passages."""
    rows = load_rows(
        source, split, columns=(question_field, answer_field, explanation_field, context_field)
    )
    for i, row in enumerate(rows):
        if limit is not None and i >= limit:
            return
        answer = str(row.get(answer_field) or "").strip()
        explanation = str(row.get(explanation_field) or "").strip() if explanation_field else ""
        if explanation:
            answer = f"{answer} Explanation: {explanation}"
        contexts = []
        if context_field:
            value = row.get(context_field)
            texts = value if isinstance(value, list) else [value]
            contexts = [
                SourceRef(chunk_id=f"{i}-{k}", source=source, score=1.0, text=str(t))
                for k, t in enumerate(texts)
                if t
            ]
        yield Turn(
            id=None,
            session_id=f"dataset:{source}",
            user_input=str(row.get(question_field) or ""),
            retrieved_contexts=contexts,
            response=answer,
            status="answered",
            provider="dataset",
        )
