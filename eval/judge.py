"""LLM-judged metrics through Ragas 0.4 with an explicitly built judge on any OpenAI-compatible
server: faithfulness, response relevancy, context precision and recall with reference, factual
correctness. With no judge configured nothing here runs: no key means no LLM metrics, never a
default judge nor a surprise bill. Calls are bounded in number in flight; retries are the SDK's;
a failed or malformed judge reply makes that metric NaN on that sample, with the reason."""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from core.openai_api import api_reason, model_name, openai_client

if TYPE_CHECKING:
    from llama_index.core.base.embeddings.base import BaseEmbedding

    from core.evalstore import EvalSample, ScoredSample
    from core.settings import JudgeSettings

log = logging.getLogger(__name__)

JUDGE_METRICS = (
    "faithfulness",
    "response_relevancy",
    "llm_context_precision",
    "llm_context_recall",
    "factual_correctness",
)


def _api_error(exc: BaseException) -> BaseException:
    """The SDK's own error inside instructor's retry wrapper, if there is one."""
    import openai

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, openai.APIError):
            return current
        seen.add(id(current))
        attempts = getattr(current, "failed_attempts", None) or []
        inner = getattr(attempts[-1], "exception", None) if attempts else None
        if isinstance(inner, BaseException) and id(inner) not in seen:
            current = inner
            continue
        current = current.__cause__ or current.__context__
    return exc


def judge_error_reason(exc: BaseException, endpoint: JudgeSettings) -> str:
    """Why a judge call gave no score, from the SDK's and instructor's typed exceptions."""
    import openai

    exc = _api_error(exc)
    if isinstance(exc, openai.APIError):
        return api_reason(exc, endpoint)
    try:
        from instructor.core.exceptions import InstructorError
    except ImportError:  # pragma: no cover - instructor is pinned
        InstructorError = ()
    from pydantic import ValidationError

    if isinstance(exc, InstructorError | ValidationError | json.JSONDecodeError):
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"malformed judge reply: {first[:200]}"
    return f"{type(exc).__name__}: {str(exc)[:200]}"


class _LocalEmbeddings:
    """The local embedding model as a Ragas embedding (response relevancy compares questions)."""

    def __new__(cls, embed_model: BaseEmbedding):
        from ragas.embeddings.base import BaseRagasEmbedding

        class LocalEmbeddings(BaseRagasEmbedding):
            def embed_text(self, text: str, **kwargs: Any) -> list[float]:
                return embed_model.get_text_embedding(text)

            async def aembed_text(self, text: str, **kwargs: Any) -> list[float]:
                return await asyncio.to_thread(embed_model.get_text_embedding, text)

        return LocalEmbeddings()


