"""The launched app (`python -m app` in a subprocess, first run on an empty data directory), driven
by gradio_client and by a real browser (Debian's chromium through Playwright)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from app.markup import safe_markdown
from core.chatlog import ChatLog
from core.db.database import open_database
from tests.support.app import CHROMIUM, launch_browser, start_app
from tests.support.corpus import make_pdf
from tests.support.paths import ROOT
from tests.support.servers import stop

QUESTION = "Who is the lighthouse keeper of Velmora?"


@pytest.fixture(scope="module")
def app_server(tmp_path_factory):
    data = tmp_path_factory.mktemp("app") / "data"
    log_path = data.parent / "app.log"
    proc, url = start_app(data, log_path)
    yield url, data, log_path
    stop(proc)


def chatlog(data) -> ChatLog:
    return ChatLog(open_database(f"sqlite:///{(data / 'rag.db').resolve()}"))


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
    # The page was served before the models loaded; this first question waited for them.
    log = log_path.read_text()
    assert log.index("open http://") < log.index("model: extractive")
    assert "Extracted passages" in answer and "export-logs" in answer
    assert "feedback-and-logs.md" in sources
    turns = [t for t in chatlog(data).turns() if t.user_input == "How do I export the chat log?"]
    assert len(turns) == 1 and turns[0].status == "answered"
    assert safe_markdown(turns[0].response) == answer  # shown as logged, HTML escaped
    assert turns[0].retrieved_contexts[0].file_name == "feedback-and-logs.md"
    # The first start registered the configured models; the badge and the turn name the version.
    assert "extractive" in badge and f"chat v{turns[0].chat_version_id}" in badge
    assert turns[0].chat_version_id is not None and turns[0].embedding_version_id is not None


def test_upload_ask_then_remove_the_document(app_server, tmp_path):
    """Upload through the Documents tab (results by file name, the failure not kept), answer from
    the new file, then remove it: gone from answers, from Chroma and the BM25 index, and from
    the uploads folder."""
    from gradio_client import Client, handle_file

    from core.index.lexical import load_lexical

    url, data, _ = app_server
    pdf = make_pdf(tmp_path / "velmora.pdf")
    bad = tmp_path / "broken.pdf"
    bad.write_bytes(b"%PDF-1.4 nope")
    client = Client(url, verbose=False)
    result, picker, table, _choice = client.predict(
        [handle_file(str(pdf)), handle_file(str(bad))], "", api_name="/upload"
    )
    assert "1 of 2 files indexed" in result
    assert "✅ **velmora\\.pdf**: added" in result
    assert "❌ **broken\\.pdf**: not indexed:" in result
    assert picker is None  # the file picker is cleared
    assert sorted(p.name for p in (data / "uploads").iterdir()) == ["velmora.pdf"]
    [row] = [r for r in table["data"] if r[0] == "velmora.pdf"]
    assert row[1] >= 3 and row[2] == 3 and row[3].endswith("UTC")  # chunks, pages, when
    _, history, sources, _badge = client.predict(QUESTION, [], api_name="/respond")
    assert "Orsolya Brandt" in str(history[-1]["content"])
    assert "velmora.pdf" in sources

    source = str((data / "uploads" / "velmora.pdf").resolve())
    ids = set(_collection(data).get(where={"source": source}, include=[])["ids"])
    assert ids
    note, table, _choice = client.predict(source, "", api_name="/remove_document")
    assert "Removed **velmora\\.pdf**" in note and "uploaded file is deleted" in note
    assert "velmora.pdf" not in [r[0] for r in table["data"]]
    assert not (data / "uploads" / "velmora.pdf").exists()
    collection = _collection(data)
    assert collection.get(where={"source": source}, include=[])["ids"] == []
    [lexical] = (data / "lexical").iterdir()
    index = load_lexical(lexical)
    assert len(index) == collection.count() and not ids & set(index.ids)
    _, history, sources, _badge = client.predict(QUESTION, [], api_name="/respond")
    assert "Orsolya" not in str(history[-1]["content"]) and "velmora.pdf" not in sources


def _collection(data):
    from core.index.store import chroma_client
    from core.settings import Settings

    client = chroma_client(Settings(data_dir=data))
    return client.get_collection("docs", embedding_function=None)


def test_api_page_lists_only_named_documented_endpoints(app_server):
    from gradio_client import Client

    url, _, _ = app_server
    info = Client(url, verbose=False).view_api(return_format="dict", print_info=False)
    assert info["unnamed_endpoints"] == {}
    named = info["named_endpoints"]
    assert {"/respond", "/upload", "/remove_document", "/documents", "/export_logs"} <= set(named)
    for name, endpoint in named.items():
        assert not re.search(r"lambda|_\d+$", name), name  # no handler or duplicate names
        for param in endpoint["parameters"]:
            assert not param["parameter_name"].startswith("param"), (name, param)
    assert [p["parameter_name"] for p in named["/respond"]["parameters"]] == ["message", "history"]
    assert len(named["/respond"]["returns"]) == 4
    assert "Ask a question" in named["/respond"]["description"]


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
        # A shortened passage opened whole shows the whole passage in the excerpt's place, not
        # the same sentences twice.
        card = page.locator("#sources .src-card:has(details)").first
        excerpt = card.locator(".src-excerpt")
        expect(excerpt).to_be_visible()
        card.locator("details summary").click()
        expect(card.locator("details .src-text")).to_be_visible()
        expect(excerpt).to_be_hidden()
        page.locator("#chatbot button[aria-label='Dislike']").last.click()
        expect(page.locator("#feedback-note")).to_contain_text("what was wrong", timeout=15_000)
        page.locator("#comment textarea").fill("It should mention Azure first.")
        page.locator("#send-comment").click()
        expect(page.locator("#feedback-note")).to_contain_text("Comment saved", timeout=15_000)
        [turn] = [t for t in chatlog(data).turns() if t.user_input == question]
        assert turn.feedback.rating == "down"
        assert turn.feedback.comment == "It should mention Azure first."
        # Clicked again, the rating is taken back: in the log too.
        page.locator("#chatbot button[aria-label='Disliked']").last.click()
        expect(page.locator("#feedback-note")).to_contain_text("removed", timeout=15_000)
        browser.close()
    [turn] = [t for t in chatlog(data).turns() if t.user_input == question]
    assert turn.feedback is None


HOSTILE_DOC = """# Harbour rules of Quillon

