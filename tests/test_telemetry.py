"""Telemetry: the instruments' output (parsed back and linted by promtool) and the metrics HTTP server."""

from __future__ import annotations

import gzip
import math
import subprocess
import time

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families
from promstack import binary, http

import streamimb.service.telemetry as telemetry_module
from streamimb import __version__
from streamimb.service.telemetry import (
    LABEL_OUTCOMES,
    LATENCY_BUCKETS,
    ROLLING_METRICS,
    MetricsServer,
    ProcessorStats,
    Telemetry,
)

REQUIRED = {
    "streamimb_events_consumed_total": "counter",
    "streamimb_events_processed_total": "counter",
    "streamimb_dead_letters_total": "counter",
    "streamimb_processing_latency_seconds": "histogram",
    "streamimb_consumer_lag_records": "gauge",
    "streamimb_consumer_lag_seconds": "gauge",
    "streamimb_alerts_total": "counter",
    "streamimb_drifts_total": "counter",
    "streamimb_prevalence_estimate": "gauge",
    "streamimb_observed_prevalence": "gauge",
    "streamimb_decision_threshold": "gauge",
    **{f"streamimb_rolling_{m}": "gauge" for m in ROLLING_METRICS},
    "streamimb_labels_total": "counter",
    "streamimb_checkpoint_age_seconds": "gauge",
    "streamimb_learned_events": "gauge",
    "streamimb_ready": "gauge",
    "streamimb_build_info": "gauge",
}


def stats(learned: int, rare: float, recall: float = 0.5) -> ProcessorStats:
    return ProcessorStats(
        learned_events=learned,
        prevalence_estimate={"0": 1 - rare, "1": rare},
        observed_prevalence={"0": 1 - 2 * rare, "1": 2 * rare},
        thresholds={"hst": 0.9, "classifier": 0.3},
        rolling={m: {"0": 0.99, "1": recall} for m in ROLLING_METRICS},
    )


def scrape(telemetry: Telemetry) -> dict[str, dict[tuple, float]]:
    """{sample name: {sorted label items: value}} of the text exposition."""
    out: dict[str, dict[tuple, float]] = {}
    for fam in text_string_to_metric_families(generate_latest(telemetry.registry).decode()):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def fed_telemetry(clock=time.time) -> Telemetry:
    t = Telemetry(
        CollectorRegistry(), classes=["0", "1"], detectors=["hst"], drift_signals=["score"], clock=clock
    )
    t.record_batch(
        consumed=500,
        processed=497,
        latencies_seconds=[2e-5] * 490 + [3e-3] * 7,
        dead_letters={"bad_json": 2, "schema": 1},
        alerts={("hst", "1"): 3, ("classifier", "1"): 1},
        drifts={"score": 1},
        labels={"joined": 40, "expired": 2},
    )
    t.record_batch(consumed=100, processed=100, latencies_seconds=[0.2], alerts={("hst", "1"): 1})
    t.set_lag(0, 120, 1.5)
    t.set_lag(1, 0, 0.0)
    t.set_checkpoint(0, 1000.0)
    t.set_ready(True)
    t.add_state_source(lambda: {0: stats(300, 0.01), 1: stats(100, 0.05, recall=0.9)})
    return t


def test_every_required_metric_is_exported_with_its_type():
    text = generate_latest(fed_telemetry().registry).decode()
    families = {f.name: f.type for f in text_string_to_metric_families(text)}
    for name, kind in REQUIRED.items():
        family = name.removesuffix("_total") if kind == "counter" else name
        assert families.get(family) == kind, (name, families.get(family))


def test_batch_counts_and_label_children():
    m = scrape(fed_telemetry())
    assert m["streamimb_events_consumed_total"][()] == 600
    assert m["streamimb_events_processed_total"][()] == 597
    assert m["streamimb_dead_letters_total"] == {(("reason", "bad_json"),): 2, (("reason", "schema"),): 1}
    alerts = m["streamimb_alerts_total"]
    assert alerts[(("class", "1"), ("detector", "hst"))] == 4
    assert alerts[(("class", "1"), ("detector", "classifier"))] == 1
    assert alerts[(("class", "0"), ("detector", "hst"))] == 0  # pre-bound at zero
    assert m["streamimb_drifts_total"] == {(("signal", "score"),): 1}
    labels = {dict(k)["outcome"]: v for k, v in m["streamimb_labels_total"].items()}
    assert labels == {"joined": 40, "expired": 2, "unknown": 0, "duplicate": 0, "evicted": 0}
    assert set(labels) == set(LABEL_OUTCOMES)
    assert m["streamimb_consumer_lag_records"][(("partition", "0"),)] == 120
    assert m["streamimb_consumer_lag_seconds"][(("partition", "0"),)] == 1.5
    assert m["streamimb_ready"][()] == 1
    (build,) = m["streamimb_build_info"].items()
    assert dict(build[0])["version"] == __version__ and build[1] == 1


