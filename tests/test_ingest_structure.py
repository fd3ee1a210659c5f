"""Document structure kept at ingest, for every format that has it: a definition is one unit with
its term and all its aliases; a table row keeps its column headers; a PDF's running headers,
footers and page numbers never reach the text."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.html import html_sections
from ingest.loaders import load_sections, strip_page_furniture
from tests.support.corpus import make_pdf

OPTIONS_PAGE = """<html><head><title>pg_dump</title></head><body><main>
<h1>pg_dump</h1><h2>Options</h2>
<div class="variablelist"><dl class="variablelist">
<dt><span class="term"><code class="option">-a</code><br/></span>
    <span class="term"><code class="option">--data-only</code></span></dt>
<dd><p>Dump only the data, not the schema (data definitions).</p>
    <p>This option is similar to specifying --section=data.</p></dd>
<dt><span class="term"><code class="option">-s</code><br/></span>
    <span class="term"><code class="option">--schema-only</code></span></dt>
<dd><p>Dump only the object definitions (schema), not data.</p></dd>
<dt>CONCURRENTLY</dt><dt>NOWAIT</dt>
<dd><p>Build the index without taking any locks that prevent writes.</p></dd>
<dt>plain term<br/>second name</dt><dd><pre>pg_dump -Fc mydb &gt; db.dump</pre></dd>
<dt><span class="term"><code class="option">-F format</code></span></dt>
<dd><p>Selects the format of the output. format can be one of the following:</p>
    <div class="variablelist"><dl class="variablelist">
    <dt><span class="term">d</span></dt><dt><span class="term">directory</span></dt>
    <dd><p>Output a directory-format archive.</p></dd>
    <dd><p>It can be read in parallel.</p></dd></dl></div></dd>
<dt><span class="term"><code class="option">-Z level</code></span></dt>
<dd><dl><dt>0</dt><dd><p>No compression.</p></dd><dt>9</dt></dl></dd>
<dt><code class="option">-v</code></dt><dd><p>Verbose mode.</p></dd>
<dd><p>Prints each object as it is dumped.</p></dd>
</dl></div>
<h2>Defaults</h2>
<table><thead><tr><th>Parameter</th><th>Default</th><th>Unit</th></tr></thead>
<tbody><tr><td>work_mem</td><td>4MB</td><td>kB</td></tr>
<tr><td>shared_buffers</td><td>128MB</td><td></td></tr></tbody></table>
<table><tr><th>Function</th></tr><tr><td>now() returns the time</td></tr></table>
</main></body></html>"""


def blocks(markup: str) -> list[str]:
    _, sections = html_sections(markup)
    return [b for s in sections for b in s.blocks]


def test_a_definition_is_one_unit_that_names_its_term_and_every_alias():
    found = blocks(OPTIONS_PAGE)
    assert "-a, --data-only: Dump only the data, not the schema (data definitions)." in found
    # Each paragraph of a definition is its own unit, and each names the term it defines.
    assert "-a, --data-only: This option is similar to specifying --section=data." in found
    assert "-s, --schema-only: Dump only the object definitions (schema), not data." in found
    # Several terms for one definition are aliases of it.
    assert (
        "CONCURRENTLY, NOWAIT: Build the index without taking any locks that prevent writes."
        in found
    )
    # A definition that is code: the term first, the code whole after it.
    at = found.index("plain term, second name")
    assert found[at + 1] == "```\npg_dump -Fc mydb > db.dump\n```"  # code whole, fenced
    # A definition inside a definition (a value of an option) is quoted with the option.
    assert "-F format: Selects the format of the output. format can be one of the following:" in (
        found
    )
    assert "-F format: d, directory: Output a directory-format archive." in found
    # A second `dd` is one more definition of the same term.
    assert "-F format: d, directory: It can be read in parallel." in found
    # A definition that opens with its list of values: each value names the option, and the
    # option never stands alone; a value with no definition keeps the option too.
    assert "-Z level: 0: No compression." in found and "-Z level: 9" in found
    assert "-Z level" not in found
    # At the top level too, a second `dd` names the term of the first.
    assert "-v: Verbose mode." in found and "-v: Prints each object as it is dumped." in found


def test_a_table_row_keeps_its_column_headers():
    found = blocks(OPTIONS_PAGE)
    assert "Parameter: work_mem; Default: 4MB; Unit: kB" in found
    assert "Parameter: shared_buffers; Default: 128MB" in found  # an empty cell left out
    assert "Parameter | Default | Unit" not in found
    assert "now() returns the time" in found  # a one-column table's header names the table


ENTRY_TABLE_PAGE = """<html><head><title>JSON</title></head><body><main>
<h1>JSON functions</h1>
<p>This section describes:</p>
<ul><li><p>operators for JSON data</p></li><li><p>the path language</p></li><li>plain item</li></ul>
<div class="table"><p class="title"><strong>Table 9.45. json Operators</strong></p>
<table><thead><tr><th class="func_table_entry"><p class="func_signature">Operator</p>
<p>Description</p><p>Example(s)</p></th></tr></thead>
<tbody><tr><td class="func_table_entry"><p class="func_signature">json <code>-&gt;&gt;</code> text
 → text</p><p class="func_signature">jsonb <code>-&gt;&gt;</code> text → text</p>
