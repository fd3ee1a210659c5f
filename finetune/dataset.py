"""Training data from the chat log (or a `datasets` source): select turns by filters, redact, drop
repeated and near-duplicate questions, let the teacher grade / distill / relabel, and write OpenAI
chat-format JSONL whose user message carries the retrieved passages exactly as the app sends them,
preference pairs (TRL and OpenAI `dpo` formats), a deterministic train/validation split, a preview
of every kept and dropped turn, and the dataset card. Streams: memory does not grow with the log."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from core.errors import RagError
from core.jobstore import TeacherGrade
from core.prompting import chat_messages
from core.questions import question_key
from core.records import DatasetCard, Turn
from finetune.dedup import Embed, NearDuplicates
from finetune.redact import redact
from finetune.teacher import RUBRIC_VERSION, Teacher, TeacherReply
from rag.synthesis import EXTRACTIVE_LABEL, says_not_covered

if TYPE_CHECKING:
    pass

Mode = Literal["none", "grade", "distill", "relabel"]
MODES: tuple[str, ...] = ("none", "grade", "distill", "relabel")

FILES = {
    "train": "train.jsonl",
    "validation": "validation.jsonl",
    "dpo_train": "dpo_train.jsonl",
    "dpo_validation": "dpo_validation.jsonl",
    "dpo_train_trl": "dpo_train.trl.jsonl",
    "dpo_validation_trl": "dpo_validation.trl.jsonl",
}
PREVIEW_FILE = "preview.jsonl"
CARD_FILE = "card.json"
BATCH = 256


class DatasetError(RagError):
    """A dataset cannot be built as asked (nothing selected, unreadable source, bad options)."""


@dataclass(frozen=True)
class TurnFilter:
    """Which logged turns are looked at."""

    since: datetime | None = None
    until: datetime | None = None
    feedback: str = "all"  # all | any | up | down | none
    chat_version_id: int | None = None
    answered_only: bool = True
    min_answer_chars: int = 20

    def describe(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "feedback": self.feedback,
            "chat_version_id": self.chat_version_id,
            "answered_only": self.answered_only,
            "min_answer_chars": self.min_answer_chars,
        }


@dataclass
class BuildOptions:
    name: str
    mode: Mode = "grade"
    grade_threshold: float = 4.0
    dedup_similarity: float | None = 0.95
    validation_share: float = 0.1
    seed: int = 0
    concurrency: int = 4


@dataclass
class PreviewRow:
    """One turn as the build saw it: kept or dropped, why, and the teacher's grade."""

    turn_id: int | None
    question: str
    kept: bool
    reason: str | None = None
    split: str | None = None
    feedback: str | None = None
    grade: dict[str, Any] | None = None
    target: str | None = None  # `logged` or `teacher`
    answer: str = ""

    def as_json(self) -> dict[str, Any]:
        return self.__dict__


@dataclass
class BuildResult:
    card: DatasetCard
    path: Path
    preview: list[PreviewRow] = field(default_factory=list)  # the first rows, for a UI


# -- pure decisions --------------------------------------------------------------------------------


def split_of(key: str, share: float, seed: int = 0) -> str:
    """`validation` or `train` for a question key: a hash, so the same question always lands on
    the same side whatever the order or size of the log."""
    if share <= 0:
        return "train"
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return "validation" if int.from_bytes(digest[:8], "big") / 2**64 < share else "train"


def skip_reason(turn: Turn, filt: TurnFilter) -> str | None:
    """Why a selected turn cannot be a training example at all, or None."""
    if not turn.user_input.strip():
        return "empty_question"
    if filt.answered_only and turn.status != "answered":
        return "not_answered"
    if len((turn.response or "").strip()) < filt.min_answer_chars:
        return "answer_too_short"
    if says_not_covered(turn.response or ""):
        return "not_covered"  # "the documents do not cover it" teaches nothing about them
    return None


def quoted_not_written(turn: Turn) -> bool:
    """Whether the logged answer quotes the passages (the app with no language model) rather than
    answering in words: never a chat model's target as it stands, since a model trained on it
    would learn to print the quoting label. A teacher may write the answer to its question."""
    return turn.provider == "extractive" or (turn.response or "").lstrip().startswith(
        EXTRACTIVE_LABEL
    )


def rated_down(turn: Turn) -> bool:
    return turn.feedback is not None and turn.feedback.rating == "down"


