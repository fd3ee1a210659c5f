"""The RAG pipeline over a real collection, for each answer provider, turns logged to SQLite."""

from __future__ import annotations

import json
import re

import pytest
import respx

from core.chatlog import ChatLog
from core.db.database import open_database
from core.errors import ConfigError, ProviderError
from core.settings import LLMSettings, Settings
from ingest import ingest_paths
from rag.pipeline import RagPipeline
from rag.prompt import system_prompt
from rag.providers import build_chat_model
from rag.synthesis import EXTRACTIVE_LABEL, NO_ANSWER
from tests.support import fakes
from tests.support.corpus import make_corpus

FACT = "The lighthouse keeper of Velmora is named Orsolya Brandt"


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, embed_model, embed_id):
    from core.index.store import chroma_client, open_collection

    root = tmp_path_factory.mktemp("pipeline")
    settings = Settings(data_dir=root / "data")
    collection = open_collection(chroma_client(settings), "pipeline", embed_id)
    ingest_paths(settings, collection, embed_model, paths=[make_corpus(root / "c")], progress=False)
    return settings, collection


def make_pipeline(indexed, embed_model, llm_settings: LLMSettings, tmp_path) -> RagPipeline:
    settings, collection = indexed
    return RagPipeline(
        collection,
        embed_model,
        build_chat_model(llm_settings),
        ChatLog(open_database(f"sqlite:///{tmp_path / 'log.db'}")),
        system_prompt(settings),
        settings.retrieval,
    )


def last(updates):
    items = list(updates)
    assert items[-1].done
    return items


def test_extractive_quotes_the_sentence_with_the_fact(indexed, embed_model, tmp_path):
    pipe = make_pipeline(indexed, embed_model, LLMSettings(), tmp_path)
    assert pipe.chat_model.provider == "extractive"  # no key, no URL: no LLM
    updates = last(pipe.ask("s1", "Who is the keeper of the lighthouse in Velmora?"))
    answer = updates[-1].text
    assert answer.startswith(EXTRACTIVE_LABEL)
    assert FACT in answer and "[1]" in answer
    top = updates[-1].sources[0]
    assert top.file_name == "velmora.pdf" and top.page == 2 and FACT in top.text
    [turn] = pipe.chatlog.turns()
    assert turn.status == "answered" and turn.response == answer
    assert turn.provider == "extractive" and turn.prompt_version.startswith("1+")
    assert turn.retrieved_contexts[0].chunk_id == top.chunk_id
    assert turn.latency_ms > 0


def test_follow_up_is_condensed_with_history(indexed, embed_model, tmp_path):
    pipe = make_pipeline(indexed, embed_model, LLMSettings(), tmp_path)
    first = last(pipe.ask("s1", "Tell me about the lantern festival in Velmora"))[-1]
    history = [
        {"role": "user", "content": "Tell me about the lantern festival in Velmora"},
        {"role": "assistant", "content": first.text},
    ]
    follow = last(pipe.ask("s1", "When does it take place?", history))[-1]
    assert "second Saturday of October" in follow.text
    turns = list(pipe.chatlog.turns(session_id="s1"))
    assert "lantern festival" in turns[1].condensed_question


@pytest.mark.parametrize(
    "question",
    [
        "How is the office coffee machine looked after? Is there a schedule for it?",
        "Where do visitors park? Is there a garage?",
        "This one is different: what does the lemon cake need?",
    ],
)
def test_a_new_topic_is_not_glued_to_the_previous_question(
    indexed, embed_model, tmp_path, question
):
    """Pronouns and short questions don't make a follow-up: without an LLM the question is read
    with the previous one only when that matches the documents better."""
    pipe = make_pipeline(indexed, embed_model, LLMSettings(), tmp_path)
    history = [
        {"role": "user", "content": "Tell me about the lantern festival in Velmora"},
        {"role": "assistant", "content": "It is on the second Saturday of October [1]."},
    ]
    final = last(pipe.ask("s1", question, history))[-1]
    [turn] = pipe.chatlog.turns(session_id="s1")
    assert turn.condensed_question == question
    assert "festival" not in final.text and "Velmora" not in final.text
    assert final.sources[0].file_name in {"handbook.docx", "faq.jsonl", "page.html"}


