"""Evaluation sets: JSONL golden sets (Ragas field names), `datasets` sources mapped by flags (SciQ:
question -> user_input, correct_answer -> reference, support -> reference_contexts), a sample of
logged turns; the set's content hash, and refusing questions that trained the candidate."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from core.datasource import bad_lines, json_lines, load_rows
from core.errors import ProviderError, RagError, SourceError
from core.evalstore import EvalSample
from core.index.chunks import Meta, iter_pages
from core.questions import question_key
from core.wording import counted
from rag.synthesis import says_not_covered

if TYPE_CHECKING:
    from core.chatlog import ChatLog
    from core.openai_api import ModelClient
    from core.records import Turn
    from core.registry import ModelVersion


class EvalSetError(RagError):
    """An evaluation set cannot be used as given (malformed, empty, overlapping training data)."""


def load_jsonl(path: Path) -> list[EvalSample]:
    """A golden set: one JSON object per line with `user_input` and optional `reference`,
    `reference_contexts`, `reference_sources`. Every bad line is reported, by number."""
    try:
        # utf-8-sig: a set saved with a byte-order mark (as some editors do) reads the same.
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise EvalSetError(
            f"cannot read the golden set {path}: not UTF-8 text (byte {exc.start}); re-save it "
            "as UTF-8"
        ) from exc
    except OSError as exc:
        raise EvalSetError(f"cannot read the golden set {path}: {exc}") from exc
    samples, problems = [], []
    for number, record, problem in json_lines(text):
        if problem:
            problems.append(f"line {number}: {problem}")
            continue
        try:
            sample = EvalSample(**record)
        except (ValidationError, TypeError) as exc:
            fields = ", ".join(
                ".".join(str(p) for p in e["loc"]) + f" ({e['msg']})"
                for e in getattr(exc, "errors", lambda: [])()
            )
            problems.append(f"line {number}: {fields or exc}")
            continue
        if not sample.user_input.strip():
            problems.append(f"line {number}: user_input is empty")
            continue
        samples.append(sample)
    if problems:
        raise EvalSetError(f"{path}: {bad_lines(problems)}")
    if not samples:
        raise EvalSetError(f"{path} holds no samples")
    return samples


def from_dataset(
    spec: str,
    question_field: str = "question",
    reference_field: str | None = "correct_answer",
    contexts_field: str | None = "support",
    sources_field: str | None = None,
    split: str | None = None,
    limit: int | None = None,
) -> list[EvalSample]:
    """A `datasets` source (hub name or local .csv/.json/.jsonl/.parquet) mapped by field names;
    defaults fit SciQ. Rows without a question are skipped."""
    try:
        table = load_rows(
            spec, split, columns=(question_field, reference_field, contexts_field, sources_field)
        )
    except SourceError as exc:
        raise EvalSetError(str(exc)) from exc
    samples = []
    for record in table:
        question = str(record.get(question_field) or "").strip()
        if not question:
            continue
        samples.append(
            EvalSample(
                user_input=question,
                reference=_text(record.get(reference_field)) if reference_field else None,
                reference_contexts=_texts(record.get(contexts_field)) if contexts_field else [],
                reference_sources=_texts(record.get(sources_field)) if sources_field else [],
            )
        )
        if limit and len(samples) >= limit:
            break
    if not samples:
        raise EvalSetError(f"{spec} has no rows with a {question_field!r}")
    return samples


def _text(value: object) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None


def _texts(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [t for v in value if (t := _text(v))]
    text = _text(value)
    return [text] if text else []


def from_chatlog(
    chatlog: ChatLog,
    size: int = 100,
    since: datetime | None = None,
    feedback: str = "all",
    seed: int = 0,
    teacher: Callable[[str, list[str]], str | None] | None = None,
    trained: Mapping[str, str] | None = None,
) -> list[EvalSample]:
    """A seeded sample of answered turns (filters as in export-logs), leaving out the questions
    that trained a model version (`trained`: question key -> the version's label): a model is
    never judged on its training questions. A thumbs-up answer becomes
    the reference, and the passages it cited the reference contexts (so the set measures
    retrieval too: an embedding or reranker candidate can be judged on it); for other turns a
    `teacher` (question, passages) -> answer writes the reference, or they carry the question only
    (reference-free metrics). A question asked more than once is sampled once: its newest
    thumbs-up turn, else its newest turn."""
    turns = [
        t
        for t in chatlog.turns(since=since, feedback=feedback)
        if t.status == "answered" and t.user_input.strip()
    ]
    if not turns:
        raise EvalSetError("no answered turns match those filters in the chat log")
    trained = trained or {}
    fresh = [t for t in turns if question_key(t.user_input) not in trained]
    if not fresh:
        labels = dict.fromkeys(trained[question_key(t.user_input)] for t in turns)
        others = [
            t
            for t in chatlog.turns(since=since)
            if t.status == "answered"
            and t.user_input.strip()
            and question_key(t.user_input) not in trained
        ]
        elsewhere = (
            f"sample other turns ({counted(len(others), 'answered question')} of the log, rated "
            "otherwise or not at all, trained nothing), "
            if others
            else ""
        )
        raise EvalSetError(
            f"every question of the chat log that matches those filters trained {', '.join(labels)}"
            f", and a model is never judged on its training questions: {elsewhere}rate answers to "
            "new questions first, or add a golden set (a JSONL file of questions with their "
            "reference answers or passages)"
        )
    turns = fresh
    # One question once: a rated-up answer wins over the others, then the newest.
    by_question: dict[str, Turn] = {}
    for t in turns:
        key = question_key(t.user_input)
        held = by_question.get(key)
        if held is None or rated_up(t) or not rated_up(held):
            by_question[key] = t
    picked = random.Random(seed).sample(list(by_question.values()), min(size, len(by_question)))
    out = []
    for t in sorted(picked, key=lambda t: t.id or 0):
        reference = t.response if rated_up(t) else None
        # An answer that says the documents do not cover the question shows the closest passage
        # as not the answer: it is no reference context, however it was rated.
        said_not_covered = says_not_covered(t.response or "")
        cited = [c.text for c in t.cited()] if rated_up(t) and not said_not_covered else []
        if reference is None and teacher is not None:
            reference = teacher(t.user_input, [c.text for c in t.retrieved_contexts])
        out.append(
            EvalSample(user_input=t.user_input, reference=reference, reference_contexts=cited)
        )
    return out


def rated_up(turn: Turn) -> bool:
    return turn.feedback is not None and turn.feedback.rating == "up"


TEACHER_PROMPT = (
    "Answer the question from the passages, briefly and exactly; reply with the answer only, or "
    "with NONE if the passages do not hold it.\n\nPassages:\n{passages}\n\nQuestion: {question}"
)


def openai_teacher(llm: ModelClient) -> Callable[[str, list[str]], str | None]:
    """A teacher on an OpenAI-compatible endpoint: writes the reference answer of a logged
    question from the passages that were retrieved for it. API errors stop with a clear message."""

    def write(question: str, passages: list[str]) -> str | None:
        if not passages:
            return None
        text = "\n\n".join(f"[{i}] {p}" for i, p in enumerate(passages, start=1))
        try:
            answer = llm.ask(TEACHER_PROMPT.format(passages=text, question=question)).strip()
        except ProviderError as exc:
            raise EvalSetError(f"writing references: {exc}") from exc
        return None if not answer or answer.upper() == "NONE" else answer

    return write


def content_hash(samples: Iterable[EvalSample]) -> str:
    """sha256 of the samples in order, canonical JSON: the same set always has the same hash."""
    digest = hashlib.sha256()
    for s in samples:
        digest.update(json.dumps(s.model_dump(), sort_keys=True, ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def trained_questions(versions: Iterable[ModelVersion]) -> dict[str, str]:
    """The questions that trained `versions` (their dataset cards list normalised question keys
    in provenance `train_question_keys`): key -> the label of the first version it trained."""
    trained: dict[str, str] = {}
    for version in versions:
        for key in version.provenance.get("train_question_keys") or ():
            trained.setdefault(key, version.label)
    return trained


def check_no_training_overlap(samples: list[EvalSample], *versions: ModelVersion | None) -> None:
    """Refuse a set holding questions that trained any of `versions`."""
    for version in versions:
        if version is None:
            continue
        trained = trained_questions([version])
        if not trained:
            continue
        overlap = sum(question_key(s.user_input) in trained for s in samples)
        if overlap:
            raise EvalSetError(
                f"{overlap} of {len(samples)} questions in this set trained {version.label} "
                f"({version.name}); a model is never judged on its training questions: use a "
                "held-out set"
            )


GENERATE_PROMPT = (
    "Write one question that a reader could answer from the passage below alone, and its short "
    'answer. Reply with JSON only: {{"question": "...", "answer": "..."}}\n\nPassage:\n{passage}'
)


def generate_from_chunks(
    collection,
    llm: ModelClient,
    size: int = 20,
    min_words: int = 40,
    seed: int = 0,
    progress: bool = True,
) -> tuple[list[EvalSample], list[str]]:
    """A test set written by an LLM (on any OpenAI-compatible endpoint)
    from `size` randomly chosen indexed chunks of at least `min_words` words: one question and
    answer per chunk, the chunk as reference context and its file as reference source. Returns
    the samples and the reasons chunks were skipped (a malformed reply loses only its chunk)."""
    from tqdm import tqdm

    chunks, total = [], 0
    for got in iter_pages(collection, ["documents", "metadatas"]):
        total += len(got["ids"])
        chunks += [
            (doc, meta or {})
            for doc, meta in zip(got["documents"] or [], got["metadatas"] or [], strict=True)
            if doc and len(doc.split()) >= min_words
        ]
    if not chunks:
        raise EvalSetError(
            f"no indexed chunk has {min_words} words or more ({total} chunks in the "
            "collection): the documents are too short to write questions from; write a golden "
            "set by hand or ingest longer documents"
        )
    picked = random.Random(seed).sample(chunks, min(size, len(chunks)))
    samples, skipped = [], []
    for doc, meta in tqdm(picked, desc="generate", unit="q", disable=not progress):
        try:
            reply = llm.ask(GENERATE_PROMPT.format(passage=doc), 0.2, json_reply=True)
        except ProviderError as exc:
            raise EvalSetError(f"writing the test set: {exc}") from exc
        try:
            data = json.loads(reply)
            question, answer = str(data["question"]).strip(), str(data["answer"]).strip()
            if not question:
                raise ValueError("empty question")
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            skipped.append(f"malformed reply ({type(exc).__name__}: {exc})")
            continue
        source = meta.get(Meta.FILE_NAME) or meta.get(Meta.SOURCE)
        samples.append(
            EvalSample(
                user_input=question,
                reference=answer or None,
                reference_contexts=[doc],
                reference_sources=[str(source)] if source else [],
            )
        )
    if not samples:
        raise EvalSetError(f"the LLM wrote no usable question: {'; '.join(skipped[:3])}")
    return samples, skipped
