"""The alert guard: no classifier alerts from a model without skill, and a cap on the alert rate."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streamimb.config import ModelConfig
from streamimb.events import Event
from streamimb.imbalance.threshold import AlertGuard
from streamimb.processor import Processor
from streamimb.service.telemetry import ProcessorStats, Telemetry

# The per-event path with river's adaptive tree takes minutes on 20,000 events; logistic regression is quick
# and shows the same storm on noise (max_f1 on a score without skill flags nearly everything).
PER_EVENT = {"batch": False, "classifier": {"kind": "logistic_regression"}}
# The guard acts on whatever model serves the score; these tests pin the numpy tree ensemble, whose alert
# storm on noise (max_f1 alerts on most events) the guard was built against.
BATCH = {"classifier": {"kind": "numpy_hoeffding_tree"}}


def noise(n: int, rate: float = 0.05, seed: int = 0) -> list[Event]:
    """Labelled events whose features are independent of the label."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        x = {f"f{j}": rng.gauss(0, 1) for j in range(5)}
        out.append(Event(str(i), float(i), x, "1" if rng.random() < rate else "0"))
    return out


def separable(n: int, rate: float = 0.05, seed: int = 1) -> list[Event]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        y = rng.random() < rate
        x = {"a": rng.gauss(3.0 if y else 0.0, 1.0), "b": rng.gauss(0.0, 1.0)}
        out.append(Event(str(i), float(i), x, "1" if y else "0"))
    return out


def run(config: ModelConfig, events: list[Event], batch_size: int = 500):
    """The Processor after ``events`` (by batches), and per event: classifier alerts, all alerts."""
    p = Processor(config, positive="1", classes=["0", "1"])
    verdicts = []
    for k in range(0, len(events), batch_size):
        verdicts += p.process_many(events[k : k + batch_size])[0]
    return p, np.array([v.classifier_alert for v in verdicts]), np.array([v.alert for v in verdicts])


def max_in_window(alerts: np.ndarray, window: int) -> int:
    counts = np.convolve(alerts.astype(int), np.ones(window, dtype=int), "valid")
    return int(counts.max()) if len(counts) else int(alerts.sum())


@pytest.mark.parametrize("mode", [{}, PER_EVENT], ids=["batch", "per-event"])
def test_a_model_without_skill_raises_no_classifier_alerts(mode):
    config = ModelConfig(**mode)
    n = 20_000 if not mode else 8000
    p, classifier_alerts, alerts = run(config, noise(n))
    assert classifier_alerts.sum() == 0
    assert p.alerts_suppressed["no_skill"] > 0.5 * n  # the storm it held back
    cap = int(config.alerts.max_rate * config.alerts.per_events)
    assert max_in_window(alerts, config.alerts.per_events) <= cap
    assert not p.guard.skilled and p.guard.skill < config.alerts.skill_margin
    assert p.report()["alerts_suppressed"] == p.alerts_suppressed


@pytest.mark.parametrize("mode", [BATCH, PER_EVENT], ids=["batch", "per-event"])
def test_a_skilled_model_still_alerts(mode):
    events = separable(6000)
    p, _, _ = run(ModelConfig(decision="classifier", **mode), events[:1000])
    assert p.guard.skilled and p.guard.skill > 0.5  # measured once 20 positives were scored
    withheld = dict(p.alerts_suppressed)
    alerts = sum(v.classifier_alert for v in p.process_many(events[1000:])[0])
    assert alerts > 100 and p.alerts_suppressed == withheld  # none withheld from then on
    m = p.report()["metrics"]
    assert m["recall"] > 0.6 and m["precision"] > 0.5


@pytest.mark.parametrize("mode", [{}, PER_EVENT], ids=["batch", "per-event"])
def test_the_rate_cap_bounds_alerts_in_every_window(mode):
    # 10 in any 1,000 events, whatever the prevalence; the stream has 5% frauds
    alerts_config = {"max_rate": 0.01, "per_events": 1000, "per_prevalence": None}
    config = ModelConfig(decision="classifier", alerts=alerts_config, **mode)
    p, classifier_alerts, _ = run(config, separable(6000))
    assert max_in_window(classifier_alerts, 1000) == 10
    assert p.alerts_suppressed["rate_cap"] > 50


