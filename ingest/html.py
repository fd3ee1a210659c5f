"""The main content of an HTML page, as sections under their headings. The page frame (navigation,
sidebars, tables of contents, breadcrumbs, previous/next links, headers and footers) never reaches
the index: it would fill the embedding window and make link pages outrank the real ones."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from core.errors import SourceError
from core.index.rows import labelled_row

# Containers that hold a page's own content, most specific first.
MAIN_XPATHS = ("//main", "//*[@role='main']", "//article")
# Elements that are never content.
DROP_TAGS = {
    "script", "style", "noscript", "template", "svg", "canvas", "form", "button", "select",
    "input", "textarea", "iframe", "nav", "aside", "footer", "head", "link", "meta",
}  # fmt: skip
DROP_ROLES = {"navigation", "banner", "contentinfo", "complementary", "search", "menu", "menubar"}
# class/id words that mark page furniture (navheader, navfooter, sidebar, breadcrumb, toc, ...).
_FRAME_WORD = re.compile(
    r"(^|[-_])(nav\w*|\w*navbar|\w*sidebar|sidenav|breadcrumbs?|toc|toctree\w*|menu\w*|"
    r"\w*footer|masthead|skip(link)?|cookie\w*|pager|pagination|prev|next|related\w*|"
    r"header-?links?|headerlink|edit-?this-?page|feedback)($|[-_])",
    re.IGNORECASE,
)
_HEADING = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
# DocBook and Sphinx admonitions carry a heading ("Note", "Warning") that is not a section.
_ADMONITION = re.compile(r"\b(note|warning|tip|important|caution|admonition|hint)\b", re.I)
_BLOCK = {
    "p", "div", "section", "article", "main", "ul", "ol", "li", "dl", "dt", "dd", "table",
    "thead", "tbody", "tfoot", "tr", "td", "th", "pre", "blockquote", "figure", "figcaption",
    "header", "details", "summary", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "br", "caption",
    "address", "center",
}  # fmt: skip


@dataclass
class HtmlSection:
    """Text under one heading; `path` is the chain of headings above it, outermost first."""

    path: list[str]
    blocks: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n\n".join(self.blocks)


def _words(text: str) -> str:
    return " ".join(text.split())


def _is_frame(el) -> bool:
    if el.tag in DROP_TAGS:
        return True
    role = (el.get("role") or "").lower()
    if role in DROP_ROLES:
        return True
    names = f"{el.get('class') or ''} {el.get('id') or ''}".split()
    return any(_FRAME_WORD.search(name) for name in names)


def _link_list(el) -> bool:
    """A list or table made almost only of links (a table of contents, 'see also' links)."""
    links = el.findall(".//a")
    if len(links) < 3:
        return False
    text = len(_words(el.text_content()))
    linked = sum(len(_words(a.text_content())) for a in links)
    return text > 0 and linked / text > 0.8


def _strip_frame(root, link_lists: bool) -> None:
    for el in list(root.iter()):
        if not isinstance(el.tag, str):  # comments, processing instructions
            if el.getparent() is not None:
                el.drop_tree()
            continue
        if el.getparent() is None:
            continue
        if _is_frame(el) or (
            link_lists and el.tag in ("ul", "ol", "dl", "table") and _link_list(el)
        ):
            el.drop_tree()


def _main_container(doc):
    body_text = len(_words(doc.text_content()))
    for xpath in MAIN_XPATHS:
        for el in doc.xpath(xpath):
            # A <main> or <article> wrapping a tiny fragment (a teaser) is not the page.
            if len(_words(el.text_content())) >= 0.2 * body_text:
                return el
    body = doc.find(".//body")
    return body if body is not None else doc


def _terms(dt) -> list[str]:
    """The term(s) a definition list item names: each `term` span (DocBook writes an option's
    short and long forms as two), else the text on each side of a line break."""
    spans = [_words(t.text_content()) for t in dt.xpath(".//*[contains(@class, 'term')]")]
    if any(spans):
        return [s for s in spans if s]
    for br in dt.iter("br"):  # the tree is this call's own: mark the breaks, then split there
        br.tail = "\ue000" + (br.tail or "")
    return [_words(part) for part in dt.text_content().split("\ue000") if _words(part)]


def _header_cells(table) -> list[str] | None:
    """A table's column headers: the cells of its `thead` row, or of a first row of `th` only."""
    rows = table.xpath("./thead/tr | ./tr | ./tbody/tr")
    if not rows:
        return None
    first = rows[0]
    cells = [c for c in first if c.tag in ("td", "th")]
    in_head = first.getparent() is not None and first.getparent().tag == "thead"
    # One column's header names the table, not each cell: rows stay as they are.
    if len(cells) > 1 and (in_head or all(c.tag == "th" for c in cells)):
        return [_words(c.text_content()) for c in cells]
    return None


