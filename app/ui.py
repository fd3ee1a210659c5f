"""The Gradio web app: streamed chat with sources, thumbs up/down with a comment, a new-chat button,
the answering model's badge, and (for admins) document upload and chat log export. The only module
that imports gradio; handlers turn RagError into gr.Error."""

from __future__ import annotations

import hmac
import html
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr

from core.chatlog import export_jsonl
from core.errors import RagError

if TYPE_CHECKING:
    from app.pipeline import RagPipeline
    from core.chatlog import ChatLog
    from core.records import SourceRef
    from ingest import IngestReport

SNIPPET_CHARS = 240


def sources_markdown(sources: list[SourceRef]) -> str:
    """The sources panel: one row per cited passage, numbered as the answer cites them."""
    if not sources:
        return "_No sources for this answer._"
    rows = ["| # | file | page | score | snippet |", "|---|---|---|---|---|"]
    for i, s in enumerate(sources, start=1):
        snippet = " ".join(s.text.split())
        if len(snippet) > SNIPPET_CHARS:
            snippet = snippet[:SNIPPET_CHARS] + "…"
        name = s.file_name or s.source.rsplit("/", 1)[-1]
        if s.heading_path:  # where in the document: `Title > Section > Subsection`
            name = f"{name} — {s.heading_path}"
        cells = [str(i), name, "" if s.page is None else str(s.page), f"{s.score:.2f}", snippet]
        rows.append("| " + " | ".join(html.escape(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


def build_ui(
    pipeline: RagPipeline,
    chatlog: ChatLog,
    ingest_files: Callable[[list[Path]], IngestReport] | None,
    uploads_dir: Path,
    admin_password: str | None,
    extra_tabs: Sequence[Callable[[], None]] = (),
) -> gr.Blocks:
    """The app. `ingest_files` is None when admin functions must not be exposed; `extra_tabs`
    are admin tabs built by their own modules (called inside the Blocks)."""

    def respond(message: str, history: list[dict], session_id: str, turn_map: dict) -> Iterator:
        history = list(history or [])
        prior = [{"role": m["role"], "content": _text(m["content"])} for m in history]
        history += [{"role": "user", "content": message}, {"role": "assistant", "content": ""}]
        yield "", history, gr.update(), turn_map, gr.update()
        try:
            for update in pipeline.ask(session_id, message, prior):
                history[-1]["content"] = update.text
                if update.done:
                    if update.turn_id is not None:
                        turn_map = {**turn_map, str(len(history) - 1): update.turn_id}
                    if update.warning:
                        gr.Warning(update.warning)
                badge = _badge(pipeline) if update.done else gr.update()
                yield "", history, sources_markdown(update.sources), turn_map, badge
        except RagError as exc:
            history[-1]["content"] = f"⚠️ {exc}"
            yield "", history, gr.update(), turn_map, gr.update()
            raise gr.Error(str(exc)) from exc

    def on_like(data: gr.LikeData, turn_map: dict) -> tuple[str, Any]:
        turn_id = turn_map.get(str(data.index if isinstance(data.index, int) else data.index[0]))
        if turn_id is None:
            raise gr.Error("that answer was not logged, so it cannot be rated")
        rating = "up" if data.liked is True else "down"
        try:
            chatlog.set_feedback(turn_id, rating)
        except Exception as exc:
            raise gr.Error(f"could not save the rating: {exc}") from exc
        note = (
            "👍 Thanks!" if rating == "up" else "👎 Thanks — what was wrong? Add a comment below."
        )
        return note, {"turn_id": turn_id, "rating": rating}

    def send_comment(comment: str, rated: dict | None) -> tuple[str, str]:
        if not rated:
            raise gr.Error("rate an answer with 👍 or 👎 first, then add your comment")
        if not comment.strip():
            raise gr.Error("write a comment first")
        try:
            chatlog.set_feedback(rated["turn_id"], rated["rating"], comment.strip())
        except Exception as exc:
            raise gr.Error(f"could not save the comment: {exc}") from exc
        return "", "Comment saved. Thank you!"

    def new_chat() -> tuple:
        return uuid.uuid4().hex, [], "_Ask a question to see its sources._", {}, None, ""

    with gr.Blocks(title="Document chat") as demo:
        session_id = gr.State(lambda: uuid.uuid4().hex)
        turn_map = gr.State({})
        rated = gr.State(None)
        with gr.Row():
            gr.Markdown("## Chat with your documents")
            badge = gr.Markdown(_badge(pipeline), elem_id="model-badge")
        with gr.Tab("Chat"):
            with gr.Row():
                with gr.Column(scale=3):
                    chatbot = gr.Chatbot(label="Chat", height=460, elem_id="chatbot")
                    with gr.Row():
                        box = gr.Textbox(
                            placeholder="Ask about your documents…",
                            show_label=False,
                            scale=5,
                            elem_id="question",
                        )
                        send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
                    new = gr.Button("New chat", elem_id="new-chat")
                with gr.Column(scale=2):
                    gr.Markdown("### Sources")
                    sources = gr.Markdown("_Ask a question to see its sources._", elem_id="sources")
                    gr.Markdown("### Feedback")
                    feedback_note = gr.Markdown(
                        "Rate an answer with 👍 / 👎 under it.", elem_id="feedback-note"
                    )
                    comment = gr.Textbox(
                        label="Comment on the rated answer (optional)", elem_id="comment"
                    )
                    comment_btn = gr.Button("Send comment", elem_id="send-comment")
            outputs = [box, chatbot, sources, turn_map, badge]
            box.submit(respond, [box, chatbot, session_id, turn_map], outputs)
            send.click(respond, [box, chatbot, session_id, turn_map], outputs)
            chatbot.like(on_like, [turn_map], [feedback_note, rated])
            comment_btn.click(send_comment, [comment, rated], [comment, feedback_note])
            new.click(new_chat, None, [session_id, chatbot, sources, turn_map, rated, comment])
        if ingest_files is not None:
            _admin_tab(chatlog, ingest_files, uploads_dir, admin_password)
            for tab in extra_tabs:
                tab()
        demo.load(lambda: _badge(pipeline), None, badge)  # a reload shows the model now active
    return demo


def _badge(pipeline: RagPipeline) -> str:
    return f"**Model:** {pipeline.badge}"


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(_text(c) for c in content)
    if isinstance(content, dict):
        return str(content.get("text") or content.get("content") or "")
    return str(content)


def _admin_tab(
    chatlog: ChatLog,
    ingest_files: Callable[[list[Path]], IngestReport],
    uploads_dir: Path,
    admin_password: str | None,
) -> None:
    def check(password: str) -> None:
        if admin_password is not None and not hmac.compare_digest(
            (password or "").encode(), admin_password.encode()
        ):
            raise gr.Error("wrong admin password")

    def upload(files: list[str] | None, password: str) -> str:
        check(password)
        if not files:
            raise gr.Error("choose one or more files first")
        uploads_dir.mkdir(parents=True, exist_ok=True)
        kept = []
        for f in files:
            # Uploads are kept, so their chunks keep a source that exists (and --prune spares them).
            src = Path(f)
            dest = uploads_dir / src.name
            shutil.copyfile(src, dest)
            kept.append(dest)
        report = ingest_files(kept)
        lines = [f"**{report.summary()}**"]
        lines += [f"- ❌ `{Path(n).name}`: {reason}" for n, reason in report.failed]
        return "\n".join(lines)

    def export(feedback: str, password: str) -> str:
        check(password)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        path = Path(tempfile.mkdtemp()) / f"chat-log-{stamp}.jsonl"
        with path.open("w", encoding="utf-8") as out:
            export_jsonl(chatlog, out, feedback=feedback)
        return str(path)

    with gr.Tab("Admin"):
        password = gr.Textbox(
            label="Admin password", type="password", visible=admin_password is not None
        )
        gr.Markdown("### Add documents\nPDF, Markdown, text, HTML, DOCX, CSV or JSONL.")
        files = gr.File(file_count="multiple", type="filepath", elem_id="upload")
        add = gr.Button("Add to index", elem_id="add-docs")
        result = gr.Markdown(elem_id="ingest-result")
        add.click(upload, [files, password], result)
        gr.Markdown("### Export chat log (JSONL)")
        which = gr.Radio(["all", "any", "up", "down"], value="all", label="Feedback filter")
        export_btn = gr.Button("Export")
        exported = gr.File(label="Download")
        export_btn.click(export, [which, password], exported)
