"""The "Documents" admin tab: upload files (each listed by name with what became of it), the table
of indexed documents (name, chunks, pages, when indexed) and removing one from every index. The
handlers are thin: listing and removing are ingest's, keeping uploads is the service's."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import gradio as gr

from app.notices import mistake
from app.overview import escape_markdown
from core.wording import counted

if TYPE_CHECKING:
    from app.service import UploadResult
    from ingest.documents import DocumentInfo, RemovedDocument

log = logging.getLogger(__name__)

COLUMNS = ["document", "chunks", "pages", "indexed"]
FORMATS = "PDF, Markdown, text, HTML, Word DOCX, CSV or JSONL."
OUTCOME_WORDS = {
    "new": "added",
    "changed": "updated (replaces the earlier version)",
    "unchanged": "already indexed, unchanged",
}


class DocumentAdmin(Protocol):
    """What the tab needs from the app (app.service.Service provides it)."""

    def documents(self) -> list[DocumentInfo]: ...

    def remove_document(self, source: str) -> RemovedDocument: ...

    def add_uploads(self, files: list[Path]) -> list[UploadResult]: ...


def _when(stamp: str | None) -> str:
    if not stamp:
        return ""
    try:
        return datetime.fromisoformat(stamp).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return stamp


def documents_rows(docs: list[DocumentInfo]) -> list[list[Any]]:
    """The table's rows: a dataset's rows are counted in its name."""
    rows = []
    for d in docs:
        name = f"{d.name} ({d.rows} rows)" if d.rows else d.name
        rows.append([name, d.chunks, d.page_count or "", _when(d.indexed_at)])
    return rows


REMOVED = "Removed"  # how the note on a removal starts: the one sign that a document is gone


def choices(docs: list[DocumentInfo]) -> list[tuple[str, str]]:
    """Dropdown entries (shown name, source); names shared by two documents show their folder."""
    names = [d.name for d in docs]
    out = []
    for d in docs:
        label = d.name if names.count(d.name) == 1 else f"{d.name} ({Path(d.source).parent})"
        out.append((label, d.source))
    return out


def upload_markdown(results: list[UploadResult]) -> str:
    """One line per uploaded file, by name, with the reason for each failure."""
    ok = sum(r.outcome != "failed" for r in results)
    lines = [f"**{ok} of {counted(len(results), 'file')} indexed.**", ""]
    for r in results:
        name = escape_markdown(r.name)
        if r.outcome == "failed":
            lines.append(f"- ❌ **{name}**: not indexed: {escape_markdown(r.reason)}")
        else:
            lines.append(f"- ✅ **{name}**: {OUTCOME_WORDS.get(r.outcome, r.outcome)}")
    if ok < len(results):
        lines += ["", "Files that could not be indexed were not kept."]
    return "\n".join(lines)


def build_documents_tab(admin: DocumentAdmin, admin_password: str | None) -> Callable[[], None]:
    """A builder for the tab, called inside the app's Blocks (see app.ui.build_ui)."""

    def allowed(password: str) -> bool:
        if admin_password is not None and not hmac.compare_digest(
            (password or "").encode(), admin_password.encode()
        ):
            mistake("wrong admin password")
            return False
        return True

    def listing() -> tuple[list[list[Any]], Any]:
        docs = admin.documents()
        return documents_rows(docs), gr.update(choices=choices(docs), value=None)

    def documents_view(password: str) -> tuple:
        if not allowed(password):
            return gr.update(), gr.update()
        return listing()

    def upload(files: list[str] | None, password: str) -> tuple:
        if not allowed(password):
            return gr.update(), gr.update(), gr.update(), gr.update()
        if not files:
            mistake("choose one or more files first")
            return gr.update(), gr.update(), gr.update(), gr.update()
        try:
            results = admin.add_uploads([Path(f) for f in files])
        except Exception as exc:
            log.warning("upload stopped: %s: %s", type(exc).__name__, exc)
            note = (
                f"**Indexing stopped:** {escape_markdown(str(exc) or type(exc).__name__)}. "
                "Files whose passages were not stored were not kept; add them again."
            )
            return note, None, *listing()
        log.info("uploaded: %s", ", ".join(f"{r.name} {r.outcome}" for r in results))
        return upload_markdown(results), None, *listing()

    def remove(source: str | None, password: str, confirmed: bool = True) -> tuple:
        if not allowed(password):
            return gr.update(), gr.update(), gr.update()
        if not source:
            mistake("choose a document to remove first")
            return gr.update(), gr.update(), gr.update()
        if not confirmed:  # the admin cancelled the confirmation: nothing to say or do
            return gr.update(), gr.update(), gr.update()
        from core.errors import RagError

        try:
            removed = admin.remove_document(source)
        except RagError as exc:
            mistake(str(exc))
            return gr.update(), *listing()
        name = escape_markdown(Path(source).name)
        gone = counted(removed.chunks, "passage") + (" is" if removed.chunks == 1 else " are")
        note = f"{REMOVED} **{name}**: {gone} gone from the index"
        note += " and the uploaded file is deleted." if removed.file_removed else "."
        return note, *listing()

    def build() -> None:
        with gr.Tab("Documents") as tab:
            password = gr.Textbox(
                label="Admin password", type="password", visible=admin_password is not None
            )
            gr.Markdown(f"### Add documents\n{FORMATS}")
            files = gr.File(
                label="Files to add", file_count="multiple", type="filepath", elem_id="upload"
            )
            add = gr.Button("Add to index", variant="primary", elem_id="add-docs")
            result = gr.Markdown(elem_id="ingest-result")
            gr.Markdown("### Indexed documents")
            table = gr.Dataframe(
                headers=COLUMNS,
                value=[],
                interactive=False,
                wrap=True,
                label="Indexed documents",
                elem_id="doc-table",
            )
            with gr.Row():
                which = gr.Dropdown(
                    label="Document to remove", choices=[], scale=4, elem_id="doc-choice"
                )
                remove_btn = gr.Button("Remove from index", variant="stop", elem_id="remove-doc")
                refresh_btn = gr.Button("Refresh list", elem_id="refresh-docs")
            removed_note = gr.Markdown(elem_id="remove-result")
            # Whether the admin confirmed the removal in the browser's dialog (an API call, which
            # has no dialog, is confirmed by making it).
            confirmed = gr.Checkbox(value=True, visible=False)
        add.click(
            upload,
            [files, password],
            [result, files, table, which],
            api_name="upload",
            api_description="Index uploaded files; returns one line per file (what became of it).",
        ).then(lambda: "", None, removed_note, api_visibility="private")  # an older removal's
        remove_btn.click(
            remove,
            [which, password, confirmed],
            [removed_note, table, which],
            api_name="remove_document",
            api_description="Remove a document (by its source path) from every index, and its "
            "uploaded file.",
            # Removing cannot be undone: ask first (cancelled, nothing happens and nothing is said).
            js="(source, password, ok) => [source, password, "
            "!!source && confirm('Remove ' + source.split(/[\\\\/]/).pop() + ' from the index?')]",
        ).then(
            # What the last upload reported is about a list that has changed since, once a
            # document is really gone (not on a cancelled dialog or a refusal).
            lambda note: "" if (note or "").startswith(REMOVED) else gr.update(),
            removed_note,
            result,
            api_visibility="private",
        )
        refresh_btn.click(
            documents_view,
            [password],
            [table, which],
            api_name="documents",
            api_description="The indexed documents: name, chunks, pages, when indexed.",
        )
        tab.select(documents_view, [password], [table, which], api_visibility="private")

    return build
