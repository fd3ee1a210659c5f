"""Response synthesizers for the LlamaIndex query engine: one that asks a chat model to answer from
numbered passages, and one that needs no LLM and quotes the most relevant sentences."""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from llama_index.core.llms import ChatMessage, MessageRole, MockLLM
from llama_index.core.response_synthesizers.base import BaseSynthesizer

from core.prompting import context_message
from core.records import TokenUsage

if TYPE_CHECKING:
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.llms import LLM

NO_ANSWER = (
    "I could not find anything relevant to that in the indexed documents, so I cannot answer it "
    "from them. Try rephrasing, or add documents that cover it."
)
EXTRACTIVE_LABEL = (
    "**Extracted passages** (no language model is configured: these are the sentences of your "
    "documents closest to the question, quoted verbatim)"
)


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

        return gen()

    async def aget_response(self, query_str: str, text_chunks: Sequence[str], **kwargs: Any):
        raise NotImplementedError("the chat app answers synchronously")


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])|\n{2,}")


_HEADING = re.compile(r"^\s*#{1,6}\s+(.*)$", re.MULTILINE)
_MARKUP = re.compile(r"^\s*(?:#{1,6}|>|[-*+]|\d+[.)])\s+", re.MULTILINE)


def split_sentences(text: str) -> list[str]:
    """Sentences worth quoting: Markdown markers dropped, fragments under three words (headings,
    list stubs) skipped."""
    text = _HEADING.sub(r"\n\n\1\n\n", text)  # a heading never runs into the next line
    parts = (p.strip() for p in _SENTENCE_END.split(_MARKUP.sub("", text)))
    return [" ".join(p.split()) for p in parts if len(p.split()) >= 3]


def _normalise(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


class SentenceVectors:
    """Embeddings of passage sentences, kept across answers (the same passages come back again
    and again), bounded, least recently used first out; safe to share between sessions."""

    def __init__(self, embed_model: BaseEmbedding, max_items: int = 20_000):
        self.embed_model = embed_model
        self.max_items = max_items
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, sentences: Sequence[str]) -> np.ndarray:
        """One row per sentence, in order."""
        wanted = list(dict.fromkeys(sentences))
        with self._lock:
            known = {s: self._items[s] for s in wanted if s in self._items}
            for s in known:
                self._items.move_to_end(s)
        missing = [s for s in wanted if s not in known]
        if missing:
            fresh = np.asarray(self.embed_model.get_text_embedding_batch(missing), np.float32)
            with self._lock:
                for s, v in zip(missing, fresh, strict=True):
                    known[s] = self._items[s] = v
                while len(self._items) > self.max_items:
                    self._items.popitem(last=False)
        return np.stack([known[s] for s in sentences])


class ExtractiveSynthesizer(BaseSynthesizer):
    """No LLM: ranks every sentence of the retrieved passages by embedding similarity to the
    question and quotes the best few, each with its passage number, under a clear label."""

    def __init__(
        self,
        sentence_vectors: SentenceVectors,
        query_embedding: Sequence[float],
        max_sentences: int = 3,
        min_score: float = 0.15,
        max_gap: float = 0.2,
    ):
        super().__init__(llm=MockLLM(), streaming=True, empty_response=NO_ANSWER)
        self.sentence_vectors = sentence_vectors
        self.query_embedding = np.asarray(query_embedding, np.float32)
        self.max_sentences = max_sentences
        self.min_score = min_score
        self.max_gap = max_gap  # a sentence far below the best one is noise, not support
        self.usage = TokenUsage()

    def _get_prompts(self) -> dict[str, Any]:
        return {}

    def _update_prompts(self, prompts: dict[str, Any]) -> None:
        pass

    def pick(self, query_str: str, text_chunks: Sequence[str]) -> list[tuple[str, int, float]]:
        """(sentence, passage number, score), best first, passage order kept among equals."""
        candidates = [
            (sentence, number)
            for number, text in enumerate(text_chunks, start=1)
            for sentence in split_sentences(text)
        ]
        if not candidates:
            return []
        # A sentence that quotes the question itself (an example question in the docs) only
        # restates it: never an answer.
        asked = _normalise(query_str)
        candidates = [(s, n) for s, n in candidates if not asked or asked not in _normalise(s)]
        if not candidates:
            return []
        query = self.query_embedding
        vectors = self.sentence_vectors.get([s for s, _ in candidates])
        scores = vectors @ query / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(query) + 1e-12)
        order = np.argsort(-scores, kind="stable")
        picked, seen = [], set()
        for i in order:
            sentence, number = candidates[i]
            if sentence in seen:
                continue
            if picked and (scores[i] < self.min_score or scores[i] < picked[0][2] - self.max_gap):
                break
            seen.add(sentence)
            picked.append((sentence, number, float(scores[i])))
            if len(picked) == self.max_sentences:
                break
        return picked

    def get_response(
        self, query_str: str, text_chunks: Sequence[str], **kwargs: Any
    ) -> Generator[str, None, None]:
        picked = self.pick(query_str, text_chunks)

        def gen() -> Generator[str, None, None]:
            if not picked:
                yield NO_ANSWER
                return
            yield EXTRACTIVE_LABEL + ":\n\n"
            for sentence, number, _ in picked:
                yield f"> {sentence} [{number}]\n\n"

        return gen()

    async def aget_response(self, query_str: str, text_chunks: Sequence[str], **kwargs: Any):
        raise NotImplementedError("the chat app answers synchronously")
