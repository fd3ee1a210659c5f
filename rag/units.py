"""What a passage quotes from: its units (sentences, code blocks kept whole, inline headings and
Markdown left out) and the terms a unit names (an option, a keyword, a setting), which the
extractive answerer scores against the question."""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.index.rows import is_labelled_row
from core.markdown import code_blocks

# A sentence ends before a capital, a digit or code (a `code span`, hidden as \x00n\x00 while
# sentences are split, so that it is never split itself).
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9`\x00])|\n{2,}")
_HEADING = re.compile(r"^\s*#{1,6}\s+(.*)$", re.MULTILINE)
_MARKUP = re.compile(r"^\s*(?:>|[-*+]|\d+[.)])\s+", re.MULTILINE)
_CODE_SPAN = re.compile(r"`[^`\n]+`")
_TERMINAL = (".", "!", "?", ":", ";", ",", ")", "]", '"', "'", "”", "’")
_CLOSED = (".", "!", "?")  # what ends a sentence, so that a heading may follow
# Function words: what a question and a sentence share beyond these is what they are about.
_STOPWORDS = frozenset(
    """a an the of to in on at by for from with into onto as and or but nor not no so if then
    than is are was were be been being am do does did doing have has had having can could will
    would shall should may might must it its this that these those there here what which who
    whom whose how why when where i you he she we they me him her us them my your his our
    their""".split()  # noqa: SIM905 - easier to read and edit as prose
)


@dataclass(frozen=True)
class Unit:
    """A quotable piece of a passage: a sentence, or a code block kept whole."""

    text: str
    position: int
    code: bool = False


def _is_heading(line: str, previous: str | None, following: str | None) -> bool:
    """A short line without closing punctuation between a finished sentence (or a blank) and a
    line that starts a new sentence: a heading (as packed chunks and PDF pages carry them inline),
    not part of a sentence. A line after a colon is a list item; one followed by a lowercase
    line is a sentence wrapped in the source; a table row is a row."""
    words = line.split()
    after = (following or "").lstrip()
    return (
        0 < len(words) <= 8
        # A table row ("Cup: 2; Name: Middlebrew") is short and unpunctuated too: a unit to quote.
        and not is_labelled_row(line)
        and not line.rstrip().endswith(_TERMINAL)
        and line.lstrip()[:1].isupper()
        and (previous is None or not previous.strip() or previous.rstrip().endswith(_CLOSED))
        and not after[:1].islower()
    )


def split_units(text: str) -> list[Unit]:
    """The quotable units of a passage in document order: sentences (Markdown markers and inline
    headings dropped, fragments under three words skipped, `code spans` never split) and fenced
    code blocks kept whole, so a command is quoted as written."""
    units: list[Unit] = []
    for piece, code in code_blocks(text):
        if code:
            if piece.strip():
                units.append(Unit(piece.strip("\n").rstrip(), len(units), code=True))
            continue
        piece = _HEADING.sub("\n\n", piece)  # Markdown headings are labels, never answers
        lines = piece.split("\n")
        kept = [
            ""
            if _is_heading(
                line,
                lines[i - 1] if i else None,
                lines[i + 1] if i + 1 < len(lines) else None,
            )
            else line
            for i, line in enumerate(lines)
        ]
        piece = _MARKUP.sub("", "\n".join(kept))
        for sentence in _sentences(piece):
            units.append(Unit(sentence, len(units)))
    return units


def _sentences(text: str) -> list[str]:
    """Sentences of plain text, `code spans` never split, fragments under three words dropped."""
    spans: list[str] = []

    def hide(m: re.Match) -> str:
        spans.append(m.group(0))
        return f"\x00{len(spans) - 1}\x00"

    def show(m: re.Match) -> str:
        return spans[int(m.group(1))]

    hidden = _CODE_SPAN.sub(hide, text)
    found = []
    for part in _SENTENCE_END.split(hidden):
        sentence = re.sub(r"\x00(\d+)\x00", show, " ".join(part.split()))
        if len(sentence.split()) >= 3:
            found.append(sentence)
    return found


def split_sentences(text: str) -> list[str]:
    """The text of each quotable unit of a passage, in order (see split_units)."""
    return [u.text for u in split_units(text)]


# A unit that names its term first: a definition ("-s, --schema-only: Dump only ..."), a table
# row ("Parameter: work_mem; ..."), a setting ("work_mem (integer): Sets ..."), a reference
# page's or man page's purpose line ("pg_restore — restore a database ...", "ls - list ...").
_TERM_UNIT = re.compile(r"^(?P<term>[^:\n]{1,80}?)(?::|\s[—–-])\s+\S")
# Lead-ins and admonition labels that stand before a colon in prose ("Note:", "Example 9.1:",
# "For example:"), never a term.
_LABEL = re.compile(
    r"(notes?|tips?|hints?|warnings?|caution|important|examples?|for (example|instance)|"
    r"see also|that is|in short|e\.g|i\.e|q|questions?|faq|a|answers?)\b",
    re.IGNORECASE,
)
_TERMISH = re.compile(r"[-_()./=<>\[\]→]|\b[A-Z][A-Z0-9_]{2,}\b")


def term_of(unit: str) -> str | None:
    """The term a unit names before its colon, when it looks like one (an option, a parameter,
    a keyword, a function, a short name); None for prose."""
    m = _TERM_UNIT.match(unit)
    if m is None:
        return None
    term = m.group("term").strip()
    if _LABEL.match(term):
        return None
    if len(term.split()) > 6 or not (_TERMISH.search(term) or len(term.split()) <= 2):
        return None
    return term


def defines(unit: str) -> bool:
    """Whether a unit defines a term that looks like one (an option, an operator's signature, a
    keyword), not a label before a colon ("Q:", "Question:")."""
    term = term_of(unit)
    return term is not None and _TERMISH.search(term) is not None


# What names a thing in technical text: an option (-s, --schema-only), a keyword (CONCURRENTLY,
# ON CONFLICT), an identifier (work_mem, pg_stat_activity), a call (to_char(), lower(), ->>).
_TERM_TOKEN = re.compile(
    r"(?<![\w-])--?[a-zA-Z][\w-]*|\b[A-Z][A-Z0-9]{2,}\b|\b[a-z][a-z0-9]*_[a-z0-9_]+\b|"
    r"\b\w+\(|`[^`\n]+`|->>?|~\*"
)


def new_term(unit: str, asked_words: set[str]) -> str | None:
    """The term a unit names first (see term_of), when the question does not already name it."""
    term = term_of(unit)
    if term is None or set(re.findall(r"\w+", term.lower())) <= asked_words:
        return None
    return term


def names_term(unit: str, asked_words: set[str]) -> bool:
    """Whether a unit names an option, keyword, identifier or call that the question itself does
    not (naming it is the answer; the user asked by what it does)."""
    if new_term(unit, asked_words):
        return True
    for token in _TERM_TOKEN.findall(unit):
        words = {w.lower() for w in re.findall(r"\w+", token)}
        if not words or not words <= asked_words:
            return True
    return False


def content_words(text: str) -> set[str]:
    return {w for w in re.findall(r"\w+", text.lower()) if w not in _STOPWORDS}


def normalise(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))