def test_a_question_that_names_its_own_subject_is_never_glued_to_the_last(
    embed_model, embed_id, tmp_path
):
    """On the bundled guide (a few long passages, where every question matches weakly) a new
    question that refers to nothing is read alone; one that points back is read with the last."""
    from pathlib import Path

    from core.index.store import chroma_client, open_collection
    from rag.pipeline import refers_back

    settings = Settings(data_dir=tmp_path / "data")
    collection = open_collection(chroma_client(settings), "guide", embed_id)
    docs = Path(__file__).resolve().parent.parent / "docs"
    ingest_paths(settings, collection, embed_model, paths=[docs], progress=False)
    pipe = make_pipeline((settings, collection), embed_model, LLMSettings(), tmp_path)
    before = [{"role": "user", "content": "How do I configure an OpenAI-compatible server?"}]
    for question in ("How do I roll back a model?", "How does the gate decide?"):
        assert pipe.standalone(question, before)[0] == question
    after = [{"role": "user", "content": "How do I remove a document?"}]
    follow = "How do I do that from the command line?"
    assert pipe.standalone(follow, after)[0] == f"How do I remove a document? {follow}"
    assert refers_back("What about scanned PDFs?") and refers_back("When is it used?")
    assert refers_back("How long did she serve?") and refers_back("Why?")
    assert refers_back("Does the app need a restart after that?")
    assert not refers_back("Which file formats are supported?")
    assert not refers_back("How do I make sure that the index is fresh?")
    assert not refers_back("Is there a way to roll back a model?")
    assert refers_back("How do I do that from the command line?")
    assert refers_back("Which files are kept there?")


def test_sources_carry_the_sentences_quoted_from_them(indexed, embed_model, tmp_path):
    pipe = make_pipeline(indexed, embed_model, LLMSettings(), tmp_path)
    final = last(pipe.ask("s1", "Who is the keeper of the lighthouse in Velmora?"))[-1]
    top = final.sources[0]
    flat = " ".join(top.text.split())  # quotes are whitespace-normalised
    assert top.quotes and all(q in flat for q in top.quotes)
    assert all(f"> {q} [1]" in final.text for q in top.quotes)
    [turn] = pipe.chatlog.turns()
    assert turn.retrieved_contexts[0].quotes == top.quotes  # logged with the turn


def test_nothing_relevant_says_so(indexed, embed_model, tmp_path):
    pipe = make_pipeline(indexed, embed_model, LLMSettings(), tmp_path)
    final = last(pipe.ask("s1", "quantum chromodynamics lattice gauge coupling constant"))[-1]
    assert final.text == NO_ANSWER and final.sources == []


def openai_settings(**kw) -> LLMSettings:
    return LLMSettings(provider="openai", api_key="sk-test", max_retries=2, **kw)


@respx.mock
def test_openai_streams_with_sources_and_usage(indexed, embed_model, tmp_path):
    route = respx.post(fakes.OPENAI_CHAT_URL).mock(
        return_value=fakes.stream(["Orsolya ", "Brandt keeps ", "it [1]."])
    )
    pipe = make_pipeline(indexed, embed_model, openai_settings(), tmp_path)
    updates = last(pipe.ask("s1", "Who keeps the lighthouse?"))
    texts = [u.text for u in updates]
    assert texts[:3] == ["Orsolya ", "Orsolya Brandt keeps ", "Orsolya Brandt keeps it [1]."]
    assert updates[-1].sources[0].page == 2
    sent = json.loads(route.calls.last.request.content)
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["messages"][0]["role"] == "system" and "Cite" in sent["messages"][0]["content"]
    assert "[1] The lighthouse keeper" in sent["messages"][1]["content"]
    assert route.calls.last.request.headers["authorization"] == "Bearer sk-test"
    [turn] = pipe.chatlog.turns()
    assert turn.usage.prompt_tokens == 111 and turn.usage.completion_tokens == 7
    assert turn.model_id == "gpt-4o-mini" and turn.provider == "openai"


