"""End to end through `python -m eval`: a truly worse candidate (retrieval top-k 1 where answers sit
in the second and third passage) is rejected, a truly better one (top-k 4) promoted; the running
app answers with the new version on its next question; rollback restores the champion."""

from __future__ import annotations

import pytest

from tests.support.evalcorpus import make_eval_corpus

QUESTION = "What is the name of the Carrow lighthouse cat?"  # its answer is the third passage


@pytest.fixture(scope="module")
def world(tmp_path_factory, embed_model, embed_id):
    from core.index.store import chroma_client, open_collection
    from core.settings import Settings
    from ingest import ingest_paths

    root = tmp_path_factory.mktemp("e2e")
    corpus, golden = make_eval_corpus(root)
    env = {
        "RAG_DATA_DIR": str(root / "data"),
        "RAG_APP__DOCS_DIR": str(root / "no-docs"),
        "RAG_RETRIEVAL__TOP_K": "2",  # the champion as first configured
        # Dense ranking puts each answer first, second or third as designed; the subject here is
        # the gate, not how lexical fusion reorders decoys.
        "RAG_RETRIEVAL__HYBRID": "false",
        "RAG_EVAL__PRIMARY_METRIC": "hit_at_5",
        "RAG_EVAL__GUARD_METRICS": '["mrr_at_10", "semantic_similarity"]',
        "RAG_EVAL__MIN_SAMPLES": "10",
    }
    mp = pytest.MonkeyPatch()
    for k, v in env.items():
        mp.setenv(k, v)
    settings = Settings()
    collection = open_collection(chroma_client(settings), settings.chroma.collection, embed_id)
    ingest_paths(settings, collection, embed_model, paths=[corpus], progress=False)
    yield settings, golden
    mp.undo()


def cli(capsys, *argv: str) -> str:
    from eval.__main__ import main

    code = main(list(argv))
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


@pytest.mark.slow
def test_worse_rejected_better_promoted_app_switches_and_rollback_restores(
    world, capsys, embed_model
):
    from app.service import build_service

    settings, golden = world
    service = build_service(settings)  # the running app: seeds the registry on first start
    reg = service.registry
    seed = reg.active("chat")

    def app_answer():
        last = list(service.pipeline.ask("user", QUESTION))[-1]
        turn = list(service.chatlog.turns())[-1]
        return len(last.sources), turn.chat_version_id

    assert app_answer() == (2, seed.id)

    out = cli(
        capsys,
        "register",
        "--kind",
        "chat",
        "--name",
        "top-1",
        "--spec",
        '{"retrieval": {"top_k": 1}}',
        "--parent",
        str(seed.id),
    )
    worse = reg.versions("chat", "candidate")[-1]
    assert f"chat v{worse.id}" in out
    out = cli(
        capsys, "compare", "--set", str(golden), "--candidate", str(worse.id), "--auto-promote"
    )
    decision_line = out.strip().splitlines()[-1]
    assert "REJECT (applied)" in decision_line and "hit_at_5 -0.3333" in decision_line, out
    assert reg.get(worse.id).status == "rejected" and reg.active("chat").id == seed.id
    assert app_answer() == (2, seed.id)

    cli(
        capsys,
        "register",
        "--kind",
        "chat",
        "--name",
        "top-4",
        "--spec",
        '{"retrieval": {"top_k": 4}}',
        "--parent",
        str(seed.id),
    )
    better = reg.versions("chat", "candidate")[-1]
    report = settings.data_dir / "compare.html"
    out = cli(
        capsys,
        "compare",
        "--set",
        str(golden),
        "--candidate",
        str(better.id),
        "--auto-promote",
        "--report",
        str(report),
    )
    assert "PROMOTE (applied)" in out.strip().splitlines()[-1], out
    [champ_line, cand_line] = out.strip().splitlines()[:2]
    assert "hit_at_5=0.667" in champ_line and "hit_at_5=1.000" in cand_line
    assert reg.active("chat").id == better.id
    reason = reg.history("chat")[-1].reason
    assert reason.startswith("decision:")
    assert app_answer() == (4, better.id)  # the next question, no restart

    page = report.read_text()
    assert "Gate decision" in page and "PROMOTE (applied)" in page and "plotly" in page
    assert "Worst samples by hit_at_5" in page

    out = cli(capsys, "rollback", "chat")
    assert f"v{seed.id} is active again" in out
    assert app_answer() == (2, seed.id)
    # A scheduled evaluation judges the new candidate (and only new ones) and promotes a winner.
    cli(
        capsys,
        "register",
        "--kind",
        "chat",
        "--name",
        "top-4 again",
        "--spec",
        '{"retrieval": {"top_k": 4}}',
    )
    again = reg.versions("chat", "candidate")[-1]
    out = cli(capsys, "schedule", "--once", "--set", str(golden), "--auto-promote")
    assert f"v{again.id} promoted" in out and f"v{worse.id}" not in out, out
    assert app_answer() == (4, again.id)
    out = cli(capsys, "schedule", "--once", "--set", str(golden), "--auto-promote")
    assert "no new candidates" in out, out

    out = cli(capsys, "history", "--kind", "chat")
    assert reason in out and "rollback" in out and "rejected" in out
