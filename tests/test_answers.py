"""What the no-LLM answerer quotes, with the real embedding model: the sentence that answers,
never a heading or the question restated, commands whole, document order, weak matches said."""

from __future__ import annotations

import pytest

from rag.synthesis import (
    EXTRACTIVE_LABEL,
    NOT_COVERED,
    SAID_ALREADY,
    ExtractiveSynthesizer,
    SentenceVectors,
    says_not_covered,
)
from rag.units import split_units

FEEDBACK = (
    "Rating answers\n"
    "Under each answer there are thumbs up and thumbs down buttons. A thumbs down marks the "
    "answer as unhelpful and opens a comment box, so you can say what was wrong. Ratings and "
    "comments are stored with the answer in the chat log."
)
EXPORT = (
    "Exporting the log\n"
    "The whole chat log can be written to a file of JSON lines:\n\n"
    "```bash\npython -m app export-logs --out chats.jsonl --feedback down\n```\n\n"
    "Use `--since 2026-11-01` to limit it to recent turns."
)


def answer(embed_model, question: str, passages: list[str]) -> tuple[str, ExtractiveSynthesizer]:
    synth = ExtractiveSynthesizer(
        SentenceVectors(embed_model), embed_model.get_query_embedding(question)
    )
    return "".join(synth.get_response(question, passages)), synth


def test_inline_headings_and_markdown_headings_are_not_units():
    units = split_units(
        "# Chatting with your documents\n\nAsk anything about the files.\n\n" + FEEDBACK
    )
    texts = [u.text for u in units]
    assert "Chatting with your documents" not in " ".join(texts)
    assert not any(t.startswith("Rating answers") for t in texts)
    assert texts[1].startswith("Under each answer there are thumbs up")


def test_code_blocks_and_code_spans_stay_whole():
    units = split_units(EXPORT)
    code = [u for u in units if u.code]
    assert [u.text for u in code] == ["python -m app export-logs --out chats.jsonl --feedback down"]
    assert any("`--since 2026-11-01`" in u.text for u in units if not u.code)
    assert [u.position for u in units] == list(range(len(units)))
    # A sentence that opens with a code span is a sentence of its own.
    units = split_units("Nothing is set.\n- `RAG_LLM__PROVIDER`: `openai` or `extractive`.")
    assert [u.text for u in units] == [
        "Nothing is set.",
        "`RAG_LLM__PROVIDER`: `openai` or `extractive`.",
    ]


def test_quotes_the_sentence_that_answers_not_the_one_that_sets_it_up(embed_model):
    text, _ = answer(embed_model, "What happens when I click thumbs down?", [FEEDBACK])
    assert text.startswith(EXTRACTIVE_LABEL)
    assert "A thumbs down marks the answer as unhelpful" in text
    assert "Rating answers" not in text


def test_a_command_is_quoted_whole(embed_model):
    text, _ = answer(embed_model, "How do I export the chat log to a file?", [FEEDBACK, EXPORT])
    assert "```\npython -m app export-logs --out chats.jsonl --feedback down\n```" in text


def test_the_question_restated_or_asked_is_never_quoted(embed_model):
    passage = (
        "What is the capital of Norway? Oslo is the capital of Norway and its largest city. "
        "Norway is a country in northern Europe."
    )
    text, _ = answer(embed_model, "What is the capital of Norway?", [passage])
    assert "Oslo is the capital of Norway" in text
    assert "What is the capital of Norway?" not in text
    restating = "The office coffee machine is descaled every Thursday."
    text, _ = answer(
        embed_model,
        "Is the office coffee machine descaled every Thursday?",
        [restating + " The facilities team does it before nine in the morning."],
    )
    assert restating not in text and "facilities team" in text


