"""The model registry on SQLite and on the real PostgreSQL: seeding, exactly one active version per
kind, promote and rollback with history, the revision number, specs applied to settings."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError

from core.chatlog import ChatLog
from core.db.database import open_database
from core.registry import ModelVersionRow, Registry, RegistryError, apply_spec
from core.settings import Settings


def test_first_start_seeds_one_active_version_per_kind(sql_url, tmp_path):
    reg = Registry(open_database(sql_url))
    assert reg.active("chat") is None
    settings = Settings(data_dir=tmp_path)
    settings.llm.api_key = None
    seeded = reg.seed(settings)
    assert {k: v.status for k, v in seeded.items()} == {
        "chat": "active",
        "embedding": "active",
        "reranker": "active",
    }
    assert seeded["chat"].spec == {}  # "as configured": it follows settings
    assert seeded["chat"].provenance["seeded_from_settings"]["retrieval"]["top_k"] == 4
    # A second start (or a second process) seeds nothing new.
    again = Registry(open_database(sql_url)).seed(settings)
    assert again["chat"].id == seeded["chat"].id
    assert len(reg.versions()) == 3
    assert [e.action for e in reg.history("chat")] == ["seed"]


def test_secrets_never_enter_the_registry(sql_url, tmp_path):
    from pydantic import SecretStr

    reg = Registry(open_database(sql_url))
    settings = Settings(data_dir=tmp_path)
    settings.llm.api_key = SecretStr("sk-secret")
    seeded = reg.seed(settings)
    assert "sk-secret" not in str(seeded["chat"].provenance)
    with pytest.raises(RegistryError, match="never stored"):
        reg.register("chat", "leaky", {"llm": {"api_key": "sk-x"}})
    with pytest.raises(RegistryError, match="may only set llm, retrieval"):
        reg.register("chat", "wrong", {"embedding": {"model": "x"}})
    with pytest.raises(RegistryError, match="unknown model kind"):
        reg.register("vision", "x")


def test_promote_and_rollback_keep_exactly_one_active(sql_url, tmp_path):
    reg = Registry(open_database(sql_url))
    seed = reg.seed(Settings(data_dir=tmp_path))["chat"]
    r0 = reg.revision()
    v2 = reg.register("chat", "top-k 8", {"retrieval": {"top_k": 8}}, parent_id=seed.id)
    assert v2.status == "candidate" and reg.active("chat").id == seed.id
    assert reg.revision() > r0
    r1 = reg.revision()
    reg.promote(v2.id, reason="decision:7")
    assert reg.revision() > r1
    assert reg.active("chat").id == v2.id
    assert reg.get(seed.id).status == "retired"
    v3 = reg.register("chat", "top-k 6", {"retrieval": {"top_k": 6}}, parent_id=v2.id)
    reg.promote(v3.id)
    assert [v.id for v in reg.versions("chat", "active")] == [v3.id]
    [_seed_event, e_p2, e_p3] = reg.history("chat")
    assert (e_p2.version_id, e_p2.previous_id, e_p2.reason) == (v2.id, seed.id, "decision:7")
    assert (e_p3.version_id, e_p3.previous_id, e_p3.reason) == (v3.id, v2.id, "admin")

    back = reg.rollback("chat")
    assert back.action == "rollback" and back.version_id == v2.id and back.previous_id == v3.id
    assert reg.active("chat").id == v2.id and reg.get(v3.id).status == "retired"
    reg.rollback("chat")  # a second rollback walks further back
    assert reg.active("chat").id == seed.id
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        reg.rollback("chat")
    assert reg.active("embedding").status == "active"  # other kinds untouched


def test_the_database_refuses_two_active_versions_of_a_kind(sql_url, tmp_path):
    from sqlalchemy.orm import Session

    reg = Registry(open_database(sql_url))
    reg.seed(Settings(data_dir=tmp_path))
    with pytest.raises(IntegrityError), Session(reg.engine) as s, s.begin():
        s.add(ModelVersionRow(kind="chat", name="rogue", spec={}, status="active"))


def test_unknown_versions_and_double_promotion_are_clear_errors(sql_url, tmp_path):
    reg = Registry(open_database(sql_url))
    seed = reg.seed(Settings(data_dir=tmp_path))["chat"]
    with pytest.raises(RegistryError, match="no model version 999"):
        reg.promote(999)
    with pytest.raises(RegistryError, match="already active"):
        reg.promote(seed.id)
    with pytest.raises(RegistryError, match="parent version 42 does not exist"):
        reg.register("chat", "orphan", parent_id=42)


def test_registry_shares_the_chat_log_database(sql_url, tmp_path):
    log = ChatLog(open_database(sql_url))
    reg = Registry(log.db)
    reg.seed(Settings(data_dir=tmp_path))
    tid = log.start_turn("s", "q")
    log.finish_turn(
        tid,
        answer="a",
        condensed_question=None,
        contexts=[],
        model_id="m",
        provider="extractive",
        prompt_version="1",
        latency_ms=1.0,
        chat_version_id=reg.active("chat").id,
        embedding_version_id=reg.active("embedding").id,
    )
    [turn] = log.turns()
    assert turn.chat_version_id == reg.active("chat").id
    assert turn.embedding_version_id == reg.active("embedding").id


def test_apply_spec_overrides_only_the_named_fields(tmp_path, sql_url):
    reg = Registry(open_database(sql_url))
    settings = Settings(data_dir=tmp_path)
    v = reg.register("chat", "k1", {"retrieval": {"top_k": 1}, "llm": {"provider": "extractive"}})
    e = reg.register("embedding", "other", {"chroma": {"collection": "docs-v2"}})
    applied = apply_spec(settings, v, e)
    assert applied.retrieval.top_k == 1 and applied.llm.provider == "extractive"
    assert applied.retrieval.similarity_cutoff == settings.retrieval.similarity_cutoff
    assert applied.chroma.collection == "docs-v2" and settings.chroma.collection == "docs"


@pytest.mark.parametrize(
    ("spec", "refusal"),
    [
        ({"retrieval": {"top_kk": 8}}, r"unknown setting retrieval\.top_kk in the spec"),
        ({"retrieval": {"top_k": "many"}}, r"retrieval\.top_k in the spec: Input should be"),
        ({"llm": {"temperature": 7}}, r"llm\.temperature in the spec"),
        ({"llm": "gpt-4o"}, r"the spec's 'llm' must be an object"),
    ],
)
def test_a_spec_with_a_typo_or_a_wrong_type_is_refused_naming_the_key(sql_url, spec, refusal):
    reg = Registry(open_database(sql_url))
    with pytest.raises(RegistryError, match=refusal):
        reg.register("chat", "typo", spec)
    assert reg.versions("chat") == []  # nothing registered
    assert reg.register("chat", "fine", {"retrieval": {"top_k": 8}}).spec["retrieval"]["top_k"] == 8


def test_eval_register_refuses_a_typo_with_the_key_named(tmp_path, monkeypatch, capsys):
    from eval.__main__ import main

    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    spec = '{"retrieval": {"top_kk": 8}}'
    assert main(["register", "--kind", "chat", "--name", "typo", "--spec", spec]) == 2
    assert "unknown setting retrieval.top_kk" in capsys.readouterr().err
