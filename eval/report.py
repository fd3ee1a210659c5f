"""Reports: a self-contained HTML page per run (plotly inlined) with the metric table and NaN
counts, the metric history on the same set, the candidate-vs-champion deltas with their
intervals when the gate judged the run, and the worst samples; the figures are shared with the
admin tab."""

from __future__ import annotations

import html
import math
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from core.evalstore import EvalRun, EvalStore, GateDecision, ScoredSample
    from eval.runner import EvalContext

HISTORY_METRICS = (
    "semantic_similarity",
    "answer_contains_reference",
    "rouge_l",
    "hit_at_5",
    "mrr_at_10",
    "context_recall",
    "faithfulness",
)


def history_figure(runs: list[EvalRun], metrics: tuple[str, ...] = HISTORY_METRICS) -> go.Figure:
    """Mean of each metric over time, one line per metric, runs of one set (oldest first)."""
    import plotly.graph_objects as go

    runs = sorted((r for r in runs if r.status == "done"), key=lambda r: r.started_at)
    fig = go.Figure()
    for name in metrics:
        points = [(r, r.summary[name]) for r in runs if name in r.summary]
        points = [(r, m) for r, m in points if m.mean is not None]
        if not points:
            continue
        fig.add_trace(
            go.Scatter(
                x=[r.started_at for r, _ in points],
                y=[m.mean for _, m in points],
                mode="lines+markers",
                name=name,
                text=[f"run {r.id} · {r.versions} · nan {m.nan}" for r, m in points],
                hovertemplate="%{text}<br>%{y:.3f}<extra>" + name + "</extra>",
            )
        )
    fig.update_layout(
        title="Metric history on this evaluation set",
        xaxis_title="run started",
        yaxis_title="mean over measured samples",
        height=380,
        margin={"l": 50, "r": 20, "t": 50, "b": 40},
    )
    values = [y for trace in fig.data for y in trace.y]
    if values and all(0.0 <= y <= 1.0 for y in values):
        fig.update_yaxes(range=[0, 1.05])  # shares and scores: their own scale, not plotly's
    times = {x for trace in fig.data for x in trace.x}
    if len(times) == 1:  # one run: an hour either side, not milliseconds around one point
        (t,) = times
        fig.update_xaxes(range=[t - timedelta(hours=1), t + timedelta(hours=1)])
    return fig


def delta_figure(decision: GateDecision) -> go.Figure:
    """Candidate minus champion per metric with the bootstrap interval as error bars."""
    import plotly.graph_objects as go

    rows = [
        v for v in decision.comparison.values() if v.get("delta") is not None and v.get("paired")
    ]
    rows.sort(key=lambda v: v["metric"])
    primary = decision.policy.get("primary_metric")
    fig = go.Figure(
        go.Bar(
            x=[v["delta"] for v in rows],
            y=[v["metric"] for v in rows],
            orientation="h",
            marker_color=[
                "#2563eb" if v["metric"] == primary else ("#16a34a" if v["low"] > 0 else "#9ca3af")
                for v in rows
            ],
            error_x={
                "type": "data",
                "symmetric": False,
                "array": [v["high"] - v["delta"] for v in rows],
                "arrayminus": [v["delta"] - v["low"] for v in rows],
            },
            text=[f"n={v['paired']}, nan {v['nan_share']:.0%}" for v in rows],
            hovertemplate="%{y}: %{x:+.4f}<br>%{text}<extra></extra>",
        )
    )
    verdict = "promote" if decision.promote else "reject"
    fig.update_layout(
        title=f"Candidate − champion (95% bootstrap intervals): {verdict}",
        xaxis_title="mean per-sample delta",
        height=max(260, 32 * len(rows) + 100),
        margin={"l": 170, "r": 20, "t": 50, "b": 40},
    )
    fig.add_vline(x=0, line_color="#111827", line_width=1)
    return fig


def worst_samples(samples: list[ScoredSample], metric: str, n: int = 10) -> list[ScoredSample]:
    """The n samples scoring lowest on `metric` (unmeasured ones left out)."""
    measured = [s for s in samples if _ok(s.scores.get(metric))]
    return sorted(measured, key=lambda s: s.scores[metric])[:n]


