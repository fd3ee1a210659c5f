"""Training pairs for the embedding model (question -> relevant chunk) from every source the product
has: rated chat turns, headings and titles of structured documents, inverse cloze, a `datasets`
table, a LlamaIndex `{queries, corpus, relevant_docs}` file; hard negatives mined with the current
model; and the dataset card that records where every pair came from."""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, ValidationError

from core.datasource import load_rows
from core.errors import ProviderError, RagError, SourceError
from core.index.chunks import Meta, embed_text, iter_pages
from core.questions import question_key
from core.records import DatasetCard, SourceRef, cited_contexts
from rag.synthesis import says_not_covered

if TYPE_CHECKING:
    from chromadb.api.models.Collection import Collection
    from sentence_transformers import SentenceTransformer

    from core.chatlog import ChatLog
    from core.openai_api import ModelClient

SOURCES = ("chatlog", "teacher", "headings", "cloze", "dataset", "file", "generated")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


class DataError(RagError):
    """Training data that cannot be used as given (malformed file, empty set, unknown source)."""


class PairSet(BaseModel):
    """Queries, the texts they should find and which; the LlamaIndex layout plus where each query
    came from and its mined negatives. Every query has at least one relevant text in `corpus`."""

    queries: dict[str, str] = Field(default_factory=dict, description="query id -> question")
    corpus: dict[str, str] = Field(
        default_factory=dict, description="text id -> the text as the model embeds it"
    )
    relevant_docs: dict[str, list[str]] = Field(
        default_factory=dict, description="query id -> ids of the texts that answer it"
    )
    sources: dict[str, str] = Field(
        default_factory=dict, description="query id -> the source that made the pair"
    )
    negatives: dict[str, list[str]] = Field(
        default_factory=dict, description="query id -> ids of mined hard negatives"
    )
    shown: dict[str, list[str]] = Field(
        default_factory=dict,
        description="query id -> ids of the other passages shown with the answer its asker rated "
        "up: any of them may be what helped, so none is mined as its negative",
    )

    def __len__(self) -> int:
        return len(self.queries)

    def add(self, qid: str, query: str, docs: dict[str, str], source: str) -> None:
        """Add one query with its relevant texts (id -> text)."""
        query = query.strip()
        if not query or not docs:
            return
        self.queries[qid] = query
        self.corpus.update(docs)
        self.relevant_docs[qid] = list(docs)
        self.sources[qid] = source

    def merge(self, other: PairSet) -> PairSet:
        """Both sets in one (ids are namespaced by source, so they never collide)."""
        out = self.model_copy(deep=True)
        out.queries.update(other.queries)
        out.corpus.update(other.corpus)
        out.relevant_docs.update(other.relevant_docs)
        out.sources.update(other.sources)
        out.negatives.update(other.negatives)
        out.shown.update(other.shown)
        return out

    def subset(self, qids: Iterable[str]) -> PairSet:
        """Only the queries `qids` (the corpus is kept whole: it is what retrieval searches)."""
        keep = [q for q in qids if q in self.queries]
        return PairSet(
            queries={q: self.queries[q] for q in keep},
            corpus=dict(self.corpus),
            relevant_docs={q: self.relevant_docs[q] for q in keep},
            sources={q: self.sources.get(q, "file") for q in keep},
            negatives={q: self.negatives[q] for q in keep if q in self.negatives},
            shown={q: self.shown[q] for q in keep if q in self.shown},
        )

    def pairs(self) -> list[tuple[str, str, str]]:
        """(query id, query, first relevant text) for training; one positive per query."""
        return [(q, t, self.corpus[self.relevant_docs[q][0]]) for q, t in self.queries.items()]


# -- sources -----------------------------------------------------------------------------------