def test_quotes_follow_document_order_and_are_recorded(embed_model):
    passage = (
        "Orsolya Brandt keeps the Velmora lighthouse. "
        "The harbour of Velmora is home to forty fishing boats. "
        "Brandt has kept the Velmora lighthouse for thirty-one years."
    )
    question = "For how many years has Brandt kept the Velmora lighthouse?"
    text, synth = answer(embed_model, question, [passage])
    quoted = [q.text for q in synth.picked]
    assert "Brandt has kept the Velmora lighthouse for thirty-one years." in quoted
    assert len(quoted) >= 2 and max(synth.picked, key=lambda q: q.score).position == 2
    positions = [text.index(q) for q in quoted]
    assert positions == sorted(positions)
    assert [q.position for q in synth.picked] == sorted(q.position for q in synth.picked)
    assert all(q.passage == 1 for q in synth.picked)


def test_the_passage_holding_the_best_quote_leads_the_answer(embed_model):
    """When the best evidence sits in a later passage, the answer starts with it (a follow-up's
    command should not come third behind loosely related sentences of the first passage)."""
    passages = [
        "Documents you indexed stay on disk after the app stops. The Documents tab lists each "
        "indexed file with its chunk count.",
        "From the command line, index a folder of documents with python -m ingest PATH. It "
        "skips files that have not changed since the last run.",
    ]
    question = "How do I index a folder of documents from the command line?"
    text, synth = answer(embed_model, question, passages)
    best = max(synth.picked, key=lambda q: q.score)
    assert best.passage == 2 and synth.picked[0].passage == 2
    assert text.index("python -m ingest PATH") < min(
        (text.index(q.text) for q in synth.picked if q.passage == 1), default=len(text)
    )


def test_weak_evidence_is_said_to_be_no_answer_with_the_closest_passage(embed_model):
    """When the best evidence is weak the answer says the documents do not cover the question,
    and shows the closest passage as the closest, not as an answer."""

    passages = [
        "The lemon cake needs exactly four eggs and a cup of sugar. It bakes for forty minutes.",
        "Serve the cake cold, with cream, on the day it is baked.",
    ]
    text, synth = answer(embed_model, "How fast does a cheetah run?", passages)
    assert synth.weak and text.startswith(NOT_COVERED) and says_not_covered(text)
    assert len(synth.picked) == 1  # the closest only
    text, synth = answer(embed_model, "How many eggs does the lemon cake need?", passages)
    assert not synth.weak and NOT_COVERED not in text and not says_not_covered(text)


@pytest.mark.parametrize(
    "question",
    ["Chatting with your documents", "Rating answers"],
)
def test_a_question_that_matches_a_heading_gets_the_text_under_it(embed_model, question):
    passage = "Chatting with your documents\nType a question and press Enter to ask.\n\n" + FEEDBACK
    text, synth = answer(embed_model, question, [passage])
    assert synth.picked and all(q.text != question for q in synth.picked)
    assert f"> {question} [" not in text


def test_a_sentence_that_completes_a_fill_in_question_is_its_answer(embed_model):
    passage = (
        "The noble gases are unreactive because of their electron configurations. "
        "They are found in the last column of the periodic table."
    )
    text, _ = answer(embed_model, "The noble gases are unreactive because of their?", [passage])
    assert "because of their electron configurations" in text


def test_a_one_word_question_may_end_the_sentence_that_answers_it(embed_model):
    passage = "You can run the whole stack with docker. The images are built nightly."
    text, _ = answer(embed_model, "docker", [passage])
    assert "You can run the whole stack with docker." in text


def test_list_items_and_wrapped_lines_are_not_headings():
    units = [u.text for u in split_units("Requirements:\nPython 3.11 or later\nFour GB of memory")]
    assert units == ["Requirements: Python 3.11 or later Four GB of memory"]
    units = [u.text for u in split_units("The API\nreturns JSON for every request.")]
    assert units == ["The API returns JSON for every request."]
    units = [u.text for u in split_units("Intro text ends here.\nExporting the log\nRun it.")]
    assert units == ["Intro text ends here."]  # the heading goes; "Run it." is a fragment
    # A table row as ingest writes it is short and unpunctuated, and still a unit to quote.
    rows = "The cups are these.\n\nCup: 2; Name: Middlebrew; Flavour: sweet\n\nCup: 3; Name: Endcup"
    units = [u.text for u in split_units(rows)]
    assert units == [
        "The cups are these.",
        "Cup: 2; Name: Middlebrew; Flavour: sweet",
        "Cup: 3; Name: Endcup",
    ]


