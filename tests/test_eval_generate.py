"""A test set written by an LLM from indexed chunks, through the real openai SDK against an
HTTP-level fake: questions with their passage and file, a malformed reply skipped and counted,
an API error stopping with a clear message, and documents too short for questions."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
import respx

from core.db.database import open_database
from core.openai_api import ModelClient, connect
from core.settings import JudgeSettings
from eval.sets import EvalSetError, generate_from_chunks
from tests.support import fakes

LONG = (
    "The harbour of Velmora was rebuilt after the storm of 1911, when the old wooden piers were "
    "replaced by stone quays that still stand today. The work took six years and employed most "
    "of the town's fishermen during the winters, when the boats could not go out."
)


@pytest.fixture
def collection(tmp_path):
    import chromadb

    client = chromadb.PersistentClient(path=str(tmp_path / "chroma"))
    col = client.get_or_create_collection(f"g-{uuid.uuid4().hex[:8]}", embedding_function=None)
    docs = [LONG, LONG.replace("1911", "1912"), "Too short to ask about."]
    col.add(
        ids=["a", "b", "c"],
        documents=docs,
        metadatas=[{"file_name": "harbour.md"}, {"file_name": "piers.md"}, {"file_name": "x.md"}],
        embeddings=[[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]],
    )
    return col


def judge_llm() -> ModelClient:
    """The judge endpoint as the eval CLI connects it (the default OpenAI URL, faked by respx)."""
    return connect(JudgeSettings(model="gpt-4o-mini", api_key="sk-test", max_retries=0))


def test_questions_from_long_chunks_with_their_source(collection):
    def reply(request: httpx.Request) -> httpx.Response:
        prompt = json.loads(request.content)["messages"][0]["content"]
        year = "1912" if "1912" in prompt else "1911"
        if year == "1912":
            return fakes.completion("Sure! The question is about piers.")  # not JSON
        return fakes.completion(json.dumps({"question": f"When was {year}?", "answer": year}))

    with respx.mock(assert_all_mocked=True) as mock:
        route = mock.post(fakes.OPENAI_CHAT_URL).mock(side_effect=reply)
        samples, skipped = generate_from_chunks(collection, judge_llm(), size=5)
    assert route.call_count == 2  # the short chunk is never sent
    [sample] = samples
    assert sample.user_input == "When was 1911?" and sample.reference == "1911"
    assert sample.reference_contexts == [LONG] and sample.reference_sources == ["harbour.md"]
    assert len(skipped) == 1 and skipped[0].startswith("malformed reply")


def test_api_error_is_a_clear_error(collection):
    with respx.mock(assert_all_mocked=True) as mock:
        mock.post(fakes.OPENAI_CHAT_URL).mock(return_value=fakes.error(401, "Incorrect API key"))
        with pytest.raises(
            EvalSetError,
            match=r"writing the test set: the judge server rejected the API key \(401\)",
        ):
            generate_from_chunks(collection, judge_llm(), size=2)


def test_short_documents_get_a_clear_message(collection):
    with pytest.raises(EvalSetError, match="documents are too short to write questions from"):
        generate_from_chunks(collection, judge_llm(), min_words=500)


def test_teacher_writes_references_for_unrated_logged_turns(tmp_path):
    from core.chatlog import ChatLog
    from core.records import SourceRef
    from eval.sets import from_chatlog, openai_teacher

    log = ChatLog(open_database(f"sqlite:///{tmp_path / 'rag.db'}"))
    passage = SourceRef(chunk_id="c", source="/d/h.md", score=0.9, text=LONG)
    for i, (rating, contexts) in enumerate([("up", [passage]), (None, [passage]), (None, [])]):
        tid = log.start_turn("s", f"When was the harbour rebuilt {i}?")
        log.finish_turn(
            tid,
            answer=f"logged answer {i}",
            condensed_question=None,
            contexts=contexts,
            model_id="m",
            provider="extractive",
            prompt_version="1",
            latency_ms=1,
        )
        if rating:
            log.set_feedback(tid, rating)

    def reply(request: httpx.Request) -> httpx.Response:
        content = json.loads(request.content)["messages"][0]["content"]
        assert "[1] The harbour of Velmora" in content  # the retrieved passages, numbered
        return fakes.completion("After the storm of 1911.")

    with respx.mock(assert_all_mocked=True) as mock:
        route = mock.post(fakes.OPENAI_CHAT_URL).mock(side_effect=reply)
        samples = from_chatlog(log, teacher=openai_teacher(judge_llm()))
    assert [s.reference for s in samples] == [
        "logged answer 0",  # thumbs up: the answer itself
        "After the storm of 1911.",  # written by the teacher
        None,  # nothing was retrieved: nothing to write from
    ]
    assert route.call_count == 1
