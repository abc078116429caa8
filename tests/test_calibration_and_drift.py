import random
from collections import deque

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
    assert len(cal) == 100
    assert cal.threshold() >= 900


@pytest.mark.parametrize("kind", ["quantile", "budget"])
def test_p_values_and_alerts_match_a_plain_recount_of_the_window(kind):
    """Ties, a full window that slides, batches of any size and single updates, against a recount."""
    rng = random.Random(3)
    scores = [rng.choice([rng.expovariate(1.0), float(rng.randint(0, 3))]) for _ in range(1500)]
    cal = ScoreCalibrator(kind=kind, quantile=0.95, alerts=3, per_events=50, window=200, warmup=30)
    got, k = [], 0
    while k < len(scores):
        size = rng.choice([1, 7, 150])
        chunk = scores[k : k + size]
        got += [cal.update(chunk[0])] if size == 1 else list(zip(*cal.update_many(chunk), strict=True))
        k += len(chunk)
    expected, recent_alerts = [], deque()
    for n, score in enumerate(scores):
        window = scores[max(0, n - 200) : n]
        p = (sum(s >= score for s in window) + 1) / (len(window) + 1)
        alert = n >= 30 and p < cal.alpha
        if alert and kind == "budget":
            while recent_alerts and recent_alerts[0] <= n - 50:
                recent_alerts.popleft()
            alert = len(recent_alerts) < 3
            if alert:
                recent_alerts.append(n)
        expected.append((p, alert))
    assert got == expected and sum(a for _, a in got) > 10
    assert cal.threshold() == sorted(scores[-200:])[int(200 * 0.95)]


def test_a_calibrator_checkpointed_as_lists_restores_its_window():
    """Checkpoints written before the window became arrays hold lists and deques: they still restore."""
    rng = random.Random(4)
    scores = [rng.random() for _ in range(300)]
    fresh = ScoreCalibrator(kind="budget", alerts=2, per_events=100, window=100, warmup=10)
    fresh.update_many(scores)
    alerted = [i for i, (_, a) in enumerate(zip(*ScoreCalibrator(kind="budget", alerts=2, per_events=100,
               window=100, warmup=10).update_many(scores), strict=True)) if a]  # fmt: skip
    old_state = {
        "kind": "budget", "quantile": 0.995, "alerts": 2, "per_events": 100, "window": 100, "warmup": 10,
        "_sorted": sorted(scores[-100:]), "_fifo": deque(scores[-100:]),
        "_alert_times": deque(i for i in alerted if i > 300 - 100), "_n": 300,
    }  # fmt: skip
    restored = ScoreCalibrator.__new__(ScoreCalibrator)
    restored.__setstate__(old_state)
    more = [rng.random() * 1.2 for _ in range(300)]
    assert restored.update_many(more) == fresh.update_many(more)
    assert restored.threshold() == fresh.threshold() and len(restored) == len(fresh) == 100


def test_invalid_kind():
    with pytest.raises(ValueError, match="calibration kind"):
        ScoreCalibrator(kind="magic")


def test_drift_monitor_min_gap_and_unknown_detector():
    monitor = DriftMonitor("score", "page_hinkley", min_gap=10_000)
    fired = [monitor.update(0.0 if i < 3000 else 5.0, i) for i in range(6000)]
    assert sum(f is not None for f in fired) == 1
    with pytest.raises(ValueError, match="unknown drift detector"):
        build_drift_detector("nope")


@pytest.mark.parametrize("window", [100, 300, 5000])
def test_batch_ranking_gives_the_p_values_of_one_score_at_a_time(window):
    """Batches ranked at once (larger than the window, split into chunks, or too small to be batched)
    give each score the p-value and decision it gets alone, ties included, and leave the same window."""
    rng = random.Random(window)
    scores = [round(rng.random(), 2) for _ in range(12_000)]  # many ties
    one = ScoreCalibrator(kind="budget", alerts=10, per_events=1000, window=window, warmup=200)
    many = ScoreCalibrator(kind="budget", alerts=10, per_events=1000, window=window, warmup=200)
    expected = [one.update(s) for s in scores]
    got, k, sizes = [], 0, [1, 500, 7, 64, 63, 1300, 250]
    while k < len(scores):
        size = sizes[len(got) % len(sizes)]
        p, alerts = many.update_many(scores[k : k + size])
        got += list(zip(p, alerts, strict=True))
        k += size
    assert got == expected and sum(a for _, a in got) > 20
    assert len(many) == len(one) == window and many.threshold() == one.threshold()
    assert [many.p_value(s / 10) for s in range(11)] == [one.p_value(s / 10) for s in range(11)]
