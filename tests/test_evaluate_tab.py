"""The Evaluate tab of the launched app: after `python -m eval run` on its database, the tab lists
the run, drills into a sample and moves the registry (the chat answers with the promoted version
at once); and the same in a real browser."""

from __future__ import annotations

import json
import os

import pytest

from core.db.database import open_database
from tests.support.app import CHROMIUM, start_app
from tests.support.servers import stop


@pytest.fixture(scope="module")
def app_server(tmp_path_factory):
    data = tmp_path_factory.mktemp("evaluate") / "data"
    log_path = data.parent / "app.log"
    proc, url = start_app(data, log_path)
    yield url, data, log_path
    stop(proc)


def test_evaluate_tab_shows_runs_samples_and_moves_the_registry(app_server, tmp_path, monkeypatch):
    """`python -m eval run` on the running app's database; the Evaluate tab lists the run, drills
    into a sample, and promotes and rolls back a version that the chat answers with at once."""
    from gradio_client import Client

    from core.registry import Registry
    from eval.__main__ import main as eval_main

    url, data, log_path = app_server
    golden = tmp_path / "golden.jsonl"
    golden.write_text(
        json.dumps(
            {
                "user_input": "How do I export the chat log?",
                "reference": "python -m app export-logs",
                "reference_sources": ["feedback-and-logs.md"],
            }
        )
        + "\n"
        + json.dumps({"user_input": "Which chat models are supported?"})
        + "\n"
    )
    monkeypatch.setenv("RAG_DATA_DIR", str(data))
    assert eval_main(["run", "--set", str(golden), "--report", str(tmp_path / "r.html")]) == 0
    assert "Evaluation run" in (tmp_path / "r.html").read_text()
    client = Client(url, verbose=False)
    chosen, _who, runs, _history, versions, note = client.predict("", None, api_name="/refresh")
    assert note == ""  # the chosen set has a run: nothing to prompt
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"user_input": "Which file formats can be indexed?"}) + "\n")
    _, added, figure, note = client.predict(
        {"path": str(other), "meta": {"_type": "gradio.FileData"}}, "", api_name="/add_set"
    )
    assert "set 2: other.jsonl (1 question, upload)" in added
    assert figure is None and "No runs on this set yet" in note  # the new set, not set 1
    # The set `eval run` stored is listed, with where it came from, and chosen.
    assert (
        chosen["value"] == 1
        and chosen["choices"][0][0] == "set 1: golden.jsonl (2 questions, file)"
    )
    [row] = runs["data"]
    assert row[2] == "done" and row[5] == "none" and row[7] == 2  # status, reranker, samples
    assert row[6] == "set 1"  # the set as the set list names it, not a hash
    assert "| chat | v1 | active |" in versions
    samples, _ = client.predict(row[0], "", api_name="/drill")
    assert [r[1] for r in samples["data"]] == [
        "How do I export the chat log?",
        "Which chat models are supported?",
    ]
    assert [r[0] for r in samples["data"]] == [1, 2]  # numbered as "Sample #" takes them
    detail = client.predict(row[0], 1, "", api_name="/sample_detail")
    assert "feedback-and-logs.md" in detail and "hit_at_1" in detail
    assert "no reference" in client.predict(row[0], 2, "", api_name="/sample_detail")
    # The answers column is plain text: the table does not render Markdown.
    assert all("**" not in r[2] and not r[2].startswith(">") for r in samples["data"])

    # Only the first start's versions: nothing to roll back, and no other change to point at.
    client.predict("chat", "", api_name="/rollback")
    assert "nothing to roll back to" in log_path.read_text()
    assert "choose the kind" not in log_path.read_text()
    reg = Registry(open_database(f"sqlite:///{(data / 'rag.db').resolve()}"))
    candidate = reg.register("chat", "top-1", {"retrieval": {"top_k": 1}})
    note, _, kind = client.predict(candidate.id, "", api_name="/promote")
    assert f"chat v{candidate.id} is active" in note
    assert kind == "chat"  # Roll back now undoes this promotion
    assert "Promoted by hand: the gate has never compared it" in note
    _, _, _, badge = client.predict("How do I export the chat log?", [], api_name="/respond")
    assert f"chat v{candidate.id}" in badge
    # The reranker has nothing to undo; the last change was chat's promotion: the refusal says so.
    client.predict("reranker", "", api_name="/rollback")
    assert log_path.read_text().count("choose the kind chat to roll that back") == 1
    note, _ = client.predict("chat", "", api_name="/rollback")
    assert "v1 is active again" in note
    # The last change is now a rollback: nothing to point at.
    client.predict("reranker", "", api_name="/rollback")
    assert log_path.read_text().count("choose the kind") == 1
    _, _, _, badge = client.predict("How do I export the chat log?", [], api_name="/respond")
    assert "chat v1" in badge


@pytest.mark.browser
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed")
def test_browser_evaluate_tab_runs_and_samples(app_server, tmp_path, monkeypatch):
    from playwright.sync_api import expect, sync_playwright

    from eval.__main__ import main as eval_main

    url, data, _ = app_server
    golden = tmp_path / "golden.jsonl"
    question = "What file formats can be indexed?"
    golden.write_text(json.dumps({"user_input": question, "reference": "PDF"}) + "\n")
    monkeypatch.setenv("RAG_DATA_DIR", str(data))
    assert eval_main(["run", "--set", str(golden)]) == 0
    from core.evalstore import EvalStore

    db = open_database(f"sqlite:///{(data / 'rag.db').resolve()}")
    run_id = EvalStore(db).runs(limit=1)[0].id
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page()
        page.goto(url, wait_until="domcontentloaded")
        page.get_by_role("tab", name="Evaluate").click()
        page.locator("#eval-refresh").click()
        expect(page.locator("#eval-runs")).to_contain_text("done", timeout=30_000)
        expect(page.locator("#eval-versions")).to_contain_text("active", timeout=30_000)
        page.locator("#eval-run-id input").fill(str(run_id))
        page.locator("#eval-show").click()
        expect(page.locator("#eval-samples")).to_contain_text(question, timeout=30_000)
        page.locator("#eval-sample-idx input").fill("1")
        page.locator("#eval-detail").click()
        expect(page.locator("#eval-sample-detail")).to_contain_text("Retrieved", timeout=30_000)
        browser.close()