OPTIONS = (
    "pg_dump > Options\n\n"
    "The following command-line options control the content and format of the output.\n\n"
    "-a, --data-only: Dump only the data, not the schema (data definitions). Table data and "
    "sequence values are dumped.\n\n"
    "-s, --schema-only: Dump only the object definitions (schema), not data.\n\n"
    "This option is the inverse of --data-only. It is similar to, but for historical reasons "
    "not identical to, specifying --section=pre-data --section=post-data.\n\n"
    "-F format, --format=format: Selects the format of the output. format can be one of the "
    "following: p (plain), c (custom), d (directory), t (tar)."
)


@pytest.mark.parametrize(
    ("question", "term"),
    [
        ("How do I dump only the schema of a database?", "--schema-only"),
        ("How do I dump only the data without the schema?", "--data-only"),
        ("How do I choose the output format of pg_dump?", "--format"),
    ],
)
def test_a_definition_is_quoted_with_the_term_the_question_points_at(embed_model, question, term):
    """The unit that names the option (the user asked for the thing by what it does) is quoted
    with its name, before prose that says the same without it."""
    text, synth = answer(embed_model, question, [OPTIONS])
    assert not synth.weak
    assert any(q.text.startswith("-") and term in q.text for q in synth.picked), text


def test_a_follow_up_that_finds_only_what_was_said_is_not_covered(embed_model):
    """Read with the question before it, a follow-up that finds only the passages the answer above
    already quoted is told the documents say nothing more, with the closest passage."""
    question = "How do I dump only the schema of a database?"
    first, _ = answer(embed_model, question, [OPTIONS])
    follow = ExtractiveSynthesizer(
        SentenceVectors(embed_model),
        embed_model.get_query_embedding(f"{question} how do I do that from a cron job?"),
    )
    follow.previous = first
    text = "".join(follow.get_response("how do I do that from a cron job?", [OPTIONS]))
    # Said as what it is: not a weak match (its card may show a strong one), nothing new.
    assert follow.weak and text.startswith(SAID_ALREADY) and says_not_covered(text)
    fresh = ExtractiveSynthesizer(
        SentenceVectors(embed_model),
        embed_model.get_query_embedding("How do I choose the output format of pg_dump?"),
    )
    fresh.previous = first  # something new found: answered as usual
    text = "".join(fresh.get_response("How do I choose the output format?", [OPTIONS]))
    assert not fresh.weak and "--format" in text


POLICIES = (
    "Row Security Policies\n\n"
    "When row security is enabled on a table, all normal access to the table for selecting rows "
    "or modifying rows must be allowed by a row security policy.\n\n"
    "To allow all users to access only their own row in a users table, a simple policy can be "
    "used:\n\n"
    "```\nCREATE POLICY user_policy ON users\n    USING (user_name = current_user);\n```\n\n"
    "Row security can also be disabled with the ALTER TABLE command."
)


def test_a_sentence_that_introduces_code_is_quoted_with_it(embed_model):
    """ "...a simple policy can be used:" promises what follows; quoted alone it answers nothing."""
    text, synth = answer(
        embed_model, "How can I make each user see only their own rows of a table?", [POLICIES]
    )
    intro = next(q for q in synth.picked if q.text.endswith("can be used:"))
    code = next(q for q in synth.picked if q.code)
    assert "CREATE POLICY user_policy" in code.text and code.position == intro.position + 1
    assert text.index("can be used:") < text.index("```\nCREATE POLICY")