The harbour master of Quillon is <b>Teodor Vasz</b>, who answers the radio day and night.
<img src="x" onerror="window.__pwned = 'img'"> <script>window.__pwned = 'script'</script>
Boats of the fishing fleet dock at pier nine and pay their fee in the morning.
"""


@pytest.mark.browser
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed")
def test_browser_document_html_is_shown_as_text_never_rendered(app_server, tmp_path):
    """An uploaded document with <script>, <img onerror> and <b>: the answer quoting it and the
    sources panel show the markup as text; nothing runs, no image or bold element appears."""
    from gradio_client import Client, handle_file
    from playwright.sync_api import expect, sync_playwright

    url, _, _ = app_server
    doc = tmp_path / "quillon.md"
    doc.write_text(HOSTILE_DOC)
    result, *_ = Client(url, verbose=False).predict([handle_file(str(doc))], "", api_name="/upload")
    assert "quillon\\.md**: added" in result
    with sync_playwright() as p:
        browser = launch_browser(p)
        page = browser.new_page()
        page.goto(url, wait_until="domcontentloaded")
        page.locator("#question textarea").fill("Who is the harbour master of <b>Quillon</b>?")
        page.locator("#send").click()
        bot = page.locator("#chatbot .message.bot, #chatbot [data-testid='bot']").last
        expect(bot).to_contain_text("<b>Teodor Vasz</b>", timeout=30_000)  # shown as text
        expect(page.locator("#sources")).to_contain_text("quillon.md", timeout=30_000)
        sources = page.locator("#sources")
        expect(sources).to_contain_text("<b>Teodor Vasz</b>")
        expect(sources).to_contain_text("<script>")
        user = page.locator("#chatbot .message.user, #chatbot [data-testid='user']").last
        expect(user).to_contain_text("<b>Quillon</b>")  # the question too
        for where in ("#chatbot", "#sources"):
            assert page.locator(f"{where} b, {where} script, {where} img").count() == 0, where
        page.wait_for_timeout(500)
        assert page.evaluate("window.__pwned") is None
        browser.close()


GUIDE_PAGE = re.compile(
    r"(adding-documents|chatting|configuration|feedback-and-logs|getting-started|improving-the-model)\.md"
)


@pytest.mark.browser
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed")
def test_browser_first_screen_comment_on_the_right_answer_and_new_chat_clears(app_server):
    """The empty chat says what is indexed and offers questions; a click asks one. A comment goes
    to the answer it names (checked in the database); a mistake leaves one warning and no error
    badge; New chat empties every panel."""
    from playwright.sync_api import expect, sync_playwright

    url, data, log_path = app_server
    second = "Which file formats can I add?"
    with sync_playwright() as p:
        browser = launch_browser(p)
        page = browser.new_page()
        page.goto(url, wait_until="domcontentloaded")
        chat = page.locator("#chatbot")
        expect(chat).to_contain_text("documents indexed:", timeout=30_000)
        # Newest first, four names at most: which of the guide's pages show depends on which
        # ingest flush wrote them, and another test may have uploaded a document before.
        expect(chat).to_contain_text(GUIDE_PAGE)
        examples = chat.locator("button.example")
        expect(examples).to_have_count(3)
        # The overview keeps off the chat's border, as the suggestions do.
        text_x = chat.get_by_text("documents indexed:").bounding_box()["x"]
        assert text_x >= chat.bounding_box()["x"] + 8
        first = examples.first.inner_text().strip()
        assert first.endswith("?")
        # Record whether the box and Send are ever disabled: they are while an answer streams.
        page.evaluate(
            """() => {
              window.__locked = {box: false, send: false};
              new MutationObserver(() => {
                const box = document.querySelector('#question textarea');
                const send = document.querySelector('#send');
                if (box?.disabled) window.__locked.box = true;
                if (send?.disabled) window.__locked.send = true;
              }).observe(document.body, {attributes: true, subtree: true, childList: true});
            }"""
        )
        examples.first.click()
        bots = chat.locator("[data-testid='bot']")
        expect(bots.first).to_contain_text("Extracted passages", timeout=30_000)
        expect(chat.locator(".message.user, [data-testid='user']").first).to_contain_text(first)
        box = page.locator("#question textarea")
        expect(box).to_be_editable(timeout=30_000)  # unlocked once the answer is complete
        expect(page.locator("#send")).to_be_enabled()
        assert page.evaluate("window.__locked") == {"box": True, "send": True}
        box.fill(second)
        page.locator("#send").click()
        expect(bots).to_have_count(2, timeout=30_000)
        expect(bots.nth(1)).to_contain_text("Extracted passages", timeout=30_000)

        # A comment before any rating: one warning, no error badge anywhere, nothing saved.
        page.locator("#comment textarea").fill("premature")
        page.locator("#send-comment").click()
        toast = page.get_by_test_id("toast-text")
        expect(toast).to_have_count(1)
        expect(toast).to_contain_text("rate an answer with")
        assert page.get_by_text("Error", exact=True).count() == 0
        expect(page.locator("#comment textarea")).to_have_value("premature")  # not lost

        # Rate the FIRST answer while the second is the latest: the comment goes to the first.
        chat.locator("button[aria-label='Dislike']").first.click()
        note = page.locator("#feedback-note")
        expect(note).to_contain_text("answer 1", timeout=15_000)
        expect(note).to_contain_text(first[:30])
        expect(page.locator("#comment")).to_contain_text("Comment on answer 1")
        page.locator("#comment textarea").fill("It should list the commands.")
        page.locator("#send-comment").click()
        expect(note).to_contain_text("Comment saved on answer 1", timeout=15_000)
        assert page.get_by_text("Error", exact=True).count() == 0
        turns = {t.user_input: t for t in chatlog(data).turns()}
        assert turns[first].feedback.rating == "down"
        assert turns[first].feedback.comment == "It should list the commands."

        # Rate answer 2, then take answer 1's rating back: comments still go to answer 2.
        chat.locator("button[aria-label='Like']").nth(1).click()
        expect(note).to_contain_text("answer 2", timeout=15_000)
        chat.locator("button[aria-label='Disliked']").first.click()
        expect(note).to_contain_text("Rating of answer 1", timeout=15_000)
        page.locator("#comment textarea").fill("Right answer.")
        page.locator("#send-comment").click()
        expect(note).to_contain_text("Comment saved on answer 2", timeout=15_000)
        turns = {t.user_input: t for t in chatlog(data).turns()}
        assert turns[first].feedback is None
        assert (turns[second].feedback.rating, turns[second].feedback.comment) == (
            "up",
            "Right answer.",
        )

        page.locator("#new-chat").click()
        expect(chat).to_contain_text("documents indexed:", timeout=15_000)
        expect(bots).to_have_count(0)
        expect(page.locator("#sources")).to_contain_text("Ask a question to see its sources")
        expect(note).to_contain_text("Rate an answer")
        expect(note).not_to_contain_text("Comment saved")
        expect(page.locator("#comment textarea")).to_have_value("")
        expect(page.locator("#comment")).to_contain_text("Comment on the rated answer")
        expect(page.locator("#question textarea")).to_have_value("")

        # The chat's own Clear (trash) button empties every panel as New chat does.
        box.fill(second)
        page.locator("#send").click()
        expect(bots.first).to_contain_text("Extracted passages", timeout=30_000)
        expect(page.locator("#sources")).not_to_contain_text("Ask a question to see")
        chat.locator("button[aria-label='Like']").last.click()
        expect(note).to_contain_text("Thanks", timeout=15_000)
        chat.locator("button[aria-label='Clear']").click()
        expect(chat).to_contain_text("documents indexed:", timeout=15_000)
        expect(bots).to_have_count(0)
        expect(page.locator("#sources")).to_contain_text("Ask a question to see its sources")
        expect(note).to_contain_text("Rate an answer")
        browser.close()
    turns = {t.user_input: t for t in chatlog(data).turns()}
    assert turns[second].feedback.rating == "up"  # the newest turn of that question
    log = log_path.read_text()
    assert "user mistake: rate an answer with 👍 or 👎 first" in log
    assert "Traceback" not in log


@pytest.mark.browser
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed")
def test_browser_a_server_fault_is_said_in_the_answer_and_the_box_comes_back(app_server):
    """A fault that is not the chat model's (here the registry's table is gone from the database):
    the answer's place says so in a sentence, the traceback goes to the log only, the box and Send
    work again, and once the database is repaired the next question is answered."""
    import sqlite3

    from playwright.sync_api import expect, sync_playwright

    url, data, log_path = app_server
    db = sqlite3.connect(data / "rag.db")
    db.execute("ALTER TABLE registry_revision RENAME TO registry_revision_away")
    db.commit()
    try:
        with sync_playwright() as p:
            browser = launch_browser(p)
            page = browser.new_page()
            page.goto(url, wait_until="domcontentloaded")
            box, send = page.locator("#question textarea"), page.locator("#send")
            box.fill("How do I export the chat log?")
            send.click()
            bot = page.locator("#chatbot [data-testid='bot']").last
            expect(bot).to_contain_text("something went wrong on the server", timeout=30_000)
            expect(bot).to_contain_text("OperationalError")
            expect(box).to_be_editable(timeout=15_000)
            expect(send).to_be_enabled()
            assert page.get_by_text("Error", exact=True).count() == 0  # no error badge
            expect(page.locator("#model-badge")).to_contain_text("unavailable (OperationalError")
            db.execute("ALTER TABLE registry_revision_away RENAME TO registry_revision")
            db.commit()
            box.fill("Which file formats can I add?")
            send.click()
            expect(page.locator("#chatbot [data-testid='bot']")).to_have_count(2)
            expect(page.locator("#chatbot [data-testid='bot']").last).to_contain_text(
                "Extracted passages", timeout=30_000
            )
            expect(page.locator("#model-badge")).to_contain_text("extractive")  # named again
            browser.close()
    finally:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "registry_revision_away" in tables:
            db.execute("ALTER TABLE registry_revision_away RENAME TO registry_revision")
            db.commit()
        db.close()
    log = log_path.read_text()
    assert "answer failed unexpectedly" in log and "no such table: registry_revision" in log


@pytest.mark.browser
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed")
def test_browser_new_chat_stops_a_streaming_answer_and_logs_it_as_stopped(tmp_path):
    """With a chat model that streams slowly (an OpenAI-compatible server faked over HTTP): while
    the answer arrives, the box and Send are disabled; New chat stops it, nothing more arrives in
    the fresh chat, the box works again, and the turn is logged as stopped with the partial text."""
    from playwright.sync_api import expect, sync_playwright

    from rag.pipeline import STOPPED
    from tests.support.chatfake import ChatServer

    data, log_path = tmp_path / "data", tmp_path / "app.log"
    with ChatServer(delay_s=0.25) as server:
        llm = {"RAG_LLM__BASE_URL": server.base_url, "RAG_LLM__MODEL": server.model}
        proc, url = start_app(data, log_path, **llm)
        try:
            with sync_playwright() as p:
                browser = launch_browser(p)
                page = browser.new_page()
                page.goto(url, wait_until="domcontentloaded")
                chat = page.locator("#chatbot")
                expect(chat).to_contain_text("documents indexed:", timeout=60_000)
                box, send = page.locator("#question textarea"), page.locator("#send")
                box.fill("How do I export the chat log?")
                send.click()
                bots = chat.locator("[data-testid='bot']")
                expect(bots.first).to_contain_text("word3", timeout=60_000)
                expect(box).to_be_disabled()
                expect(send).to_be_disabled()
                assert "word40" not in bots.first.inner_text()  # still streaming
                page.locator("#new-chat").click()
                expect(chat).to_contain_text("documents indexed:", timeout=15_000)
                expect(bots).to_have_count(0)
                expect(box).to_be_editable()
                expect(send).to_be_enabled()
                page.wait_for_timeout(1_500)  # the stopped answer writes nothing more
                assert bots.count() == 0
                assert server.streams_cut == 1  # the model's stream was closed, not read on
                browser.close()
        finally:
            stop(proc)
    (turn,) = chatlog(data).turns()
    assert turn.status == "failed" and turn.error == STOPPED
    assert turn.response.startswith("word0 word1 word2") and "word59" not in turn.response
    assert "Traceback" not in log_path.read_text()


@pytest.mark.browser
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed")
def test_browser_documents_tab_upload_list_and_remove(app_server, tmp_path):
    """Upload a good and an empty file: results by name, the picker emptied, the table lists the
    good one; removing it (after confirming) takes it off the table and out of the index."""
    from playwright.sync_api import expect, sync_playwright

    url, data, _ = app_server
    good = tmp_path / "tides.md"
    good.write_text("# Tides of Quillon\n\n## High water\n\nHigh water is at 6:40 today.\n")
    empty = tmp_path / "blank.txt"
    empty.write_text("")
    with sync_playwright() as p:
        browser = launch_browser(p)
        page = browser.new_page()
        page.goto(url, wait_until="domcontentloaded")
        chat = page.locator("#chatbot")
        expect(chat).to_contain_text("documents indexed", timeout=30_000)
        before = int(re.search(r"(\d+) documents indexed", chat.inner_text()).group(1))
        page.get_by_role("tab", name="Documents").click()
        table = page.locator("#doc-table")
        expect(table).to_contain_text("getting-started.md", timeout=15_000)
        page.locator("#upload input[type=file]").set_input_files([str(good), str(empty)])
        expect(page.locator("#upload")).to_contain_text("blank", timeout=15_000)
        page.locator("#add-docs").click()
        result = page.locator("#ingest-result")
        expect(result).to_contain_text("1 of 2 files indexed", timeout=30_000)
        expect(result).to_contain_text("tides.md: added")
        expect(result).to_contain_text("blank.txt: not indexed")
        expect(page.locator("#upload")).not_to_contain_text("blank")  # the picker is cleared
        expect(table).to_contain_text("tides.md")
        assert not (data / "uploads" / "blank.txt").exists()
        # Back in the chat, the first screen counts the new document.
        page.get_by_role("tab", name="Chat").click()
        expect(chat).to_contain_text(f"{before + 1} documents indexed", timeout=15_000)
        page.get_by_role("tab", name="Documents").click()

        page.locator("#doc-choice input").click()
        page.get_by_role("option", name="tides.md").click()
        # Cancelled in the dialog, which names the document: nothing happens, and nothing is
        # said about it; the upload's report stays.
        asked: list[str] = []

        def dismiss(dialog):
            asked.append(dialog.message)
            dialog.dismiss()

        page.once("dialog", dismiss)
        page.locator("#remove-doc").click()
        page.wait_for_timeout(1_000)
        assert asked == ["Remove tides.md from the index?"]
        expect(table).to_contain_text("tides.md")
        expect(page.locator("#remove-result")).to_have_text("")
        expect(page.get_by_test_id("toast-text")).to_have_count(0)
        expect(result).to_contain_text("files indexed")
        page.once("dialog", lambda dialog: dialog.accept())
        page.locator("#remove-doc").click()
        expect(page.locator("#remove-result")).to_contain_text("Removed tides.md", timeout=15_000)
        expect(table).not_to_contain_text("tides.md")
        # The upload's report spoke of a list that has changed: it is gone.
        expect(result).to_have_text("")
        browser.close()
    assert not (data / "uploads" / "tides.md").exists()
    assert _collection(data).get(where={"file_name": "tides.md"}, include=[])["ids"] == []


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
    assert f"exported {len(rows)} turn{'s' if len(rows) != 1 else ''}" in res.stderr
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