def _paragraphs(cell) -> list:
    """The paragraphs a table cell is written in, or none when it holds only inline text."""
    return [c for c in cell if isinstance(c.tag, str) and c.tag == "p"]


def _entry_table(table) -> bool:
    """A one-column table of entries, each cell written in paragraphs under a header cell that
    names them ("Operator / Description / Example(s)", "Column Type / Description"): the layout
    of function, operator and system-view references generated from DocBook."""
    rows = table.xpath("./thead/tr | ./tr | ./tbody/tr")
    if not rows or any(len([c for c in r if c.tag in ("td", "th")]) != 1 for r in rows):
        return False
    head = next(c for c in rows[0] if c.tag in ("td", "th"))
    return head.tag == "th" and len(_paragraphs(head)) >= 2


def _example(p) -> str | None:
    """A paragraph that is an example (mostly code: "'[1,2,3]'::json ->> 2 → 3"), as text."""
    text = _words(p.text_content())
    code = sum(len(_words(c.text_content())) for c in p.iter("code"))
    return text if text and code >= 0.5 * len(text) else None


def _entry_term(cell) -> tuple[list[str], list]:
    """A cell of an entry table as (what it names, the paragraphs that define it): its leading
    paragraphs of the first paragraph's class (one signature per overload, a column's name and
    type), else its first paragraph."""
    paragraphs = _paragraphs(cell)
    first = paragraphs[0].get("class") if paragraphs else None
    n = 1
    if first:
        while n < len(paragraphs) and paragraphs[n].get("class") == first:
            n += 1
    names = [_words(p.text_content()) for p in paragraphs[:n]]
    return [t for t in names if t], paragraphs[n:]