@respx.mock
def test_an_answer_closed_mid_stream_is_logged_as_stopped_with_its_partial_text(
    indexed, embed_model, tmp_path
):
    """The UI closes the answer's generator when the user starts a new chat mid-answer."""
    from rag.pipeline import STOPPED

    respx.post(fakes.OPENAI_CHAT_URL).mock(
        return_value=fakes.stream(["Orsolya ", "Brandt keeps ", "it [1]."])
    )
    pipe = make_pipeline(indexed, embed_model, openai_settings(), tmp_path)
    answer = pipe.ask("s1", "Who keeps the lighthouse?")
    assert next(answer).text == "Orsolya "
    assert next(answer).text == "Orsolya Brandt keeps "
    answer.close()
    [turn] = pipe.chatlog.turns()
    assert turn.status == "failed" and turn.error == STOPPED
    assert turn.response == "Orsolya Brandt keeps"
    assert turn.retrieved_contexts[0].page == 2  # what it was answering from


@respx.mock
def test_openai_condenses_follow_up_before_retrieval(indexed, embed_model, tmp_path):
    calls = []

    def reply(request):
        body = json.loads(request.content)
        calls.append(body)
        if body.get("stream"):
            return fakes.stream(["On the second Saturday of October [1]."])
        return fakes.completion("When is the Velmora lantern festival?")

    respx.post(fakes.OPENAI_CHAT_URL).mock(side_effect=reply)
    pipe = make_pipeline(indexed, embed_model, openai_settings(), tmp_path)
    history = [
        {"role": "user", "content": "Tell me about the lantern festival"},
        {"role": "assistant", "content": "It is held in Velmora [1]."},
    ]
    final = last(pipe.ask("s1", "When is it?", history))[-1]
    assert "lantern festival" in calls[0]["messages"][-1]["content"]
    assert final.sources[0].page == 3
    assert [t.condensed_question for t in pipe.chatlog.turns()] == [
        "When is the Velmora lantern festival?"
    ]


@respx.mock
def test_openai_429_then_success_is_retried_by_the_sdk(indexed, embed_model, tmp_path):
    route = respx.post(fakes.OPENAI_CHAT_URL).mock(
        side_effect=[fakes.error(429, "Rate limit reached"), fakes.stream(["Fine [1]."])]
    )
    pipe = make_pipeline(indexed, embed_model, openai_settings(), tmp_path)
    assert last(pipe.ask("s1", "Who keeps the lighthouse?"))[-1].text == "Fine [1]."
    assert route.call_count == 2


@pytest.mark.parametrize(
    ("status", "expected"),
    [(401, "rejected the API key"), (500, "failed (500)"), (400, "refused the request")],
)
@respx.mock
def test_openai_errors_are_clear_and_logged(indexed, embed_model, tmp_path, status, expected):
    respx.post(fakes.OPENAI_CHAT_URL).mock(return_value=fakes.error(status, "boom"))
    pipe = make_pipeline(indexed, embed_model, openai_settings(), tmp_path)
    with pytest.raises(ProviderError, match=re.escape(expected)):
        list(pipe.ask("s1", "Who keeps the lighthouse?"))
    [turn] = pipe.chatlog.turns()
    assert turn.status == "failed" and expected in turn.error and turn.response is None
    assert turn.user_input == "Who keeps the lighthouse?"  # the question is never lost


@respx.mock
def test_openai_compatible_server_through_base_url(indexed, embed_model, tmp_path):
    route = respx.post("http://127.0.0.1:8001/v1/chat/completions").mock(
        return_value=fakes.stream(["From vLLM [1]."], model="my-model", usage=False)
    )
    cfg = LLMSettings(base_url="http://127.0.0.1:8001/v1", model="my-model")
    pipe = make_pipeline(indexed, embed_model, cfg, tmp_path)
    assert pipe.chat_model.badge == "openai · my-model"
    assert last(pipe.ask("s1", "Who keeps the lighthouse?"))[-1].text == "From vLLM [1]."
    assert json.loads(route.calls.last.request.content)["model"] == "my-model"


