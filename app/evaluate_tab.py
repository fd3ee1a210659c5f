"""The "Evaluate" admin tab: choose or add an evaluation set (a stored one, an uploaded JSONL golden
set, a sample of the chat log by rating, a `datasets` file, or questions the judge writes), run
the active versions or a candidate against the champion on it with progress, and see the gate's
decision with its reasons and the per-metric deltas; the runs, the metric history of the set, each
sample's detail; promote and roll back. Everything shown is loaded when the tab opens. Handlers
only gather fields: the work is eval.service's and eval.runner's, as for the command line."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr

from app.markup import FEEDBACK_CHOICES, one_line
from app.notices import check_password, handled
from core.errors import RagError

if TYPE_CHECKING:
    from core.evalstore import EvalRun, EvalStore, ScoredSample
    from core.registry import ModelVersion, Registry
    from core.settings import Settings
    from rag.live import EmbeddingCache

RUN_COLUMNS = ["run", "started", "status", "chat", "embedding", "reranker", "set", "samples"]
SHOWN_METRICS = ("semantic_similarity", "answer_contains_reference", "hit_at_5", "mrr_at_10")
ACTIVE = "the active versions"
NO_SETS = (
    "**No evaluation set yet.** Add one below: upload a JSONL golden set, sample rated turns "
    "from the chat log, or load a dataset file. Then press **Evaluate**."
)
NO_RUNS = "_No runs on this set yet: press **Evaluate** to run the active versions on it._"


def _fmt(value: float | None) -> str:
    return "NaN" if value is None or math.isnan(value) else f"{value:.3f}"


def _metric_cell(run: EvalRun, name: str) -> str:
    """A metric's mean, with how many samples it could not measure (never averaged in)."""
    m = run.summary.get(name)
    if m is None:
        return ""
    value = "n/a" if m.mean is None else f"{m.mean:.3f}"
    return f"{value} ({m.nan} NaN)" if m.nan else value


def runs_table(runs: list[EvalRun]) -> list[list[Any]]:
    """One row a run; its set by number, as the set list names it ("set 2")."""
    rows = []
    for r in runs:
        samples = max((m.measured + m.nan for m in r.summary.values()), default=0)
        rows.append(
            [
                r.id,
                f"{r.started_at:%Y-%m-%d %H:%M}",
                r.status,
                f"v{r.chat_version_id}",
                f"v{r.embedding_version_id}",
                r.reranker_cell,
                f"set {r.set_id}",
                samples,
                *(_metric_cell(r, m) for m in SHOWN_METRICS),
            ]
        )
    return rows


def _reranks_nothing(v: ModelVersion) -> bool:
    """A reranker version naming no model (the one seeded from settings with none): the runs
    table says "none" for it, as the answers name no reranker."""
    seeded = v.provenance.get("seeded_from_settings") or {}
    return v.kind == "reranker" and not any(
        (section.get("reranker") or {}).get("model_dir") for section in (v.spec, seeded)
    )


def versions_markdown(registry: Registry) -> str:
    lines = ["| kind | version | status | name |", "|---|---|---|---|"]
    for v in registry.versions():
        name = v.name.replace("|", "/") + (
            " (no model: re-ranks nothing)" if _reranks_nothing(v) else ""
        )
        lines.append(f"| {v.kind} | v{v.id} | {v.status} | {name} |")
    events = registry.history()[-8:]
    lines += ["", "**Recent changes**", ""]
    lines += [
        f"- {e.created_at:%Y-%m-%d %H:%M} {e.action} {e.kind} v{e.version_id} "
        + (f"(was v{e.previous_id})" if e.previous_id else "(the first of its kind)")
        + f": {e.reason}"
        for e in reversed(events)
    ]
    return "\n".join(lines)


def _flat(text: str) -> str:
    """A passage on one line of a quote: its code fences left out (a passage starting with one
    would open a code block holding nothing but its first line, as the fence's info string)."""
    from core.markdown import fence_kinds

    lines = text.split("\n")
    kept = (line for line, kind in zip(lines, fence_kinds(lines), strict=True) if kind != "fence")
    return " ".join(" ".join(kept).split())


