"""Numenta Anomaly Benchmark (NAB) scoring, written from its definition.

Lavin & Ahmad, "Evaluating Real-time Anomaly Detection Algorithms - the Numenta Anomaly Benchmark", ICMLA
2015, with the semantics of the NAB repository's threshold sweep (NAB v1.1):

* Each series carries labelled anomaly *windows* (inclusive index ranges). The first
  ``min(floor(0.15 * n), 0.15 * 5000)`` points of a series are a probation period: they are not scored.
* A point with ``score >= threshold`` is a detection.
* A window is worth the reward of its **earliest** detection: with the window spanning points ``s..e``
  (width ``w = e - s + 1``), a detection at ``i`` sits at relative position ``p = -(e - i + 1) / w`` (``-1``
  at the left edge) and earns ``tp_weight * sigma(p) / sigma(-1)``, where
  ``sigma(p) = 2 / (1 + exp(5 p)) - 1`` (``-1`` from ``p >= 3`` on). Later detections inside the same window
  add nothing. A window without any detection costs ``fn_weight``.
* A detection outside every window is a false positive. Before the first window of the series it costs the
  full ``fp_weight``; after a window ``s..e`` it costs ``-fp_weight * sigma((i - e) / (w - 1))``: detections
  just after a window cost little, from three window widths on they cost the full weight.
* Raw score ``S`` = sum over the corpus. Normalised: ``100 * (S - S_null) / (S_perfect - S_null)`` with
  ``S_null = -fn_weight * windows`` (a detector that never fires) and ``S_perfect = tp_weight * windows``.
* One threshold for the whole corpus per profile: the one maximising ``S`` over every distinct score
  (an exact sweep, like NAB's optimiser).

>>> s = SeriesScores("toy", [0.0] * 5 + [0.3] + [0.0] * 4 + [0.2, 0.9, 0.1, 0.0], [(10, 13)], probation=0)
>>> r = score_corpus([s], STANDARD)
>>> round(r.threshold, 2), r.detected_windows, r.false_positives, round(r.raw, 4), round(r.normalized, 2)
(0.9, 1, 0, 0.967, 98.35)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "PROFILES",
    "REWARD_LOW_FN",
    "REWARD_LOW_FP",
    "STANDARD",
    "CorpusResult",
    "Profile",
    "SeriesScores",
    "point_weights",
    "probation_length",
    "scaled_sigmoid",
    "score_all_profiles",
    "score_corpus",
    "sweep_thresholds",
    "windows_to_indices",
]


@dataclass(frozen=True)
class Profile:
    """NAB application profile: weights of a true positive, a missed window and a false positive."""

    name: str
    tp_weight: float
    fn_weight: float
    fp_weight: float


STANDARD = Profile("standard", 1.0, 1.0, 0.11)
REWARD_LOW_FP = Profile("reward_low_FP", 1.0, 1.0, 0.22)
REWARD_LOW_FN = Profile("reward_low_FN", 1.0, 2.0, 0.11)
PROFILES: Mapping[str, Profile] = {p.name: p for p in (STANDARD, REWARD_LOW_FP, REWARD_LOW_FN)}


def scaled_sigmoid(position: float) -> float:
    """NAB's reward curve: ``2 / (1 + exp(5 * position)) - 1``, and ``-1`` from ``position >= 3`` on.

    >>> round(scaled_sigmoid(-1.0), 5), scaled_sigmoid(0.0), round(scaled_sigmoid(1.0), 5)
    (0.98661, 0.0, -0.98661)
    >>> scaled_sigmoid(3.0)
    -1.0
    """
    if position >= 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


_MAX_TP = scaled_sigmoid(-1.0)


def probation_length(n: int, fraction: float = 0.15) -> int:
    """Number of leading points NAB leaves unscored: ``min(floor(fraction * n), fraction * 5000)``.

    >>> probation_length(4032), probation_length(1000), probation_length(6000)
    (604, 150, 750)
    """
    return int(min(math.floor(fraction * n), math.ceil(fraction * 5000)))


def windows_to_indices(timestamps: Sequence | np.ndarray, windows: Iterable[tuple]) -> list[tuple[int, int]]:
    """Turn ``(start, end)`` timestamp limits into inclusive index ranges ``start <= t <= end``.

    ``timestamps`` must be sorted and comparable with the limits (e.g. both ``numpy.datetime64``). Windows
    that contain no point are dropped.

    >>> ts = np.arange("2024-01-01T00:00", "2024-01-01T00:10", dtype="datetime64[m]")
    >>> windows_to_indices(ts, [(np.datetime64("2024-01-01T00:03"), np.datetime64("2024-01-01T00:05:30"))])
    [(3, 5)]
    """
    ts = np.asarray(timestamps)
    out = []
    for start, end in windows:
        lo = int(np.searchsorted(ts, start, side="left"))
        hi = int(np.searchsorted(ts, end, side="right")) - 1
        if hi >= lo:
            out.append((lo, hi))
    return out


@dataclass
class SeriesScores:
    """A detector's scores on one series with its labelled windows (inclusive index ranges, sorted).

    ``probation`` is the number of leading unscored points; ``None`` means NAB's default for the length.
    """

    name: str
    scores: np.ndarray
    windows: list[tuple[int, int]]
    probation: int | None = None

    def __post_init__(self) -> None:
        self.scores = np.asarray(self.scores, dtype=float)
        self.windows = sorted((int(a), int(b)) for a, b in self.windows)
        if self.probation is None:
            self.probation = probation_length(len(self.scores))
        for (_, e), (s, _) in zip(self.windows, self.windows[1:], strict=False):
            if s <= e:
                raise ValueError(f"{self.name}: overlapping windows")
        if self.windows and (self.windows[0][0] < 0 or self.windows[-1][1] >= len(self.scores)):
            raise ValueError(f"{self.name}: window outside the series")


def point_weights(
    n: int, windows: Sequence[tuple[int, int]], probation: int, profile: Profile
) -> tuple[np.ndarray, np.ndarray]:
    """Per-point reward of a detection and the window each point belongs to.

    Returns ``(weight, window_id)``: ``window_id`` is the index of the window holding the point, ``-1``
    outside any window, ``-2`` in the probation period (not scored). Inside a window ``weight`` is the
    true-positive reward of a detection there; outside it is the (negative) false-positive cost.

    >>> w, g = point_weights(8, [(3, 4)], 0, STANDARD)
    >>> np.round(w, 3).tolist(), g.tolist()
    ([-0.11, -0.11, -0.11, 1.0, 0.86, -0.109, -0.11, -0.11], [-1, -1, -1, 0, 0, -1, -1, -1])
    """
    weight = np.empty(n, dtype=float)
    wid = np.full(n, -1, dtype=np.int64)
    prev: tuple[int, int] | None = None
    bounds = list(windows)
    k = 0
    for i in range(n):
        if k < len(bounds) and bounds[k][0] <= i <= bounds[k][1]:
            s, e = bounds[k]
            width = e - s + 1
            weight[i] = profile.tp_weight * scaled_sigmoid(-(e - i + 1) / width) / _MAX_TP
            wid[i] = k
            if i == e:
                prev = (s, e)
                k += 1
        else:
            if prev is None:
                weight[i] = -profile.fp_weight
            else:
                width = prev[1] - prev[0] + 1
                pos = (i - prev[1]) / (width - 1) if width > 1 else 3.0
                weight[i] = profile.fp_weight * scaled_sigmoid(pos)
        if i < probation:
            wid[i] = -2
    return weight, wid


@dataclass(frozen=True)
class CorpusResult:
    """Result of one profile on a corpus at the chosen threshold."""

    profile: Profile
    threshold: float
    raw: float
    null: float
    perfect: float
    windows: int
    detected_windows: int
    false_positives: int
    per_series: dict[str, float] = field(default_factory=dict)

    @property
    def normalized(self) -> float:
        """``100 * (S - S_null) / (S_perfect - S_null)``."""
        den = self.perfect - self.null
        return 100.0 * (self.raw - self.null) / den if den else 0.0


def _flatten(series: Sequence[SeriesScores], profile: Profile):
    scores, weights, groups, owners = [], [], [], []
    n_windows = 0
    for j, s in enumerate(series):
        w, g = point_weights(len(s.scores), s.windows, int(s.probation or 0), profile)
        keep = g != -2
        gg = g[keep]
        counted = np.unique(gg[gg >= 0])
        remap = np.full(len(s.windows) + 1, -1, dtype=np.int64)
        remap[counted] = np.arange(n_windows, n_windows + len(counted))
        gg = remap[gg]  # -1 maps to remap[-1] == -1
        n_windows += len(counted)
        scores.append(s.scores[keep])
        weights.append(w[keep])
        groups.append(gg)
        owners.append(np.full(int(keep.sum()), j, dtype=np.int64))
    cat = np.concatenate
    if not series:
        empty = np.zeros(0)
        return empty, empty, empty.astype(np.int64), empty.astype(np.int64), 0
    return cat(scores), cat(weights), cat(groups), cat(owners), n_windows


def sweep_thresholds(series: Sequence[SeriesScores], profile: Profile) -> tuple[np.ndarray, np.ndarray]:
    """Raw corpus score for every candidate threshold (exact sweep over all distinct scores).

    Returns ``(thresholds, raw_scores)`` sorted by decreasing threshold; the first entry is ``+inf`` (no
    detection at all, the null score). NaN scores never count as detections.

    >>> s = SeriesScores("toy", [0.1, 0.5, 0.9, 0.3], [(2, 2)], probation=0)
    >>> th, raw = sweep_thresholds([s], STANDARD)
    >>> th.tolist(), np.round(raw, 3).tolist()
    ([inf, 0.9, 0.5, 0.3, 0.1], [-1.0, 1.0, 0.89, 0.78, 0.67])
    """
    scores, weights, groups, _, n_windows = _flatten(series, profile)
    ok = ~np.isnan(scores)
    scores, weights, groups = scores[ok], weights[ok], groups[ok]
    order = np.argsort(-scores, kind="stable")
    s_sorted = scores[order]
    w_sorted = weights[order]
    g_sorted = groups[order]
    inc = np.where(g_sorted < 0, w_sorted, 0.0)
    # Inside windows: the window's value is the best (earliest) detection so far, starting at -fn_weight.
    in_win = np.flatnonzero(g_sorted >= 0)
    if in_win.size:
        g = g_sorted[in_win]
        w = w_sorted[in_win]
        by_group = np.lexsort((in_win, g))  # group-major, sweep order within a group
        gs, ws, pos = g[by_group], w[by_group], in_win[by_group]
        span = 2.0 * (profile.tp_weight + profile.fn_weight) + 1.0
        run = np.maximum.accumulate(ws + gs * span) - gs * span
        prev = np.empty_like(run)
        prev[1:] = run[:-1]
        first = np.ones(len(gs), dtype=bool)
        first[1:] = gs[1:] != gs[:-1]
        prev[first] = -profile.fn_weight
        inc[pos] = run - prev
    total = -profile.fn_weight * n_windows + np.cumsum(inc)
    # A threshold equal to a score detects every point with that score: keep the last index of each tie run.
    last = np.ones(len(s_sorted), dtype=bool)
    last[:-1] = s_sorted[:-1] != s_sorted[1:]
    thresholds = np.concatenate(([np.inf], s_sorted[last]))
    raw = np.concatenate(([-profile.fn_weight * n_windows], total[last]))
    return thresholds, raw


def _score_at(series: Sequence[SeriesScores], profile: Profile, threshold: float):
    raw_total = 0.0
    detected = fps = n_windows = 0
    per_series = {}
    for s in series:
        w, g = point_weights(len(s.scores), s.windows, int(s.probation or 0), profile)
        det = (s.scores >= threshold) & (g != -2)
        raw = float(w[det & (g == -1)].sum())
        fps += int((det & (g == -1)).sum())
        for k in np.unique(g[g >= 0]):
            n_windows += 1
            hit = np.flatnonzero(det & (g == k))
            if hit.size:
                detected += 1
                raw += float(w[hit[0]])
            else:
                raw -= profile.fn_weight
        per_series[s.name] = raw
        raw_total += raw
    return raw_total, detected, fps, n_windows, per_series


def score_corpus(
    series: Sequence[SeriesScores], profile: Profile = STANDARD, threshold: float | None = None
) -> CorpusResult:
    """Score a corpus for one profile; ``threshold=None`` picks the corpus-wide optimum (highest on ties)."""
    if threshold is None:
        thresholds, raw = sweep_thresholds(series, profile)
        threshold = float(thresholds[int(np.argmax(raw))])
    raw_total, detected, fps, n_windows, per_series = _score_at(series, profile, threshold)
    return CorpusResult(
        profile=profile,
        threshold=threshold,
        raw=raw_total,
        null=-profile.fn_weight * n_windows,
        perfect=profile.tp_weight * n_windows,
        windows=n_windows,
        detected_windows=detected,
        false_positives=fps,
        per_series=per_series,
    )


def score_all_profiles(
    series: Sequence[SeriesScores], profiles: Iterable[Profile] = PROFILES.values()
) -> dict[str, CorpusResult]:
    """Score the corpus for every profile, each with its own optimal threshold."""
    return {p.name: score_corpus(series, p) for p in profiles}