@respx.mock
def test_azure_openai_deployment(indexed, embed_model, tmp_path):
    route = respx.post(
        url__regex=r"https://example-res\.openai\.azure\.com/openai/deployments/chat-dep/"
        r"chat/completions.*"
    ).mock(return_value=fakes.stream(["Azure says hi [1]."]))
    cfg = LLMSettings(
        azure_endpoint="https://example-res.openai.azure.com",
        azure_deployment="chat-dep",
        api_key="az-key",
    )
    pipe = make_pipeline(indexed, embed_model, cfg, tmp_path)
    assert last(pipe.ask("s1", "Who keeps the lighthouse?"))[-1].text == "Azure says hi [1]."
    assert route.calls.last.request.headers["api-key"] == "az-key"
    assert "api-version=" in str(route.calls.last.request.url)


def test_provider_configuration_errors():
    with pytest.raises(ConfigError, match="known: extractive, local, openai"):
        build_chat_model(LLMSettings(provider="nope"))
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        build_chat_model(LLMSettings(provider="openai"))
    with pytest.raises(ConfigError, match="cannot load a causal LM"):
        build_chat_model(LLMSettings(provider="local", model="/nonexistent/model"))


def test_local_model_with_lora_adapter_answers_and_logs_usage(indexed, embed_model, tmp_path):
    from peft import PeftModel

    model_dir, adapter_dir = fakes.make_tiny_lm(tmp_path, with_adapter=True)
    cfg = LLMSettings(
        provider="local", model=str(model_dir), adapter_path=adapter_dir, max_tokens=12
    )
    pipe = make_pipeline(indexed, embed_model, cfg, tmp_path)
    assert isinstance(pipe.chat_model.llm._model, PeftModel)
    assert pipe.chat_model.model_id.endswith(f"+lora:{adapter_dir}")
    final = last(pipe.ask("s1", "Who keeps the lighthouse?"))[-1]
    assert final.text.strip() and final.sources[0].page == 2
    [turn] = pipe.chatlog.turns()
    assert turn.provider == "local" and 0 < turn.usage.completion_tokens <= 12
    assert turn.usage.prompt_tokens > 20  # system prompt + numbered passages went in


def test_broken_chat_log_never_breaks_the_chat(indexed, embed_model, tmp_path):
    pipe = make_pipeline(indexed, embed_model, LLMSettings(), tmp_path)
    pipe.chatlog.engine.dispose()
    (tmp_path / "log.db").unlink()
    (tmp_path / "log.db").mkdir()  # the database path is now unusable
    final = last(pipe.ask("s1", "Who keeps the lighthouse?"))[-1]
    assert FACT in final.text
    assert final.turn_id is None and "could not be logged" in final.warning


def test_sentence_vectors_are_reused_in_order_and_bounded(embed_model):
    import numpy as np

    from rag.synthesis import SentenceVectors

    calls = []

    class Counting:
        def get_text_embedding_batch(self, texts):
            calls.append(list(texts))
            return embed_model.get_text_embedding_batch(texts)

    cache = SentenceVectors(Counting(), max_items=3)
    a, b, c, d = (
        "Bees make honey.",
        "Ice is frozen water.",
        "Owls hunt at night.",
        "Salt dissolves.",
    )
    first = cache.get([a, b, a])
    direct = np.asarray(embed_model.get_text_embedding_batch([a, b]), np.float32)
    assert np.allclose(first, direct[[0, 1, 0]], atol=1e-5)
    assert calls == [[a, b]]  # duplicates embedded once
    assert np.allclose(cache.get([b, a]), direct[[1, 0]], atol=1e-5) and len(calls) == 1
    cache.get([c, d])  # over the bound: the least recently used (b) goes
    cache.get([a])
    assert len(calls) == 2
    cache.get([b])
    assert calls[-1] == [b]