def test_the_quotes_keep_to_a_word_budget_and_the_best_is_always_quoted(embed_model):
    question = "How do I dump only the schema of a database?"
    budget = ExtractiveSynthesizer(
        SentenceVectors(embed_model), embed_model.get_query_embedding(question), max_words=25
    )
    picked = budget.pick(question, [OPTIONS])
    assert len(picked) > 1 and sum(len(q.text.split()) for q in picked) <= 25
    tiny = ExtractiveSynthesizer(
        SentenceVectors(embed_model), embed_model.get_query_embedding(question), max_words=1
    )
    assert len(tiny.pick(question, [OPTIONS])) == 1  # over budget alone: still the best one


INDEXES = (
    "Building Indexes Concurrently\n\n"
    "Creating an index can interfere with regular operation of a database.\n\n"
    "Normally the database locks the table to be indexed against writes and performs the entire "
    "index build with a single scan of the table.\n\n"
    "Other transactions can still read the table, but if they try to insert, update, or delete "
    "rows in the table they will block until the index build is finished.\n\n"
    "The database supports building indexes without locking out writes.\n\n"
    "Very large tables can take many hours to be indexed, and even for smaller tables, an index "
    "build can lock out writers for periods that are unacceptably long for a production system.",
    "Parameters\n\n"
    "CONCURRENTLY: When this option is used, the database will build the index without taking "
    "any locks that prevent concurrent inserts, updates, or deletes on the table; whereas a "
    "standard index build locks out writes (but not reads) on the table until it is done.\n\n"
    "INCLUDE: Non-key columns are stored in the index but do not take part in searches.",
)


def test_the_best_definition_is_quoted_when_prose_would_fill_the_answer(embed_model):
    """Prose of the first passage says what the user asked in more of their words; the option
    that does it, defined in the next passage, is still quoted (prose gives way to it), and it is
    the best definition, not a shorter one that happens to fit."""
    question = "How can I build an index without blocking inserts and updates on the table?"
    text, synth = answer(embed_model, question, list(INDEXES))
    assert any(q.text.startswith("CONCURRENTLY:") for q in synth.picked), text
    assert not any(q.text.startswith("INCLUDE:") for q in synth.picked), text
    assert sum(len(q.text.split()) for q in synth.picked) <= synth.max_words


def test_terms_and_purpose_lines():
    from rag.units import names_term, new_term, term_of

    assert term_of("pg_restore — restore a database from an archive file") == "pg_restore"
    assert term_of("ls - list directory contents") == "ls"
    assert term_of("work_mem (integer): Sets the base maximum amount of memory") == (
        "work_mem (integer)"
    )
    assert term_of("In this case the rows are kept: nothing is lost.") is None
    # Lead-ins and admonition labels before a colon are prose, not terms.
    assert term_of("For example: bb* matches the three middle characters of abbbc.") is None
    assert term_of("Note: the index is not used until it is valid.") is None
    asked = {"password", "clients", "connect"}
    # A term the question already names is not news: the answer has to name something more.
    assert new_term("password: Require the client to supply a password.", asked) is None
    assert not names_term("password: Require the client to supply a password.", asked)
    assert names_term("Use scram_sha_256 for password clients.", asked)


def test_a_name_no_quoted_passage_mentions_is_said_above_the_quotes(embed_model):
    """A question that names something (a view, a file, a call, an option) answered from
    passages none of which mentions it: the answer says so above its quotes, as a search engine
    marks a word a result lacks. It still quotes: the name may be the user's own (their column),
    which the documents answer about without naming it."""
    env = (
        "PGDATABASE, PGHOST, PGOPTIONS: Default connection parameters. You can turn off "
        "statistics collection by setting track_counts to false via PGOPTIONS."
    )
    question = "How do I reset the pg_stat_statements statistics?"
    text, synth = answer(embed_model, question, [env])
    assert synth.missing == ["pg_stat_statements"]
    assert "_None of these passages mentions `pg_stat_statements`._" in text
    assert "> " in text and not says_not_covered(text)
    # The same question over a passage that names it: nothing to say.
    view = (
        "pg_stat_statements_reset discards all statistics gathered so far by "
        "pg_stat_statements. By default, this function can only be executed by superusers."
    )
    text, synth = answer(embed_model, question, [view])
    assert not synth.missing and "None of these passages" not in text
    # Where a passage stands counts as mentioning: rows under the view's heading.
    rows = "calls bigint: Number of times the statement was executed. Reset by a superuser."
    synth = ExtractiveSynthesizer(
        SentenceVectors(embed_model), embed_model.get_query_embedding(question)
    )
    synth.places = ["pg_stat_statements > The pg_stat_statements View"]
    assert "None of these passages" not in "".join(synth.get_response(question, [rows]))
    assert not synth.missing