def sample_markdown(s: ScoredSample) -> str:
    """One answered question: reference, answer, each retrieved passage as its own block, and every
    score with the reason it could not be measured."""
    passages = "\n\n".join(
        f"**{i}.** `{Path(src).name if src else '?'}`\n\n> " + _flat(text[:600])
        for i, (text, src) in enumerate(
            zip(s.retrieved_contexts, s.retrieved_sources, strict=False), start=1
        )
    )
    scores = "\n".join(
        f"| {k} | {_fmt(v)} | {s.nan_reasons.get(k, '')} |" for k, v in sorted(s.scores.items())
    )
    return (
        f"**Question:** {s.user_input}\n\n**Reference:** {s.reference or '—'}\n\n"
        f"**Answer:**\n\n{s.response or '_no answer_'}\n\n**Retrieved:**\n\n"
        f"{passages or '_nothing_'}\n\n| metric | score | why NaN |\n|---|---|---|\n{scores}"
    )


def decision_markdown(decision: Any, champion: EvalRun | None, candidate: EvalRun) -> str:
    from eval.service import run_line

    verdict = "**PROMOTE**" if decision.promote else "**REJECT**"
    lines = [f"Decision {decision.id}: {verdict} v{decision.candidate_version_id}", ""]
    lines += [f"- {r}" for r in decision.reasons]
    lines += ["", f"- champion: {run_line(champion)}" if champion else ""]
    lines += [f"- candidate: {run_line(candidate)}"]
    if decision.promote:
        lines += ["", f"Promote v{decision.candidate_version_id} below to answer with it."]
    return "\n".join(lines)


