"""NAB scoring: hand-computed cases, the exact threshold sweep, and the published rolling z-score anchor."""

from __future__ import annotations

import csv
import json
import math
from collections import deque
from pathlib import Path

import numpy as np
import pytest

from streamimb.evaluation.nab import (
    PROFILES,
    REWARD_LOW_FN,
    REWARD_LOW_FP,
    STANDARD,
    Profile,
    SeriesScores,
    point_weights,
    probation_length,
    scaled_sigmoid,
    score_all_profiles,
    score_corpus,
    sweep_thresholds,
    windows_to_indices,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nab"


def sig(p: float) -> float:
    """The scaled sigmoid written out independently: 2 * logistic(-5 p) - 1."""
    return 2.0 / (1.0 + math.exp(5.0 * p)) - 1.0


MAX_TP = sig(-1.0)


def test_profiles_match_nab():
    assert (STANDARD.tp_weight, STANDARD.fn_weight, STANDARD.fp_weight) == (1.0, 1.0, 0.11)
    assert (REWARD_LOW_FP.tp_weight, REWARD_LOW_FP.fn_weight, REWARD_LOW_FP.fp_weight) == (1.0, 1.0, 0.22)
    assert (REWARD_LOW_FN.tp_weight, REWARD_LOW_FN.fn_weight, REWARD_LOW_FN.fp_weight) == (1.0, 2.0, 0.11)
    assert set(PROFILES) == {"standard", "reward_low_FP", "reward_low_FN"}


def test_scaled_sigmoid_reference_points():
    assert scaled_sigmoid(-1.0) == pytest.approx(0.98661, abs=1e-5)
    assert scaled_sigmoid(-0.5) == pytest.approx(0.84828, abs=1e-5)
    assert scaled_sigmoid(0.0) == 0.0
    assert scaled_sigmoid(1.0) == pytest.approx(-0.98661, abs=1e-5)
    assert scaled_sigmoid(2.999) > -1.0
    assert scaled_sigmoid(3.0) == -1.0 and scaled_sigmoid(10.0) == -1.0


def test_probation_is_fifteen_percent_capped_at_750():
    assert probation_length(4032) == 604
    assert probation_length(1243) == 186
    assert probation_length(5000) == 750
    assert probation_length(100_000) == 750
    assert probation_length(0) == 0


def test_detection_at_window_start_is_perfect():
    scores = np.zeros(20)
    scores[10] = 1.0
    r = score_corpus([SeriesScores("s", scores, [(10, 13)], probation=0)], STANDARD)
    assert r.raw == pytest.approx(1.0)
    assert (r.null, r.perfect, r.normalized) == (-1.0, 1.0, pytest.approx(100.0))
    assert (r.detected_windows, r.false_positives, r.threshold) == (1, 0, 1.0)


def test_later_detection_earns_the_scaled_sigmoid_of_its_position():
    # Window 10..13 (width 4); a detection at index 12 sits at -(13 - 12 + 1) / 4 = -0.5.
    scores = np.zeros(20)
    scores[12] = 1.0
    scores[13] = 1.0  # later detections in the same window add nothing
    r = score_corpus([SeriesScores("s", scores, [(10, 13)], probation=0)], STANDARD, threshold=1.0)
    assert r.raw == pytest.approx(sig(-0.5) / MAX_TP)
    # The last point of the window: position -1/4.
    scores = np.zeros(20)
    scores[13] = 1.0
    r = score_corpus([SeriesScores("s", scores, [(10, 13)], probation=0)], STANDARD, threshold=1.0)
    assert r.raw == pytest.approx(sig(-0.25) / MAX_TP)


def test_false_positive_costs():
    # Before the first window: full fp weight. After window 10..14 (width 5): weight * sigma((i - 14) / 4).
    scores = np.zeros(40)
    scores[[3, 10, 16, 22, 35]] = 1.0
    s = SeriesScores("s", scores, [(10, 14)], probation=0)
    r = score_corpus([s], STANDARD, threshold=1.0)
    expected = 1.0 - 0.11 + 0.11 * (sig(2 / 4) + sig(8 / 4) + sig(21 / 4))
    assert r.raw == pytest.approx(expected)
    assert sig(21 / 4) != -1.0 and scaled_sigmoid(21 / 4) == -1.0  # NAB clips from 3 window widths on
    assert r.false_positives == 4
    low_fp = score_corpus([s], REWARD_LOW_FP, threshold=1.0)
    assert low_fp.raw == pytest.approx(1.0 - 0.22 + 0.22 * (sig(0.5) + sig(2.0) - 1.0))


def test_missed_windows_and_profiles():
    scores = np.zeros(200)
    scores[5] = 1.0  # one FP before both windows, both windows missed
    s = SeriesScores("s", scores, [(10, 12), (20, 22)], probation=0)
    r = score_corpus([s], STANDARD, threshold=1.0)
    assert r.raw == pytest.approx(-2.0 - 0.11)
    assert r.normalized == pytest.approx(100 * (-0.11) / 4)
    fn = score_corpus([s], REWARD_LOW_FN, threshold=1.0)
    assert (fn.raw, fn.null, fn.perfect) == (pytest.approx(-4.11), -4.0, 2.0)
    assert fn.normalized == pytest.approx(100 * (-0.11) / 6)
    # The optimum is to never fire: the null score, normalised to 0.
    best = score_corpus([s], STANDARD)
    assert best.threshold == math.inf and best.normalized == 0.0


def test_probation_points_are_not_scored():
    scores = np.zeros(100)
    scores[3] = 5.0  # inside the probation period (15 points): ignored
    scores[50] = 5.0
    s = SeriesScores("s", scores, [(50, 55)])
    assert s.probation == 15
    r = score_corpus([s], STANDARD, threshold=5.0)
    assert (r.raw, r.false_positives) == (pytest.approx(1.0), 0)


def test_window_partly_in_probation_counts_only_its_scored_points():
    weights, groups = point_weights(10, [(2, 5)], 4, STANDARD)
    assert groups.tolist() == [-2, -2, -2, -2, 0, 0, -1, -1, -1, -1]
    assert weights[4] == pytest.approx(sig(-2 / 4) / MAX_TP)


def test_threshold_is_one_for_the_whole_corpus():
    # Series a is best alone at threshold 0.9 and b at 0.5, but 0.5 would add a costly FP run to a.
    a = np.zeros(50)
    a[20] = 0.9
    a[28:50] = 0.6  # 22 FPs at 0.6, three window widths or more after the window: full cost each
    b = np.zeros(50)
    b[25] = 0.5
    sa = SeriesScores("a", a, [(20, 22)], probation=0)
    sb = SeriesScores("b", b, [(25, 27)], probation=0)
    r = score_corpus([sa, sb], STANDARD)
    assert r.threshold == 0.9
    assert r.raw == pytest.approx(1.0 - 1.0)
    assert r.per_series == {"a": pytest.approx(1.0), "b": pytest.approx(-1.0)}
    lower = score_corpus([sa, sb], STANDARD, threshold=0.5)
    assert lower.raw < r.raw


def test_ties_detect_every_point_with_the_threshold_score():
    scores = np.array([0.0, 0.7, 0.7, 0.0, 0.0, 0.0])
    th, raw = sweep_thresholds([SeriesScores("s", scores, [(2, 3)], probation=0)], STANDARD)
    assert th.tolist() == [math.inf, 0.7, 0.0]
    # At 0.7: FP at 1 (before the window) and the window detected at its first point.
    assert raw[1] == pytest.approx(-0.11 + 1.0)


def test_nan_scores_never_detect():
    scores = np.array([np.nan, 0.2, np.nan, 0.9, 0.0])
    th, raw = sweep_thresholds([SeriesScores("s", scores, [(3, 4)], probation=0)], STANDARD)
    assert not np.isnan(th).any()
    assert raw.max() == pytest.approx(1.0)


@pytest.mark.parametrize("profile", list(PROFILES.values()), ids=list(PROFILES))
def test_sweep_agrees_with_brute_force(profile: Profile):
    rng = np.random.default_rng(7)
    series = []
    for j in range(6):
        n = int(rng.integers(60, 200))
        scores = np.round(rng.random(n), 2)  # many ties
        k = int(rng.integers(0, 4))
        starts = np.sort(rng.choice(np.arange(20, n - 12, 12), size=k, replace=False)) if k else []
        windows = [(int(s), int(s + rng.integers(0, 10))) for s in starts]
        series.append(SeriesScores(f"s{j}", scores, windows))
    thresholds, raw = sweep_thresholds(series, profile)
    for th, value in zip(thresholds, raw, strict=True):
        assert score_corpus(series, profile, threshold=th).raw == pytest.approx(value, abs=1e-9)
    best = score_corpus(series, profile)
    assert best.raw == pytest.approx(raw.max())


def test_windows_to_indices_with_timestamps():
    ts = np.array(
        ["2014-04-01 00:00:00", "2014-04-01 00:05:00", "2014-04-01 00:10:00"], dtype="datetime64[s]"
    )
    limits = [(np.datetime64("2014-04-01 00:05:00.000000"), np.datetime64("2014-04-01 00:20:00.000000"))]
    assert windows_to_indices(ts, limits) == [(1, 2)]
    assert windows_to_indices(ts, [(np.datetime64("2015-01-01"), np.datetime64("2015-01-02"))]) == []


def test_overlapping_windows_rejected():
    with pytest.raises(ValueError):
        SeriesScores("s", np.zeros(10), [(1, 4), (4, 6)])


# ------------------------------------------------------------------------------ real data: the anchor
def _rolling_z(values: np.ndarray, window: int = 1000) -> np.ndarray:
    out = np.zeros(len(values))
    buf: deque[float] = deque()
    total = total_sq = 0.0
    for i, x in enumerate(values):
        if len(buf) >= 2:
            m = total / len(buf)
            sd = math.sqrt(max(total_sq / len(buf) - m * m, 0.0))
            out[i] = abs(x - m) / sd if sd > 1e-12 else (0.0 if abs(x - m) < 1e-12 else 1e12)
        buf.append(x)
        total += x
        total_sq += x * x
        if len(buf) > window:
            y = buf.popleft()
            total -= y
            total_sq -= y * y
    return out


def test_rolling_zscore_reproduces_the_published_anchor():
    """shared/data/README.md: a 1000-point rolling z-score scores 45.4 / 35.9 / 51.7 on this part of NAB."""
    if not (DATA / "labels" / "combined_windows.json").exists():
        pytest.skip(f"NAB data not found under {DATA}")
    labels = json.loads((DATA / "labels" / "combined_windows.json").read_text())
    series = []
    for name, limits in sorted(labels.items()):
        with (DATA / "data" / name).open(newline="") as f:
            rows = list(csv.reader(f))[1:]
        ts = np.array([r[0] for r in rows], dtype="datetime64[s]")
        values = np.array([float(r[1]) for r in rows])
        lims = [(np.datetime64(a), np.datetime64(b)) for a, b in limits]
        series.append(SeriesScores(name, _rolling_z(values), windows_to_indices(ts, lims)))
    res = score_all_profiles(series)
    assert sum(r for r in (len(s.windows) for s in series)) == 64
    assert round(res["standard"].normalized, 1) == 45.4
    assert round(res["reward_low_FP"].normalized, 1) == 35.9
    assert round(res["reward_low_FN"].normalized, 1) == 51.7