def in_selection(turn: Turn, filt: TurnFilter) -> bool:
    """The filters ChatLog.turns does not apply itself (upper time bound, registry version)."""
    if filt.until is not None and turn.created_at is not None:
        created = turn.created_at if turn.created_at.tzinfo else turn.created_at.replace(tzinfo=UTC)
        if created >= filt.until:
            return False
    return filt.chat_version_id is None or turn.chat_version_id == filt.chat_version_id


def chat_example(
    system_prompt: str, question: str, contexts: list[str] | None, answer: str
) -> dict[str, Any]:
    """One OpenAI chat-format example: the app's system prompt, the user message exactly as the
    app builds it (passages, then the question; the plain question when there are no passages
    at all, as for static data), and the target answer."""
    if contexts is None:
        messages = [
            {"role": "system", "content": system_prompt},
            {"role": "user", "content": question},
        ]
    else:
        messages = chat_messages(system_prompt, question, contexts)
    return {"messages": [*messages, {"role": "assistant", "content": answer}]}


def preference_pair(
    system_prompt: str, question: str, contexts: list[str] | None, chosen: str, rejected: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A pair as OpenAI's `dpo` method takes it and as TRL's DPOTrainer takes it
    (conversational prompt / chosen / rejected)."""
    prompt = chat_example(system_prompt, question, contexts, "")["messages"][:-1]
    openai_pair = {
        "input": {"messages": prompt},
        "preferred_output": [{"role": "assistant", "content": chosen}],
        "non_preferred_output": [{"role": "assistant", "content": rejected}],
    }
    trl_pair = {
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }
    return openai_pair, trl_pair


# -- the build -------------------------------------------------------------------------------------


@dataclass
class _Work:
    turn: Turn
    question: str  # the question as the app asked the model (condensed), redacted
    contexts: list[str] | None
    answer: str
    comment: str | None
    key: str
    reply: TeacherReply | None = None
    rewrite: TeacherReply | None = None


class _Writers:
    def __init__(self, folder: Path):
        self.folder = folder
        self.handles: dict[str, IO[str]] = {
            role: (folder / name).open("w", encoding="utf-8") for role, name in FILES.items()
        }
        self.preview = (folder / PREVIEW_FILE).open("w", encoding="utf-8")
        self.counts: Counter[str] = Counter()

    def write(self, role: str, record: dict[str, Any]) -> None:
        self.handles[role].write(json.dumps(record, ensure_ascii=False) + "\n")
        self.counts[role] += 1

    def close(self) -> None:
        for h in self.handles.values():
            h.close()
        self.preview.close()


@lru_cache(maxsize=8192)
def _redact_cached(text: str) -> tuple[str, tuple[tuple[str, int], ...]]:
    # The same passages come back turn after turn; redact each text once.
    out, found = redact(text)
    return out, tuple(found.items())


def _redacted(turn: Turn, counts: Counter[str], plain: bool) -> tuple[str, list[str] | None, str]:
    def clean(text: str) -> str:
        out, found = _redact_cached(text)
        counts.update(dict(found))
        return out

    question = clean(turn.condensed_question or turn.user_input)
    contexts = None if plain else [clean(c.text) for c in turn.retrieved_contexts]
    return question, contexts, clean(turn.response or "")


def _teach(teacher: Teacher | None, work: _Work, mode: Mode, threshold: float) -> None:
    """The teacher calls one turn needs in `mode` (run in a worker thread)."""
    if teacher is None or mode == "none":
        return
    down = rated_down(work.turn)
    if mode == "grade":
        work.reply = teacher.grade(work.question, work.contexts or [], work.answer, work.comment)
    elif mode == "distill":
        work.reply = teacher.answer(work.question, work.contexts, work.comment)
    elif mode == "relabel":
        if quoted_not_written(work.turn):  # quotes, not an answer: the teacher writes one
            work.rewrite = teacher.answer(work.question, work.contexts, work.comment)
            return
        if down:
            why = work.comment or "the user rated it down"
            work.rewrite = teacher.answer(
                work.question, work.contexts, work.comment, work.answer, why
            )
            return
        up = work.turn.feedback is not None and work.turn.feedback.rating == "up"
        if up:
            return  # a person approved it; kept as logged
        work.reply = teacher.grade(work.question, work.contexts or [], work.answer, work.comment)
        if work.reply.grade is not None and work.reply.grade.lowest < threshold:
            why = work.reply.grade.rationale
            work.rewrite = teacher.answer(work.question, work.contexts, None, work.answer, why)


def _decide(work: _Work, mode: Mode, threshold: float) -> tuple[str | None, str | None, str | None]:
    """(target answer, which target, drop reason) for a taught turn: a pure decision."""
    reply, rewrite = work.reply, work.rewrite
    if mode == "none":
        return work.answer, "logged", None
    if mode == "grade":
        assert reply is not None
        if reply.dropped:
            return None, None, reply.dropped.split(":", 1)[0]
        assert reply.grade is not None
        if reply.grade.lowest < threshold:
            return None, None, "grade_below_threshold"
        return work.answer, "logged", None
    if mode == "distill":
        assert reply is not None
        if reply.dropped:
            return None, None, reply.dropped.split(":", 1)[0]
        return reply.answer, "teacher", None
    # relabel
    if reply is not None and reply.dropped:
        return None, None, reply.dropped.split(":", 1)[0]
    if rewrite is not None:
        if rewrite.dropped:
            return None, None, rewrite.dropped.split(":", 1)[0]
        return rewrite.answer, "teacher", None
    return work.answer, "logged", None


def _grade_json(grade: TeacherGrade | None) -> dict[str, Any] | None:
    return grade.model_dump() if grade is not None else None


def build_dataset(
    turns: Iterable[Turn],
    out_dir: Path,
    options: BuildOptions,
    system_prompt: str,
    teacher: Teacher | None = None,
    embed: Embed | None = None,
    filters: TurnFilter | None = None,
    source: str = "chatlog",
    plain_questions: bool = False,
    prompt_version: str | None = None,
    settings_snapshot: dict[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
    preview_rows: int = 500,
) -> BuildResult:
    """Build a dataset folder `out_dir/<name>` from `turns`, streaming. Files are written into a
    temporary folder renamed into place at the end, so an interrupted build leaves nothing half
    written (and reads nothing but the log). Raises TeacherError when the teacher cannot be used
    at all; a turn the teacher answers badly is dropped with its reason."""
    if options.mode not in MODES:
        raise DatasetError(f"unknown mode {options.mode!r}; known: {', '.join(MODES)}")
    if options.mode != "none" and teacher is None:
        raise DatasetError(
            f"teacher mode {options.mode!r} needs a teacher model; or choose teacher mode 'none'"
        )
    filt = filters or TurnFilter()
    final = out_dir / options.name
    if final.exists():
        raise DatasetError(f"a dataset named {options.name!r} exists already; choose another name")
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = out_dir / f".{options.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    writers = _Writers(partial)
    dropped: Counter[str] = Counter()
    redactions: Counter[str] = Counter()
    dedup = NearDuplicates(embed, options.dedup_similarity)
    kept_ids: list[int] = []
    keys: list[str] = []
    preview: list[PreviewRow] = []
    seen = 0
    kept = 0
    pool = ThreadPoolExecutor(max_workers=max(1, options.concurrency))

    def record(row: PreviewRow) -> None:
        writers.preview.write(json.dumps(row.as_json(), ensure_ascii=False) + "\n")
        if len(preview) < preview_rows:
            preview.append(row)

    def drop(turn: Turn, question: str, reason: str, grade=None, answer: str = "") -> None:
        dropped[reason] += 1
        record(
            PreviewRow(
                turn_id=turn.id,
                question=question,
                kept=False,
                reason=reason,
                feedback=turn.feedback.rating if turn.feedback else None,
                grade=grade,
                answer=answer[:500],
            )
        )

    def flush(batch: list[Turn]) -> None:
        nonlocal kept
        works: list[_Work] = []
        for turn in batch:
            reason = skip_reason(turn, filt)
            question, contexts, answer = _redacted(turn, redactions, plain_questions)
            if reason:
                drop(turn, question, reason, answer=answer)
                continue
            comment = None
            if turn.feedback and turn.feedback.comment:
                comment, found = redact(turn.feedback.comment)
                redactions.update(found)
            works.append(_Work(turn, question, contexts, answer, comment, question_key(question)))
        verdicts = dedup.check([w.question for w in works])
        fresh = []
        for work, verdict in zip(works, verdicts, strict=True):
            if verdict:
                drop(work.turn, work.question, verdict, answer=work.answer)
            elif rated_down(work.turn) and options.mode in ("none", "grade"):
                # A thumbs-down answer is never a target; distill and relabel answer it anew
                # (and keep it as the rejected side of a preference pair).
                drop(work.turn, work.question, "rated_down", answer=work.answer)
            elif quoted_not_written(work.turn) and options.mode in ("none", "grade"):
                drop(work.turn, work.question, "extractive_answer", answer=work.answer)
            else:
                fresh.append(work)
        if teacher is not None and options.mode != "none":
            list(
                pool.map(lambda w: _teach(teacher, w, options.mode, options.grade_threshold), fresh)
            )
        for work in fresh:
            target, which, reason = _decide(work, options.mode, options.grade_threshold)
            grade = _grade_json(work.reply.grade if work.reply else None)
            if target is None:
                drop(work.turn, work.question, reason or "dropped", grade, work.answer)
                continue
            split = split_of(work.key, options.validation_share, options.seed)
            writers.write(
                "train" if split == "train" else "validation",
                chat_example(system_prompt, work.question, work.contexts, target),
            )
            # A preference pair where the logged answer was worse; quoted passages are not a
            # worse answer, only no answer in words (its teacher-written target is enough).
            if (
                which == "teacher"
                and not quoted_not_written(work.turn)
                and (
                    work.rewrite is not None
                    or (work.turn.feedback is not None and work.turn.feedback.rating == "down")
                )
            ):
                openai_pair, trl_pair = preference_pair(
                    system_prompt, work.question, work.contexts, target, work.answer
                )
                suffix = "train" if split == "train" else "validation"
                writers.write(f"dpo_{suffix}", openai_pair)
                writers.write(f"dpo_{suffix}_trl", trl_pair)
            if work.turn.id is not None:
                kept_ids.append(work.turn.id)
            # Evaluation recognises a trained question by the user's words, as asked or condensed.
            raw = {question_key(work.turn.user_input), work.key}
            if work.turn.condensed_question:
                raw.add(question_key(work.turn.condensed_question))
            keys.extend(sorted(raw))
            kept += 1
            record(
                PreviewRow(
                    turn_id=work.turn.id,
                    question=work.question,
                    kept=True,
                    split=split,
                    feedback=work.turn.feedback.rating if work.turn.feedback else None,
                    grade=grade,
                    target=which,
                    answer=target[:500],
                )
            )

    try:
        batch: list[Turn] = []
        for turn in turns:
            seen += 1
            batch.append(turn)
            if len(batch) >= BATCH:
                flush(batch)
                if progress:
                    progress(len(batch))
                batch = []
        if batch:
            flush(batch)
            if progress:
                progress(len(batch))
        writers.close()
    except BaseException:
        writers.close()
        pool.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(partial, ignore_errors=True)
        raise
    pool.shutdown()
    if seen == 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise DatasetError(
            "no logged turns match those filters; widen them (the dates, the feedback, the chat "
            "version), or chat and rate some answers first"
        )
    digest = hashlib.sha256()
    for name in FILES.values():
        digest.update(name.encode())
        with (partial / name).open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    counts = writers.counts
    card = DatasetCard(
        name=options.name,
        source=source,
        mode=options.mode,
        filters=filt.describe() if source == "chatlog" else {},
        teacher_model=teacher.model if teacher is not None and options.mode != "none" else None,
        rubric_version=RUBRIC_VERSION if options.mode in ("grade", "relabel") else None,
        prompt_version=prompt_version,
        seen=seen,
        kept=kept,
        dropped=dict(sorted(dropped.items())),
        train_examples=counts["train"],
        validation_examples=counts["validation"],
        preference_pairs=counts["dpo_train"] + counts["dpo_validation"],
        redactions=dict(sorted(redactions.items())),
        source_turn_ids=kept_ids,
        train_question_keys=keys,
        files={role: name for role, name in FILES.items() if counts[role]},
        settings={
            "grade_threshold": options.grade_threshold,
            "dedup_similarity": options.dedup_similarity,
            "validation_share": options.validation_share,
            "seed": options.seed,
            **(settings_snapshot or {}),
        },
        content_hash=digest.hexdigest(),
        created_at=datetime.now(UTC),
    )
    (partial / CARD_FILE).write_text(card.model_dump_json(indent=2), encoding="utf-8")
    for role, name in FILES.items():  # empty files would only confuse: keep what has examples
        if not counts[role]:
            (partial / name).unlink()
    partial.rename(final)
    return BuildResult(card=card, path=final, preview=preview)


def read_preview(folder: Path, limit: int = 500) -> list[dict[str, Any]]:
    """The first `limit` rows of a built dataset's preview (kept and dropped turns)."""
    rows = []
    with (folder / PREVIEW_FILE).open(encoding="utf-8") as f:
        for line in f:
            rows.append(json.loads(line))
            if len(rows) >= limit:
                break
    return rows