def load_llamaindex(path: Path, source: str = "file") -> PairSet:
    """A `{queries, corpus, relevant_docs}` JSON file (LlamaIndex's EmbeddingQAFinetuneDataset).
    Raises DataError naming what is wrong (unreadable JSON, a missing key, a relevant id that is
    not in the corpus)."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}); re-save it as UTF-8") from exc
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path} is not JSON ({exc}); expected {{queries, corpus, relevant_docs}}"
        ) from exc
    if not isinstance(raw, dict) or not {"queries", "corpus", "relevant_docs"} <= set(raw):
        raise DataError(f"{path} needs the keys queries, corpus and relevant_docs")
    try:
        data = PairSet(
            queries=raw["queries"], corpus=raw["corpus"], relevant_docs=raw["relevant_docs"]
        )
    except ValidationError as exc:
        raise DataError(f"{path} is malformed: {exc.errors()[0]['msg']}") from exc
    for qid in data.queries:
        docs = data.relevant_docs.get(qid)
        if not docs:
            raise DataError(f"{path}: query {qid!r} has no relevant_docs")
        missing = [d for d in docs if d not in data.corpus]
        if missing:
            raise DataError(f"{path}: query {qid!r} names {missing[0]!r}, which is not in corpus")
        data.sources[qid] = source
    if not data.queries:
        raise DataError(f"{path} holds no queries")
    return data


def save_llamaindex(data: PairSet, path: Path) -> None:
    """Write `data` in the LlamaIndex layout (plus sources and negatives), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(data.model_dump_json(), encoding="utf-8")
    tmp.replace(path)


def from_dataset(
    spec: str,
    question_field: str = "question",
    text_field: str = "support",
    split: str | None = None,
    limit: int | None = None,
) -> PairSet:
    """A `datasets` source (hub name or local .csv/.json/.jsonl/.parquet): each row's question and
    its passage (SciQ: `question` -> `support`). Rows missing either are skipped."""
    try:
        table = load_rows(spec, split, columns=(question_field, text_field))
    except SourceError as exc:
        raise DataError(str(exc)) from exc
    data = PairSet()
    for i, row in enumerate(table):
        question, text = str(row[question_field] or ""), str(row[text_field] or "").strip()
        if question.strip() and text:
            doc_id = "dataset:" + hashlib.sha256(text.encode()).hexdigest()[:16]
            data.add(f"dataset:{i}", question, {doc_id: text}, "dataset")
        if limit and len(data) >= limit:
            break
    if not data.queries:
        raise DataError(f"{spec} has no rows with both {question_field!r} and {text_field!r}")
    return data


def chunk_text(document: str, metadata: dict[str, Any] | None) -> str:
    """A chunk as the embedding model sees it at ingest: its heading path, then its text."""
    return embed_text(str((metadata or {}).get(Meta.HEADING_PATH) or ""), document)


def _chunks(collection: Collection) -> Iterable[tuple[str, str, dict[str, Any]]]:
    for got in iter_pages(collection, ["documents", "metadatas"]):
        for cid, doc, meta in zip(got["ids"], got["documents"], got["metadatas"], strict=True):
            if doc:
                yield cid, doc, meta or {}


def cited_chunks(response: str | None, contexts: list[SourceRef]) -> list[str]:
    """Chunk ids an answer cited (see core.records.cited_contexts). Nothing when it cited nothing
    (such a turn teaches nothing sure)."""
    return [c.chunk_id for c in cited_contexts(response, contexts)]


TEACHER_PROMPT = (
    "Does the passage answer the question? Rate it from 1 (not at all) to 5 (fully). Reply with "
    'JSON only: {{"score": n}}\n\nQuestion: {question}\n\nPassage:\n{passage}'
)


