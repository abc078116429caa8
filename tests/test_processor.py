import pickle
import random

import pytest

from streamimb.config import ModelConfig
from streamimb.events import Event
from streamimb.processor import Processor


def make_stream(n=3000, rate=0.05, seed=0):
    rng = random.Random(seed)
    for i in range(n):
        positive = rng.random() < rate
        x = {"a": rng.gauss(3.0 if positive else 0.0, 1.0), "b": rng.gauss(0.0, 1.0), "c": rng.choice("xyz")}
        yield Event(id=str(i), time=float(i), features=x, label="1" if positive else "0")


def test_learns_a_separable_rare_class():
    p = Processor(ModelConfig(decision="classifier"), positive="1", classes=["0", "1"])
    for event in make_stream():
        p.process_one(event)
    report = p.report()
    m = report["metrics"]
    assert report["labelled"] == 3000
    assert m["recall"] > 0.6 and m["roc_auc"] > 0.9 and m["pr_auc"] > 0.6
    assert set(report["priors"]) == {"0", "1"}
    assert 0.02 < report["priors"]["1"] < 0.1


def test_test_then_train_order():
    """The verdict for an event comes from the model before that event is learned."""
    p = Processor(ModelConfig(), positive="1", classes=["0", "1"])
    event = Event(id="first", time=None, features={"a": 1.0}, label="1")
    verdict, _ = p.process_one(event)
    assert verdict.proba == {}  # nothing learned before the first event
    assert p.n_learned == 1 and p.n_events == 1


def test_delayed_label_learns_later():
    p = Processor(ModelConfig(), positive="1", classes=["0", "1"])
    verdict, _ = p.process_one(Event(id="e", time=None, features={"a": 1.0}))
    assert p.n_learned == 0
    p.learn_one(verdict, "0")
    assert p.n_learned == 1 and p.report()["labelled"] == 1


def test_anomaly_alerts_before_labels():
    cfg = ModelConfig(calibration={"kind": "quantile", "quantile": 0.99, "warmup": 200})
    p = Processor(cfg)
    rng = random.Random(3)
    alerts = []
    for i in range(2000):
        x = {"a": rng.gauss(0, 1), "b": rng.gauss(0, 1)}
        if i % 250 == 0 and i > 500:
            x = {"a": 25.0, "b": -25.0}
        v, _ = p.process_one(Event(id=str(i), time=None, features=x))
        alerts.append(v.anomaly_alert)
    injected = [i for i in range(2000) if i % 250 == 0 and i > 500]
    assert all(alerts[i] for i in injected)
    assert sum(alerts) < 0.03 * 2000


def test_positive_class_inferred_as_rarer():
    p = Processor(ModelConfig(min_positive_labels=5))
    for event in make_stream(n=1000, rate=0.1):
        p.process_one(event)
    assert p.positive == "1"


def test_multiclass_rare_class_recall():
    rng = random.Random(5)
    p = Processor(ModelConfig(threshold={"policy": "argmax"}), classes=["a", "b", "c"])
    for i in range(4000):
        r = rng.random()
        label = "a" if r < 0.70 else "b" if r < 0.95 else "c"
        centre = {"a": 0.0, "b": 3.0, "c": -3.0}[label]
        p.process_one(Event(id=str(i), time=None, features={"f": rng.gauss(centre, 0.7)}, label=label))
    m = p.report()["metrics"]
    assert m["per_class"]["c"]["recall"] > 0.5
    assert m["macro_gmean"] > 0.5


def test_pickle_roundtrip_gives_same_verdicts():
    p = Processor(ModelConfig(), positive="1", classes=["0", "1"])
    events = list(make_stream(n=800))
    for event in events[:600]:
        p.process_one(event)
    clone = pickle.loads(pickle.dumps(p))
    for event in events[600:]:
        a, _ = p.process_one(event)
        b, _ = clone.process_one(event)
        assert a.anomaly_score == pytest.approx(b.anomaly_score)
        assert a.proba == pytest.approx(b.proba)
        assert a.alert == b.alert


def test_drift_on_feature_and_prevalence():
    cfg = ModelConfig(drift={"features": ["a"], "min_gap": 100})
    p = Processor(cfg, positive="1", classes=["0", "1"])
    rng = random.Random(9)
    for i in range(6000):
        rate = 0.01 if i < 3000 else 0.10
        positive = rng.random() < rate
        shift = 0.0 if i < 3000 else 4.0
        p.process_one(Event(str(i), None, {"a": rng.gauss(shift, 1.0)}, "1" if positive else "0"))
    signals = {d.signal for d in p.drifts}
    assert "feature:a" in signals
    assert any(s.startswith("prevalence:") for s in signals)
    assert all(d.index >= 3000 for d in p.drifts if d.signal == "feature:a")


def test_budget_policy_waits_for_the_inferred_positive_class():
    p = Processor(
        ModelConfig(threshold={"policy": "budget", "params": {"max_alerts": 5}}, min_positive_labels=5)
    )
    for event in make_stream(n=1500, rate=0.1):
        p.process_one(event)
    assert p.positive == "1"
    assert type(p.threshold).__name__ == "AlertBudget"


def test_feature_extractor_caps_categories_and_restores_from_an_older_state():
    from streamimb.features import FeatureExtractor

    fx = FeatureExtractor(max_categories=2)
    rows = [{"c": v, "n": 1.0} for v in ["a", "b", "c", "a", "d", "b"]]
    keys = [next(k for k in fx.transform_one(r) if k != "n") for r in rows]
    assert keys == ["c=a", "c=b", "c=__other__", "c=a", "c=__other__", "c=b"]
    older = FeatureExtractor.__new__(FeatureExtractor)
    older.__setstate__({"max_categories": 2, "_seen": {"c": {"a", "b"}}})  # pickled before the key cache
    assert [older.transform_one(r) for r in rows] == [fx.transform_one(r) for r in rows]
