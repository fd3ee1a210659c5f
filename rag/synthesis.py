"""Response synthesizers for the LlamaIndex query engine: one that asks a chat model to answer from
numbered passages, and one that needs no LLM and quotes the most relevant sentences."""

from __future__ import annotations

import gc
import re
import threading
from collections import OrderedDict
from collections.abc import Generator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from llama_index.core.llms import ChatMessage, MessageRole, MockLLM
from llama_index.core.response_synthesizers.base import BaseSynthesizer

from core.prompting import context_message
from core.records import TokenUsage
from rag.units import (
    Unit,
    content_words,
    defines,
    names_term,
    new_term,
    normalise,
    split_units,
)

if TYPE_CHECKING:
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.llms import LLM

    from core.compute import ComputeGate
    from rag.sentencestore import SentenceStore

NO_ANSWER = (
    "I could not find anything relevant to that in the indexed documents, so I cannot answer it "
    "from them. Try rephrasing, or add documents that cover it."
)
# How an answer says the documents do not hold the answer: the app's own words, and what the
# system prompt asks a chat model to say.
_NOT_COVERED = re.compile(
    r"(could not find anything relevant|(documents?|passages?|context)\s+(do|does)\s+not\s+"
    r"(cover|contain|mention|say)|not covered (by|in) the (documents|passages))",
    re.IGNORECASE,
)
EXTRACTIVE_LABEL = (
    "**Extracted passages** (no language model is configured: these are the sentences of your "
    "documents closest to the question, quoted verbatim)"
)


def says_not_covered(answer: str) -> bool:
    """Whether an answer says the documents do not cover the question (so it answers nothing)."""
    return answer.strip().startswith(NO_ANSWER[:40]) or bool(_NOT_COVERED.search(answer[:400]))


def _stop(stream: Any) -> None:
    """Close a chat model's stream that is stopped early, so that its HTTP response is closed
    and the server stops generating (and billing) tokens. LlamaIndex's wrapper keeps the SDK's
    stream in a reference cycle, which only the cycle collector frees: collected here, once per
    stopped answer, rather than whenever Python next gets to it. A full collection holds the
    interpreter for about a fifth of a second, a pause every session shares; stopping an answer
    is rare, and tokens billed for an answer nobody reads would cost more."""
    try:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    finally:
        gc.collect()


class CitingSynthesizer(BaseSynthesizer):
    """Streams a chat model's answer to the question over numbered passages. One per request, so
    the token usage it records belongs to that request alone."""

    def __init__(self, llm: LLM, system_prompt: str, stream_usage: bool = False):
        super().__init__(llm=llm, streaming=True, empty_response=NO_ANSWER)
        self.system_prompt = system_prompt
        self.stream_usage = stream_usage
        self.usage = TokenUsage()

    def _get_prompts(self) -> dict[str, Any]:
        return {}

    def _update_prompts(self, prompts: dict[str, Any]) -> None:
        pass

    def messages(self, query_str: str, text_chunks: Sequence[str]) -> list[ChatMessage]:
        return [
            ChatMessage(role=MessageRole.SYSTEM, content=self.system_prompt),
            # Built in core so that fine-tuning examples read exactly like the app's requests.
            ChatMessage(role=MessageRole.USER, content=context_message(query_str, text_chunks)),
        ]

    def get_response(
        self, query_str: str, text_chunks: Sequence[str], **kwargs: Any
    ) -> Generator[str, None, None]:
        extra = {"stream_options": {"include_usage": True}} if self.stream_usage else {}
        stream = self._llm.stream_chat(self.messages(query_str, text_chunks), **extra)

        def gen() -> Generator[str, None, None]:
            finished = False
            try:
                for chunk in stream:
                    # OpenAI puts usage on the chunk; completion-style models on the message.
                    counts = chunk.additional_kwargs or chunk.message.additional_kwargs or {}
                    if "prompt_tokens" in counts:
                        self.usage = TokenUsage(
                            prompt_tokens=counts.get("prompt_tokens"),
                            completion_tokens=counts.get("completion_tokens"),
                        )
                    if chunk.delta:
                        yield chunk.delta
                finished = True
            finally:
                if not finished:
                    _stop(stream)

        return gen()

    async def aget_response(self, query_str: str, text_chunks: Sequence[str], **kwargs: Any):
        raise NotImplementedError("the chat app answers synchronously")