def test_latency_histogram_is_cumulative_with_inclusive_bounds():
    t = Telemetry(CollectorRegistry())
    t.record_batch(0, 4, latencies_seconds=[5e-6, 6e-6, 0.05, 20.0, float("nan")])
    buckets = {dict(k)["le"]: v for k, v in scrape(t)["streamimb_processing_latency_seconds_bucket"].items()}
    assert len(buckets) == len(LATENCY_BUCKETS) + 1
    assert buckets["5e-06"] == 1  # le is inclusive
    assert buckets["1e-05"] == 2
    assert buckets["0.05"] == 3
    assert buckets["10.0"] == 3
    assert buckets["+Inf"] == 4  # NaN is dropped
    m = scrape(t)
    assert m["streamimb_processing_latency_seconds_count"][()] == 4
    assert m["streamimb_processing_latency_seconds_sum"][()] == pytest.approx(20.050011)
    values = [buckets[k] for k in sorted(buckets, key=lambda le: math.inf if le == "+Inf" else float(le))]
    assert values == sorted(values)


def test_model_state_is_read_at_scrape_time_and_weighted_by_learned_events():
    t = Telemetry(CollectorRegistry())
    current = {0: stats(300, 0.01), 1: stats(100, 0.05, recall=0.9)}
    calls = []

    def source():
        calls.append(1)
        return current

    t.add_state_source(source)
    assert calls == []  # nothing is read until a scrape
    m = scrape(t)
    assert len(calls) == 1
    assert m["streamimb_learned_events"] == {(("partition", "0"),): 300, (("partition", "1"),): 100}
    # (300 * 0.01 + 100 * 0.05) / 400
    assert m["streamimb_prevalence_estimate"][(("class", "1"),)] == pytest.approx(0.02)
    assert m["streamimb_observed_prevalence"][(("class", "1"),)] == pytest.approx(0.04)
    assert m["streamimb_rolling_recall"][(("class", "1"),)] == pytest.approx((300 * 0.5 + 100 * 0.9) / 400)
    assert m["streamimb_decision_threshold"][(("detector", "hst"),)] == pytest.approx(0.9)
    for metric in ROLLING_METRICS:
        assert (("class", "0"),) in m[f"streamimb_rolling_{metric}"]
    current = {0: stats(10, 0.3)}
    m = scrape(t)
    assert m["streamimb_prevalence_estimate"][(("class", "1"),)] == pytest.approx(0.3)
    assert m["streamimb_learned_events"] == {(("partition", "0"),): 10}


def test_undefined_rolling_values_are_nan_and_skipped_in_averages():
    t = Telemetry(CollectorRegistry())
    a = ProcessorStats(learned_events=5, rolling={"recall": {"1": float("nan"), "0": float("nan")}})
    b = ProcessorStats(learned_events=5, rolling={"recall": {"1": 0.4}})
    t.add_state_source(lambda: {0: a, 1: b})
    recall = scrape(t)["streamimb_rolling_recall"]
    assert recall[(("class", "1"),)] == pytest.approx(0.4)
    assert math.isnan(recall[(("class", "0"),)])


def test_missing_values_do_not_break_the_state_metrics():
    t = Telemetry(CollectorRegistry())
    t.add_state_source(
        lambda: {
            0: ProcessorStats(learned_events=0, prevalence_estimate={1: 0.2}, thresholds={"anomaly": None})
        }
    )
    m = scrape(t)
    assert m["streamimb_prevalence_estimate"] == {(("class", "1"),): 0.2}  # class keys become strings
    assert math.isnan(m["streamimb_decision_threshold"][(("detector", "anomaly"),)])


def test_a_failing_state_source_keeps_its_previous_result(caplog):
    t = Telemetry(CollectorRegistry())
    results = [{0: stats(50, 0.02)}]

    def flaky():
        if not results:
            raise RuntimeError("dictionary changed size during iteration")
        return results.pop()

    t.add_state_source(flaky)
    assert scrape(t)["streamimb_prevalence_estimate"][(("class", "1"),)] == pytest.approx(0.02)
    m = scrape(t)  # the source raises now
    assert m["streamimb_prevalence_estimate"][(("class", "1"),)] == pytest.approx(0.02)
    assert m["streamimb_events_consumed_total"][()] == 0  # the rest of /metrics is intact
    assert "state source" in caplog.text


def test_checkpoint_age_uses_the_clock_and_partitions_can_be_removed():
    now = [1000.0]
    t = Telemetry(CollectorRegistry(), clock=lambda: now[0])
    t.set_checkpoint(0, 990.0)
    t.set_checkpoint(1, 1000.0)
    t.set_lag(1, 5, 2.0)
    ages = scrape(t)["streamimb_checkpoint_age_seconds"]
    assert ages == {(("partition", "0"),): 10.0, (("partition", "1"),): 0.0}
    now[0] = 1030.0
    assert scrape(t)["streamimb_checkpoint_age_seconds"][(("partition", "0"),)] == 40.0
    t.remove_partition(1)
    m = scrape(t)
    assert set(m["streamimb_checkpoint_age_seconds"]) == {(("partition", "0"),)}
    assert "streamimb_consumer_lag_records" not in m


