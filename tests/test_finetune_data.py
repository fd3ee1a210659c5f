"""Dataset building: redaction, the validator and cost estimate (pure), the teacher's modes through
the real `openai` SDK against a fake teacher served over HTTP on loopback, near-duplicates with the
packaged embedding model, the deterministic split, static `datasets` sources, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import openai
import pytest

from core.chatlog import ChatLog
from core.db.database import open_database
from core.openai_api import ModelClient
from core.prompting import load_prompt
from core.settings import TeacherSettings
from finetune.dataset import (
    BuildOptions,
    DatasetError,
    TurnFilter,
    build_dataset,
    read_preview,
    split_of,
)
from finetune.dedup import NearDuplicates
from finetune.teacher import Teacher, TeacherError
from finetune.turns import turns_from_dataset, turns_from_log
from rag.prompt import BUNDLED_PROMPT
from tests.support.examples import good
from tests.support.ftlog import PASSAGES, log_turn
from tests.support.teacherfake import TeacherServer

ROOT = Path(__file__).resolve().parent.parent
PROMPT = load_prompt(BUNDLED_PROMPT)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- building from the chat log --------------------------------------------------------------------


@pytest.fixture
def log(tmp_path):
    chatlog = ChatLog(open_database(f"sqlite:///{tmp_path / 'rag.db'}"))
    yield chatlog
    chatlog.db.dispose()


@pytest.fixture
def teacher_server():
    with TeacherServer() as server:
        yield server


def teacher_for(server: TeacherServer) -> Teacher:
    client = openai.OpenAI(api_key="sk-test", base_url=server.base_url, max_retries=0)
    return Teacher(ModelClient(client, "teacher-model", TeacherSettings()), PROMPT.text)


def build(log, tmp_path, teacher, mode, name="ds", filt=None, embed=None, **kw):
    filt = filt or TurnFilter()
    options = BuildOptions(name=name, mode=mode, dedup_similarity=None, **kw)
    return build_dataset(
        turns_from_log(log, filt),
        tmp_path / "datasets",
        options,
        PROMPT.text,
        teacher=teacher,
        embed=embed,
        filters=filt,
        prompt_version=PROMPT.version,
    )


def test_grade_mode_keeps_good_turns_and_drops_the_rest_with_reasons(log, tmp_path, teacher_server):
    good_id = log_turn(log, "Who kept the Velmora lighthouse? Mail jane@example.com")
    log_turn(log, "When is the festival? [low]")
    retried = log_turn(log, "How long did she serve? [malformed-once]")
    log_turn(log, "What is the keeper's name? [malformed]")
    log_turn(log, "Tell me something awful [refuse]")
    log_turn(log, "who kept the velmora lighthouse?  Mail jane@example.com")  # a repeat
    log_turn(log, "Is it open?", answer="Yes.")  # too short to learn from
    log_turn(log, "Did it fail?", answer=None)  # the model failed: nothing to learn
    # A thumbs-down answer is never a training target (nor sent to be graded).
    log_turn(log, "Where is Velmora?", rating="down", comment="it cites the wrong passage")
    result = build(log, tmp_path, teacher_for(teacher_server), "grade")
    card = result.card
    assert card.seen == 9 and card.kept == 2
    assert card.dropped == {
        "answer_too_short": 1,
        "duplicate_question": 1,
        "grade_below_threshold": 1,
        "malformed_teacher_output": 1,
        "not_answered": 1,
        "rated_down": 1,
        "teacher_refused": 1,
    }
    assert card.source_turn_ids == [good_id, retried]
    assert card.redactions == {"email": 2} and card.teacher_model == "teacher-model"
    assert card.rubric_version and card.prompt_version == PROMPT.version
    assert card.train_examples + card.validation_examples == 2
    # The user message carries the passages exactly as the app sends them.
    examples = read_jsonl(result.path / "train.jsonl")
    if (result.path / "validation.jsonl").exists():
        examples += read_jsonl(result.path / "validation.jsonl")
    from llama_index.core.llms import MockLLM

    from rag.synthesis import CitingSynthesizer

    question = "Who kept the Velmora lighthouse? Mail [REDACTED_EMAIL]"
    app_messages = CitingSynthesizer(MockLLM(), PROMPT.text).messages(question, PASSAGES)
    first = next(e for e in examples if "lighthouse" in e["messages"][1]["content"])
    assert [m["content"] for m in first["messages"][:2]] == [m.content for m in app_messages]
    assert first["messages"][2]["role"] == "assistant"
    # Every teacher call asked for strict JSON-schema output; no address ever left the machine.
    sent = teacher_server.requests
    assert all(r["response_format"]["json_schema"]["strict"] for r in sent)
    assert not any("it cites the wrong passage" in json.dumps(r) for r in sent)
    assert not any("jane@example.com" in json.dumps(r) for r in sent)
    # The malformed-once turn was asked twice and kept; the malformed one twice and dropped.
    asked = [json.dumps(r) for r in sent]
    assert sum("[malformed-once]" in a for a in asked) == 2
    assert sum("[malformed]" in a for a in asked) == 2
    preview = {row["question"]: row for row in read_preview(result.path)}
    low = preview["When is the festival? [low]"]
    assert low["kept"] is False and low["reason"] == "grade_below_threshold"
    assert low["grade"]["faithfulness"] == 2 and low["grade"]["rationale"]
    assert preview[question]["kept"] is True and preview[question]["grade"]["correctness"] == 5
    saved = json.loads((result.path / "card.json").read_text())
    assert saved["content_hash"] == card.content_hash
    # Evaluation later refuses sets holding these questions, as the user typed them.
    from core.questions import question_key

    assert question_key("Who kept the Velmora lighthouse? Mail jane@example.com") in set(
        card.train_question_keys
    )


def test_distill_answers_from_the_same_contexts_and_pairs_thumbs_down(
    log, tmp_path, teacher_server
):
    log_turn(log, "Who kept the lighthouse?", rating="up")
    log_turn(
        log,
        "When is the festival?",
        answer="It is in May, I think.",
        rating="down",
        comment="wrong month",
    )
    result = build(log, tmp_path, teacher_for(teacher_server), "distill", validation_share=0)
    train = read_jsonl(result.path / "train.jsonl")
    assert [e["messages"][-1]["content"] for e in train] == [
        "Teacher answer to: Who kept the lighthouse? [1]",
        "Teacher answer to: When is the festival? [1]",
    ]
    # The teacher was asked with the app's own system prompt and context message.
    first = teacher_server.requests[0]["messages"]
    assert first[0]["content"] == PROMPT.text and first[1]["content"].startswith("Context passages")
    [openai_pair] = read_jsonl(result.path / "dpo_train.jsonl")
    [trl_pair] = read_jsonl(result.path / "dpo_train.trl.jsonl")
    assert openai_pair["preferred_output"][0]["content"].startswith("Teacher answer")
    assert openai_pair["non_preferred_output"][0]["content"] == "It is in May, I think."
    assert openai_pair["input"]["messages"][0]["role"] == "system"
    assert trl_pair["chosen"][0]["content"] == openai_pair["preferred_output"][0]["content"]
    assert trl_pair["rejected"][0]["content"] == "It is in May, I think."
    assert trl_pair["prompt"] == openai_pair["input"]["messages"]
    assert result.card.preference_pairs == 1


def test_relabel_rewrites_only_thumbs_down_and_low_graded_turns(log, tmp_path, teacher_server):
    log_turn(log, "Who kept the lighthouse?", rating="up")
    log_turn(log, "How long did she serve?")
    log_turn(log, "When is the festival? [low]")
    log_turn(log, "Where is Velmora?", rating="down", comment="made up")
    result = build(log, tmp_path, teacher_for(teacher_server), "relabel", validation_share=0)
    targets = {
        e["messages"][1]["content"].rsplit("Question: ", 1)[1]: e["messages"][-1]["content"]
        for e in read_jsonl(result.path / "train.jsonl")
    }
    logged = "Orsolya Brandt served the lighthouse for 31 years [1]."
    assert targets["Who kept the lighthouse?"] == logged  # approved by a person: not graded
    assert targets["How long did she serve?"] == logged  # graded well: kept as logged
    assert targets["When is the festival? [low]"].startswith("Teacher answer")
    assert targets["Where is Velmora?"].startswith("Teacher answer")
    assert result.card.preference_pairs == 2
    graded = [
        r
        for r in teacher_server.requests
        if r["response_format"]["json_schema"]["name"] == "answer_grade"
    ]
    assert len(graded) == 2  # the unrated turns only
    rewrite = next(r for r in teacher_server.requests if "made up" in json.dumps(r))
    assert "Earlier answer" in json.dumps(rewrite)


def test_filters_select_by_feedback_time_and_version(log, tmp_path):
    log_turn(log, "Who kept the lighthouse?", rating="up", chat_version_id=1)
    log_turn(log, "When is the festival?", rating="down", chat_version_id=2)
    log_turn(log, "How long did she serve?", chat_version_id=2)
    up = build(log, tmp_path, None, "none", name="up", filt=TurnFilter(feedback="up"))
    assert up.card.seen == 1 and up.card.filters["feedback"] == "up"
    v2 = build(log, tmp_path, None, "none", name="v2", filt=TurnFilter(chat_version_id=2))
    assert v2.card.seen == 2
    from datetime import UTC, datetime, timedelta

    past = build(
        log,
        tmp_path,
        None,
        "none",
        name="past",
        filt=TurnFilter(until=datetime.now(UTC) + timedelta(hours=1)),
    )
    assert past.card.seen == 3
    with pytest.raises(DatasetError, match="no logged turns match"):
        build(
            log,
            tmp_path,
            None,
            "none",
            name="none",
            filt=TurnFilter(since=datetime.now(UTC) + timedelta(days=1)),
        )
    with pytest.raises(DatasetError, match="exists"):
        build(log, tmp_path, None, "none", name="up")


def test_a_teacher_that_cannot_be_used_stops_the_build_and_leaves_nothing(log, tmp_path):
    import respx

    from tests.support.fakes import error

    log_turn(log, "Who kept the lighthouse?")
    client = openai.OpenAI(api_key="sk-bad", base_url="http://teacher.test/v1", max_retries=0)
    with respx.mock:
        respx.post("http://teacher.test/v1/chat/completions").mock(
            return_value=error(401, "Incorrect API key provided")
        )
        with pytest.raises(TeacherError, match="401"):
            build(
                log,
                tmp_path,
                Teacher(ModelClient(client, "t", TeacherSettings()), PROMPT.text),
                "grade",
            )
    assert list((tmp_path / "datasets").iterdir()) == []  # no half-written dataset
    assert log.count_turns() == 1  # and the log is untouched


def test_split_is_deterministic_and_the_same_log_gives_the_same_hash(log, tmp_path):
    for i in range(40):
        log_turn(log, f"Question number {i} about the lighthouse?")
    a = build(log, tmp_path, None, "none", name="a", validation_share=0.25)
    b = build(log, tmp_path, None, "none", name="b", validation_share=0.25)
    assert a.card.content_hash == b.card.content_hash
    assert 0 < a.card.validation_examples < 40
    assert split_of("k1", 0.25) == split_of("k1", 0.25) and split_of("k1", 0.0) == "train"
    c = build(log, tmp_path, None, "none", name="c", validation_share=0.25, seed=1)
    assert c.card.content_hash != a.card.content_hash  # another seed, another split


def test_near_duplicate_questions_are_dropped_with_the_embedding_model(embed_model):
    def embed(texts: list[str]) -> np.ndarray:
        return np.asarray(embed_model.get_text_embedding_batch(texts), np.float32)

    dups = NearDuplicates(embed, threshold=0.9)
    verdicts = dups.check(
        [
            "How long did Orsolya Brandt serve as lighthouse keeper?",
            "How long did Orsolya Brandt serve as the lighthouse keeper?",
            "HOW LONG did Orsolya Brandt serve as lighthouse keeper!",
            "When does the Velmora festival take place?",
        ]
    )
    assert verdicts == [None, "near_duplicate_question", "duplicate_question", None]
    # Across batches too.
    assert dups.check(["When does the Velmora festival take place ?", "What is PostgreSQL?"]) == [
        "duplicate_question",
        None,
    ]


def test_static_dataset_maps_columns_as_flags_say(tmp_path):
    rows = [
        {
            "question": f"What gas do plants absorb {i}?",
            "correct_answer": "carbon dioxide",
            "support": "Plants take in carbon dioxide.",
        }
        for i in range(12)
    ]
    src = tmp_path / "sciq.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows))
    turns = turns_from_dataset(str(src), "question", "correct_answer", "support")
    result = build_dataset(
        turns,
        tmp_path / "out",
        BuildOptions(name="sciq", mode="none", dedup_similarity=None, validation_share=0),
        PROMPT.text,
        source=str(src),
        plain_questions=True,
    )
    [first, *_] = read_jsonl(result.path / "train.jsonl")
    assert first["messages"][1] == {"role": "user", "content": "What gas do plants absorb 0?"}
    assert first["messages"][2]["content"] == (
        "carbon dioxide Explanation: Plants take in carbon dioxide."
    )
    assert result.card.kept == 12 and result.card.source == str(src)
    # The teacher can distill static data too: it gets the question alone.
    with TeacherServer() as server:
        distilled = build_dataset(
            turns_from_dataset(str(src), limit=3),
            tmp_path / "out",
            BuildOptions(name="sciq-d", mode="distill", dedup_similarity=None, validation_share=0),
            PROMPT.text,
            teacher=teacher_for(server),
            plain_questions=True,
        )
        asked = {r["messages"][1]["content"] for r in server.requests}
        assert asked == {f"What gas do plants absorb {i}?" for i in range(3)}
    assert distilled.card.kept == 3 and distilled.card.teacher_model == "teacher-model"
    from core.errors import SourceError

    with pytest.raises(SourceError, match="no column 'answer'"):
        list(turns_from_dataset(str(src), "question", "answer"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "a"}\n{broken\n')
    # The bad line by its number (from 1), not a parser's row count or advice about the hub.
    with pytest.raises(SourceError, match=r"1 bad line: line 2: not JSON") as err:
        list(turns_from_dataset(str(bad)))
    assert "hub" not in str(err.value)


def test_cli_builds_and_validates(tmp_path, monkeypatch, teacher_server, capsys):
    from finetune.__main__ import main

    data = tmp_path / "data"
    monkeypatch.setenv("RAG_DATA_DIR", str(data))
    monkeypatch.setenv("RAG_FINETUNE__TEACHER__MODEL", "teacher-model")
    monkeypatch.setenv("RAG_FINETUNE__TEACHER__BASE_URL", teacher_server.base_url)
    monkeypatch.setenv("RAG_LLM__MODEL", "gpt-4o-mini-2024-07-18")
    monkeypatch.setenv("RAG_FINETUNE__BACKEND", "openai")
    chatlog = ChatLog(open_database(f"sqlite:///{(data / 'rag.db').resolve()}"))
    for i in range(14):
        log_turn(chatlog, f"Question {i}: who kept the lighthouse?")
    log_turn(chatlog, "Bad one [low]")
    chatlog.db.dispose()
    assert main(["build", "--name", "cli", "--no-embedding-dedup", "--validation-share", "0"]) == 0
    out = capsys.readouterr().out
    assert "dataset 1 'cli': kept 14 of 15 (dropped: grade_below_threshold 1)" in out
    assert main(["validate", "1"]) == 0
    out = capsys.readouterr().out
    assert "valid: 14 examples" in out and "training tokens (3 epochs): about $" in out
    broken = tmp_path / "broken.jsonl"
    broken.write_text(good() + "\n{oops\n")
    assert main(["validate", "--file", str(broken)]) == 1
    out = capsys.readouterr().out
    assert "line 2: invalid_json" in out and "too_few_examples" in out
    assert main(["list"]) == 0
    assert "1 datasets, 0 jobs" in capsys.readouterr().out


def test_embed_subcommand_goes_to_the_embedding_cli(monkeypatch):
    import sys
    import types

    from finetune.__main__ import main

    seen = []
    cli = types.ModuleType("finetune.embedding.cli")
    cli.main = lambda argv: seen.append(argv) or 0  # type: ignore[attr-defined]
    package = types.ModuleType("finetune.embedding")
    package.cli = cli  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "finetune.embedding", package)
    monkeypatch.setitem(sys.modules, "finetune.embedding.cli", cli)
    assert main(["embed", "train", "--epochs", "1"]) == 0
    assert seen == [["train", "--epochs", "1"]]


def test_a_rated_copy_of_a_question_wins_and_a_thumbs_down_is_never_a_target(log, tmp_path):
    """Among repeated questions a rated turn wins over its unrated twins, whichever came first:
    a thumbs-up copy is the example; a thumbs-down copy makes its unrated twin a duplicate, and
    is not a target itself. Answers saying the documents do not cover the question are not
    targets either; the card counts each reason."""
    from rag.synthesis import NO_ANSWER

    log_turn(log, "Who kept the lighthouse?", answer="Someone kept it, I think, long ago.")
    liked = log_turn(log, "who kept the lighthouse", rating="up")
    log_turn(log, "When is the festival?", answer="The festival is in May, every year [2].")
    log_turn(log, "When is the festival", answer="It is in May, every year [2].", rating="down")
    log_turn(log, "What colour is the tower?", answer=NO_ANSWER)
    log_turn(log, "Who built it?", answer="The passages do not cover who built the lighthouse.")
    card = build(log, tmp_path, None, "none").card
    assert card.source_turn_ids == [liked] and card.kept == 1
    assert card.dropped == {"duplicate_question": 2, "not_covered": 2, "rated_down": 1}


def test_an_answer_quoted_without_a_language_model_is_never_a_target_as_logged(
    log, tmp_path, teacher_server
):
    """The app's extracted passages are not an answer a chat model should learn to write: modes
    none and grade leave them out, counted on the card; relabel has the teacher answer the
    question from the same passages, even when the quotes were rated up."""
    from rag.synthesis import EXTRACTIVE_LABEL

    quotes = f"{EXTRACTIVE_LABEL}:\n\n> Orsolya Brandt kept the lighthouse. [1]\n"
    log_turn(log, "Who kept the lighthouse?", answer=quotes, provider="extractive", rating="up")
    log_turn(log, "How long did she serve?", rating="up")
    card = build(log, tmp_path, None, "none", validation_share=0).card
    assert card.kept == 1 and card.dropped == {"extractive_answer": 1}
    result = build(
        log, tmp_path, teacher_for(teacher_server), "relabel", name="re", validation_share=0
    )
    targets = [e["messages"][-1]["content"] for e in read_jsonl(result.path / "train.jsonl")]
    assert len(targets) == 2 and not any(EXTRACTIVE_LABEL in t for t in targets)
    assert any(t.startswith("Teacher answer") for t in targets)
    assert result.card.preference_pairs == 0  # quotes are no worse answer to reject
