"""PriorTracker and PrevalenceChangeDetector: following shifts, detection, late labels, pickling."""

from __future__ import annotations

import json
import pickle
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamimb.imbalance import PrevalenceChangeDetector, PriorTracker


def _stream(schedule: list[tuple[int, float]], seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["pos" if rng.random() < p else "neg" for n, p in schedule for _ in range(n)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_follows_x5_up_and_down_and_detector_fires(seed: int) -> None:
    tracker = PriorTracker(half_life=2000)
    labels = _stream([(20000, 0.01), (20000, 0.05), (20000, 0.01)], seed)
    fired: list[tuple[int, str, str]] = []
    estimates = []
    for i, y in enumerate(labels):
        changed = tracker.update(y)
        assert isinstance(changed, list)
        if changed:
            assert changed == ["pos"]
            fired.append((i, tracker.last_change["label"], tracker.last_change["direction"]))
        estimates.append(tracker.priors().get("pos", 0.0))
    # one detection per shift, in the right direction, within 1,500 labelled events
    assert [d for _, _, d in fired] == ["up", "down"]
    assert 20000 < fired[0][0] < 21500
    assert 40000 < fired[1][0] < 41500
    # the estimate is near the true prevalence 2,000 events after each shift
    assert 0.035 < estimates[22000] < 0.07
    assert 0.005 < estimates[42000] < 0.017
    assert abs(sum(tracker.priors().values()) - 1.0) < 1e-9
    assert len(tracker.changes) == 2


def test_detection_speeds_up_the_tracker() -> None:
    labels = _stream([(20000, 0.01), (6000, 0.05)], 7)
    fast, slow = PriorTracker(half_life=4000), PriorTracker(half_life=4000, detect_changes=False)
    for y in labels[:21500]:
        fast.update(y)
        slow.update(y)
    # 1,500 events after a 1% -> 5% shift the detecting tracker is much closer to 5%
    assert abs(fast.priors()["pos"] - 0.05) < abs(slow.priors()["pos"] - 0.05)
    assert fast.settling and not slow.settling


def test_no_false_alarm_on_a_stationary_stream() -> None:
    for p in (0.003, 0.01, 0.2):
        tracker = PriorTracker(half_life=2000)
        for y in _stream([(60000, p)], 11):
            tracker.update(y)
        assert tracker.changes == [], p


def test_multiclass_priors_and_detection_of_the_rare_class() -> None:
    rng = random.Random(5)
    tracker = PriorTracker(half_life=2000)
    changed_classes = set()
    for i in range(30000):
        dist = (0.7, 0.25, 0.05) if i < 15000 else (0.7, 0.29, 0.01)
        r = rng.random()
        y = "a" if r < dist[0] else ("b" if r < dist[0] + dist[1] else "c")
        changed_classes.update(tracker.update(y))
    priors = tracker.priors()
    assert set(tracker.classes) == {"a", "b", "c"}
    assert abs(sum(priors.values()) - 1.0) < 1e-9
    assert "c" in changed_classes
    assert 0.003 < priors["c"] < 0.025
    assert 0.6 < priors["a"] < 0.8


def test_time_based_estimate_is_independent_of_label_arrival_order() -> None:
    rng = random.Random(3)
    events = [
        (float(t), "pos" if rng.random() < (0.02 if t < 5000 else 0.1) else "neg") for t in range(10000)
    ]
    in_order = PriorTracker(half_life=500.0, time_based=True, detect_changes=False)
    for t, y in events:
        in_order.update(y, t)
    # labels arrive late and out of order: each one up to 300 time units after its event
    late = sorted(events, key=lambda e: e[0] + rng.uniform(0, 300))
    delayed = PriorTracker(half_life=500.0, time_based=True, detect_changes=False)
    for t, y in late:
        delayed.update(y, t)
    a, b = in_order.priors(), delayed.priors()
    assert a.keys() == b.keys()
    for c in a:
        assert a[c] == pytest.approx(b[c], rel=1e-9)
    assert 0.07 < a["pos"] < 0.13


def test_late_labels_with_constant_delay_still_follow_the_shift() -> None:
    labels = _stream([(20000, 0.01), (20000, 0.05)], 4)
    delay = 500
    tracker = PriorTracker(half_life=2000)
    for i in range(len(labels)):
        if i >= delay:
            tracker.update(labels[i - delay])
    assert 0.035 < tracker.priors()["pos"] < 0.065
    assert [c["direction"] for c in tracker.changes] == ["up"]


def test_time_based_needs_a_time_and_validates_half_life() -> None:
    with pytest.raises(ValueError):
        PriorTracker(half_life=10, time_based=True).update("a")
    with pytest.raises(ValueError):
        PriorTracker(half_life=0)
    with pytest.raises(ValueError):
        PrevalenceChangeDetector(factor=1.0)


def test_half_life_means_half_weight() -> None:
    tracker = PriorTracker(half_life=100, detect_changes=False)
    tracker.update("old")
    for _ in range(100):
        tracker.update("new")
    counts = {c: p * tracker.mass for c, p in tracker.priors().items()}
    assert counts["old"] == pytest.approx(0.5, rel=1e-9)


def test_pickle_round_trip_and_json_state() -> None:
    tracker = PriorTracker(half_life=1000)
    labels = _stream([(5000, 0.01), (3000, 0.08)], 9)
    for y in labels[:6000]:
        tracker.update(y)
    clone = pickle.loads(pickle.dumps(tracker))
    assert clone.priors() == tracker.priors()
    for y in labels[6000:]:
        assert clone.update(y) == tracker.update(y)
    assert clone.priors() == tracker.priors()
    state = json.loads(json.dumps(tracker.state()))
    assert set(state) >= {"priors", "n_labelled", "last_change", "settling"}
    assert state["n_labelled"] == 8000


def tracker_state(tracker: PriorTracker) -> tuple:
    det = tracker._detector
    cusums = {
        d: {c: s.__getstate__() for c, s in t.items()} for d, t in (("up", det._up), ("down", det._down))
    }
    return (
        tracker._counts,
        tracker.priors(),
        tracker._n,
        tracker._since_restart,
        tracker.changes,
        det._n,
        cusums,
    )


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.tuples(st.integers(20, 400), st.floats(0.0, 0.6)), min_size=1, max_size=6),
    st.sampled_from([30.0, 200.0, 2000.0]),
    st.integers(1, 300),
    st.integers(0, 10**6),
)
def test_update_many_equals_update_label_by_label(segments, half_life, batch, seed):
    rng = random.Random(seed)
    ys = [("fraud" if rng.random() < p else "ok") for n, p in segments for _ in range(n)]
    one, many = PriorTracker(half_life=half_life), PriorTracker(half_life=half_life)
    expected = [(i, c) for i, y in enumerate(ys) if (c := one.update(y, float(i)))]
    got = []
    for k in range(0, len(ys), batch):
        chunk = ys[k : k + batch]
        got += [(k + i, c) for i, c in many.update_many(chunk, [float(k + j) for j in range(len(chunk))])]
    assert got == expected
    assert tracker_state(many) == tracker_state(one)


def test_update_many_fires_where_update_fires():
    ys = ["ok"] * 3000 + ["fraud" if i % 5 == 0 else "ok" for i in range(3000)]
    ys[::97] = ["fraud"] * len(ys[::97])
    one, many = PriorTracker(half_life=1000), PriorTracker(half_life=1000)
    expected = [(i, c) for i, y in enumerate(ys) if (c := one.update(y))]
    assert expected and many.update_many(ys) == expected and tracker_state(many) == tracker_state(one)
