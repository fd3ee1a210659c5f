"""The RAG pipeline: condense a follow-up with the history, retrieve from Chroma through a
LlamaIndex query engine, stream the answer with its sources, and log the turn (question first,
answer after)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import QueryBundle

from core.compute import ComputeGate
from core.errors import ProviderError, RagError
from core.index.chunks import Meta, readable
from core.index.lexical import LexicalSource
from core.openai_api import api_error
from core.records import SourceRef, TokenUsage
from rag.retriever import HybridRetriever, cosine, to_source
from rag.synthesis import NO_ANSWER, CitingSynthesizer, ExtractiveSynthesizer, SentenceVectors

if TYPE_CHECKING:
    from chromadb.api.models.Collection import Collection
    from llama_index.core.base.embeddings.base import BaseEmbedding

    from core.chatlog import ChatLog
    from core.prompting import SystemPrompt
    from core.settings import LLMSettings, RetrievalSettings
    from rag.providers import ChatModel

log = logging.getLogger(__name__)

CONDENSE_PROMPT = (
    "Rewrite the last question so that it can be understood without the conversation, keeping "
    "its meaning and language. Reply with the rewritten question only.\n\n"
    "Conversation:\n{history}\n\nLast question: {question}\n\nStandalone question:"
)
HISTORY_TURNS = 3
STOPPED = "stopped before the answer was complete"
# How much less relevant to the question alone the joined reading's best passage may be than the
# question's own best match, for a question read as a follow-up (cosine similarity).
FOLLOW_UP_TOLERANCE = 0.15


# What makes a question lean on the one before it: a word that points back ("it", "that one",
# "there", "instead"), or an opening that continues it ("And ...", "What about ...", "Via ...").
_REFERS_BACK = re.compile(
    r"\b(it|its|itself|this|these|those|they|them|their|theirs|he|him|his|she|her|hers|"
    r"here|then|one|ones|same|such|also|else|instead|another|former|latter)\b|"
    r"(?<!is )(?<!are )(?<!was )(?<!were )\bthere\b|"  # "there", but not "is there a way"
    # "that" where it points ("after that?", "do that from the command line", "that option"),
    # not where it starts a clause ("make sure that the index is fresh").
    r"\bthat(\s*[?.!,]|\s*$|\s+(from|in|on|with|by|for|to|at|via|without|using|through|over|"
    r"again|too|instead|now|later|first|automatically|one|way|case|file|option|setting|command|"
    r"step|part)\b)|"
    r"^\W*(and|or|but|so|also|what about|how about|via|for|with|without|using|in|on|from|by)\b",
    re.IGNORECASE,
)
# A question this short names no subject of its own ("Why?", "How long?", "Which default?").
SHORT_QUESTION_WORDS = 3


def refers_back(question: str) -> bool:
    """Whether a question points back at an earlier one, so that it may be read with it: a word
    that points back, an opening that continues the last question, or too few words to name a
    subject. "That" counts only where it points ("after that?", "that option"), not where it
    joins a clause ("make sure that the index is fresh")."""
    return (
        len(question.split()) <= SHORT_QUESTION_WORDS or _REFERS_BACK.search(question) is not None
    )


@dataclass
class AnswerUpdate:
    """What the UI shows while an answer streams in; `done` on the last one."""

    text: str
    sources: list[SourceRef] = field(default_factory=list)
    turn_id: int | None = None
    done: bool = False
    warning: str | None = None  # e.g. the chat log could not be written


def provider_error(exc: Exception, endpoint: LLMSettings | None) -> RagError:
    """The chat model's failure as a ProviderError that says what to do (core.openai_api for the
    OpenAI SDK's typed errors)."""
    import openai

    if isinstance(exc, openai.OpenAIError) and endpoint is not None:
        return api_error(exc, endpoint)
    return ProviderError(f"the chat model failed: {type(exc).__name__}: {exc}")


def _history_text(history: Sequence[dict]) -> str:
    lines = [f"{m['role']}: {m['content']}" for m in history[-2 * HISTORY_TURNS :]]
    return "\n".join(lines)


def places_of(meta: dict) -> str:
    """Where a passage stands: its heading path, file name and title, for the answerer."""
    keys = (Meta.HEADING_PATH, Meta.FILE_NAME, Meta.TITLE)
    return " ".join(str(meta.get(k) or "") for k in keys)