def test_the_rate_cap_grows_with_the_measured_prevalence():
    """By default the cap is twice the rare class's prevalence when that is above `max_rate`: 5% frauds may
    raise up to 10% alerts, and a separable stream loses none to the cap."""
    config = ModelConfig(decision="classifier", alerts={"max_rate": 0.01, "per_events": 1000})
    p, classifier_alerts, _ = run(config, separable(6000))
    assert 10 < max_in_window(classifier_alerts, 1000) <= 100
    assert p.guard.cap == pytest.approx(2 * 1000 * p.guard._prevalence, abs=1)


def test_the_guard_can_be_switched_off():
    config = ModelConfig(alerts={"skill_margin": None, "max_rate": None}, **BATCH)
    p, classifier_alerts, _ = run(config, noise(3000))
    assert classifier_alerts.sum() > 1000  # max_f1 on noise: the storm the guard prevents
    assert p.alerts_suppressed == {"no_skill": 0, "rate_cap": 0}


def test_suppressed_alerts_are_counted_in_metrics():
    p, _, _ = run(ModelConfig(), noise(3000))
    telemetry = Telemetry(CollectorRegistry())
    telemetry.add_state_source(lambda: {0: ProcessorStats.from_stats(p.stats())})
    text = generate_latest(telemetry.registry).decode()
    (family,) = [f for f in text_string_to_metric_families(text) if f.name == "streamimb_alerts_suppressed"]
    assert family.type == "counter"
    counts = {s.labels["reason"]: s.value for s in family.samples if s.name.endswith("_total")}
    assert counts == {"no_skill": p.alerts_suppressed["no_skill"], "rate_cap": 0}
    assert counts["no_skill"] > 0


def test_a_checkpointed_processor_keeps_its_guard():
    events = separable(4000)
    p, _, _ = run(ModelConfig(decision="classifier"), events[:3000])
    restored = pickle.loads(pickle.dumps(p))
    a = [v.classifier_alert for v in p.process_many(events[3000:])[0]]
    b = [v.classifier_alert for v in restored.process_many(events[3000:])[0]]
    assert a == b and sum(a) > 10 and restored.alerts_suppressed == p.alerts_suppressed


# -- AlertGuard on its own ----------------------------------------------------------------------------------
def test_a_constant_score_has_no_skill():
    guard = AlertGuard(positive="1")
    guard.update_many(["1" if i % 10 == 0 else "0" for i in range(1000)], [{"1": 0.3}] * 1000)
    assert guard.skill == pytest.approx(0.0) and guard.check(0) == "no_skill"


def test_no_skill_until_enough_positives_are_scored():
    guard = AlertGuard(positive="1", min_positives=20)
    for _ in range(19):
        guard.update_many(["1", "0"], [{"1": 0.9}, {"1": 0.1}])
    assert not guard.skilled
    guard.update_many(["1", "0", "0"], [{}, {"1": 0.1}, {"1": 0.1}])  # an unscored label does not count
    assert not guard.skilled
    guard.update_many(["1", "0"], [{"1": 0.9}, {"1": 0.1}])
    assert guard.skilled and guard.skill == pytest.approx(
        22 / 20
    )  # a perfect ranking: (1 - p) / p, p = 20/42


def test_skill_is_measured_on_one_window_for_both_classes():
    """Scores that drift upwards over time, with no skill at any moment, do not pass for skill."""
    rng = random.Random(2)
    guard = AlertGuard(positive="1", window=5000)
    for i in range(40_000):
        guard.update("1" if rng.random() < 0.2 else "0", {"1": i / 40_000 + 0.01 * rng.random()})
    # PR AUC within 0.024 of the prevalence 0.2: |skill| = |PR AUC - 0.2| / 0.2 < 0.12
    assert not guard.skilled and abs(guard.skill) < 0.12


def test_the_rate_cap_is_an_exact_sliding_window():
    guard = AlertGuard(positive="1", skill_margin=None, max_rate=0.003, per_events=1000)
    raised = [i for i in range(5000) if guard.check(i) == ""]
    assert raised[:4] == [0, 1, 2, 1000]
    assert all(b - a >= 1000 for a, b in zip(raised, raised[3:], strict=False))
