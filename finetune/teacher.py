"""The teacher: a stronger chat model on the `openai` provider (OpenAI, Azure OpenAI or any
OpenAI-compatible server) that grades logged answers on a rubric, answers from the same contexts
(distill) or rewrites poor answers (relabel), always as JSON-schema structured output. A malformed
reply is asked again once, then the turn is dropped with the reason; never silently kept."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ValidationError

from core.errors import ConfigError, ProviderError
from core.jobstore import TeacherGrade
from core.openai_api import ModelClient, api_detail, connect
from core.prompting import chat_messages, number_passages

if TYPE_CHECKING:
    from core.settings import TeacherSettings

Mode = Literal["grade", "distill", "relabel"]
RUBRIC_VERSION = "rubric-1"

GRADE_SYSTEM = (
    "You grade the answers of a documentation assistant that must answer only from the context "
    "passages it was given. Score each criterion from 1 (bad) to 5 (excellent):\n"
    "- faithfulness: every claim is supported by the passages (5: fully supported; 1: invented);\n"
    "- correctness: the answer is right and answers what was asked;\n"
    "- helpfulness: direct, complete, clear, cites passages like [1] where it uses them.\n"
    "An answer that rightly says the passages do not hold the answer is faithful and correct. "
    "Give a one or two sentence rationale. Reply with the JSON object only."
)
BETTER_ANSWER_NOTE = (
    "\n\nAn earlier answer to this question was judged poor.\nEarlier answer: {answer}\n"
    "Why it was poor: {why}\nWrite a better answer."
)
USER_COMMENT_NOTE = "\n\nThe user who asked rated an earlier answer down and wrote: {comment}"


class _Answer(BaseModel):
    answer: str


def _strict(name: str, properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "json_schema",
        "json_schema": {
            "name": name,
            "strict": True,
            "schema": {
                "type": "object",
                "properties": properties,
                "required": list(properties),
                "additionalProperties": False,
            },
        },
    }


_SCORE = {"type": "integer", "enum": [1, 2, 3, 4, 5]}
GRADE_FORMAT = _strict(
    "answer_grade",
    {
        "faithfulness": _SCORE,
        "correctness": _SCORE,
        "helpfulness": _SCORE,
        "rationale": {"type": "string"},
    },
)
ANSWER_FORMAT = _strict("teacher_answer", {"answer": {"type": "string"}})


class TeacherError(ProviderError):
    """The teacher cannot be used at all (bad key, unknown model, server down after retries)."""


@dataclass
class TeacherReply:
    """What one teacher call gave: a grade or an answer, or the reason there is none."""

    grade: TeacherGrade | None = None
    answer: str | None = None
    dropped: str | None = None  # reason the turn is dropped (malformed output, refused request)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    attempts: int = 0
    raw: list[str] = field(default_factory=list)


class Teacher:
    """Grades, answers and rewrites logged turns through the teacher endpoint's client."""

    def __init__(self, llm: ModelClient, system_prompt: str):
        self.llm = llm
        self.client = llm.client
        self.model = llm.model
        self.system_prompt = system_prompt  # the app's own, for distill and relabel answers

    def _ask(self, messages: list[dict[str, str]], response_format: dict, parse) -> TeacherReply:
        import openai

        reply = TeacherReply()
        reason = ""
        for _ in range(2):  # a malformed reply is asked again once
            reply.attempts += 1
            try:
                completion = self.client.chat.completions.create(
                    model=self.model,
                    messages=messages,
                    response_format=response_format,
                    temperature=0.0,
                )
            except openai.BadRequestError as exc:
                # This turn was refused (content filter, too long): drop it, go on with the rest.
                reply.dropped = f"teacher_refused: {api_detail(exc)}"[:300]
                return reply
            except openai.APIError as exc:
                raise TeacherError(self.llm.reason(exc)) from exc
            if completion.usage is not None:
                reply.prompt_tokens += completion.usage.prompt_tokens or 0
                reply.completion_tokens += completion.usage.completion_tokens or 0
            choice = completion.choices[0] if completion.choices else None
            content = (choice.message.content or "") if choice else ""
            reply.raw.append(content)
            if choice is not None and getattr(choice.message, "refusal", None):
                reason = f"teacher_refused: {choice.message.refusal}"
                continue
            try:
                parse(reply, json.loads(content))
                return reply
            except (json.JSONDecodeError, ValidationError, TypeError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                reason = f"malformed_teacher_output: {first}"[:300]
        reply.dropped = reason
        return reply

    def grade(
        self, question: str, contexts: list[str], answer: str, comment: str | None = None
    ) -> TeacherReply:
        """Rubric scores (1-5) of a logged answer against its retrieved contexts."""
        user = (
            f"Context passages:\n\n{number_passages(contexts) or '(none retrieved)'}\n\n"
            f"Question: {question}\n\nAnswer to grade:\n{answer}"
        )
        if comment:
            user += USER_COMMENT_NOTE.format(comment=comment)
        messages = [{"role": "system", "content": GRADE_SYSTEM}, {"role": "user", "content": user}]

        def parse(reply: TeacherReply, data: Any) -> None:
            reply.grade = TeacherGrade.model_validate(data)

        return self._ask(messages, GRADE_FORMAT, parse)

    def answer(
        self,
        question: str,
        contexts: list[str] | None,
        comment: str | None = None,
        poor_answer: str | None = None,
        why_poor: str | None = None,
    ) -> TeacherReply:
        """The teacher's own answer from the same system prompt and contexts the app used
        (distill); with `poor_answer`, a rewrite of it (relabel)."""
        if contexts is None:  # static data: the question alone, as the examples carry it
            messages = [
                {"role": "system", "content": self.system_prompt},
                {"role": "user", "content": question},
            ]
        else:
            messages = chat_messages(self.system_prompt, question, contexts)
        extra = ""
        if poor_answer is not None:
            extra += BETTER_ANSWER_NOTE.format(answer=poor_answer, why=why_poor or "rated down")
        if comment:
            extra += USER_COMMENT_NOTE.format(comment=comment)
        if extra:
            messages = [*messages, {"role": "user", "content": extra.strip()}]

        def parse(reply: TeacherReply, data: Any) -> None:
            text = _Answer.model_validate(data).answer.strip()
            if not text:
                raise TypeError("the teacher's answer is empty")
            reply.answer = text

        return self._ask(messages, ANSWER_FORMAT, parse)


def connect_teacher(cfg: TeacherSettings) -> ModelClient:
    """The configured teacher's client and model; ConfigError saying what to set when there is
    none (or what to choose instead: teacher mode `none` builds without one)."""
    if not cfg.model and not cfg.azure_deployment:
        raise ConfigError(
            "no teacher model is configured: set RAG_FINETUNE__TEACHER__MODEL (and "
            "OPENAI_API_KEY, or RAG_FINETUNE__TEACHER__BASE_URL for an OpenAI-compatible "
            "server), or build with teacher mode 'none'"
        )
    return connect(cfg)