def _ok(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else f"{value:.3f}"
    return "" if value is None else str(value)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def decision_for(store: EvalStore, run_id: int) -> GateDecision | None:
    for d in store.decisions(limit=1000):
        if run_id in (d.candidate_run_id, d.champion_run_id):
            return d
    return None


def build_report(ctx: EvalContext, run_id: int) -> str:
    """The HTML of run `run_id`'s report; plotly is inlined so the file stands alone."""
    store = ctx.store
    run = store.run(run_id)
    samples = store.samples(run_id)
    set_name, _, _ = store.load_set(run.set_id)
    history = [r for r in store.runs(limit=500) if r.set_id == run.set_id]
    decision = decision_for(store, run_id)
    primary = (decision.policy.get("primary_metric") if decision else None) or (
        ctx.settings.eval.primary_metric
    )
    figures = [history_figure(history)]
    if decision is not None:
        figures.append(delta_figure(decision))
    plots = []
    for i, fig in enumerate(figures):
        plots.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0)))
    reasons_by_metric: dict[str, dict[str, int]] = {}
    for s in samples:
        for metric, reason in s.nan_reasons.items():
            counts = reasons_by_metric.setdefault(metric, {})
            counts[reason] = counts.get(reason, 0) + 1
    metric_rows = [
        [
            name,
            m.mean,
            m.measured,
            m.nan,
            "; ".join(f"{r} ×{c}" for r, c in reasons_by_metric.get(name, {}).items()),
        ]
        for name, m in sorted(run.summary.items())
    ]
    worst = worst_samples(samples, primary)
    worst_html = "".join(
        "<details><summary>"
        + html.escape(f"#{s.idx + 1} {primary}={_fmt(s.scores[primary])}: {s.user_input}")
        + "</summary>"
        + f"<p><b>Answer</b></p><pre>{html.escape(s.response or '')}</pre>"
        + f"<p><b>Reference</b>: {html.escape(s.reference or '—')}</p>"
        + "<p><b>Retrieved</b></p><ol>"
        + "".join(
            f"<li><code>{html.escape(src)}</code> {html.escape(text[:400])}</li>"
            for text, src in zip(s.retrieved_contexts, s.retrieved_sources, strict=False)
        )
        + "</ol>"
        + _table(["metric", "score"], [[k, v] for k, v in sorted(s.scores.items())])
        + "</details>"
        for s in worst
    )
    decision_html = ""
    if decision is not None:
        verdict = "PROMOTE" if decision.promote else "REJECT"
        decision_html = (
            f"<h2>Gate decision {decision.id}: {verdict}"
            f"{' (applied)' if decision.applied else ''}</h2><ul>"
            + "".join(f"<li>{html.escape(r)}</li>" for r in decision.reasons)
            + "</ul>"
            + f"<p>champion run {decision.champion_run_id}, candidate run "
            f"{decision.candidate_run_id} (v{decision.candidate_version_id})</p>"
        )
    meta = _table(
        [
            "run",
            "status",
            "chat",
            "embedding",
            "reranker",
            "set",
            "set hash",
            "judge",
            "tokens",
            "seconds",
        ],
        [
            [
                run.id,
                run.status,
                f"v{run.chat_version_id}",
                f"v{run.embedding_version_id}",
                run.reranker_cell,
                set_name,
                run.set_hash[:16],
                run.judge_model or "none (offline metrics only)",
                f"{run.prompt_tokens}+{run.completion_tokens}",
                run.duration_s,
            ]
        ],
    )
    settings = html.escape(_settings_text(run.settings))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Eval run {run.id}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #111827; }}
table {{ border-collapse: collapse; margin: .5rem 0 1rem; }}
td, th {{ border: 1px solid #d1d5db; padding: .25rem .5rem; text-align: left; }}
td {{ vertical-align: top; }}
th {{ background: #f3f4f6; }} pre {{ white-space: pre-wrap; background: #f9fafb; padding: .5rem; }}
details {{ margin: .25rem 0; }} summary {{ cursor: pointer; }}
</style></head><body>
<h1>Evaluation run {run.id}</h1>
{meta}
{decision_html}
<h2>Metrics</h2>
<p>Means over measured samples; NaN is "not measured" and is counted, never averaged in.</p>
{_table(["metric", "mean", "measured", "NaN", "why NaN"], metric_rows)}
<h2>Plots</h2>
{"".join(plots)}
<h2>Worst samples by {html.escape(primary)}</h2>
{worst_html or "<p>No sample measured this metric.</p>"}
<h2>Settings</h2><details><summary>as evaluated</summary><pre>{settings}</pre></details>
</body></html>
"""


def _settings_text(settings: dict[str, Any]) -> str:
    import json

    return json.dumps(settings, indent=2, sort_keys=True, default=str)


def write_report(ctx: EvalContext, run_id: int, out: Path) -> Path:
    """Write run `run_id`'s report to `out`; returns the path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(build_report(ctx, run_id), encoding="utf-8")
    return out