class SentenceVectors:
    """Embeddings of passage sentences, kept across answers (the same passages come back again
    and again): in memory (bounded, least recently used first out) and, given a store, on disk,
    so a sentence is embedded once per model, not once per answer or per process. Safe to share
    between sessions; given a gate, the embedding itself queues with the other CPU work, and a
    sentence another session embedded meanwhile is not embedded twice."""

    def __init__(
        self,
        embed_model: BaseEmbedding,
        max_items: int = 20_000,
        store: SentenceStore | None = None,
        gate: ComputeGate | None = None,
    ):
        self.embed_model = embed_model
        self.max_items = max_items
        self.store = store
        self.gate = gate
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def _remember(self, vectors: dict[str, np.ndarray]) -> None:
        with self._lock:
            for s, v in vectors.items():
                self._items[s] = v
                self._items.move_to_end(s)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def _known(self, wanted: Sequence[str]) -> dict[str, np.ndarray]:
        with self._lock:
            known = {s: self._items[s] for s in wanted if s in self._items}
            for s in known:
                self._items.move_to_end(s)
        return known

    def get(self, sentences: Sequence[str]) -> np.ndarray:
        """One row per sentence, in order."""
        wanted = list(dict.fromkeys(sentences))
        known = self._known(wanted)
        missing = [s for s in wanted if s not in known]
        if missing and self.store is not None:
            stored = self.store.get(missing)
            self._remember(stored)
            known.update(stored)
            missing = [s for s in missing if s not in known]
        if missing:
            with self.gate.hold() if self.gate is not None else nullcontext():
                known.update(self._known(missing))  # embedded by another session meanwhile
                missing = [s for s in missing if s not in known]
                if missing:
                    fresh = np.asarray(
                        self.embed_model.get_text_embedding_batch(missing), np.float32
                    )
                    computed = dict(zip(missing, fresh, strict=True))
                    self._remember(computed)
                    known.update(computed)
                    if self.store is not None:
                        self.store.put(computed)
        return np.stack([known[s] for s in sentences])


# A name no prose word looks like: an identifier with `_` or a `.` before a small letter inside
# (pg_stat_statements, postgresql.conf), a call written with its brackets (`lower()`), or a long
# option (--schema-only). Words before a bracket ("setting(s)", "f(x)") and versions are prose.
_NAME = re.compile(
    r"(?<![\w.-])(?:[A-Za-z]\w+(?:_\w+|\.[a-z]\w*)+(?:\(\))?|[A-Za-z_]\w*\(\)|--[A-Za-z][\w-]*)"
)


def missing_names(question: str, passages: Sequence[str]) -> list[str]:
    """The names the question uses (see _NAME) that none of the passages mentions, in the
    question's order, once each whatever their case; a name counts wherever it stands as a word
    of its own, in any case."""
    names: dict[str, str] = {}
    for found in _NAME.findall(question):
        name = found.removesuffix("()")
        names.setdefault(name.lower(), name)
    text = " ".join(passages).lower()
    return [
        name
        for low, name in names.items()
        if re.search(rf"(?<![\w-]){re.escape(low)}(?![\w-])", text) is None
    ]


def cut_off(units: Sequence[Unit], unit: Unit) -> bool:
    """Whether `unit` is the last of its passage's `units` and stops mid-sentence (at a comma):
    the passage was cut there, and the rest is in the next one."""
    return (
        unit.position == units[-1].position
        and not unit.code
        and unit.text.rstrip().endswith((",", ";", "("))
    )


def _flat(text: str) -> str:
    return " ".join(text.split())


def repeats(g: Sequence[Quote], groups: Sequence[Sequence[Quote]]) -> bool:
    """Whether a quote of `g` is quoted already, whole or as part of a longer quote of the same
    kind (code in code, prose in prose), word for word: the same command can stand twice on a
    page (a synopsis, an example), consecutive passages share the text around their cut, and a
    sentence is quoted with its code or not at all."""
    quoted = [(q.code, f" {_flat(q.text)} ") for other in groups for q in other]
    return any(code == q.code and f" {_flat(q.text)} " in text for q in g for code, text in quoted)