def openai_teacher(llm: ModelClient) -> Callable[[str, str], float | None]:
    """A grader on any OpenAI-compatible server: (question, passage) -> 1..5, or None when the
    reply is malformed. An API error (401, 429 after the SDK's retries, 500) raises DataError."""

    def grade(question: str, passage: str) -> float | None:
        prompt = TEACHER_PROMPT.format(question=question, passage=passage)
        try:
            reply = llm.ask(prompt, json_reply=True)
        except ProviderError as exc:
            raise DataError(f"the teacher LLM failed: {exc}") from exc
        try:
            score = float(json.loads(reply)["score"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            return None
        return score if 1 <= score <= 5 else None

    return grade


def from_chatlog(
    chatlog: ChatLog,
    collection: Collection,
    since: datetime | None = None,
    teacher: Callable[[str, str], float | None] | None = None,
    min_grade: float = 4,
) -> tuple[PairSet, Counter[str]]:
    """Questions whose answer was rated up, paired with the chunks the answer cited, read from the
    collection as they are now; with a `teacher`, also unrated turns whose cited chunks it grades
    `min_grade` or more. Returns the pairs and counts of turns skipped, by reason."""
    data, skipped = PairSet(), Counter[str]()
    kinds = [("up", "chatlog")] + ([("none", "teacher")] if teacher else [])
    for feedback, source in kinds:
        for turn in chatlog.turns(since=since, feedback=feedback):
            if turn.status != "answered":
                continue
            if says_not_covered(turn.response or ""):
                # "The documents do not cover this ... the closest passage": the answer itself
                # says the passage it shows is not the answer, whatever the rating says.
                skipped["said not covered"] += 1
                continue
            cited = cited_chunks(turn.response, turn.retrieved_contexts)
            if not cited:
                skipped["cited nothing"] += 1
                continue
            got = collection.get(ids=cited, include=["documents", "metadatas"])
            texts = {
                cid: chunk_text(doc, meta)
                for cid, doc, meta in zip(
                    got["ids"], got["documents"], got["metadatas"], strict=True
                )
                if doc
            }
            # In the order cited (Chroma returns its own): training reads the first.
            docs = {cid: texts[cid] for cid in cited if cid in texts}
            if not docs:
                skipped["cited chunks no longer indexed"] += 1
                continue
            if teacher is not None and source == "teacher":
                grades = {cid: teacher(turn.user_input, text) for cid, text in docs.items()}
                if all(g is None for g in grades.values()):
                    skipped["teacher reply malformed"] += 1
                    continue
                docs = {
                    cid: docs[cid] for cid, g in grades.items() if g is not None and g >= min_grade
                }
                if not docs:
                    skipped["teacher graded low"] += 1
                    continue
            qid = f"{source}:{turn.id}"
            data.add(qid, turn.user_input, docs, source)
            shown = [c.chunk_id for c in turn.retrieved_contexts if c.chunk_id not in docs]
            if qid in data.queries and shown:
                data.shown[qid] = list(dict.fromkeys(shown))
    return data, skipped


def from_headings(collection: Collection, min_words: int = 2) -> PairSet:
    """Offline pseudo-queries for structured documents: each section heading (and each document
    title) as a query for the first chunk under it. Headings shorter than `min_words` words
    ("Usage") or shared by several sections are left out: they name no one passage."""
    firsts: dict[str, tuple[int, str, str]] = {}
    owners: dict[str, set[str]] = {}
    for cid, doc, meta in _chunks(collection):
        index = int(meta.get(Meta.CHUNK_INDEX, 0))
        source = str(meta.get(Meta.SOURCE_KEY) or meta.get(Meta.SOURCE) or "")
        for query in {
            str(meta.get(Meta.SECTION) or (meta.get(Meta.HEADING_PATH) or "").split(" > ")[-1]),
            str(meta.get(Meta.TITLE) or ""),
        }:
            query = query.strip()
            if len(query.split()) < min_words:
                continue
            owners.setdefault(query.casefold(), set()).add(source)
            best = firsts.get(query)
            if best is None or (index, cid) < best[:2]:
                firsts[query] = (index, cid, chunk_text(doc, meta))
    data = PairSet()
    for query, (_, cid, text) in sorted(firsts.items()):
        if len(owners[query.casefold()]) == 1:
            data.add(f"headings:{question_key(query)}", query, {cid: text}, "headings")
    return data


def from_inverse_cloze(
    collection: Collection, per_chunk: int = 1, min_words: int = 6, seed: int = 0
) -> PairSet:
    """Inverse cloze: a sentence of a chunk as the query, the chunk without that sentence as the
    positive. Needs no LLM; measured to help little on its own, so let the gate judge it."""
    rng = random.Random(seed)
    data = PairSet()
    for cid, doc, meta in _chunks(collection):
        sentences = [s for s in _SENTENCE.split(doc) if s.strip()]
        if len(sentences) < 3:
            continue
        usable = [i for i, s in enumerate(sentences) if len(s.split()) >= min_words]
        for i in rng.sample(usable, min(per_chunk, len(usable))):
            rest = " ".join(sentences[:i] + sentences[i + 1 :])
            data.add(
                f"cloze:{cid}:{i}",
                sentences[i],
                {f"cloze:{cid}:{i}": chunk_text(rest, meta)},
                "cloze",
            )
    return data


GENERATE_PROMPT = (
    "Write {n} different questions that a reader could answer from the passage below alone. "
    'Reply with JSON only: {{"questions": ["...", "..."]}}\n\nPassage:\n{passage}'
)


def generate_pairs(
    collection: Collection,
    llm: ModelClient,
    size: int = 100,
    per_chunk: int = 2,
    min_words: int = 30,
    seed: int = 0,
    progress: bool = True,
) -> tuple[PairSet, list[str]]:
    """Questions written by an LLM (on any OpenAI-compatible endpoint)
    for `size` random chunks of at least `min_words` words. A malformed reply loses only its chunk
    (returned as a reason); an API error stops with a RagError that says so."""
    from tqdm import tqdm

    chunks = [c for c in _chunks(collection) if len(c[1].split()) >= min_words]
    if not chunks:
        raise DataError(f"no indexed chunk has {min_words} words or more to write questions from")
    picked = random.Random(seed).sample(chunks, min(size, len(chunks)))
    data, skipped = PairSet(), []
    for cid, doc, meta in tqdm(picked, desc="generate", unit="chunk", disable=not progress):
        prompt = GENERATE_PROMPT.format(n=per_chunk, passage=doc)
        try:
            reply = llm.ask(prompt, 0.2, json_reply=True)
        except ProviderError as exc:
            raise DataError(f"writing questions: {exc}") from exc
        try:
            questions = json.loads(reply)["questions"]
            if not isinstance(questions, list):
                raise TypeError("questions is not a list")
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            skipped.append(f"{cid}: malformed reply ({type(exc).__name__}: {exc})")
            continue
        for j, q in enumerate(questions[:per_chunk]):
            if isinstance(q, str) and q.strip():
                data.add(f"generated:{cid}:{j}", q, {cid: chunk_text(doc, meta)}, "generated")
    return data, skipped


# -- hard negatives ----------------------------------------------------------------------------


def mine_negatives(
    data: PairSet,
    model: SentenceTransformer,
    num_negatives: int = 1,
    relative_margin: float = 0.05,
    range_max: int = 50,
    batch_size: int = 64,
    seed: int = 0,
    lexical_weight: float = 0.0,
) -> dict[str, int]:
    """Fill `data.negatives` with the texts the current model ranks highest for each query that
    are neither its positives nor passages shown with its answer (`data.shown`), using
    sentence-transformers' `mine_hard_negatives`.

    Candidates within `relative_margin` of its weakest positive's score are skipped as likely
    unlabelled positives (the NV-Retriever TopK-PercPos setting). A query the model gets badly
    wrong may then lack candidates; it is never dropped: it keeps a random other text as its
    negative, counted in the returned `fallback`. Returns {"mined": n, "fallback": n}."""
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    qids = list(data.queries)
    if not qids:
        raise DataError("no pairs to mine negatives for")
    texts = list(dict.fromkeys(data.corpus.values()))
    if len(texts) < num_negatives + 2:
        raise DataError(
            f"{len(texts)} distinct texts are too few to mine {num_negatives} negative(s)"
        )
    ids_of: dict[str, list[str]] = {}
    for doc_id, text in data.corpus.items():
        ids_of.setdefault(text, []).append(doc_id)
    pairs = data.pairs()
    # Every positive of a question goes in (one row each): the miner never takes a question's own
    # passage as its negative, and keeps clear of candidates scoring near its weakest positive.
    # Training reads the first positive of each; the others are kept out of its negatives.
    rows = [(query, data.corpus[doc]) for qid, query, _ in pairs for doc in data.relevant_docs[qid]]
    table = Dataset.from_dict({"anchor": [r[0] for r in rows], "positive": [r[1] for r in rows]})
    # The passages shown with a rated-up answer are not negatives either (the miner knows only
    # positives, so it mines as many more and those are passed over).
    kept_out = {
        q: set(data.relevant_docs[q]) | {d for d in data.shown.get(q, []) if d in data.corpus}
        for q in qids
    }
    extra = max(len(kept_out[q]) - len(data.relevant_docs[q]) for q in qids)
    if lexical_weight:
        ranked = _hybrid_ranked(
            rows, texts, model, lexical_weight, relative_margin, range_max, batch_size
        )
        return _take_negatives(data, pairs, kept_out, ids_of, ranked, num_negatives, seed)
    mined = mine_hard_negatives(
        table,
        model,
        corpus=texts,
        range_max=min(max(range_max, num_negatives + extra), len(texts) - 1),
        relative_margin=relative_margin,
        num_negatives=min(num_negatives + extra, len(texts) - 1),
        sampling_strategy="top",
        output_format="labeled-pair",
        batch_size=batch_size,
        verbose=False,
    )
    ranked: dict[str, list[str]] = {}  # query -> its candidate negatives, best first
    for row in mined:
        if row["label"] == 0:
            ranked.setdefault(row["anchor"], []).append(row["positive"])
    return _take_negatives(data, pairs, kept_out, ids_of, ranked, num_negatives, seed)


def _hybrid_ranked(
    rows: list[tuple[str, str]],
    texts: list[str],
    model: SentenceTransformer,
    lexical_weight: float,
    relative_margin: float,
    range_max: int,
    batch_size: int,
) -> dict[str, list[str]]:
    """Each query's candidate negatives, best first, as the app's hybrid retrieval ranks them:
    the top `range_max` texts of the model and of BM25, fused by a weighted sum of their scores
    (the cosine scaled 0..1 over the candidates, BM25 by its best), with the lexical share the
    app searches with. Candidates within `relative_margin` of the weakest positive's cosine are
    left out, as the dense miner leaves them out."""
    import numpy as np

    from core.index.lexical import tokenize
    from core.logs import load_bm25s

    bm25s = load_bm25s()
    lexical = bm25s.BM25()
    lexical.index([tokenize(t) for t in texts], show_progress=False)
    queries = list(dict.fromkeys(q for q, _ in rows))
    at = {t: i for i, t in enumerate(texts)}
    weakest: dict[str, float] = {}
    q_vecs = model.encode(queries, batch_size=batch_size, normalize_embeddings=True)
    t_vecs = model.encode(texts, batch_size=batch_size, normalize_embeddings=True)
    cosines = np.asarray(q_vecs) @ np.asarray(t_vecs).T
    row_of = {q: i for i, q in enumerate(queries)}
    for q, positive in rows:
        c = float(cosines[row_of[q], at[positive]])
        weakest[q] = min(weakest.get(q, c), c)
    ranked: dict[str, list[str]] = {}
    depth = min(range_max, len(texts))
    for q in queries:
        dense = cosines[row_of[q]]
        tokens = tokenize(q)
        words = lexical.get_scores(tokens) if tokens else np.zeros(len(texts))
        pool = set(np.argsort(-dense)[:depth]) | set(np.argsort(-words)[:depth])
        pool = [i for i in pool if dense[i] <= weakest[q] * (1 - relative_margin)]
        if not pool:
            continue
        lo, hi = min(dense[i] for i in pool), max(dense[i] for i in pool)
        top = max(words[i] for i in pool) or 1.0
        fused = {
            i: (1 - lexical_weight) * (dense[i] - lo) / (hi - lo or 1.0)
            + lexical_weight * words[i] / top
            for i in pool
        }
        ranked[q] = [texts[i] for i in sorted(pool, key=lambda i: -fused[i])]
    return ranked


def _take_negatives(
    data: PairSet,
    pairs: list[tuple[str, str, str]],
    kept_out: dict[str, set[str]],
    ids_of: dict[str, list[str]],
    ranked: dict[str, list[str]],
    num_negatives: int,
    seed: int,
) -> dict[str, int]:
    rng = random.Random(seed)
    counts = {"mined": 0, "fallback": 0}
    for qid, query, _ in pairs:
        out = kept_out[qid]
        negs = [
            ids_of[t][0] for t in ranked.get(query, []) if not any(d in out for d in ids_of[t])
        ][:num_negatives]
        if len(negs) == num_negatives:
            counts["mined"] += 1
        else:
            others = [d for d in data.corpus if d not in out and d not in negs]
            negs += rng.sample(others, min(num_negatives - len(negs), len(others)))
            counts["fallback"] += 1
        data.negatives[qid] = negs
    return counts


# -- the dataset card --------------------------------------------------------------------------


def write_dataset(
    data: PairSet,
    directory: Path,
    name: str,
    skipped: dict[str, int] | None = None,
    negatives: dict[str, int] | None = None,
    inputs: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
) -> DatasetCard:
    """Save `data` as `pairs.json` and its card as `card.json` under `directory`."""
    if not data.queries:
        raise DataError(
            "no training pairs: rate some answers up in the chat (their cited passages are the "
            "pairs), or choose another source"
        )
    directory.mkdir(parents=True, exist_ok=True)
    save_llamaindex(data, directory / "pairs.json")
    digest = hashlib.sha256((directory / "pairs.json").read_bytes()).hexdigest()
    card = DatasetCard(
        kind="embedding",
        name=name,
        source="pairs",
        created_at=datetime.now(UTC),
        pairs=len(data),
        kept=len(data),
        by_source=dict(Counter(data.sources.values())),
        dropped=dict(skipped or {}),
        negatives=dict(negatives or {}),
        inputs=inputs or {},
        settings=settings or {},
        content_hash=digest,
        train_question_keys=sorted({question_key(q) for q in data.queries.values()}),
    )
    tmp = directory / "card.json.tmp"
    tmp.write_text(card.model_dump_json(indent=2), encoding="utf-8")
    tmp.replace(directory / "card.json")
    return card


def read_dataset(directory: Path) -> tuple[PairSet, DatasetCard]:
    """A dataset written by `write_dataset`; DataError when it is missing or was altered."""
    try:
        card = DatasetCard.model_validate_json((directory / "card.json").read_text())
    except OSError as exc:
        raise DataError(f"no dataset at {directory} ({exc}); build one first") from exc
    except ValidationError as exc:
        raise DataError(f"{directory}/card.json is malformed: {exc.errors()[0]['msg']}") from exc
    digest = hashlib.sha256((directory / "pairs.json").read_bytes()).hexdigest()
    if digest != card.content_hash:
        raise DataError(f"{directory}/pairs.json does not match its card (edited?); rebuild it")
    data = PairSet.model_validate_json((directory / "pairs.json").read_text())
    return data, card