def test_a_follow_up_is_not_told_the_names_of_the_question_before_it(embed_model):
    """A follow-up is searched with the question before it; only what the user asked now can be
    missing."""
    joined = "How do I reset the pg_stat_statements statistics? And what about the other views?"
    synth = ExtractiveSynthesizer(
        SentenceVectors(embed_model), embed_model.get_query_embedding(joined)
    )
    synth.asked = "And what about the other views?"
    passage = "Statistics views are reset by their own reset functions, one per view."
    assert "None of these passages" not in "".join(synth.get_response(joined, [passage]))
    assert synth.missing == []


def test_missing_names_reads_identifiers_calls_files_and_options_only():
    from rag.synthesis import missing_names

    asked = "Where is postgresql.conf, what does lower() do, and what is --schema-only, e.g.?"
    assert missing_names(asked, ["nothing here"]) == ["postgresql.conf", "lower", "--schema-only"]
    assert missing_names(asked, ["Edit POSTGRESQL.CONF; LOWER(x); --schema-only"]) == []
    # Prose words, versions and abbreviations are not names.
    assert missing_names("What changed in v1.2, i.e. the new release?", ["x"]) == []
    prose = "Which setting(s) changed in v16.10 in the U.S.A., for f(x)? See it.Then go."
    assert missing_names(prose, ["x"]) == []
    # One name, whatever its case.
    assert missing_names("Is is_superuser or IS_SUPERUSER set?", ["x"]) == ["is_superuser"]
    # A name inside a longer one is not mentioned.
    assert missing_names("What is work_mem?", ["maintenance_work_mem is ..."]) == ["work_mem"]


@pytest.mark.parametrize(
    ("question", "passage", "unit", "quoted"),
    [
        # An operator described as a question defines the operator.
        (
            "How do I check whether a jsonb value has a key?",
            "jsonb ? text → boolean: Does the text string exist as a top-level key or array "
            "element within the JSON value?",
            "jsonb ? text → boolean: Does the text string exist",
            True,
        ),
        # "Q: How do I ...?" in a FAQ is a question the documents ask, not a definition of Q.
        (
            "How can I reset a password?",
            "Q: How do I reset my password? A: Open the account page and choose Reset. You get "
            "an email with a link.",
            "Q: How do I reset my password?",
            False,
        ),
    ],
)
def test_a_unit_ending_in_a_question_mark_is_quoted_only_when_it_defines_a_term(
    embed_model, question, passage, unit, quoted
):
    text, _ = answer(embed_model, question, [passage])
    assert (unit in text) is quoted