def overlaps(g: Sequence[Quote], groups: Sequence[Sequence[Quote]]) -> bool:
    """Whether `g` repeats a chosen quote or holds one whole."""
    return repeats(g, groups) or any(repeats(other, [g]) for other in groups)


# A sentence that goes on from the one before it, about the same thing.
_GOES_ON = re.compile(r"(this|these|that|those|such|it|doing so|to do (this|so))\b", re.I)


@dataclass(frozen=True)
class Quote:
    """A unit the extractive answer quotes: its text, passage number (1-based) and score."""

    text: str
    passage: int
    position: int
    score: float
    code: bool = False


NOT_COVERED = (
    "The documents do not cover this, as far as I can find: nothing in them matches the question "
    "closely. Try rephrasing, or add documents that cover it. The closest passage:"
)
# The question names a thing (an identifier, a file, a call, an option) that none of the quoted
# passages mentions: said above the quotes, as a search engine marks a word a result lacks. Not a
# verdict: the name may be the user's own (their column, their table), which the documents
# answer about without naming it.
NOT_MENTIONED = "None of these passages mentions {names}."
# A follow-up whose best match is what the answer above quoted already: the passage may match
# well, but it says nothing new.
SAID_ALREADY = (
    "The documents do not say more about this than the answer above, as far as I can find. Try "
    "asking it as a question of its own. The closest passage:"
)


