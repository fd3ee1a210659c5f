"""The Gradio web app: streamed chat with source cards, a first screen of what is indexed and what
to ask, thumbs up/down with a comment tied to its answer, a new-chat button, the answering model's
badge, and (for admins) the Documents tab, chat log export and the tabs other modules build. Handled
mistakes show one warning and log one line; no raw HTML from a document or a model renders."""

from __future__ import annotations

import hmac
import logging
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr

from app.markup import FEEDBACK_CHOICES, plain_text, safe_markdown
from app.notices import mistake
from app.overview import overview_markdown, suggest_questions
from app.sources_view import EMPTY, NONE, SOURCES_CSS, sources_html
from core.chatlog import export_jsonl
from core.errors import RagError

if TYPE_CHECKING:
    from app.documents_tab import DocumentAdmin
    from core.chatlog import ChatLog
    from ingest.documents import DocumentInfo
    from rag.live import LivePipeline

# The page's own style, given at launch: the first screen's text keeps off the chat's border, as
# the suggested questions under it do.
APP_CSS = "#chatbot .placeholder { padding: 0 var(--spacing-xl); }"

log = logging.getLogger(__name__)

BADGE_REFRESH_S = 5.0  # how often the header's model label reads the registry
FEEDBACK_HINT = "Rate an answer with 👍 / 👎 under it; then you can comment on it here."
COMMENT_LABEL = "Comment on the rated answer (optional)"
SEARCHING = '<p class="src-empty">Looking for sources…</p>'
QUESTION_CHARS = 60
UNEXPECTED = "something went wrong on the server ({}); it is in the server's log. Try again."
LOADING = "⏳ _Loading the embedding model (the first answer after a start waits for it)…_"
STOP_WAIT_S = 10.0  # New chat waits at most this long for a stopped answer to stop