<p>Extracts JSON object field with the given key, as text.</p>
<p><code>'{"a":1}'::json -&gt;&gt; 'a'</code> → <code>1</code></p></td></tr>
<tr><td class="func_table_entry"><p class="column_definition">userid oid</p>
<p>OID of the user</p></td></tr>
<tr><td class="func_table_entry"><p class="func_signature">jsonb ? text → boolean</p>
<p>Does the key exist?</p></td></tr>
<tr><th>Set-returning functions</th></tr>
<tr><td class="func_table_entry"><p class="func_signature">json_each ( json ) → setof record</p>
<p>Expands the top-level JSON object into a set of key/value pairs.</p>
<p><code>select * from json_each('{"a":"foo"}')</code></p>
<pre class="programlisting"> key | value
-----+-------
 a   | "foo"</pre></td></tr>
<tr><td class="func_table_entry"><p class="column_definition">state text</p>
<p>Current overall state of this backend. Possible values are:</p>
<div class="itemizedlist"><ul><li><p>active</p></li><li><p>idle</p></li></ul></div></td></tr>
<tr><td>a cell written without paragraphs</td></tr></tbody></table></div>
<table><caption>Two columns: not an entry table</caption>
<thead><tr><th><p>Name</p><p>Kind</p></th></tr></thead>
<tbody><tr><td>alpha</td><td>first</td></tr></tbody></table>
</main></body></html>"""


def test_an_entry_of_a_one_column_table_carries_its_term_like_a_definition():
    """Function, operator and system-view references generated from DocBook are one-column
    tables whose cells hold a signature (one per overload) and its description in paragraphs,
    under a header cell that labels them: each entry reads as a definition of its signature."""
    found = blocks(ENTRY_TABLE_PAGE)
    term = "json ->> text → text, jsonb ->> text → text"
    # An example (a paragraph of code) goes with the description it shows.
    assert (
        f"""{term}: Extracts JSON object field with the given key, as text. '{{"a":1}}'::json """
        """->> 'a' → 1"""
    ) in found
    assert "userid oid: OID of the user" in found  # paragraphs of another class: the first
    assert "jsonb ? text → boolean: Does the key exist?" in found
    assert "a cell written without paragraphs" in found
    assert "Set-returning functions" in found  # a group row inside the body
    # What else an entry holds follows its description: an output listing, a list of values.
    assert (
        "json_each ( json ) → setof record: Expands the top-level JSON object into a set of "
        """key/value pairs. select * from json_each('{"a":"foo"}')"""
    ) in found
    at = found.index(
        "json_each ( json ) → setof record: Expands the top-level JSON object into a "
        """set of key/value pairs. select * from json_each('{"a":"foo"}')"""
    )
    assert found[at + 1].startswith("```\n key | value")
    assert "state text: Current overall state of this backend. Possible values are:" in found
    assert "state text: - active" in found and "state text: - idle" in found
    # Rows of more than one cell: the ordinary table, its caption kept.
    assert "Two columns: not an entry table" in found and "alpha | first" in found
    assert "Table 9.45. json Operators" in found  # the table's title stays
    # The header row only labels the paragraphs: no unit of its own.
    assert not any(b.startswith("Operator") for b in found)


def test_a_list_item_written_in_a_paragraph_keeps_its_marker():
    found = blocks(ENTRY_TABLE_PAGE)
    assert "- operators for JSON data" in found and "- the path language" in found
    assert "- plain item" in found
    assert "-" not in found
    # An empty paragraph first does not take the marker from the item's text.
    assert blocks(
        "<html><body><main><ul><li><p></p><p>late text</p></li></ul></main></body></html>"
    ) == ["- late text"]


def test_an_admonition_label_inside_a_definition_does_not_carry_the_term():
    found = blocks(
        "<html><body><main><dl><dt>-n pattern</dt><dd><p>Dump schemas.</p>"
        '<div class="note"><h3>Note</h3><p>Blobs are left out.</p></div></dd></dl>'
        "</main></body></html>"
    )
    assert found == ["-n pattern: Dump schemas.", "Note:", "-n pattern: Blobs are left out."]


def test_markdown_and_docx_tables_keep_their_column_headers(tmp_path):
    import docx

    md = tmp_path / "limits.md"
    md.write_text(
        "# Limits\n\n| Setting | Default |\n|---|---|\n| `top_k` | 4 |\n| cutoff | 0.2 |\n\nEnd.\n"
    )
    [section] = load_sections(md, md.read_bytes())
    assert "Setting: `top_k`; Default: 4\n\nSetting: cutoff; Default: 0.2" in section.text
    doc = docx.Document()
    doc.add_heading("Limits", level=1)
    doc.add_paragraph("The limits are these.")
    table = doc.add_table(rows=3, cols=2)
    for r, row in enumerate([("Setting", "Default"), ("top_k", "4"), ("cutoff", "0.2")]):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    doc.add_paragraph("After the table.")
    path = tmp_path / "limits.docx"
    doc.save(path)
    [section] = load_sections(path, path.read_bytes())
    paragraphs = section.text.split("\n\n")
    assert paragraphs == [
        "The limits are these.",
        "Setting: top_k; Default: 4",
        "Setting: cutoff; Default: 0.2",
        "After the table.",
    ]
    # Each row is a unit of its own to quote, not one sentence with the next row.
    from rag.units import split_units

    assert "Setting: top_k; Default: 4" in [u.text for u in split_units(section.text)]


def test_fenced_code_stays_as_written_tables_headings_and_inner_fences_included(tmp_path):
    psql = "```\n| id | name |\n|----|------|\n| 1  | tea  |\n# not a heading\n```"
    # A ``` line inside a ~~~ block is code: the block ends at the ~~~ alone.
    nested = "~~~~markdown\n```\n| a | b |\n|---|---|\n| 1 | 2 |\n~~~\n# still code\n~~~~"
    md = tmp_path / "queries.md"
    md.write_text(
        f"# Queries\n\nRun it:\n\n{psql}\n\nWritten in Markdown:\n\n{nested}\n\n"
        "| Setting | Default |\n|---|---|\n| top_k | 4 |\n"
    )
    [section] = load_sections(md, md.read_bytes())  # one section: no heading inside code
    assert psql in section.text and nested in section.text
    assert section.text.endswith("Setting: top_k; Default: 4")  # a table outside code still is


def test_a_row_is_known_for_what_it_is_when_read_back():
    from core.index.rows import is_labelled_row, labelled_row

    assert is_labelled_row(labelled_row(["Cup", "Name", "Flavour"], ["2", "Middlebrew", "sweet"]))
    assert is_labelled_row(labelled_row(["Setting", "Default"], ["`top_k`", "4"]))
    assert not is_labelled_row("Chapter 5: Data Definition")  # one label is a heading's colon
    assert not is_labelled_row(labelled_row(["Only"], ["one column"]))


def test_a_markdown_definition_list_is_one_unit_per_definition_with_its_terms(tmp_path):
    md = tmp_path / "roles.md"
    md.write_text(
        "# Roles\n\nThe roles are these.\n\n"
        "Brewmaster\n: The person who heats the water.\n  Always to 83 degrees.\n\n"
        "-s\n--schema-only\n\n: Dump only the schema.\n\n: Or the object definitions.\n"
        "Listener\n: A guest who stays silent.\n\n"
        "- a list item\n: is not a term\n\n```\ncode\n: stays as written\n```\n"
    )
    [section] = load_sections(md, md.read_bytes())
    paragraphs = [p.strip() for p in section.text.split("\n\n") if p.strip()]
    assert paragraphs[:5] == [
        "The roles are these.",
        "Brewmaster: The person who heats the water. Always to 83 degrees.",
        "-s, --schema-only: Dump only the schema.",
        "-s, --schema-only: Or the object definitions.",
        "Listener: A guest who stays silent.",
    ]
    assert "- a list item\n: is not a term" in section.text  # a list item is not a term
    assert "```\ncode\n: stays as written\n```" in section.text  # nor anything in code


def test_pdf_running_headers_and_page_numbers_are_removed(tmp_path):
    pages = [
        "Directory layout: there are two folders, one for the data and one for the logs.",
        "The data folder holds one file per table and grows as rows are added.",
        "The logs folder is rotated every night and keeps seven days of history.",
        "Backups copy both folders while the server keeps running.",
    ]
    path = make_pdf(tmp_path / "guide.pdf", pages, running_header="Shared MIME-info Database")
    sections = load_sections(path, Path(path).read_bytes())
    assert [s.metadata["page"] for s in sections] == [1, 2, 3, 4]
    for section, text in zip(sections, pages, strict=True):
        assert "Shared MIME-info" not in section.text
        assert section.text.split() == text.split()  # no page number left either


def test_page_furniture_is_told_from_text_that_only_looks_alike():
    pages = [
        "Manual v2\nFirst page text about setup.\n1",
        "Manual v2\nSecond page text about backups.\n2",
        "Manual v2\nThird page, which ends with a real line.\nSee the index for more.",
    ]
    assert strip_page_furniture(pages) == [
        "First page text about setup.",
        "Second page text about backups.",
        "Third page, which ends with a real line.\nSee the index for more.",
    ]
    # Two pages are too few to tell a running header from text.
    assert strip_page_furniture(pages[:2])[0].startswith("Manual v2")


def test_a_cut_inside_a_tilde_block_is_marked_with_its_own_fence():
    """Where the splitter cuts a ~~~ block (one holding ``` lines as code), the chunk records
    that block's fence, and its reader reopens and closes it with that fence, so the ``` lines
    stay code and the prose after the block stays prose."""
    from core.index.chunks import readable
    from ingest.chunking import code_cuts
    from rag.units import split_units

    text = (
        "Written in Markdown:\n\n~~~~markdown\n```\nSELECT 1;\n```\nfirst half\n"
        "second half\n~~~~\n\nThe example ends here, as a sentence."
    )
    cut = text.index("second half")
    pieces = [text[:cut].rstrip("\n"), text[cut:]]  # the splitter strips where it cuts
    assert code_cuts(text, pieces) == [("", "~~~~", False), ("~~~~", "", False)]
    first, second = (
        readable(piece, {"code_open": opened, "code_close": closed})
        for piece, (opened, closed, _) in zip(pieces, code_cuts(text, pieces), strict=True)
    )
    assert first.endswith("first half\n~~~~")
    assert second.startswith("~~~~\nsecond half")
    assert [(u.text, u.code) for u in split_units(first)] == [
        ("Written in Markdown:", False),
        ("```\nSELECT 1;\n```\nfirst half", True),
    ]
    assert [(u.text, u.code) for u in split_units(second)] == [
        ("second half", True),
        ("The example ends here, as a sentence.", False),
    ]
    # A piece that starts on a block's closing fence starts inside the block.
    cut = text.index("~~~~\n\nThe")
    assert code_cuts(text, [text[:cut], text[cut:]]) == [("", "~~~~", False), ("~~~~", "", False)]
    # Text with no fence, and collections built before fences were kept (True: a ``` block).
    assert code_cuts("plain text", ["plain", "text"]) == [("", "", False), ("", "", False)]
    assert readable("x", {"code_open": True, "code_close": True}) == "```\nx\n```"


def test_a_chunk_starting_mid_line_inside_code_is_read_from_the_next_line():
    """The splitter's overlap can start at a dot inside a word ("db.|sql"): that chunk starts
    inside a code block in the middle of a line, and its reader skips the part line (the chunk
    before holds it whole) instead of showing a code block that reads "sql"."""
    from core.index.chunks import readable
    from ingest.chunking import code_cuts

    text = (
        "Dump a schema:\n\n```\n$ pg_dump -n 'east' mydb > db.sql\n```\n\n"
        "To dump all objects except tables whose names begin with ts_:\n\n"
        "```\n$ pg_dump -T 'ts_*' mydb > db.sql\n```"
    )
    cut = text.index("sql\n```\n\nTo dump")
    # The splitter's overlap: the second piece starts inside the first one's last line.
    pieces = [text[: cut + len("sql\n```\n\nTo dump")], text[cut:]]
    assert code_cuts(text, pieces) == [("", "", False), ("```", "", True)]
    # Where the piece before ends mid-line too (a long line cut at its dots, no overlap),
    # the part line is kept: no reader would show its words otherwise.
    pieces = [text[:cut], text[cut:]]
    assert code_cuts(text, pieces) == [("", "```", False), ("```", "", False)]
    meta = {"code_open": "```", "code_partial": True}
    assert readable(pieces[1], meta).startswith("To dump all objects")
    assert readable("ne two\nline three\n```\nAfter.", meta) == "```\nline three\n```\nAfter."
    # A chunk that starts at the start of a line inside a block keeps that line.
    line = text.index("$ pg_dump -T")
    assert code_cuts(text, [text[:line], text[line:]])[1] == ("```", "", False)


@pytest.mark.parametrize("size,overlap", [(20, 0), (25, 5), (30, 8), (40, 10)])
def test_no_word_of_a_code_line_is_lost_by_the_readers_of_its_chunks(size, overlap):
    """Cut by the real splitter at the dots of a long command line, with or without overlap:
    whatever the readers skip, every word of the line is read in some chunk."""
    import re

    from core.index.chunks import readable
    from ingest.chunking import ChunkPlan, code_cuts

    line = (
        "$ pg_dump -T 'ts_*' mydb > db.sql && psql -f db.sql other && "
        "echo finished.dump.of.mydb.into.db.sql.now && ls -la backups.d/latest.d/final.now"
    )
    text = f"To dump it:\n\n```\n{line}\n```\n\nThen check the folder and the file sizes."
    # Tokens as a word-piece tokenizer counts them, near enough: words and punctuation.
    plan = ChunkPlan(
        encode=lambda t: re.findall(r"\w+|[^\w\s]", t), window=512, size=size, overlap=overlap
    )
    pieces = plan.split(text, "")
    assert len(pieces) > 1
    read = " ".join(
        readable(piece, {"code_open": o, "code_close": c, "code_partial": p})
        for piece, (o, c, p) in zip(pieces, code_cuts(text, pieces), strict=True)
    )
    words = set(re.findall(r"\w+", read))
    assert set(re.findall(r"\w+", line)) <= words, (pieces, read)