class ExtractiveSynthesizer(BaseSynthesizer):
    """No LLM: scores each sentence of the retrieved passages by its similarity to the question,
    read together with its neighbours (the sentence next to one that sets up a topic often holds
    the answer), plus the share of the question's words it contains and a small lead for the best
    passage. Sentences that only restate the question (or ask one) and bare headings are never
    quoted; the best few are quoted in document order within each passage (the passage with the
    best one first), commands whole, under a clear label, and a weak best match is said plainly."""

    def __init__(
        self,
        sentence_vectors: SentenceVectors,
        query_embedding: Sequence[float],
        max_sentences: int = 6,
        max_words: int = 80,
        min_score: float = 0.15,
        max_gap: float = 0.3,
        neighbour_weight: float = 0.3,
        overlap_weight: float = 0.2,
        lead_bonus: float = 0.1,
        weak_below: float = 0.3,
        term_bonus: float = 0.1,
    ):
        super().__init__(llm=MockLLM(), streaming=True, empty_response=NO_ANSWER)
        self.sentence_vectors = sentence_vectors
        self.query_embedding = np.asarray(query_embedding, np.float32)
        self.max_sentences = max_sentences
        self.max_words = max_words  # a budget for the quotes together; the best is always quoted
        self.min_score = min_score
        # Up to `max_sentences`, but only those close to the best one: a sentence far below it is
        # noise, not support (this, not the count, keeps most answers short).
        self.max_gap = max_gap
        self.neighbour_weight = neighbour_weight
        self.overlap_weight = overlap_weight
        self.lead_bonus = lead_bonus
        self.weak_below = weak_below  # best cosine under this: say the evidence is weak
        # A unit that names its term (an option, a keyword, a setting) is preferred over prose
        # around it that says the same: the user asked for the thing, by what it does.
        self.term_bonus = term_bonus
        self.usage = TokenUsage()
        self.picked: list[Quote] = []
        self.weak = False
        self.repeated = False  # weak because it only repeats the answer above
        self.missing: list[str] = []  # what the question names that no passage mentions
        # Where the passages stand (heading paths, file names), set by the pipeline: a name
        # there is mentioned too (a page's rows need not repeat the name of their table).
        self.places: list[str] = []
        # The user's own words, when the question searched with is another (a follow-up read
        # with the one before it): only what they asked now can be missing.
        self.asked: str | None = None
        # For a question read together with the one before it: the answer given to that one.
        self.previous: str | None = None

    def _get_prompts(self) -> dict[str, Any]:
        return {}

    def _update_prompts(self, prompts: dict[str, Any]) -> None:
        pass

    def _cosines(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self.sentence_vectors.get(texts)
        query = self.query_embedding
        return vectors @ query / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(query) + 1e-12)

    def score_units(
        self, query_str: str, passages: Sequence[Sequence[Unit]]
    ) -> tuple[list[tuple[float, int, Unit]], dict[tuple[int, int], float]]:
        """Every quotable unit of the passages with its score, best first (passage numbers are
        1-based), and each unit's cosine to the question by (passage, position)."""
        flat = [(n, u) for n, units in enumerate(passages, start=1) for u in units]
        if not flat:
            return [], {}
        cosines = self._cosines([u.text for _, u in flat])
        by_unit = {(n, u.position): float(c) for (n, u), c in zip(flat, cosines, strict=True)}
        asked, asked_words = normalise(query_str), content_words(query_str)
        scored: list[tuple[float, int, Unit]] = []
        for n, unit in flat:
            words = content_words(unit.text)
            if cut_off(passages[n - 1], unit):
                continue  # cut where the passage ends: the rest is in the next one
            # Only restates the question (an example question in the docs, or the question's own
            # words and nothing more), or asks one: never an answer. A sentence that goes on
            # after the question's words completes it (a fill-in question's answer).
            said = f" {normalise(unit.text)} "
            if (
                len(asked.split()) >= 3
                and f" {asked} " in said
                and len(said.split(f" {asked} ", 1)[1].split()) < 2
            ):
                continue  # the question quoted, with nothing after it that completes it
            if not (words - asked_words):
                continue
            if not unit.code and unit.text.rstrip().endswith("?") and not defines(unit.text):
                continue  # a question, not an answer ("x ? y: Does ... exist?" defines x ? y)
            cosine = by_unit[(n, unit.position)]
            near = [by_unit.get((n, unit.position + d)) for d in (-1, 1)]
            neighbour = max((c for c in near if c is not None), default=cosine)
            overlap = len(words & asked_words) / len(asked_words) if asked_words else 0.0
            score = (
                cosine
                + self.neighbour_weight * neighbour
                + self.overlap_weight * overlap
                + (self.lead_bonus if n == 1 else 0.0)
                + (self.term_bonus if new_term(unit.text, asked_words) else 0.0)
            )
            scored.append((score, n, unit))
        scored.sort(key=lambda item: -item[0])
        return scored, by_unit

    def pick(self, query_str: str, text_chunks: Sequence[str]) -> list[Quote]:
        """The quotes, passage by passage (the one holding the best quote first), each passage's
        in its own order; empty when nothing fits."""
        passages = [split_units(text) for text in text_chunks]
        scored, by_unit = self.score_units(query_str, passages)
        if not scored:
            return []
        asked_words = content_words(query_str)
        # Every unit close enough to the best is support, quoted by score while the answer stays
        # short (a long unit that would overrun it gives way to shorter ones). A sentence that
        # introduces what follows it ("a simple policy can be used:") is quoted with the code it
        # introduces: without it, it promises an answer it does not give. When none of those
        # quoted names a term the question does not (the option, keyword or setting it asks for
        # by what it does), the best support that does takes the last place: prose around the
        # thing never crowds out its name.
        floor = max(self.min_score, scored[0][0] - self.max_gap)
        close = [item for item in scored if item[0] >= floor] or scored[:1]

        def group(score: float, n: int, unit: Unit) -> list[Quote]:
            quotes = [Quote(unit.text, n, unit.position, score, unit.code)]
            following = passages[n - 1][unit.position + 1 : unit.position + 2]
            if not unit.code and unit.text.rstrip().endswith(":") and following[:1]:
                after = following[0]
                if after.code:
                    quotes.append(Quote(after.text, n, after.position, score, True))
            elif (
                following[:1]
                and not unit.code
                and not following[0].code
                and not cut_off(passages[n - 1], following[0])
                and _GOES_ON.match(following[0].text)
                and names_term(following[0].text, asked_words)
                and not names_term(unit.text, asked_words)
            ):
                # The next sentence names what this one describes ("... without locking out
                # writes. This method is invoked by specifying the CONCURRENTLY option"): the
                # name is the answer, so it is quoted with the description it belongs to.
                after = following[0]
                quotes.append(Quote(after.text, n, after.position, score, False))
            return quotes

        def size(quotes: list[Quote]) -> int:
            return sum(len(q.text.split()) for q in quotes)

        groups: list[list[Quote]] = []
        for score, n, unit in close:
            g = group(score, n, unit)
            if repeats(g, groups):
                continue
            # A quote that holds the whole of one chosen already (the same text read from the
            # passage beside it, not cut there) takes its place.
            rest = [other for other in groups if not repeats(other, [g])]
            if (rest or len(groups) > len(rest)) and sum(map(size, rest)) + size(g) > (
                self.max_words
            ):
                continue  # over the budget (the best quote alone may be longer; its whole not)
            at = next((i for i, other in enumerate(groups) if other not in rest), len(rest))
            groups = [*rest[:at], g, *rest[at:]]
            if len(groups) == self.max_sentences:
                break
        # The best definition close enough to be support (an option, a keyword, a setting named
        # with what it does) is quoted when it fits beside the best unit of all: the other quotes
        # give way to it, lowest-scored first.
        best = next((item for item in close if new_term(item[2].text, asked_words)), None)
        g = group(*best) if best is not None else []
        if g and not overlaps(g, groups):
            kept = list(groups)
            while len(kept) > 1 and (
                len(kept) >= self.max_sentences or sum(map(size, kept)) + size(g) > self.max_words
            ):
                kept.pop()
            if len(kept) < self.max_sentences and sum(map(size, kept)) + size(g) <= self.max_words:
                groups = [*kept, g]
        if len(groups) > 1 and not any(names_term(q.text, asked_words) for g in groups for q in g):
            room = self.max_words - sum(map(size, groups[:-1]))
            for score, n, unit in close:
                g = group(score, n, unit)
                if (
                    names_term(unit.text, asked_words)
                    and size(g) <= room
                    and not overlaps(g, groups[:-1])
                ):
                    groups[-1] = g
                    break
        picked = [q for g in groups for q in g]
        self.weak = bool(picked) and max(by_unit[(q.passage, q.position)] for q in picked) < (
            self.weak_below
        )
        self.repeated = False
        if picked and self.previous is not None and not self.weak:
            # A follow-up whose reading with the question before it finds only what the answer
            # above already quoted: the documents say nothing more about it.
            said = " ".join(self.previous.split())
            self.repeated = all(" ".join(q.text.split()) in said for q in picked)
            self.weak = self.repeated
        if self.weak:
            picked = picked[:1]  # not an answer: only the closest passage, said to be the closest
        quoted = {q.passage for q in picked}
        self.missing = missing_names(
            self.asked or query_str,
            [t for n, t in enumerate(text_chunks, 1) if n in quoted]
            + [p for n, p in enumerate(self.places, 1) if n in quoted],
        )
        if self.weak:
            return picked
        # Each passage's quotes in its own order, the passage holding the best quote first: the
        # answer leads with its best evidence, and reads in order within each passage.
        lead: dict[int, float] = {}
        for q in picked:
            lead[q.passage] = max(lead.get(q.passage, q.score), q.score)
        return sorted(picked, key=lambda q: (-lead[q.passage], q.passage, q.position))

    def get_response(
        self, query_str: str, text_chunks: Sequence[str], **kwargs: Any
    ) -> Generator[str, None, None]:
        self.picked = picked = self.pick(query_str, text_chunks)

        def gen() -> Generator[str, None, None]:
            if not picked:
                yield NO_ANSWER
                return
            lead = SAID_ALREADY if self.repeated else NOT_COVERED if self.weak else None
            yield (lead or EXTRACTIVE_LABEL + ":") + "\n\n"
            if self.missing:
                names = " or ".join(f"`{t}`" for t in self.missing)
                yield "_" + NOT_MENTIONED.format(names=names) + "_\n\n"
            for quote in picked:
                if quote.code:
                    yield f"```\n{quote.text}\n```\n[{quote.passage}]\n\n"
                else:
                    yield f"> {quote.text} [{quote.passage}]\n\n"

        return gen()

    async def aget_response(self, query_str: str, text_chunks: Sequence[str], **kwargs: Any):
        raise NotImplementedError("the chat app answers synchronously")
