import random

import pytest

from streamimb.detectors.calibration import ScoreCalibrator
from streamimb.detectors.drift import DriftMonitor, build_drift_detector


def test_quantile_alert_rate_matches_target():
    rng = random.Random(0)
    cal = ScoreCalibrator(kind="quantile", quantile=0.99, window=2000, warmup=500)
    alerts = sum(cal.update(rng.gauss(0, 1))[1] for _ in range(20_000))
    assert 0.006 * 19_500 < alerts < 0.014 * 19_500


def test_budget_is_a_hard_cap_even_when_scores_jump():
    rng = random.Random(1)
    cal = ScoreCalibrator(kind="budget", alerts=5, per_events=1000, window=1000, warmup=100)
    for _ in range(2000):
        cal.update(rng.random())
    # every score is now far above the window: only 5 alerts per 1000 events get through
    decisions = [cal.update(100.0 + i)[1] for i in range(1000)]
    assert sum(decisions) == 5


def test_warmup_and_window_bound():
    cal = ScoreCalibrator(window=100, warmup=50)
    assert not any(cal.update(float(i))[1] for i in range(50))
    for i in range(1000):
        cal.update(float(i))
    assert len(cal._sorted) == 100
    assert cal.threshold() >= 900


def test_invalid_kind():
    with pytest.raises(ValueError, match="calibration kind"):
        ScoreCalibrator(kind="magic")


def test_drift_monitor_min_gap_and_unknown_detector():
    monitor = DriftMonitor("score", "page_hinkley", min_gap=10_000)
    fired = [monitor.update(0.0 if i < 3000 else 5.0, i) for i in range(6000)]
    assert sum(f is not None for f in fired) == 1
    with pytest.raises(ValueError, match="unknown drift detector"):
        build_drift_detector("nope")