class Judge:
    """A judge LLM on an OpenAI-compatible server, passed to each Ragas metric explicitly."""

    def __init__(self, endpoint: JudgeSettings):
        self.endpoint = endpoint
        self.model = model_name(endpoint)
        self.concurrency = endpoint.concurrency

    def _client(self, usage: list[int]):
        import httpx

        async def count(response: httpx.Response) -> None:
            # Tokens as the server reports them, whichever metric asked.
            if response.status_code == 200:
                await response.aread()
                try:
                    got = response.json().get("usage") or {}
                except (json.JSONDecodeError, AttributeError):
                    return
                usage[0] += int(got.get("prompt_tokens") or 0)
                usage[1] += int(got.get("completion_tokens") or 0)

        hooked = httpx.AsyncClient(
            timeout=self.endpoint.timeout_s, event_hooks={"response": [count]}
        )
        return openai_client(self.endpoint, asynchronous=True, http_client=hooked)

    def score(
        self,
        samples: list[EvalSample],
        answered: list[ScoredSample],
        embed_model: BaseEmbedding,
        progress: bool = True,
    ) -> tuple[int, int]:
        """Add the judge metrics to `answered` in place; returns (prompt, completion) tokens."""
        usage = [0, 0]
        asyncio.run(self._score(samples, answered, embed_model, usage, progress))
        return usage[0], usage[1]

    async def _score(
        self,
        samples: list[EvalSample],
        answered: list[ScoredSample],
        embed_model: BaseEmbedding,
        usage: list[int],
        progress: bool,
    ) -> None:
        from ragas.llms import llm_factory
        from ragas.metrics.collections import (
            AnswerRelevancy,
            ContextPrecisionWithReference,
            ContextRecall,
            FactualCorrectness,
            Faithfulness,
        )
        from tqdm import tqdm

        # Failures are reported per sample as NaN with the reason; instructor's own error log
        # would repeat each of them on the console.
        logging.getLogger("instructor").setLevel(logging.CRITICAL)
        client = self._client(usage)
        llm = llm_factory(self.model, client=client)
        metrics = {
            "faithfulness": Faithfulness(llm=llm),
            "response_relevancy": AnswerRelevancy(
                llm=llm, embeddings=_LocalEmbeddings(embed_model), strictness=1
            ),
            "llm_context_precision": ContextPrecisionWithReference(llm=llm),
            "llm_context_recall": ContextRecall(llm=llm),
            "factual_correctness": FactualCorrectness(llm=llm),
        }
        gate = asyncio.Semaphore(self.concurrency)
        fatal: list[str] = []  # a rejected key fails every call alike: stop calling
        jobs: list[Awaitable[None]] = []
        bar = tqdm(total=0, desc="judge", unit="call", disable=not progress)

        def job(scored: ScoredSample, name: str, call: Callable[[], Awaitable[Any]]):
            async def run() -> None:
                async with gate:
                    if fatal:
                        _nan(scored, name, fatal[0])
                        return
                    try:
                        result = await call()
                        value = float(getattr(result, "value", result))
                    except Exception as exc:
                        import openai

                        reason = judge_error_reason(exc, self.endpoint)
                        root = _api_error(exc)
                        if isinstance(
                            root, openai.AuthenticationError | openai.PermissionDeniedError
                        ):
                            fatal.append(reason)
                        _nan(scored, name, reason)
                    else:
                        if math.isnan(value):
                            _nan(scored, name, "the judge found nothing to score")
                        else:
                            scored.scores[name] = value
                    finally:
                        bar.update(1)

            return run()

        from eval.metrics import answer_text

        for sample, scored in zip(samples, answered, strict=True):
            # Read as the offline metrics read them: the label, quote marks and [n] dropped from
            # the answer and from a reference taken from a logged answer.
            response = answer_text(scored.response) or None
            contexts = scored.retrieved_contexts
            reference = answer_text(sample.reference) if sample.reference else None
            q = sample.user_input
            m = metrics
            wants = {
                "faithfulness": (
                    response and contexts,
                    partial(
                        m["faithfulness"].ascore,
                        user_input=q,
                        response=response,
                        retrieved_contexts=contexts,
                    ),
                ),
                "response_relevancy": (
                    response,
                    partial(m["response_relevancy"].ascore, user_input=q, response=response),
                ),
                "llm_context_precision": (
                    reference and contexts,
                    partial(
                        m["llm_context_precision"].ascore,
                        user_input=q,
                        reference=reference,
                        retrieved_contexts=contexts,
                    ),
                ),
                "llm_context_recall": (
                    reference and contexts,
                    partial(
                        m["llm_context_recall"].ascore,
                        user_input=q,
                        retrieved_contexts=contexts,
                        reference=reference,
                    ),
                ),
                "factual_correctness": (
                    response and reference,
                    partial(
                        m["factual_correctness"].ascore, response=response, reference=reference
                    ),
                ),
            }
            for name, (possible, call) in wants.items():
                if not possible:
                    missing = "no answer" if not response else "no reference or no contexts"
                    _nan(scored, name, missing)
                    continue
                jobs.append(job(scored, name, call))
        bar.total = len(jobs)
        bar.refresh()
        try:
            await asyncio.gather(*jobs)
        finally:
            bar.close()
            await client.close()


def _nan(scored: ScoredSample, name: str, reason: str) -> None:
    scored.scores[name] = math.nan
    scored.nan_reasons[name] = reason


def build_judge(cfg: JudgeSettings) -> Judge | None:
    """The configured judge, or None (no LLM metrics) when no judge model or no way to reach one
    is configured: never a default OpenAI judge built behind the user's back."""
    if not cfg.model and not cfg.azure_deployment:
        return None
    if not cfg.configured:
        log.warning(
            "RAG_EVAL__JUDGE__MODEL is set but there is no OPENAI_API_KEY / "
            "RAG_EVAL__JUDGE__API_KEY nor RAG_EVAL__JUDGE__BASE_URL: LLM metrics are not scored"
        )
        return None
    return Judge(cfg)