def test_label_values_are_capped():
    t = Telemetry(CollectorRegistry(), max_label_values=3)
    t.record_batch(10, 10, dead_letters={f"reason{i}": 1 for i in range(6)})
    dead = {dict(k)["reason"]: v for k, v in scrape(t)["streamimb_dead_letters_total"].items()}
    assert dead == {"reason0": 1, "reason1": 1, "reason2": 1, "other": 3}


def test_instruments_live_on_the_given_registry_only():
    before = {m.name for m in REGISTRY.collect()}
    registry = CollectorRegistry()
    t = Telemetry(registry, namespace="streamimb")
    assert t.registry is registry
    Telemetry(CollectorRegistry())  # a second instance does not clash
    assert {m.name for m in REGISTRY.collect()} == before
    assert not any(name.startswith("streamimb") for name in before)


class ManualClock:
    """Stands in for the ``time`` module inside streamimb.service.telemetry: ``monotonic()`` (the heartbeats'
    clock) moves only when the test advances it, so liveness ages do not depend on how fast the test runs."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def __getattr__(self, name: str):
        return getattr(time, name)


@pytest.fixture
def manual_clock(monkeypatch):
    clock = ManualClock()
    monkeypatch.setattr(telemetry_module, "time", clock)
    return clock


def test_ready_flag_and_liveness(manual_clock):
    t = Telemetry(CollectorRegistry())
    assert not t.ready and scrape(t)["streamimb_ready"][()] == 0
    assert t.alive(0.01)  # no heartbeat yet: the loop is starting
    t.heartbeat()
    assert t.alive(10) and t.alive(0)
    manual_clock.advance(0.03)
    assert not t.alive(0.01) and t.alive(0.05)
    t.record_batch(0, 0)  # a batch is a heartbeat
    assert t.alive(10) and t.alive(0)
    manual_clock.advance(0.03)
    t.set_ready(True)  # so is the readiness update after each poll, even an empty one
    assert t.alive(0.02) and t.alive(0)


def test_output_passes_promtool_check_metrics():
    promtool = binary("promtool")
    if promtool is None:
        pytest.skip("promtool not on PATH (apt-get install prometheus)")
    text = generate_latest(fed_telemetry().registry)
    done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=30)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    assert done.stdout.decode().strip() == "" and done.stderr.decode().strip() == ""


# -- MetricsServer -----------------------------------------------------------------------------------------
@pytest.fixture
def server(manual_clock):
    t = fed_telemetry()  # its batches are heartbeats, on the manual clock
    with MetricsServer("127.0.0.1:0", t, liveness_timeout=0.2) as srv:
        yield srv


def test_server_binds_a_free_port_and_serves_metrics(server):
    host, port = server.address.rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0
    status, headers, body = http(f"http://{server.address}/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    names = {s.name for f in text_string_to_metric_families(body.decode()) for s in f.samples}
    assert "streamimb_prevalence_estimate" in names and "streamimb_events_consumed_total" in names


def test_server_negotiates_openmetrics_and_gzip(server):
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    status, headers, body = http(
        f"http://{server.address}/metrics", headers={"Accept": accept, "Accept-Encoding": "gzip"}
    )
    assert status == 200
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert headers["Content-Encoding"] == "gzip"
    families = {f.name: f for f in parse_openmetrics(gzip.decompress(body).decode())}
    assert families["streamimb_events_processed"].type == "counter"
    assert families["streamimb_processing_latency_seconds"].type == "histogram"


def test_health_ready_and_unknown_paths(server, manual_clock):
    base = f"http://{server.address}"
    assert http(f"{base}/healthz")[0] == 200
    assert http(f"{base}/readyz")[0] == 200
    server.telemetry.set_ready(False)
    assert http(f"{base}/readyz")[0] == 503
    assert http(f"{base}/nope")[0] == 404
    assert http(f"{base}/metrics/extra")[0] == 404
    server.telemetry.heartbeat()
    assert http(f"{base}/healthz")[0] == 200
    manual_clock.advance(0.15)  # within liveness_timeout since the heartbeat: still alive
    assert http(f"{base}/healthz")[0] == 200
    manual_clock.advance(0.15)  # longer than liveness_timeout without a heartbeat: the loop is stalled
    assert http(f"{base}/healthz")[0] == 503
    server.telemetry.heartbeat()  # and it recovers with the next one
    assert http(f"{base}/healthz")[0] == 200


def test_server_stop_releases_the_port():
    t = Telemetry(CollectorRegistry())
    srv = MetricsServer("127.0.0.1:0", t).start()
    address = srv.address
    assert http(f"http://{address}/healthz")[0] == 200
    srv.stop()
    with pytest.raises(OSError):
        http(f"http://{address}/healthz", timeout=1)
    # the same port can be bound again at once
    again = MetricsServer(address, t).start()
    try:
        assert again.address == address
    finally:
        again.stop()


def test_bad_address_is_rejected():
    with pytest.raises(ValueError, match="HOST:PORT"):
        MetricsServer("localhost", Telemetry(CollectorRegistry()))
