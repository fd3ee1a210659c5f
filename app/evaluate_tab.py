"""The "Evaluate" admin tab: the runs table, per-sample drill-down (question, contexts, answer,
scores), the metric history plot, comparing two runs through the gate, promote and rollback.
Handlers stay thin: the stores are core's, the gate and the figures are eval's."""

from __future__ import annotations

import hmac
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gradio as gr

from app.notices import refusal
from core.errors import RagError

if TYPE_CHECKING:
    from core.evalstore import EvalStore
    from core.registry import Registry
    from core.settings import Settings

RUN_COLUMNS = ["run", "started", "status", "chat", "embedding", "set", "samples", "NaN"]
SHOWN_METRICS = ("semantic_similarity", "answer_contains_reference", "hit_at_5", "faithfulness")


def _fmt(value: float | None) -> str:
    return "NaN" if value is None or math.isnan(value) else f"{value:.3f}"


def runs_table(store: EvalStore) -> list[list[Any]]:
    rows = []
    for r in store.runs(limit=200):
        n = max((m.measured + m.nan for m in r.summary.values()), default=0)
        nan = sum(m.nan for m in r.summary.values())
        rows.append(
            [
                r.id,
                f"{r.started_at:%Y-%m-%d %H:%M}",
                r.status,
                f"v{r.chat_version_id}",
                f"v{r.embedding_version_id}",
                r.set_hash[:10],
                n,
                nan,
                *(_fmt(r.summary[m].mean) if m in r.summary else "" for m in SHOWN_METRICS),
            ]
        )
    return rows


def versions_markdown(registry: Registry) -> str:
    lines = ["| kind | version | status | name |", "|---|---|---|---|"]
    for v in registry.versions():
        lines.append(f"| {v.kind} | v{v.id} | {v.status} | {v.name.replace('|', '/')} |")
    events = registry.history()[-8:]
    lines += ["", "**Recent changes**", ""]
    lines += [
        f"- {e.created_at:%Y-%m-%d %H:%M} {e.action} {e.kind} v{e.version_id} "
        f"(was v{e.previous_id}): {e.reason}"
        for e in reversed(events)
    ]
    return "\n".join(lines)


