"""The admin's loop in a real browser, offline, on the bundled docs, with nothing but this machine:
chat and rate answers, build embedding training pairs from them in the Fine-tune tab, train a small
candidate as a job, evaluate it against the champion in the Evaluate tab and see the gate's
decision, promote it and see the answers' badge name it, roll back and see the old one again. And
the page on a narrow window: one column."""

from __future__ import annotations

import json
import os
import time

import pytest

from tests.support.app import CHROMIUM, launch_browser, start_app
from tests.support.servers import stop

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed"),
]
QUESTIONS = [
    "How do I export the chat log?",
    "Which chat models are supported?",
    "How do I add documents?",
    "How do I rate an answer?",
]


@pytest.fixture(scope="module")
def app_server(tmp_path_factory):
    data = tmp_path_factory.mktemp("loop") / "data"
    log_path = data.parent / "app.log"
    proc, url = start_app(data, log_path)
    yield url, data, log_path
    stop(proc)


def ask(page, question: str) -> None:
    """Ask in the chat and wait for the whole extracted answer."""
    chat = page.locator("#chatbot")
    before = chat.inner_text().count("Extracted passages")
    page.locator("#question textarea").fill(question)
    page.locator("#send").click()
    deadline = time.monotonic() + 60
    while chat.inner_text().count("Extracted passages") <= before:
        assert time.monotonic() < deadline, f"no answer to {question!r}"
        page.wait_for_timeout(250)
    from playwright.sync_api import expect

    expect(page.locator("#send")).to_be_enabled(timeout=60_000)  # the answer has finished


