"""The launched app (`python -m app` in a subprocess, first run on an empty data directory), driven
by gradio_client and by a real browser (Debian's chromium through Playwright)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from core.chatlog import ChatLog
from tests.conftest import ROOT, free_port, port_open, stop, wait_until_up
from tests.corpus import make_pdf

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def app_server(tmp_path_factory):
    data = tmp_path_factory.mktemp("app") / "data"
    port = free_port()
    env = {**os.environ, "RAG_DATA_DIR": str(data), "PYTHONUNBUFFERED": "1"}
    log_path = data.parent / "app.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/"
    wait_until_up(proc, lambda: port_open(port), log_path, "the app", 120)
    yield url, data, log_path
    stop(proc)


def chatlog(data) -> ChatLog:
    return ChatLog(f"sqlite:///{(data / 'rag.db').resolve()}")


def test_first_run_indexes_docs_and_streams_a_logged_answer(app_server):
    from gradio_client import Client

    url, data, log_path = app_server
    assert "first run: indexed the bundled docs" in log_path.read_text()
    client = Client(url, verbose=False)
    job = client.submit("How do I export the chat log?", [], api_name="/respond")
    outputs = list(job)  # every streamed update
    _, history, sources, badge = job.result()
    answer = (
        history[-1]["content"][0]["text"]
        if isinstance(history[-1]["content"], list)
        else history[-1]["content"]
    )
    assert len(outputs) >= 2
    assert "Extracted passages" in answer and "export-logs" in answer
    assert "feedback-and-logs.md" in sources
    turns = [t for t in chatlog(data).turns() if t.user_input == "How do I export the chat log?"]
    assert len(turns) == 1 and turns[0].status == "answered" and turns[0].response == answer
    assert turns[0].retrieved_contexts[0].file_name == "feedback-and-logs.md"
    # The first start registered the configured models; the badge and the turn name the version.
    assert "extractive" in badge and f"chat v{turns[0].chat_version_id}" in badge
    assert turns[0].chat_version_id is not None and turns[0].embedding_version_id is not None


def test_upload_through_admin_tab_then_ask(app_server, tmp_path):
    from gradio_client import Client, handle_file

    url, data, _ = app_server
    pdf = make_pdf(tmp_path / "velmora.pdf")
    bad = tmp_path / "broken.pdf"
    bad.write_bytes(b"%PDF-1.4 nope")
    client = Client(url, verbose=False)
    summary = client.predict([handle_file(str(pdf)), handle_file(str(bad))], "", api_name="/upload")
    assert "new 1" in summary and "failed 1" in summary and "broken.pdf" in summary
    assert (data / "uploads" / "velmora.pdf").is_file()
    _, history, sources, _badge = client.predict(
        "Who is the lighthouse keeper of Velmora?", [], api_name="/respond"
    )
    assert "Orsolya Brandt" in str(history[-1]["content"])
    assert "velmora.pdf" in sources


@pytest.mark.browser
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed")
def test_browser_ask_see_sources_and_thumbs_down_with_comment(app_server):
    from playwright.sync_api import expect, sync_playwright

    url, data, _ = app_server
    question = "Which chat models are supported?"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ],
        )
        page = browser.new_page()
        page.goto(url, wait_until="domcontentloaded")
        expect(page.locator("#model-badge")).to_contain_text("extractive")
        page.locator("#question textarea").fill(question)
        page.locator("#send").click()
        bot = page.locator("#chatbot .message.bot, #chatbot [data-testid='bot']").last
        expect(bot).to_contain_text("Extracted passages", timeout=30_000)
        expect(bot).to_contain_text(re.compile(r"\[\d\]"))  # quotes carry their citation
        expect(page.locator("#sources")).to_contain_text("configuration.md", timeout=30_000)
        page.locator("#chatbot button[aria-label='Dislike']").last.click()
        expect(page.locator("#feedback-note")).to_contain_text("what was wrong", timeout=15_000)
        page.locator("#comment textarea").fill("It should mention Azure first.")
        page.locator("#send-comment").click()
        expect(page.locator("#feedback-note")).to_contain_text("Comment saved", timeout=15_000)
        browser.close()
    [turn] = [t for t in chatlog(data).turns() if t.user_input == question]
    assert turn.feedback.rating == "down"
    assert turn.feedback.comment == "It should mention Azure first."


def test_export_logs_cli(app_server, tmp_path):
    _, data, _ = app_server
    log = chatlog(data)
    tid = log.start_turn("cli", "exported question")
    log.finish_turn(
        tid,
        answer="a",
        condensed_question=None,
        contexts=[],
        model_id="m",
        provider="extractive",
        prompt_version="1",
        latency_ms=1.0,
    )
    log.set_feedback(tid, "down", "too short")
    out = tmp_path / "down.jsonl"
    env = {**os.environ, "RAG_DATA_DIR": str(data)}
    res = subprocess.run(
        [sys.executable, "-m", "app", "export-logs", "--feedback", "down", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert "exported question" in [r["user_input"] for r in rows]
    assert all(r["feedback"]["rating"] == "down" for r in rows)
    assert f"exported {len(rows)} turns" in res.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "app", "export-logs", "--since", "yesterday"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "not an ISO date" in bad.stderr


def test_admin_functions_need_a_password_off_loopback():
    from app.service import admin_allowed, is_loopback
    from core.settings import Settings

    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("")
    s = Settings()
    s.app.host = "0.0.0.0"
    assert not admin_allowed(s)
    s.app.admin_password = "pw"
    assert admin_allowed(s)


def test_evaluate_tab_shows_runs_samples_and_moves_the_registry(app_server, tmp_path, monkeypatch):
    """`python -m eval run` on the running app's database; the Evaluate tab lists the run, drills
    into a sample, and promotes and rolls back a version that the chat answers with at once."""
    from gradio_client import Client

    from core.registry import Registry
    from eval.__main__ import main as eval_main

    url, data, _ = app_server
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
    runs, _history, versions = client.predict("", api_name="/refresh")
    [row] = runs["data"]
    assert row[2] == "done" and row[6] == 2  # status, samples
    assert "| chat | v1 | active |" in versions
    samples, _ = client.predict(row[0], "", api_name="/drill")
    assert [r[1] for r in samples["data"]] == [
        "How do I export the chat log?",
        "Which chat models are supported?",
    ]
    detail = client.predict(row[0], 0, "", api_name="/sample_detail")
    assert "feedback-and-logs.md" in detail and "hit_at_1" in detail
    assert "no reference" in client.predict(row[0], 1, "", api_name="/sample_detail")

    reg = Registry(f"sqlite:///{(data / 'rag.db').resolve()}")
    candidate = reg.register("chat", "top-1", {"retrieval": {"top_k": 1}})
    note, _ = client.predict(candidate.id, "", api_name="/promote")
    assert f"chat v{candidate.id} is active" in note
    _, _, _, badge = client.predict("How do I export the chat log?", [], api_name="/respond")
    assert f"chat v{candidate.id}" in badge
    note, _ = client.predict("chat", "", api_name="/rollback")
    assert "v1 is active again" in note
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

    run_id = EvalStore(f"sqlite:///{(data / 'rag.db').resolve()}").runs(limit=1)[0].id
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
        page.locator("#eval-sample-idx input").fill("0")
        page.locator("#eval-detail").click()
        expect(page.locator("#eval-sample-detail")).to_contain_text("Retrieved", timeout=30_000)
        browser.close()
