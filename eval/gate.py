"""Champion vs challenger: paired bootstrap intervals of each metric's per-sample delta (seeded,
reproducible), and the promotion rule as a pure function of those numbers and the policy."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, Field

from core.evalstore import SET_GAPS, ScoredSample


class GatePolicy(BaseModel):
    """What a candidate must show to replace the champion (defaults come from EvalSettings)."""

    primary_metric: str = "semantic_similarity"
    margin: float = Field(default=0.01, ge=0)
    guard_metrics: list[str] = Field(default_factory=lambda: ["hit_at_5", "context_recall"])
    guard_tolerance: float = Field(default=0.02, ge=0)
    max_nan_share: float = Field(default=0.1, ge=0, le=1)
    min_samples: int = Field(default=20, ge=1)
    resamples: int = Field(default=2000, ge=100)
    confidence: float = Field(default=0.95, gt=0, lt=1)
    seed: int = 0


class MetricDelta(BaseModel):
    """Candidate minus champion on one metric, over the samples both measured."""

    metric: str
    total: int = Field(description="Samples in the set.")
    paired: int = Field(description="Samples measured on both sides.")
    nan_share: float
    champion_mean: float | None
    candidate_mean: float | None
    delta: float | None
    low: float | None
    high: float | None


def bootstrap_interval(
    deltas: Sequence[float], resamples: int, confidence: float, seed: int
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `deltas` (resampling samples, paired)."""
    values = np.asarray(deltas, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def _measured(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


def compare_metric(
    metric: str,
    champion: Sequence[ScoredSample],
    candidate: Sequence[ScoredSample],
    policy: GatePolicy,
) -> MetricDelta:
    """Pair the two runs' samples by position in the set and bootstrap the mean delta."""
    champ = {s.idx: s.scores.get(metric) for s in champion}
    cand = {s.idx: s.scores.get(metric) for s in candidate}
    # A sample the set cannot measure this metric on (no reference, no gold passages) is left out
    # on both sides: a set that gives gold passages to some questions only (a chat-log sample
    # whose rated-up turns carry the passages they cited) measures retrieval on those.
    gaps = {
        s.idx
        for s in [*champion, *candidate]
        if not _measured(s.scores.get(metric)) and s.nan_reasons.get(metric) in SET_GAPS
    }
    champ = {i: v for i, v in champ.items() if i not in gaps}
    cand = {i: v for i, v in cand.items() if i not in gaps}
    total = len(set(champ) | set(cand))
    pairs = [
        (champ[i], cand[i])
        for i in sorted(set(champ) & set(cand))
        if _measured(champ[i]) and _measured(cand[i])
    ]
    nan_share = (total - len(pairs)) / total if total else 1.0
    if not pairs:
        return MetricDelta(
            metric=metric,
            total=total,
            paired=0,
            nan_share=nan_share,
            champion_mean=None,
            candidate_mean=None,
            delta=None,
            low=None,
            high=None,
        )
    a = np.asarray([p[0] for p in pairs])
    b = np.asarray([p[1] for p in pairs])
    low, high = bootstrap_interval(b - a, policy.resamples, policy.confidence, policy.seed)
    return MetricDelta(
        metric=metric,
        total=total,
        paired=len(pairs),
        nan_share=nan_share,
        champion_mean=float(a.mean()),
        candidate_mean=float(b.mean()),
        delta=float((b - a).mean()),
        low=low,
        high=high,
    )


def compare_runs(
    champion: Sequence[ScoredSample], candidate: Sequence[ScoredSample], policy: GatePolicy
) -> dict[str, MetricDelta]:
    """Every metric either run measured, compared."""
    names = sorted({m for s in [*champion, *candidate] for m in s.scores})
    return {m: compare_metric(m, champion, candidate, policy) for m in names}


def decide_promotion(
    comparison: dict[str, MetricDelta], policy: GatePolicy
) -> tuple[bool, list[str]]:
    """Promote only when: the primary metric was measured on at least `min_samples` pairs with a
    NaN share at most `max_nan_share`; its mean delta is at least `margin` and the interval's lower
    bound is above zero; and no guard metric's mean delta falls below -`guard_tolerance`.
    Returns the decision and every reason (the failing ones, or why it passed)."""
    reasons: list[str] = []
    ok = True
    primary = comparison.get(policy.primary_metric)
    pct = round(policy.confidence * 100)
    if primary is None or primary.paired == 0:
        return False, [f"primary metric {policy.primary_metric} was not measured on this set"]
    if primary.paired < policy.min_samples:
        ok = False
        reasons.append(
            f"too few samples: {primary.paired} measured pairs of {policy.primary_metric}, "
            f"need {policy.min_samples}"
        )
    if primary.nan_share > policy.max_nan_share:
        ok = False
        reasons.append(
            f"too many NaNs: {primary.nan_share:.0%} of {policy.primary_metric} not measured, "
            f"limit {policy.max_nan_share:.0%}"
        )
    span = f"{primary.delta:+.4f} [{pct}% CI {primary.low:+.4f}, {primary.high:+.4f}]"
    if primary.delta < policy.margin:
        ok = False
        reasons.append(
            f"{policy.primary_metric} {span}: improvement below the margin {policy.margin:.4f}"
        )
    elif primary.low <= 0:
        ok = False
        reasons.append(f"{policy.primary_metric} {span}: the interval includes zero (noise)")
    else:
        reasons.append(f"{policy.primary_metric} {span}: a real improvement")
    for name in policy.guard_metrics:
        if name == policy.primary_metric:
            continue
        guard = comparison.get(name)
        if guard is None or guard.paired == 0:
            reasons.append(f"guard {name}: not measured on this set (skipped)")
            continue
        if guard.nan_share > policy.max_nan_share:
            ok = False
            reasons.append(
                f"guard {name}: {guard.nan_share:.0%} not measured, limit "
                f"{policy.max_nan_share:.0%}"
            )
        elif guard.delta < -policy.guard_tolerance:
            ok = False
            reasons.append(
                f"guard {name} regressed {guard.delta:+.4f} [{pct}% CI {guard.low:+.4f}, "
                f"{guard.high:+.4f}], tolerance {policy.guard_tolerance:.4f}"
            )
        else:
            reasons.append(f"guard {name} {guard.delta:+.4f}: within tolerance")
    return ok, reasons