def until(page, check, refresh_selector: str, timeout_s: float = 180) -> None:
    """Press `refresh_selector` until `check()` holds (a background job's table)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "the job did not finish in time"
        page.locator(refresh_selector).click()
        page.wait_for_timeout(1000)


def test_browser_the_admin_loop_from_chat_to_promotion_and_rollback(app_server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    url, _, log_path = app_server
    golden = tmp_path / "golden.jsonl"
    golden.write_text(
        "".join(
            json.dumps({"user_input": q, "reference_sources": [source]}) + "\n"
            for q, source in [
                ("Can I download every conversation as a file?", "feedback-and-logs.md"),
                ("Where do thumbs-down ratings go?", "feedback-and-logs.md"),
                ("Which settings pick the language model?", "configuration.md"),
            ]
        )
    )
    with sync_playwright() as p:
        browser = launch_browser(p)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url, wait_until="domcontentloaded")
        expect(page.locator("#model-badge")).to_contain_text("embedding v", timeout=60_000)
        old = page.locator("#model-badge").inner_text().split("embedding v")[1].split()[0]
        # 1. Chat and rate every answer up.
        for question in QUESTIONS:
            ask(page, question)
            page.locator("#chatbot button[aria-label='Like']").last.click()
            expect(page.locator("#feedback-note")).to_contain_text("Thanks", timeout=15_000)
        # 2. Training pairs from the rated turns, then a small candidate trained as a job.
        page.get_by_role("tab", name="Fine-tune").click()
        page.locator("#emb-build").click()
        expect(page.locator("#emb-built")).to_contain_text("4 pairs (chatlog 4)", timeout=60_000)
        page.locator("#emb-batch input").fill("4")
        page.locator("#emb-max-steps input").fill("2")
        page.locator("#emb-train").click()
        expect(page.locator("#emb-trained")).to_contain_text("is training", timeout=30_000)
        jobs = page.locator("#ft-jobs")
        until(page, lambda: "succeeded" in jobs.inner_text(), "#ft-refresh")
        row = next(r for r in jobs.inner_text().splitlines() if "embedding v" in r)
        candidate = row.split("embedding v")[1].split()[0]
        # A reranker from the same pairs, as a job too: registered as a reranker candidate.
        pairs = page.locator("#emb-dataset input").input_value()
        expect(page.locator("#rr-dataset input")).to_have_value(pairs)  # filled in when built
        # A reload keeps the work: both sections open on the newest pairs.
        page.reload(wait_until="domcontentloaded")
        page.get_by_role("tab", name="Fine-tune").click()
        expect(page.locator("#emb-dataset input")).to_have_value(pairs, timeout=30_000)
        expect(page.locator("#rr-dataset input")).to_have_value(pairs)
        page.locator("#rr-max-steps input").fill("2")
        page.locator("#rr-train").click()
        expect(page.locator("#rr-trained")).to_contain_text("training a reranker", timeout=30_000)
        until(page, lambda: "reranker v" in jobs.inner_text(), "#ft-refresh")
        # 3. The gate: an uploaded golden set, the candidate against the champion.
        page.get_by_role("tab", name="Evaluate").click()
        page.locator("#eval-add").click()  # open "Add a set"
        page.locator("#eval-upload input[type=file]").set_input_files(str(golden))
        page.locator("#eval-add-upload").click()
        expect(page.locator("#eval-added")).to_contain_text("golden.jsonl", timeout=30_000)
        page.locator("#eval-who input").click()
        page.get_by_role("option", name=f"candidate embedding v{candidate}").click()
        page.locator("#eval-run").click()
        result = page.locator("#eval-result")
        expect(result).to_contain_text("Decision", timeout=240_000)
        expect(result).to_contain_text(f"v{candidate}")
        expect(result).to_contain_text("too few samples")  # three questions prove nothing
        # 4. Promote it anyway (the admin's call): the next answer names it.
        page.locator("#eval-version input").fill(candidate)
        note = page.locator("#eval-registry-note")
        # A promotion by hand asks first; cancelled, nothing changes.
        page.once("dialog", lambda dialog: dialog.dismiss())
        page.locator("#eval-promote").click()
        page.wait_for_timeout(1_000)
        expect(note).not_to_contain_text("is active")
        page.once("dialog", lambda dialog: dialog.accept())
        page.locator("#eval-promote").click()
        expect(note).to_contain_text(f"embedding v{candidate} is active", timeout=120_000)
        expect(note).to_contain_text("Promoted by hand: the gate rejected it")
        # The header follows within seconds, before any answer and without a reload.
        expect(page.locator("#model-badge")).to_contain_text(
            f"embedding v{candidate}", timeout=20_000
        )
        page.get_by_role("tab", name="Chat").click()
        ask(page, QUESTIONS[0])
        expect(page.locator("#model-badge")).to_contain_text(f"embedding v{candidate}")
        # 5. Roll back: the answers' badge names the old version again. The kind to roll back
        # follows the promotion; chat has nothing to undo, and the refusal says what changed.
        page.get_by_role("tab", name="Evaluate").click()
        expect(page.get_by_label("embedding", exact=True)).to_be_checked()
        page.get_by_label("chat", exact=True).check()
        page.locator("#eval-rollback").click()
        expect(page.get_by_text("choose the kind embedding to roll that back")).to_be_visible()
        page.get_by_label("embedding", exact=True).check()
        page.locator("#eval-rollback").click()
        expect(note).to_contain_text(f"embedding v{old} is active again", timeout=30_000)
        expect(page.locator("#model-badge")).to_contain_text(f"embedding v{old}", timeout=20_000)
        page.get_by_role("tab", name="Chat").click()
        ask(page, QUESTIONS[1])
        expect(page.locator("#model-badge")).to_contain_text(f"embedding v{old}")
        assert page.get_by_text("Error", exact=True).count() == 0  # no error badge anywhere
        browser.close()
    assert "Traceback" not in log_path.read_text()


def test_browser_on_a_narrow_window_the_page_is_one_column(app_server):
    from playwright.sync_api import expect, sync_playwright

    url, _, _ = app_server
    with sync_playwright() as p:
        browser = launch_browser(p)
        for width, stacked in ((800, True), (1400, False)):
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.goto(url, wait_until="domcontentloaded")
            expect(page.locator("#sources")).to_be_visible(timeout=30_000)
            chat, sources = (
                page.locator("#chatbot").bounding_box(),
                page.locator("#sources").bounding_box(),
            )
            below = sources["y"] >= chat["y"] + chat["height"]
            assert below is stacked, (width, chat, sources)
            page.close()
        browser.close()