def build_evaluate_tab(
    settings: Settings,
    store: EvalStore,
    registry: Registry,
    admin_password: str | None,
) -> Callable[[], None]:
    """A builder for the tab, called inside the app's Blocks (see app.ui.build_ui)."""
    from eval.runner import EvalContext

    ctx = EvalContext(settings, registry, store)

    def check(password: str) -> None:
        if admin_password is not None and not hmac.compare_digest(
            (password or "").encode(), admin_password.encode()
        ):
            raise refusal("wrong admin password")

    def refresh(password: str):
        check(password)
        from eval.report import history_figure

        runs = store.runs(limit=200)
        return runs_table(store), history_figure(runs), versions_markdown(registry)

    def drill(run_id: float | None, password: str):
        check(password)
        if not run_id:
            raise refusal("type a run id from the table first")
        try:
            samples = store.samples(int(run_id))
        except RagError as exc:
            raise refusal(str(exc)) from exc
        names = sorted({m for s in samples for m in s.scores})
        rows = [
            [s.idx, s.user_input, (s.response or "")[:200], *(_fmt(s.scores.get(m)) for m in names)]
            for s in samples
        ]
        import pandas as pd

        return pd.DataFrame(rows, columns=["#", "question", "answer", *names]), ""

    def sample_detail(run_id: float | None, idx: float | None, password: str) -> str:
        check(password)
        if not run_id or idx is None:
            raise refusal("choose a run and a sample number")
        found = [s for s in store.samples(int(run_id)) if s.idx == int(idx)]
        if not found:
            raise refusal(f"run {int(run_id)} has no sample {int(idx)}")
        s = found[0]
        contexts = "\n".join(
            f"{i}. `{src}` — {text[:500]}"
            for i, (text, src) in enumerate(
                zip(s.retrieved_contexts, s.retrieved_sources, strict=False), start=1
            )
        )
        scores = "\n".join(
            f"| {k} | {_fmt(v)} | {s.nan_reasons.get(k, '')} |" for k, v in sorted(s.scores.items())
        )
        return (
            f"**Question:** {s.user_input}\n\n**Reference:** {s.reference or '—'}\n\n"
            f"**Answer:**\n\n{s.response or '_no answer_'}\n\n**Retrieved:**\n\n{contexts}\n\n"
            f"| metric | score | why NaN |\n|---|---|---|\n{scores}"
        )

    def compare(champion: float | None, candidate: float | None, password: str):
        check(password)
        if not champion or not candidate:
            raise refusal("type the champion's and the candidate's run ids")
        from eval.report import delta_figure
        from eval.service import judge_runs

        try:
            decision = judge_runs(ctx, int(champion), int(candidate))
        except RagError as exc:
            raise refusal(str(exc)) from exc
        verdict = "**PROMOTE**" if decision.promote else "**REJECT**"
        text = f"Decision {decision.id}: {verdict}\n\n" + "\n".join(
            f"- {r}" for r in decision.reasons
        )
        return text, delta_figure(decision)

    def promote(version: float | None, password: str):
        check(password)
        if not version:
            raise refusal("type the version id to promote")
        from eval.service import promote as promote_version

        try:
            # An embedding version with its own collection is re-embedded first (blue/green).
            event, _ = promote_version(ctx, int(version), "admin", progress=False)
        except RagError as exc:
            raise refusal(str(exc)) from exc
        return (
            f"{event.kind} v{event.version_id} is active (was v{event.previous_id}); the app "
            "answers with it from the next question",
            versions_markdown(registry),
        )

    def rollback(kind: str, password: str):
        check(password)
        from eval.service import rollback as roll_back

        try:
            event = roll_back(ctx, kind, reason="admin")
        except RagError as exc:
            raise refusal(str(exc)) from exc
        return (
            f"rolled back: {event.kind} v{event.version_id} is active again "
            f"(was v{event.previous_id})",
            versions_markdown(registry),
        )

    def build() -> None:
        with gr.Tab("Evaluate"):
            password = gr.Textbox(
                label="Admin password", type="password", visible=admin_password is not None
            )
            refresh_btn = gr.Button("Refresh", elem_id="eval-refresh")
            runs = gr.Dataframe(
                headers=RUN_COLUMNS + list(SHOWN_METRICS),
                label="Evaluation runs (newest first)",
                interactive=False,
                elem_id="eval-runs",
            )
            history = gr.Plot(label="Metric history")
            versions = gr.Markdown(elem_id="eval-versions")
            refresh_btn.click(refresh, [password], [runs, history, versions])
            gr.Markdown("### Samples of a run")
            with gr.Row():
                run_id = gr.Number(label="Run id", precision=0, elem_id="eval-run-id")
                show = gr.Button("Show samples", elem_id="eval-show")
            samples = gr.Dataframe(label="Samples", interactive=False, elem_id="eval-samples")
            with gr.Row():
                idx = gr.Number(label="Sample #", precision=0, elem_id="eval-sample-idx")
                detail_btn = gr.Button("Show sample", elem_id="eval-detail")
            detail = gr.Markdown(elem_id="eval-sample-detail")
            show.click(drill, [run_id, password], [samples, detail])
            detail_btn.click(sample_detail, [run_id, idx, password], detail)
            gr.Markdown("### Compare two runs of one set (the gate)")
            with gr.Row():
                champ = gr.Number(label="Champion run", precision=0, elem_id="eval-champion")
                cand = gr.Number(label="Candidate run", precision=0, elem_id="eval-candidate")
                cmp_btn = gr.Button("Compare", elem_id="eval-compare")
            decision = gr.Markdown(elem_id="eval-decision")
            deltas = gr.Plot(label="Deltas with 95% intervals")
            cmp_btn.click(compare, [champ, cand, password], [decision, deltas])
            gr.Markdown("### Promote or roll back")
            with gr.Row():
                version = gr.Number(label="Version id", precision=0, elem_id="eval-version")
                promote_btn = gr.Button("Promote", elem_id="eval-promote")
                kind = gr.Radio(["chat", "embedding"], value="chat", label="Kind")
                rollback_btn = gr.Button("Roll back", elem_id="eval-rollback")
            registry_note = gr.Markdown(elem_id="eval-registry-note")
            promote_btn.click(promote, [version, password], [registry_note, versions])
            rollback_btn.click(rollback, [kind, password], [registry_note, versions])

    return build
