"""Evaluation sets: JSONL golden sets with clear errors, `datasets` sources mapped by flags, logged
turns sampled, the content hash, and refusing questions that trained the candidate."""

from __future__ import annotations

import json

import pytest

from core.chatlog import ChatLog
from core.db.database import open_database
from core.evalstore import EvalSample, EvalStore
from core.registry import Registry
from eval.sets import (
    EvalSetError,
    check_no_training_overlap,
    content_hash,
    from_chatlog,
    from_dataset,
    load_jsonl,
    question_key,
)
from tests.support.paths import SHARED_DATA


def test_golden_set_with_ragas_fields(tmp_path):
    path = tmp_path / "golden.jsonl"
    rows = [
        {
            "user_input": "Who keeps the lighthouse?",
            "reference": "Orsolya Brandt",
            "reference_contexts": ["The keeper is Orsolya Brandt."],
            "reference_sources": ["v.pdf"],
        },
        {"user_input": "When is the festival?"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    samples = load_jsonl(path)
    assert [s.user_input for s in samples] == [r["user_input"] for r in rows]
    assert samples[0].reference_sources == ["v.pdf"] and samples[1].reference is None


def test_one_bad_line_is_one_bad_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"user_input": "ok"}\n{not json\n')
    with pytest.raises(EvalSetError, match=r"bad\.jsonl: 1 bad line: line 2: not JSON"):
        load_jsonl(path)


def test_malformed_golden_set_names_every_bad_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(
        '{"user_input": "ok"}\n'
        "{not json\n"
        '["a list"]\n'
        '{"question": "wrong field"}\n'
        '{"user_input": "x", "reference_contexts": "not a list"}\n'
        '{"user_input": "   "}\n'
    )
    with pytest.raises(EvalSetError) as err:
        load_jsonl(path)
    msg = str(err.value)
    assert "5 bad lines" in msg
    for part in (
        "line 2: not JSON",
        "line 3: not a JSON object",
        "line 4: user_input",
        "line 5: reference_contexts",
        "line 6: user_input is empty",
    ):
        assert part in msg
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(EvalSetError, match="holds no samples"):
        load_jsonl(empty)
    with pytest.raises(EvalSetError, match="cannot read"):
        load_jsonl(tmp_path / "missing.jsonl")


def test_dataset_mapped_by_flags(tmp_path):
    csv = tmp_path / "sciq.csv"
    csv.write_text(
        "question,correct_answer,support,distractor1\n"
        "What gas do plants absorb?,carbon dioxide,Plants absorb carbon dioxide.,oxygen\n"
        ",nothing,skipped row,x\n"
        "What is the hardest mineral?,diamond,Diamond is the hardest mineral.,talc\n"
    )
    samples = from_dataset(str(csv))
    assert [s.reference for s in samples] == ["carbon dioxide", "diamond"]
    assert samples[1].reference_contexts == ["Diamond is the hardest mineral."]
    only = from_dataset(str(csv), reference_field="distractor1", contexts_field=None, limit=1)
    assert only == [EvalSample(user_input="What gas do plants absorb?", reference="oxygen")]
    with pytest.raises(EvalSetError, match="no column 'answer'; columns: question"):
        from_dataset(str(csv), reference_field="answer")
    with pytest.raises(EvalSetError, match="no such file"):
        from_dataset(str(tmp_path / "nope.csv"))


@pytest.mark.skipif(not (SHARED_DATA / "sciq").is_dir(), reason="no ../shared/data/sciq")
def test_sciq_validation_maps_to_887_samples():
    samples = from_dataset(str(SHARED_DATA / "sciq" / "validation.csv"))
    assert len(samples) == 887
    assert all(s.reference for s in samples)
    assert sum(bool(s.reference_contexts) for s in samples) > 800


def test_chatlog_sample_uses_thumbs_up_answers_as_references(tmp_path):
    log = ChatLog(open_database(f"sqlite:///{tmp_path / 'rag.db'}"))
    for i, rating in enumerate(["up", "down", None, "up"]):
        tid = log.start_turn("s", f"question {i}?")
        log.finish_turn(
            tid,
            answer=f"answer {i}",
            condensed_question=None,
            contexts=[],
            model_id="m",
            provider="extractive",
            prompt_version="1",
            latency_ms=1,
        )
        if rating:
            log.set_feedback(tid, rating)
    log.start_turn("s", "never answered")
    everything = from_chatlog(log, size=10)
    assert [s.user_input for s in everything] == [f"question {i}?" for i in range(4)]
    assert [s.reference for s in everything] == ["answer 0", None, None, "answer 3"]
    ups = from_chatlog(log, feedback="up", size=10)
    assert [s.reference for s in ups] == ["answer 0", "answer 3"]
    assert from_chatlog(log, size=2, seed=1) == from_chatlog(log, size=2, seed=1)
    assert len(from_chatlog(log, size=2)) == 2
    assert [s.user_input for s in from_chatlog(log, feedback="none")] == ["question 2?"]
    with pytest.raises(EvalSetError, match="no answered turns"):
        from_chatlog(ChatLog(open_database(f"sqlite:///{tmp_path / 'empty.db'}")))
    # The questions that trained a version are never sampled; when nothing else is left, the
    # refusal says what to do instead.
    trained = {question_key(f"question {i}?"): "embedding v4" for i in (0, 3)}
    assert [s.user_input for s in from_chatlog(log, size=10, trained=trained)] == [
        "question 1?",
        "question 2?",
    ]
    with pytest.raises(EvalSetError, match=r"trained embedding v4.*add a golden set") as refused:
        from_chatlog(log, feedback="up", trained=trained)
    # ... naming the turns another filter would find: two questions trained nothing.
    assert "sample other turns (2 answered questions of the log" in str(refused.value)
    everything_trained = {**trained, **{question_key(f"question {i}?"): "v5" for i in (1, 2)}}
    with pytest.raises(EvalSetError) as refused:
        from_chatlog(log, feedback="up", trained=everything_trained)
    assert "sample other turns" not in str(refused.value)  # none to offer


def test_chatlog_sample_keeps_the_rated_copy_and_the_passages_it_cited(tmp_path):
    """A question asked again later without a rating keeps its thumbs-up turn in the set, with
    the passages that answer quoted as reference contexts: the set then measures retrieval."""
    from tests.support.ftlog import log_turn

    log = ChatLog(open_database(f"sqlite:///{tmp_path / 'rag.db'}"))
    passages = ["Remove it in the tab.", "Unrelated text here."]
    for n, rating in enumerate(["up", None]):
        log_turn(
            log,
            "How do I remove a document?",
            answer=f"answer {n}",
            rating=rating,
            passages=passages,
            provider="extractive",
            quoted=(0,),
        )
    [sample] = from_chatlog(log)
    assert sample.reference == "answer 0"
    assert sample.reference_contexts == ["Remove it in the tab."]
    # Rated up, but the answer said the documents do not cover it: its passage is no reference.
    from rag.synthesis import NOT_COVERED

    log_turn(
        log,
        "How do I fly the lighthouse?",
        answer=f"{NOT_COVERED}\n\n> Remove it in the tab. [1]",
        rating="up",
        passages=passages,
        provider="extractive",
        quoted=(0,),
    )
    flown = next(s for s in from_chatlog(log) if s.user_input.startswith("How do I fly"))
    assert flown.reference_contexts == []


def test_content_hash_and_stored_once(tmp_path):
    a = [EvalSample(user_input="q1", reference="r"), EvalSample(user_input="q2")]
    b = [EvalSample(user_input="q1", reference="r"), EvalSample(user_input="q2 ")]
    assert content_hash(a) == content_hash([s.model_copy() for s in a])
    assert content_hash(a) != content_hash(b) and content_hash(a) != content_hash(a[::-1])
    store = EvalStore(open_database(f"sqlite:///{tmp_path / 'rag.db'}"))
    first = store.save_set("a", content_hash(a), a)
    assert store.save_set("again", content_hash(a), a) == first
    name, digest, samples = store.load_set(first)
    assert (name, digest, samples) == ("a", content_hash(a), a)


def test_training_questions_are_refused_with_the_count(tmp_path):
    reg = Registry(open_database(f"sqlite:///{tmp_path / 'rag.db'}"))
    trained = ["What is the Harlow ferry called?", "Who painted the ceiling?"]
    v = reg.register(
        "chat", "ft-1", provenance={"train_question_keys": [question_key(q) for q in trained]}
    )
    assert question_key("  what is the HARLOW ferry called ") == question_key(trained[0])
    held_out = [EvalSample(user_input="Which river feeds the mill?")]
    check_no_training_overlap(held_out, v)  # fine
    leaky = [
        *held_out,
        EvalSample(user_input="what is the harlow ferry called"),
        EvalSample(user_input="Who painted the ceiling ?"),
    ]
    with pytest.raises(EvalSetError, match="2 of 3 questions in this set trained chat v1"):
        check_no_training_overlap(leaky, None, v)


def test_a_chat_log_set_with_the_apps_own_answers_as_references_says_so(tmp_path):
    """Stored from the chat log, rated-up turns keep the app's own answers as references: the
    admin is told that the versions that wrote them score near 1 on them."""
    from core.settings import Settings
    from eval.runner import EvalContext
    from eval.service import SetRequest, store_set

    ctx = EvalContext.open(Settings(data_dir=tmp_path / "data"))
    log = ChatLog(ctx.registry.db)

    def answered(question: str, answer: str, rating: str | None = None) -> int:
        tid = log.start_turn("s", question)
        log.finish_turn(
            tid, answer=answer, condensed_question=None, contexts=[], model_id="m",
            provider="extractive", prompt_version="1", latency_ms=1,
        )  # fmt: skip
        if rating:
            log.set_feedback(tid, rating)
        return tid

    answered("Who keeps the lighthouse?", "Orsolya keeps it.", "up")
    answered("When is the festival?", "In October.")
    _, notes = store_set(ctx, SetRequest(from_log=True, feedback="up"))
    assert any("agreement with what it said then" in n for n in notes)
    # Unrated turns carry no reference, and with no judge configured nothing could score them:
    # refused when the set is added, not after a run full of unmeasured scores.
    with pytest.raises(EvalSetError, match=r"none of the 1 sampled turn carries a reference"):
        store_set(ctx, SetRequest(from_log=True, feedback="none"))
    assert len(ctx.store.sets()) == 1
    # With a judge, reference-free scores can: the same sample is stored.
    judged = EvalContext.open(Settings(data_dir=tmp_path / "data"))
    judged.settings.eval.judge.model = "judge-model"
    judged.settings.eval.judge.base_url = "http://127.0.0.1:9/v1"  # reachable or not: configured
    _, notes = store_set(judged, SetRequest(from_log=True, feedback="none"))
    assert notes == []
    # A version trained on the lighthouse question: a new sample leaves it out and says so.
    mill = answered("Where is the mill?", "By the river.", "up")
    ctx.registry.register(
        "embedding",
        "fine-tuned",
        {},
        provenance={"train_question_keys": [question_key("Who keeps the lighthouse?")]},
    )
    set_id, notes = store_set(ctx, SetRequest(from_log=True, feedback="all"))
    assert [s.user_input for s in ctx.store.load_set(set_id)[2]] == [
        "When is the festival?",
        "Where is the mill?",
    ]
    assert any("Questions that trained embedding v" in n for n in notes)
    log.set_feedback(mill, "down")
    with pytest.raises(EvalSetError, match="never judged on its training questions"):
        store_set(ctx, SetRequest(from_log=True, feedback="up"))


def test_a_local_dataset_file_is_listed_by_its_own_name(tmp_path):
    """An uploaded file sits in a temporary folder: the set is listed as `dataset ds.csv`, not by
    that folder's path (which the origin keeps)."""
    from core.settings import Settings
    from eval.runner import EvalContext
    from eval.service import SetRequest, store_set

    folder = tmp_path / "upload-5f3a9c" / "b41e07"
    folder.mkdir(parents=True)
    (folder / "ds.csv").write_text(
        "question,correct_answer,support\nWho keeps it?,Orsolya,Orsolya keeps the lighthouse.\n",
        encoding="utf-8",
    )
    ctx = EvalContext.open(Settings(data_dir=tmp_path / "data"))
    set_id, _ = store_set(ctx, SetRequest(dataset=str(folder / "ds.csv")))
    [info] = [s for s in ctx.store.sets() if s.id == set_id]
    assert info.name == "dataset ds.csv"