class RagPipeline:
    """Answers questions over one collection with one chat model, logging every turn."""

    # The registry versions this pipeline was built from (set by rag.live); logged on every turn.
    chat_version_id: int | None = None
    embedding_version_id: int | None = None
    reranker_version_id: int | None = None  # a reranker version that re-ranks (names a model)
    reranker_seen_id: int | None = None  # the active reranker version, re-ranking or not

    def __init__(
        self,
        collection: Collection,
        embed_model: BaseEmbedding,
        chat_model: ChatModel,
        chatlog: ChatLog | None,
        prompt: SystemPrompt,
        retrieval: RetrievalSettings,
        lexical: LexicalSource | None = None,
        gate: ComputeGate | None = None,
    ):
        self.collection = collection
        # CPU work (embedding, search, sentence ranking) queues here, shared by every session of
        # the process, so concurrent questions take turns on the cores instead of thrashing them.
        self.gate = gate or ComputeGate()
        self.embed_model = embed_model
        self.chat_model = chat_model
        self.chatlog = chatlog
        self.prompt = prompt
        self.sentence_vectors = SentenceVectors(embed_model, gate=self.gate)
        self.retriever = HybridRetriever(collection, embed_model, retrieval, lexical)

    @property
    def badge(self) -> str:
        """The answering model, and the registry versions that answer (chat, embedding, and the
        reranker when one re-ranks)."""
        versions = [
            f"{kind} v{vid}"
            for kind, vid in (
                ("chat", self.chat_version_id),
                ("embedding", self.embedding_version_id),
                ("reranker", self.reranker_version_id),
            )
            if vid
        ]
        return " · ".join([self.chat_model.badge, *versions])

    def condense(self, question: str, history: Sequence[dict]) -> str:
        """A standalone version of a follow-up question, rewritten by the chat model."""
        users = [m["content"] for m in history if m.get("role") == "user"]
        llm = self.chat_model.llm
        if not users or llm is None:
            return question
        prompt = CONDENSE_PROMPT.format(history=_history_text(history), question=question)
        try:
            condensed = llm.complete(prompt).text.strip()
        except Exception as exc:  # the SDK's typed errors, mapped to what to do
            raise provider_error(exc, self.chat_model.endpoint) from exc
        return condensed or question

    def standalone(self, question: str, history: Sequence[dict]) -> tuple[str, list[float]]:
        """The question to search with, and its embedding. With a chat model, its rewrite. With
        none, the question is read together with the previous one when it refers back to it (a
        pronoun, "what about ...", a leading "and") and that reading finds a closer passage which
        the question alone also finds about as relevant as its own best match. A true follow-up
        ("When does it take place?") matches little by itself and gains from the context; a new
        topic has a strong match of its own that the joined reading would trade for the previous
        topic's, whatever pronouns it uses. A question that names its own subject and refers to
        nothing ("How do I roll back a model?") is never joined: in a small collection of long
        passages every question matches weakly, and meaning alone would glue it to the last one."""
        if self.chat_model.llm is not None:
            condensed = self.condense(question, history)  # a network call: not gated
            with self.gate.hold():
                return condensed, self.embed_model.get_query_embedding(condensed)
        users = [m["content"] for m in history if m.get("role") == "user"]
        with self.gate.hold():
            alone = self.embed_model.get_query_embedding(question)
            if not users or not refers_back(question):
                return question, alone
            joined = f"{users[-1]} {question}"
            together = self.embed_model.get_query_embedding(joined)
            own, found = self.retriever.best_passage(alone), self.retriever.best_passage(together)
        if own is None or found is None or found[0] <= own[0]:
            return question, alone
        if cosine(found[1], np.asarray(alone, np.float32)) >= own[0] - FOLLOW_UP_TOLERANCE:
            return joined, together
        return question, alone

    def answers_well(self, question: str, source: str) -> bool:
        """Whether `question` is answered from `source` with evidence that is not weak: its best
        passage comes from that document and the extractive answer finds a close match there
        (what the first screen checks before suggesting a question)."""
        with self.gate.hold():
            embedding = self.embed_model.get_query_embedding(question)
            found = self.retriever.ranked(question, embedding)
            if not found or str((found[0].metadata or {}).get(Meta.SOURCE)) != source:
                return False
            synth = ExtractiveSynthesizer(self.sentence_vectors, embedding)
            texts = [readable(c.text or "", c.metadata) for c in found]
            return bool(synth.pick(question, texts)) and not synth.weak

    def _engine(
        self, query_embedding: list[float]
    ) -> tuple[RetrieverQueryEngine, CitingSynthesizer | ExtractiveSynthesizer]:
        if self.chat_model.llm is None:
            synth = ExtractiveSynthesizer(self.sentence_vectors, query_embedding)
        else:
            synth = CitingSynthesizer(
                self.chat_model.llm, self.prompt.text, self.chat_model.stream_usage
            )
        return RetrieverQueryEngine(retriever=self.retriever, response_synthesizer=synth), synth

    def _log_start(self, session_id: str, question: str) -> tuple[int | None, str | None]:
        if self.chatlog is None:
            return None, None
        try:
            return self.chatlog.start_turn(session_id, question), None
        except Exception as exc:  # a broken log must never break the chat
            log.exception("could not log the question")
            return None, f"this turn could not be logged ({type(exc).__name__}); the answer is fine"

    def ask(
        self, session_id: str, question: str, history: Sequence[dict] = ()
    ) -> Iterator[AnswerUpdate]:
        """Stream the answer to `question`. Raises RagError (after logging the failure) when the
        chat model fails; every other update carries the text so far and the sources."""
        question = question.strip()
        if not question:
            raise RagError("ask a question first")
        started = time.perf_counter()
        turn_id, warning = self._log_start(session_id, question)
        condensed: str | None = None
        sources: list[SourceRef] = []
        text = ""
        synth = None
        response = None
        try:
            # Embedded once: the retriever searches with it, the extractive answerer ranks with it.
            condensed, embedding = self.standalone(question, history)
            engine, synth = self._engine(embedding)
            if isinstance(synth, ExtractiveSynthesizer) and condensed != question:
                # Read with the question before it: what was answered then says what is new.
                said = [m["content"] for m in history if m.get("role") == "assistant"]
                synth.previous = said[-1] if said else None
            bundle = QueryBundle(condensed, embedding=embedding)
            extractive = isinstance(synth, ExtractiveSynthesizer)
            with self.gate.hold():
                nodes = engine.retrieve(bundle)
                if extractive:
                    # Ranking sentences is CPU work too; a chat model's is not ours.
                    synth.places = [places_of(n.node.metadata) for n in nodes]
                    synth.asked = question
                    response = engine.synthesize(bundle, nodes)
            if not extractive:
                response = engine.synthesize(bundle, nodes)
            sources = [to_source(n) for n in response.source_nodes]
            if extractive:
                for quote in synth.picked:
                    if 0 < quote.passage <= len(sources):
                        sources[quote.passage - 1].quotes.append(quote.text)
            for delta in response.response_gen:
                text += delta
                yield AnswerUpdate(text, sources, turn_id, warning=warning)
            text = text.strip() or NO_ANSWER
        except GeneratorExit:  # closed mid-answer (the UI's New chat stops it): logged as such
            try:
                if response is not None and hasattr(response.response_gen, "close"):
                    response.response_gen.close()  # and the chat model's stream with it
            finally:
                partial = text.strip() or None
                self._log_finish(
                    turn_id, partial, condensed, sources, started, None, STOPPED, warning
                )
            raise
        except Exception as exc:
            error = (
                exc if isinstance(exc, RagError) else provider_error(exc, self.chat_model.endpoint)
            )
            warning = self._log_finish(
                turn_id, None, condensed, sources, started, None, str(error), warning
            )
            raise error from exc
        usage = synth.usage if synth is not None else None
        warning = self._log_finish(turn_id, text, condensed, sources, started, usage, None, warning)
        yield AnswerUpdate(text, sources, turn_id, done=True, warning=warning)

    def _log_finish(
        self,
        turn_id: int | None,
        answer: str | None,
        condensed: str | None,
        sources: list[SourceRef],
        started: float,
        usage: TokenUsage | None,
        error: str | None,
        warning: str | None,
    ) -> str | None:
        if self.chatlog is None or turn_id is None:
            return warning
        try:
            self.chatlog.finish_turn(
                turn_id,
                answer=answer,
                condensed_question=condensed,
                contexts=sources,
                model_id=self.chat_model.model_id,
                provider=self.chat_model.provider,
                prompt_version=self.prompt.version,
                latency_ms=(time.perf_counter() - started) * 1000,
                usage=usage,
                error=error,
                chat_version_id=self.chat_version_id,
                embedding_version_id=self.embedding_version_id,
                reranker_version_id=self.reranker_version_id,
            )
        except Exception as exc:
            log.exception("could not log the answer")
            return f"the answer could not be logged ({type(exc).__name__})"
        return warning