def _short(text: str, limit: int = QUESTION_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def build_ui(
    pipeline: LivePipeline,
    chatlog: ChatLog,
    admin: DocumentAdmin | None,
    admin_password: str | None,
    extra_tabs: Sequence[Callable[[], None]] = (),
    documents: Callable[[], list[DocumentInfo]] | None = None,
) -> gr.Blocks:
    """The app. `admin` is None when admin functions must not be exposed; `extra_tabs` are admin
    tabs built by their own modules (called inside the Blocks); `documents` lists what is indexed
    for the first screen (defaults to the admin's list)."""
    list_documents = documents or (admin.documents if admin is not None else None)

    checked: dict[tuple[str, str, int], bool] = {}  # (question, document, revision) -> answerable

    def answerable(question: str, source: str) -> bool:
        """Whether the app answers a suggested question well, asked once per registry state."""
        current = pipeline.current()
        key = (question, source, pipeline.rebuilds)  # asked again once other versions answer
        if key not in checked:
            checked[key] = current.answers_well(question, source)
        return checked[key]

    def first_screen() -> dict[str, Any]:
        """The empty chat's placeholder and suggested questions, from what is indexed now: only
        questions the app answers well (checked against retrieval once the models are loaded)."""
        if list_documents is None:
            return gr.update()
        try:
            docs = list_documents()
            suggested = suggest_questions(docs, answerable=answerable) if pipeline.loaded else []
        except Exception as exc:  # the chat still works; the first screen just says less
            log.warning("could not list the indexed documents: %s", exc)
            return gr.update(placeholder="Ask a question about your documents.")
        examples = [{"text": q} for q in suggested]
        return gr.update(placeholder=overview_markdown(docs), examples=examples or None)

    streaming: dict[str, threading.Event] = {}  # session -> set once its answer has stopped

    def respond(
        message: str, history: list[dict], session_id: str | None, turn_map: dict
    ) -> Iterator:
        message = (message or "").strip()
        if not message:
            mistake("type a question first")
            yield gr.update(), gr.update(), gr.update(), turn_map, gr.update(), session_id
            return
        session_id = session_id or uuid.uuid4().hex  # an API client's session has no load event
        history = list(history or [])
        prior = [{"role": m["role"], "content": plain_text(_text(m["content"]))} for m in history]
        history += [
            {"role": "user", "content": safe_markdown(message)},
            {"role": "assistant", "content": ""},
        ]
        done = streaming[session_id] = threading.Event()
        answer = pipeline.ask(session_id, message, prior)  # a generator: nothing runs yet
        try:
            if not pipeline.loaded:  # the first question after a start waits for the models
                history[-1]["content"] = LOADING
            yield "", history, SEARCHING, turn_map, gr.update(), session_id
            for update in answer:
                history[-1]["content"] = safe_markdown(update.text)
                if update.done:
                    if update.turn_id is not None:
                        turn_map = {**turn_map, str(len(history) - 1): update.turn_id}
                    if update.warning:
                        gr.Warning(update.warning)
                badge = _badge(pipeline) if update.done else gr.update()
                yield "", history, sources_html(update.sources), turn_map, badge, session_id
        except RagError as exc:
            # Said once, in the answer's place; logged as one line (the turn records it too).
            log.warning("answer failed: %s", exc)
            history[-1]["content"] = f"⚠️ {safe_markdown(str(exc))}"
            yield "", history, NONE, turn_map, gr.update(), session_id
        except Exception as exc:  # a fault of ours (the registry's database, say): said plainly
            log.exception("answer failed unexpectedly")
            history[-1]["content"] = f"⚠️ {UNEXPECTED.format(type(exc).__name__)}"
            yield "", history, NONE, turn_map, gr.update(), session_id
        finally:  # also when New chat stops it: the generator is closed at a yield
            answer.close()  # logs a stopped answer as stopped before New chat goes on
            done.set()
            if streaming.get(session_id) is done:
                del streaming[session_id]

    def take_example(evt: gr.SelectData) -> tuple:
        """A suggested question goes into the (locked) box; `respond` asks it from there."""
        value = evt.value if isinstance(evt.value, dict) else {"text": str(evt.value)}
        text = str(value.get("text") or "")
        return gr.update(value=text, interactive=False), gr.update(interactive=False)

    def on_like(
        data: gr.LikeData, history: list[dict], turn_map: dict, rated_now: dict | None = None
    ) -> tuple:
        index = data.index if isinstance(data.index, int) else data.index[0]
        turn_id = turn_map.get(str(index))
        if turn_id is None:
            mistake("that answer was not logged, so it cannot be rated")
            return gr.update(), gr.update(), gr.update()
        # The chatbot sends True (👍), False (👎), or "" when a rating is clicked again to take it
        # back; other strings would be custom feedback options, which this app does not offer.
        if data.liked not in (True, False, ""):
            return gr.update(), gr.update(), gr.update()
        rating = "up" if data.liked is True else "down" if data.liked is False else None
        try:
            if rating is None:
                chatlog.clear_feedback(turn_id)
            else:
                chatlog.set_feedback(turn_id, rating)
        except Exception as exc:
            log.warning("could not save a rating: %s", exc)
            gr.Warning(f"could not save the rating ({type(exc).__name__}); try again")
            return gr.update(), gr.update(), gr.update()
        history = history or []
        number = sum(1 for m in history[: index + 1] if m.get("role") == "assistant")
        asked = [m for m in history[:index] if m.get("role") == "user"]
        question = plain_text(_text(asked[-1]["content"])) if asked else ""
        about = f"answer {number} (“{safe_markdown(_short(question))}”)"
        if rating is None:
            note = f"Rating of {about} removed."
            if rated_now and rated_now.get("turn_id") != turn_id:
                return note, gr.skip(), gr.skip()  # comments still go to the answer rated last
            return note, None, gr.update(label=COMMENT_LABEL)
        rated = {"turn_id": turn_id, "rating": rating, "number": number, "question": question}
        if rating == "up":
            note = f"👍 Thanks! You rated {about}. Add a comment below if you like."
        else:
            note = f"👎 Thanks! You rated {about} down — what was wrong? Add a comment below."
        return note, rated, gr.update(label=f"Comment on answer {number}")

    def send_comment(comment: str, rated: dict | None) -> tuple:
        if not rated:
            mistake("rate an answer with 👍 or 👎 first, then add your comment")
            return gr.update(), gr.update()
        if not (comment or "").strip():
            mistake("write a comment first")
            return gr.update(), gr.update()
        try:
            chatlog.set_feedback(rated["turn_id"], rated["rating"], comment.strip())
        except Exception as exc:
            log.warning("could not save a comment: %s", exc)
            gr.Warning(f"could not save the comment ({type(exc).__name__}); it is still in the box")
            return gr.update(), gr.update()
        question = safe_markdown(_short(rated.get("question", "")))
        return "", f"Comment saved on answer {rated['number']} (“{question}”). Thank you!"

    def new_chat(old_session: str | None) -> tuple:
        # Queued like the answers, and only once the stopped answer has stopped: its last
        # updates reach the page before this empty chat, never after it.
        stopping = streaming.get(old_session or "")
        if stopping is not None and not stopping.wait(STOP_WAIT_S):
            log.warning("an answer did not stop within %s s of New chat", STOP_WAIT_S)
        return (
            uuid.uuid4().hex,
            gr.update(value=[]),
            EMPTY,
            {},
            None,
            gr.update(value="", label=COMMENT_LABEL),
            FEEDBACK_HINT,
            gr.update(value="", interactive=True),
            gr.update(interactive=True),
        )

    with gr.Blocks(title="Document chat") as demo:
        session_id = gr.State(None)  # set on load (a callable State would be a public endpoint)
        turn_map = gr.State({})
        rated = gr.State(None)
        with gr.Row():
            gr.Markdown("## Chat with your documents")
            badge = gr.Markdown("**Model:** starting…", elem_id="model-badge")
        with gr.Tab("Chat") as chat_tab:
            with gr.Row():
                # The two columns cannot both keep their least width on a narrow window (800 px),
                # so the sources and feedback stack under the chat there.
                with gr.Column(scale=3, min_width=480):
                    chatbot = gr.Chatbot(
                        label="Chat",
                        height=460,
                        elem_id="chatbot",
                        sanitize_html=True,  # a second guard; safe_markdown already escapes HTML
                        placeholder="Ask a question about your documents.",
                    )
                    with gr.Row():
                        box = gr.Textbox(
                            label="Question",
                            placeholder="Ask about your documents…",
                            show_label=False,
                            scale=5,
                            elem_id="question",
                        )
                        send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
                    new = gr.Button("New chat", elem_id="new-chat")
                with gr.Column(scale=2, min_width=340):
                    gr.Markdown("### Sources")
                    sources = gr.HTML(
                        EMPTY,
                        elem_id="sources",
                        css_template=SOURCES_CSS,
                        js_on_load=None,
                        label="Sources",
                        max_height=560,
                    )
                    gr.Markdown("### Feedback")
                    feedback_note = gr.Markdown(FEEDBACK_HINT, elem_id="feedback-note")
                    comment = gr.Textbox(label=COMMENT_LABEL, elem_id="comment")
                    comment_btn = gr.Button("Send comment", elem_id="send-comment")
            asking = [box, chatbot, session_id, turn_map]
            outputs = [box, chatbot, sources, turn_map, badge, session_id]
            # One question at a time, as in Gradio's own ChatInterface: the box and Send are
            # disabled while an answer streams. Two answers streaming into one chat would each
            # write back the history they started from, losing a question or an answer.
            locked = [box, send]
            quiet = {"api_visibility": "private", "queue": False}
            answering = [
                send.click(_lock, None, locked, **quiet).then(
                    respond,
                    asking,
                    outputs,
                    api_name="respond",
                    api_description="Ask a question: streams (box, chat history, sources HTML, "
                    "model badge).",
                ),
                box.submit(_lock, None, locked, **quiet).then(
                    respond, asking, outputs, api_visibility="private"
                ),
                chatbot.example_select(take_example, None, locked, **quiet).then(
                    respond, asking, outputs, api_visibility="private"
                ),
            ]
            for answer in answering:  # `then` follows a finished or stopped answer, not an error
                answer.then(_unlock, None, locked, **quiet)
                answer.failure(_unlock, None, locked, **quiet)
            chatbot.like(
                on_like,
                [chatbot, turn_map, rated],
                [feedback_note, rated, comment],
                api_visibility="private",
            )
            comment_btn.click(
                send_comment, [comment, rated], [comment, feedback_note], api_visibility="private"
            )
            # New chat stops an answer still streaming (logged as stopped), then starts afresh.
            # The stop is its own listener, registered first, so the page asks for it before
            # new_chat runs (which waits for it); one listener with `cancels` would ask after.
            # The chat's own Clear (trash) button does the same: an empty chat with the old
            # sources and rating note left beside it would describe answers no longer shown.
            for trigger in (new.click, chatbot.clear):
                trigger(None, None, None, cancels=answering, **quiet)
                trigger(
                    new_chat,
                    session_id,
                    [
                        session_id,
                        chatbot,
                        sources,
                        turn_map,
                        rated,
                        comment,
                        feedback_note,
                        box,
                        send,
                    ],
                    api_visibility="private",
                ).then(first_screen, None, chatbot, api_visibility="private")
        if admin is not None:
            from app.documents_tab import build_documents_tab

            build_documents_tab(admin, admin_password)()
            _admin_tab(chatlog, admin_password)
            for tab in extra_tabs:
                tab()
        # A reload shows what is indexed now and the model now active.
        demo.load(lambda: uuid.uuid4().hex, None, session_id, api_visibility="private")
        demo.load(first_screen, None, chatbot, api_visibility="private")
        # Back from the Documents tab, the empty chat describes what is indexed now.
        chat_tab.select(first_screen, None, chatbot, api_visibility="private")
        demo.load(lambda: _badge(pipeline), None, badge, api_visibility="private")
        # A promotion or a rollback (from a tab, the command line or a scheduled evaluation)
        # shows in the header within seconds, not only after the next answer or a reload.
        gr.Timer(BADGE_REFRESH_S).tick(
            lambda: _badge(pipeline, quiet=True),
            None,
            badge,
            api_visibility="private",
            show_progress="hidden",
        )
    return demo


def _lock() -> tuple:
    return gr.update(interactive=False), gr.update(interactive=False)


def _unlock() -> tuple:
    return gr.update(interactive=True), gr.update(interactive=True)


def _badge(pipeline: LivePipeline, quiet: bool = False) -> str:
    """The header's model label; `quiet` (the timer's refresh) leaves a failure to the label,
    not to a log line every few seconds for every open page."""
    try:
        return f"**Model:** {pipeline.badge}"
    except Exception as exc:  # the page still loads; the answer says what is wrong
        if not quiet:
            log.warning("could not name the active model: %s", exc)
        return f"**Model:** unavailable ({type(exc).__name__}; see the server's log)"


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(_text(c) for c in content)
    if isinstance(content, dict):
        return str(content.get("text") or content.get("content") or "")
    return str(content)


def _admin_tab(chatlog: ChatLog, admin_password: str | None) -> None:
    def export(feedback: str, password: str) -> str | None:
        if admin_password is not None and not hmac.compare_digest(
            (password or "").encode(), admin_password.encode()
        ):
            mistake("wrong admin password")
            return None
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        path = Path(tempfile.mkdtemp()) / f"chat-log-{stamp}.jsonl"
        with path.open("w", encoding="utf-8") as out:
            export_jsonl(chatlog, out, feedback=feedback)
        return str(path)

    with gr.Tab("Admin"):
        password = gr.Textbox(
            label="Admin password", type="password", visible=admin_password is not None
        )
        gr.Markdown("### Export chat log (JSONL)")
        which = gr.Radio(
            list(FEEDBACK_CHOICES),
            value="all",
            label="Feedback filter",
        )
        export_btn = gr.Button("Export")
        exported = gr.File(label="Download")
        export_btn.click(
            export,
            [which, password],
            exported,
            api_name="export_logs",
            api_description="The chat log as a JSONL file, filtered by feedback.",
        )
