"""The main content of an HTML page, as sections under their headings. The page frame (navigation,
sidebars, tables of contents, breadcrumbs, previous/next links, headers and footers) never reaches
the index: it would fill the embedding window and make link pages outrank the real ones."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from core.errors import SourceError

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


class _Walker:
    def __init__(self) -> None:
        self.sections: list[HtmlSection] = [HtmlSection([])]
        self.stack: list[tuple[int, str]] = []
        self.inline: list[str] = []

    def flush_inline(self) -> None:
        text = _words("".join(self.inline))
        self.inline = []
        if text:
            self.sections[-1].blocks.append(text)

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
            elif text:
                self.flush_inline()
                self.inline.append(text + ":")
                self.flush_inline()
            return
        if tag == "pre":
            self.flush_inline()
            code = (el.text_content() or "").strip("\n")
            if code.strip():
                self.sections[-1].blocks.append(code)
            return
        if tag == "tr":
            self.flush_inline()
            cells = [_words(c.text_content()) for c in el if c.tag in ("td", "th")]
            row = " | ".join(c for c in cells if c)
            if row:
                self.sections[-1].blocks.append(row)
            return
        block = tag in _BLOCK
        if block:
            self.flush_inline()
            if tag == "li":
                self.inline.append("- ")
        if el.text:
            self.inline.append(el.text)
        for child in el:
            self.walk(child)
            if child.tail:
                self.inline.append(child.tail)
        if block:
            if tag == "li" and _words("".join(self.inline)) == "-":
                self.inline = []
            self.flush_inline()


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
    if container.text:
        walker.inline.append(container.text)
    for child in container:
        walker.walk(child)
        if child.tail:
            walker.inline.append(child.tail)
    walker.flush_inline()
    sections = [s for s in walker.sections if s.blocks or s.path]
    return title or None, sections
