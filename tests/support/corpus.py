"""Real documents made by the tests: a multi-page PDF, a DOCX, HTML, Markdown, CSV and JSONL."""

from __future__ import annotations

import json
from pathlib import Path

PDF_PAGES = [
    "Chapter one introduces the harbour town of Velmora and its fishing fleet.",
    "The lighthouse keeper of Velmora is named Orsolya Brandt and she has served for "
    "thirty-one years.",
    "The annual lantern festival in Velmora takes place on the second Saturday of October.",
]


def make_pdf(path: Path, pages: list[str] = PDF_PAGES, running_header: str | None = None) -> Path:
    """A PDF with one page per text; with `running_header`, each page also carries it on top
    and its page number at the bottom, as printed manuals do."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(path), pagesize=A4)
    c.setTitle("Velmora Guide")
    for number, text in enumerate(pages, start=1):
        if running_header:
            c.drawString(60, 820, running_header)
            c.drawString(290, 30, str(number))
        y = 800
        for line in _wrap(text, 80):
            c.drawString(60, y, line)
            y -= 16
        c.showPage()
    c.save()
    return path


def _wrap(text: str, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if len(line) + len(word) + 1 > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return [*lines, line]


def make_docx(path: Path, paragraphs: list[str]) -> Path:
    import docx

    document = docx.Document()
    document.core_properties.title = "Office handbook"
    for p in paragraphs:
        document.add_paragraph(p)
    document.save(str(path))
    return path


def make_corpus(root: Path) -> Path:
    """A small mixed corpus, one distinct fact per file."""
    root.mkdir(parents=True, exist_ok=True)
    make_pdf(root / "velmora.pdf")
    make_docx(
        root / "handbook.docx",
        ["The office coffee machine is descaled every Thursday by the facilities team."],
    )
    (root / "notes.md").write_text(
        "# Garden notes\n\nTomatoes in the north bed are watered at six in the morning.\n"
    )
    (root / "plain.txt").write_text("The spare key to the shed hangs behind the blue door.\n")
    (root / "page.html").write_text(
        "<html><head><title>Recipes</title><style>p{color:red}</style></head>"
        "<body><p>The lemon cake needs exactly four eggs and a cup of sugar.</p>"
        "<script>var x = 'not indexed';</script></body></html>"
    )
    (root / "records.csv").write_text(
        "question,support\n"
        "What gas do plants absorb?,Plants absorb carbon dioxide from the air during "
        "photosynthesis.\n"
        "What is the hardest mineral?,Diamond is the hardest naturally occurring mineral.\n"
    )
    (root / "faq.jsonl").write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"q": "parking", "text": "Visitors park on level minus two of the garage."},
                {"q": "wifi", "text": "The guest wifi password changes every Monday."},
            ]
        )
        + "\n"
    )
    (root / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))  # not a document type
    return root