def test_the_sentence_that_names_what_a_quote_describes_is_quoted_with_it(embed_model):
    """ "... without locking out writes. This method is invoked by specifying the CONCURRENTLY
    option": the user asked by what it does, and the name is in the next sentence."""
    passage = (
        "Creating an index can interfere with regular operation of a database. Normally "
        "PostgreSQL locks the table to be indexed against writes and performs the entire index "
        "build with a single scan of the table. Other transactions can still read the table, "
        "but if they try to insert, update, or delete rows in the table they will block until "
        "the index build is finished. This could have a severe effect if the system is a live "
        "production database. Very large tables can take many hours to be indexed, and "
        "even for smaller tables, an index build can lock out writers for periods that are "
        "unacceptably long for a production system.\n\nPostgreSQL supports building indexes "
        "without locking out writes. This method is invoked by specifying the CONCURRENTLY "
        "option of CREATE INDEX. When this option is used, PostgreSQL must perform two scans "
        "of the table, and in addition it must wait for all existing transactions that could "
        "potentially modify or use the index to terminate. Thus this method requires more total "
        "work than a standard index build and takes significantly longer to complete."
    )
    text, _ = answer(embed_model, "How do I build an index without blocking writes?", [passage])
    assert "> This method is invoked by specifying the CONCURRENTLY option" in text
    # Only as a continuation of a quote that does not name it already.
    named = (
        "Use the CONCURRENTLY option to build indexes without locking out writes. This takes a "
        "SHARE UPDATE EXCLUSIVE lock on the table."
    )
    text, _ = answer(embed_model, "How do I build an index without blocking writes?", [named])
    assert "SHARE UPDATE EXCLUSIVE" not in text


def test_a_sentence_cut_where_its_passage_ends_is_not_quoted(embed_model):
    """A passage can end inside a sentence (a run of table rows with no full stop is cut at a
    comma): the piece before the cut is not quoted as if it were whole."""
    passage = (
        "min_exec_time double precision: Minimum time spent executing the statement, in "
        "milliseconds\n\nmax_exec_time double precision: Maximum time spent executing the "
        "statement,"
    )
    text, _ = answer(embed_model, "What is the longest time a statement took?", [passage])
    assert "Maximum time spent executing the statement," not in text
    assert "Minimum time spent executing the statement, in milliseconds" in text


LISTING_HEAD = (
    "The function inserts a label at a given position of every path:\n\n"
    "```\nltreetest=> SELECT ins_label(path,2,'Space') FROM test\n"
    "    WHERE path <@ 'Top.Science.Astronomy';\n"
    "                ins_label\n------------------------------------------\n"
    " Top.Science.Space.Astronomy\n Top.Science.Space.Astronomy.Astrophysics\n(2 rows)\n```"
)
# The passage before it, cut inside the same listing: the splitter's overlap repeats the output
# at the end of the one and the start of the other.
LISTING_CUT = (
    "Labels of the tree are stored in a column of type ltree.\n\n```\n"
    "------------------------------------------\n"
    " Top.Science.Space.Astronomy\n Top.Science.Space.Astronomy.Astrophysics\n(2 rows)\n```"
)


def test_what_two_passages_share_is_quoted_once_from_the_one_holding_it_whole(embed_model):
    question = "How do I insert a label into Top.Science.Astronomy paths?"
    for passages in ([LISTING_CUT, LISTING_HEAD], [LISTING_HEAD, LISTING_CUT]):
        text, _ = answer(embed_model, question, passages)
        assert "SELECT ins_label" in text
        assert text.count("Top.Science.Space.Astronomy.Astrophysics") == 1, text


def test_a_quote_that_holds_a_chosen_one_whole_takes_its_place():
    from rag.synthesis import Quote, repeats

    part = [Quote("(2 rows)", 2, 0, 0.9, True)]
    whole = [Quote("SELECT 1;\n(2 rows)", 1, 3, 0.8, True)]
    assert repeats(part, [whole])  # already said, inside the longer quote
    assert not repeats(whole, [part])  # says more: it replaces the part (see pick)
    assert repeats([Quote("SELECT  1;\n(2\nrows)", 1, 0, 0.5, True)], [whole])  # spacing aside
    # Word for word, and code in code: a command is not "said" by prose holding its letters.
    ls = [Quote("ls", 1, 0, 0.9, True)]
    assert not repeats(ls, [[Quote("The tools panel lists every file.", 2, 0, 0.5)]])
    assert not repeats(ls, [[Quote("Run ls to see them.", 2, 0, 0.5)]])
    assert repeats(ls, [[Quote("ls -la", 2, 0, 0.5, True)]])