class _Walker:
    def __init__(self) -> None:
        self.sections: list[HtmlSection] = [HtmlSection([])]
        self.stack: list[tuple[int, str]] = []
        self.inline: list[str] = []
        # A definition's term(s), put before each paragraph of its definition ("-s, --x: ..."),
        # so that every unit of it names what it defines.
        self.term: str | None = None
        self.term_used = False
        self.headers: list[list[str] | None] = []  # column headers of the tables we are in

    def add_block(self, text: str) -> None:
        if self.term is not None and not text.startswith(self.term):
            text = f"{self.term}: {text}"
            self.term_used = True
        self.sections[-1].blocks.append(text)

    def marker_only(self) -> bool:
        """Whether the inline text is a list item's marker and nothing else yet."""
        return self.inline[:1] == ["- "] and not "".join(self.inline[1:]).strip()

    def flush_inline(self) -> None:
        if self.marker_only():  # a list item's marker: it goes with the item's first text
            return
        text = _words("".join(self.inline))
        self.inline = []
        if text:
            self.add_block(text)

    def definition_list(self, dl) -> None:
        """Each item as one unit that carries its term: "term, alias: definition". Several `dt`
        in a row name one definition (aliases)."""
        self.flush_inline()
        terms: list[str] = []
        last: str | None = None  # the term(s) of the definition before
        last_tag = ""
        for child in dl:
            tag = child.tag if isinstance(child.tag, str) else ""
            after_dd, last_tag = last_tag == "dd", tag or last_tag
            if tag == "dt":
                terms.extend(_terms(child))
            elif tag == "dd":
                outer = self.term  # set: this list is inside a definition
                # A `dd` after a `dd` is one more definition of the same term(s).
                own = ", ".join(dict.fromkeys(terms)) or (last if after_dd else None)
                last = own
                # A value of an option ("d, directory" under "-F format") is quoted with the
                # option it belongs to ("-F format: d, directory: ..."), as deep as lists go.
                self.term = f"{outer}: {own}" if own and outer else own or outer
                self.term_used = False
                terms = []
                self.walk(child)
                self.flush_inline()
                if self.term is not None and not self.term_used:  # empty: the term alone
                    self.sections[-1].blocks.append(self.term)
                # Every block of the item named the outer term too: it is used.
                self.term, self.term_used = outer, outer is not None
            else:
                self.walk(child)
        if terms:  # terms with no definition after them
            own = ", ".join(dict.fromkeys(terms))
            self.sections[-1].blocks.append(f"{self.term}: {own}" if self.term else own)
            self.term_used = self.term is not None

    def entry_table(self, table) -> None:
        """Each entry as a definition that carries its term ("json ->> text → text: Extracts
        JSON object field with the given key, as text."), as a definition list's item does; the
        header row, which only labels the paragraphs, is left out. What else a cell holds (an
        output listing, a list of values) follows its description, as in a definition; a cell
        not written as an entry, a caption and a group row inside the body are read as text."""
        for caption in table.xpath("./caption"):
            self.walk(caption)
        for n, row in enumerate(table.xpath("./thead/tr | ./tr | ./tbody/tr")):
            if n == 0:
                continue  # the header row (see _entry_table)
            cell = next(c for c in row if c.tag in ("td", "th"))
            names, definition = _entry_term(cell)
            if cell.tag == "th" or not definition or not names:
                self.walk(cell)
                continue
            outer = self.term
            own = ", ".join(dict.fromkeys(names))
            self.term = f"{outer}: {own}" if outer else own
            self.term_used = False
            first = definition[0]
            before = first.getprevious()  # the term's last paragraph: text after it comes first
            if before is not None and before.tail and before.tail.strip():
                self.inline.append(before.tail)
            for child in [first, *first.itersiblings()]:
                example = _example(child) if child.tag == "p" else None
                if example and self.term_used:  # with the description it shows
                    self.flush_inline()
                    self.sections[-1].blocks[-1] += " " + example
                else:
                    self.walk(child)
                if child.tail and child.tail.strip():
                    self.inline.append(child.tail)
            self.flush_inline()
            if not self.term_used:
                self.sections[-1].blocks.append(self.term)
            self.term, self.term_used = outer, outer is not None

    def heading(self, level: int, text: str) -> None:
        self.flush_inline()
        while self.stack and self.stack[-1][0] >= level:
            self.stack.pop()
        self.stack.append((level, text))
        self.sections.append(HtmlSection([t for _, t in self.stack]))

    def walk(self, el) -> None:
        tag = el.tag if isinstance(el.tag, str) else ""
        if tag in _HEADING:
            text = _words(el.text_content())
            parent = el.getparent()
            in_admonition = parent is not None and any(
                _ADMONITION.search(a.get("class") or "") for a in (parent, *parent.iterancestors())
            )
            if text and not in_admonition:
                self.heading(_HEADING[tag], text)
            elif text:  # an admonition's title ("Note:"): a label, not part of a definition
                self.flush_inline()
                self.sections[-1].blocks.append(text + ":")
            return
        if tag == "pre":
            self.flush_inline()
            code = (el.text_content() or "").strip("\n")
            if code.strip():
                if self.term is not None and not self.term_used:  # code first: its term before it
                    self.sections[-1].blocks.append(self.term)
                    self.term_used = True
                # Fenced as Markdown: the answerer quotes a command whole, as it is written.
                self.sections[-1].blocks.append(f"```\n{code}\n```")
            return
        if tag == "dl":
            self.definition_list(el)
            return
        if tag == "table":
            self.flush_inline()
            if _entry_table(el):
                self.entry_table(el)
                return
            self.headers.append(_header_cells(el))
            self.walk_children(el)
            self.headers.pop()
            self.flush_inline()
            return
        if tag == "tr":
            self.flush_inline()
            cells = [_words(c.text_content()) for c in el if c.tag in ("td", "th")]
            headers = self.headers[-1] if self.headers else None
            # The header row itself is in every row now.
            row = "" if headers and cells == headers else labelled_row(headers, cells)
            if row:
                self.add_block(row)
            return
        block = tag in _BLOCK
        if block:
            # A paragraph inside a list item takes the item's marker ("- text"), not a line
            # of its own (flush_inline keeps a marker with nothing after it).
            self.flush_inline()
            if tag == "li" and not self.marker_only():
                self.inline.append("- ")
        self.walk_children(el)
        if block:
            if tag == "li" and self.marker_only():  # an item with no text of its own
                self.inline = []
            self.flush_inline()

    def walk_children(self, el) -> None:
        if el.text:
            self.inline.append(el.text)
        for child in el:
            self.walk(child)
            if child.tail:
                self.inline.append(child.tail)


def html_sections(markup: str) -> tuple[str | None, list[HtmlSection]]:
    """The page title and its main content as sections (text under each heading, in order).

    Lists made of links (tables of contents) are frame on a page with text of its own; on a page
    that is nothing but links (an index page), they are its content. Raises SourceError when the
    markup cannot be parsed."""
    title, sections = _extract(markup, link_lists=True)
    if not any(s.blocks for s in sections):
        title, sections = _extract(markup, link_lists=False)
    return title, sections


def _extract(markup: str, link_lists: bool) -> tuple[str | None, list[HtmlSection]]:
    import lxml.html
    from lxml.etree import ParserError

    try:
        # Bytes with an explicit encoding: lxml refuses str input that declares its own.
        parser = lxml.html.HTMLParser(encoding="utf-8")
        doc = lxml.html.document_fromstring(markup.encode("utf-8"), parser=parser)
    except (ParserError, ValueError) as exc:
        raise SourceError(f"unreadable HTML ({exc})") from exc
    title_el = doc.find(".//title")
    title = _words(title_el.text_content()) if title_el is not None else None
    container = _main_container(doc)
    _strip_frame(container, link_lists)
    walker = _Walker()
    walker.walk_children(container)
    walker.flush_inline()
    sections = [s for s in walker.sections if s.blocks or s.path]
    return title or None, sections