def build_evaluate_tab(
    settings: Settings,
    store: EvalStore,
    registry: Registry,
    admin_password: str | None,
    embeddings: EmbeddingCache | None = None,
) -> Callable[[], None]:
    """A builder for the tab, called inside the app's Blocks (see app.ui.build_ui). With the
    app's `embeddings`, evaluations reuse its loaded models and queue in its compute gate."""
    from eval.judge import build_judge
    from eval.runner import EvalContext
    from rag.live import EmbeddingCache

    ctx = EvalContext(
        settings,
        registry,
        store,
        embeddings=embeddings or EmbeddingCache(),
        judge=build_judge(settings.eval.judge),
    )

    def check(password: str) -> None:
        check_password(admin_password, password)

    def set_choices() -> list[tuple[str, int]]:
        return [(s.label, s.id) for s in store.sets()]

    def version_choices() -> list[tuple[str, int]]:
        candidates = registry.versions(status="candidate")
        return [(ACTIVE, 0)] + [(f"candidate {v.label}: {v.name}"[:120], v.id) for v in candidates]

    def chosen_set(set_id: Any) -> int:
        if set_id in (None, ""):
            raise RagError("choose an evaluation set first (or add one)")
        return int(set_id)

    def on_set(set_id: Any, runs: list[EvalRun] | None = None):
        """The chosen set's history plot and what to do next on it (add a set, run one; nothing
        once it has runs), from one read of the runs (`runs`, when the caller has them)."""
        from eval.report import history_figure

        if set_id in (None, ""):
            return None, NO_SETS
        runs = store.runs(limit=200) if runs is None else runs
        mine = [r for r in runs if r.set_id == int(set_id)]  # a set is stored once per content
        done = [r for r in mine if r.status == "done"]
        return (history_figure(done) if done else None), ("" if mine else NO_RUNS)

    def overview(set_id: Any = None):
        """Everything the tab shows: sets, versions to run, runs, the chosen set's history."""
        sets = set_choices()
        if set_id in (None, "") and sets:
            set_id = sets[0][1]
        runs = store.runs(limit=200)
        figure, note = on_set(set_id if sets else None, runs)
        return (
            gr.update(choices=sets, value=set_id if sets else None),
            gr.update(choices=version_choices(), value=0),
            runs_table(runs),
            figure,
            versions_markdown(registry),
            note,
        )

    @handled(6)
    def refresh(password: str, set_id: Any = None):
        check(password)
        return overview(set_id)

    def on_open(password: str, set_id: Any):
        if admin_password is not None and not password:
            return (*(gr.skip(),) * 5, "Type the admin password, then press Refresh.")
        return refresh(password, set_id)

    def stored(request: Any, password: str):
        from eval.service import store_set

        check(password)
        set_id, notes = store_set(ctx, request)
        for note in notes:
            gr.Info(note)
        info = store.set_info(set_id)
        return (
            gr.update(choices=set_choices(), value=set_id),
            f"Added {info.label}.",
            *on_set(set_id),
        )

    @handled(4)
    def add_upload(upload: Any, password: str):
        from eval.service import SetRequest

        if not upload:
            raise RagError("choose a JSONL file first")
        path = Path(upload if isinstance(upload, str) else upload.name)
        return stored(SetRequest(path=path, kind="upload", name=path.name), password)

    @handled(4)
    def add_log_sample(feedback: str, size: float | None, password: str):
        from eval.service import SetRequest

        return stored(SetRequest(from_log=True, feedback=feedback, size=int(size or 100)), password)

    @handled(4)
    def add_dataset(upload: Any, question: str, reference: str, contexts: str, password: str):
        from eval.service import SetRequest

        if not upload:
            raise RagError("choose a .csv, .jsonl, .json or .parquet file first")
        path = upload if isinstance(upload, str) else upload.name
        request = SetRequest(
            dataset=str(path),
            question_field=question or "question",
            reference_field=reference or None,
            contexts_field=contexts or None,
        )
        return stored(request, password)

    @handled(4)
    def add_generated(size: float | None, password: str):
        from eval.service import SetRequest

        return stored(SetRequest(generate=int(size or 20)), password)

    @handled(6)
    def evaluate(set_id: Any, who: Any, password: str, progress=gr.Progress(track_tqdm=True)):  # noqa: B008
        check(password)
        from eval.report import delta_figure
        from eval.runner import compare, run_eval
        from eval.service import run_line

        chosen = chosen_set(set_id)
        if not who:  # the active versions
            run = run_eval(ctx, chosen)
            runs = store.runs(limit=200)
            figure, note = on_set(chosen, runs)
            return f"**Done.** {run_line(run)}", None, runs_table(runs), figure, gr.skip(), note
        version_id = int(who)
        decision, champion, candidate = compare(ctx, chosen, version_id)
        runs = store.runs(limit=200)
        figure, note = on_set(chosen, runs)
        return (
            decision_markdown(decision, champion, candidate),
            delta_figure(decision),
            runs_table(runs),
            figure,
            gr.update(value=version_id if decision.promote else None),
            note,
        )

    @handled(2)
    def drill(run_id: float | None, password: str):
        check(password)
        if not run_id:
            raise RagError("type a run id from the table first")
        samples = store.samples(int(run_id))
        names = sorted({m for s in samples for m in s.scores})
        rows = [
            [
                s.idx + 1,  # numbered from 1, as "Sample #" takes them
                s.user_input,
                one_line(s.response or "")[:200],
                *(_fmt(s.scores.get(m)) for m in names),
            ]
            for s in samples
        ]
        import pandas as pd

        return pd.DataFrame(rows, columns=["#", "question", "answer", *names]), ""

    @handled(1)
    def sample_detail(run_id: float | None, idx: float | None, password: str) -> str:
        check(password)
        if not run_id or idx is None:
            raise RagError("choose a run and a sample number")
        found = [s for s in store.samples(int(run_id)) if s.idx + 1 == int(idx)]
        if not found:
            raise RagError(f"run {int(run_id)} has no sample {int(idx)} (they are numbered from 1)")
        return sample_markdown(found[0])

    @handled(2)
    def compare_runs(champion: float | None, candidate: float | None, password: str):
        check(password)
        if not champion or not candidate:
            raise RagError("type the champion's and the candidate's run ids")
        from eval.report import delta_figure
        from eval.service import judge_runs

        decision = judge_runs(ctx, int(champion), int(candidate))
        champ, cand = store.run(int(champion)), store.run(int(candidate))
        return decision_markdown(decision, champ, cand), delta_figure(decision)

    @handled(3)
    def promote(
        version: float | None,
        password: str,
        confirmed: bool = True,
        progress=gr.Progress(track_tqdm=True),  # noqa: B008
    ):
        check(password)
        if not version:
            raise RagError("type the version id to promote")
        if not confirmed:  # cancelled in the confirmation dialog
            return gr.skip(), gr.skip(), gr.skip()
        from eval.service import promote as promote_version

        # An embedding version with its own collection is re-embedded first (blue/green).
        done = promote_version(ctx, int(version), "admin")
        event = done.event
        was = f"was v{event.previous_id}" if event.previous_id else "the first of its kind"
        note = (
            f"{event.kind} v{event.version_id} is active ({was}); the app answers with it from "
            "the next question."
        )
        if not done.approved:
            note += f" Promoted by hand: {done.verdict}. Roll back undoes it."
        # Roll back then undoes this promotion, not the last change of another kind.
        return note, versions_markdown(registry), event.kind

    @handled(2)
    def rollback(kind: str, password: str):
        check(password)
        from core.registry import RegistryError
        from eval.service import rollback as roll_back

        try:
            event = roll_back(ctx, kind, reason="admin")
        except RegistryError as exc:
            # Nothing to undo of this kind: when the last change was a promotion of another kind
            # (still in force), that is what the admin meant to undo.
            history = registry.history()
            last = history[-1] if history else None
            if (
                last is None
                or last.kind == kind
                or last.action != "promote"
                or getattr(registry.active(last.kind), "id", None) != last.version_id
            ):
                raise
            raise RagError(
                f"{exc}; the last change was to {last.kind} v{last.version_id}: choose the kind "
                f"{last.kind} to roll that back"
            ) from exc
        return (
            f"rolled back: {event.kind} v{event.version_id} is active again "
            f"(was v{event.previous_id})",
            versions_markdown(registry),
        )

    def build() -> None:
        judge_note = (
            f"The judge `{ctx.judge.model}` also scores the LLM metrics."
            if ctx.judge is not None
            else "No judge model is configured (RAG_EVAL__JUDGE__MODEL): the offline metrics are "
            "scored, and writing questions needs one."
        )
        with gr.Tab("Evaluate") as tab:
            password = gr.Textbox(
                label="Admin password", type="password", visible=admin_password is not None
            )
            note = gr.Markdown(elem_id="eval-note")
            gr.Markdown("### 1. An evaluation set")
            with gr.Row():
                set_id = gr.Dropdown(label="Evaluation set", choices=[], elem_id="eval-set")
                refresh_btn = gr.Button("Refresh", elem_id="eval-refresh", scale=0)
            added = gr.Markdown(elem_id="eval-added")
            with gr.Accordion("Add a set", open=False, elem_id="eval-add"):
                gr.Markdown(
                    "A golden set is JSONL with Ragas fields: `user_input`, and `reference`, "
                    "`reference_contexts` or `reference_sources` for what can be scored."
                )
                with gr.Row():
                    upload = gr.File(
                        label="JSONL golden set", file_types=[".jsonl"], elem_id="eval-upload"
                    )
                    upload_btn = gr.Button("Add the file", elem_id="eval-add-upload")
                with gr.Row():
                    feedback = gr.Radio(
                        list(FEEDBACK_CHOICES),
                        value="up",
                        label="Chat log turns rated",
                    )
                    size = gr.Number(label="How many", value=100, precision=0)
                    log_btn = gr.Button("Sample the chat log", elem_id="eval-add-log")
                with gr.Row():
                    data_file = gr.File(
                        label="Dataset file (for the datasets library)",
                        file_types=[".csv", ".jsonl", ".json", ".parquet"],
                    )
                    q_field = gr.Textbox(label="Question column", value="question")
                    r_field = gr.Textbox(label="Reference column", value="correct_answer")
                    c_field = gr.Textbox(label="Passage column", value="support")
                    data_btn = gr.Button("Add the dataset", elem_id="eval-add-dataset")
                with gr.Row():
                    generate = gr.Number(
                        label="Questions the judge writes from indexed passages",
                        value=20,
                        precision=0,
                        interactive=ctx.judge is not None,
                    )
                    gen_btn = gr.Button(
                        "Generate", interactive=ctx.judge is not None, elem_id="eval-generate"
                    )
            gr.Markdown("### 2. Evaluate\n" + judge_note)
            with gr.Row():
                who = gr.Dropdown(
                    label="Run", choices=[(ACTIVE, 0)], value=0, elem_id="eval-who", scale=3
                )
                evaluate_btn = gr.Button("Evaluate", variant="primary", elem_id="eval-run", scale=1)
            result = gr.Markdown(elem_id="eval-result")
            deltas = gr.Plot(label="Candidate − champion, with 95% intervals")
            gr.Markdown("### 3. Runs")
            runs = gr.Dataframe(
                headers=RUN_COLUMNS + list(SHOWN_METRICS),
                label="Evaluation runs (newest first)",
                interactive=False,
                elem_id="eval-runs",
            )
            plot = gr.Plot(label="Metric history on the chosen set")
            with gr.Row():
                run_id = gr.Number(label="Run id", value=None, precision=0, elem_id="eval-run-id")
                show = gr.Button("Show samples", elem_id="eval-show")
            samples = gr.Dataframe(
                headers=["#", "question", "answer"],
                label="Samples",
                interactive=False,
                elem_id="eval-samples",
            )
            with gr.Row():
                idx = gr.Number(
                    label="Sample #", value=None, precision=0, elem_id="eval-sample-idx"
                )
                detail_btn = gr.Button("Show sample", elem_id="eval-detail")
            detail = gr.Markdown(elem_id="eval-sample-detail")
            gr.Markdown("### 4. Compare two runs of one set (the gate)")
            with gr.Row():
                champ = gr.Number(
                    label="Champion run", value=None, precision=0, elem_id="eval-champion"
                )
                cand = gr.Number(
                    label="Candidate run", value=None, precision=0, elem_id="eval-candidate"
                )
                cmp_btn = gr.Button("Compare", elem_id="eval-compare")
            decision = gr.Markdown(elem_id="eval-decision")
            compared = gr.Plot(label="Deltas with 95% intervals")
            gr.Markdown("### 5. Promote or roll back")
            versions = gr.Markdown(elem_id="eval-versions")
            with gr.Row():
                version = gr.Number(
                    label="Version id", value=None, precision=0, elem_id="eval-version"
                )
                promote_btn = gr.Button("Promote", elem_id="eval-promote")
                # Whether the admin confirmed in the browser's dialog (an API call is confirmed by
                # making it).
                promote_confirmed = gr.Checkbox(value=True, visible=False)
                kind = gr.Radio(["chat", "embedding", "reranker"], value="chat", label="Kind")
                rollback_btn = gr.Button("Roll back", elem_id="eval-rollback")
            registry_note = gr.Markdown(elem_id="eval-registry-note")

            shown = [set_id, who, runs, plot, versions, note]
            tab.select(on_open, [password, set_id], shown, api_visibility="private")
            refresh_btn.click(refresh, [password, set_id], shown, api_name="refresh")
            set_id.change(on_set, set_id, [plot, note], api_visibility="private")
            adding = [set_id, added, plot, note]
            upload_btn.click(add_upload, [upload, password], adding, api_name="add_set")
            log_btn.click(
                add_log_sample, [feedback, size, password], adding, api_visibility="private"
            )
            data_btn.click(
                add_dataset,
                [data_file, q_field, r_field, c_field, password],
                adding,
                api_visibility="private",
            )
            gen_btn.click(add_generated, [generate, password], adding, api_visibility="private")
            evaluate_btn.click(
                evaluate,
                [set_id, who, password],
                [result, deltas, runs, plot, version, note],
                api_name="evaluate",
            )
            show.click(drill, [run_id, password], [samples, detail], api_name="drill")
            detail_btn.click(
                sample_detail, [run_id, idx, password], detail, api_name="sample_detail"
            )
            cmp_btn.click(
                compare_runs, [champ, cand, password], [decision, compared], api_name="compare"
            )
            promote_btn.click(
                promote,
                [version, password, promote_confirmed],
                [registry_note, versions, kind],
                api_name="promote",
                # A promotion by hand skips the gate: ask first (cancelled, nothing happens).
                js="(version, password, ok) => [version, password, !version || confirm("
                "'Promote this version by hand? The gate makes a candidate active only when it "
                "wins on an evaluation set; promoting by hand skips that check. Roll back undoes "
                "it.')]",
            )
            rollback_btn.click(
                rollback, [kind, password], [registry_note, versions], api_name="rollback"
            )

    return build
