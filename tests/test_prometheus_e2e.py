"""End to end with the real programs on loopback: Prometheus scraping streamimb's /metrics, the shipped rules
firing through Alertmanager to a webhook, AlertmanagerSink against Alertmanager, and PrometheusSource
reading Prometheus. Nothing here is a mock of Prometheus or Alertmanager."""

from __future__ import annotations

import json
import math
import subprocess
import time

import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server
from promstack import (
    DASHBOARD,
    RULES,
    AlertmanagerServer,
    PrometheusServer,
    WebhookReceiver,
    dashboard_exprs,
    fast_alertmanager_config,
    http,
    require,
    substitute_grafana_variables,
    wait_until,
)

from streamimb.errors import SourceError
from streamimb.events import Alert
from streamimb.io.prometheus import AlertmanagerSink, PrometheusSource
from streamimb.service.telemetry import MetricsServer, ProcessorStats, Telemetry

pytestmark = pytest.mark.prometheus


def batch(t: Telemetry, n: int, **kw) -> None:
    t.record_batch(consumed=n, processed=n - 1, latencies_seconds=[4e-5] * (n - 1), **kw)


def make_alert(i: int, rule: str = "half_space_trees", predicted: str | None = "1") -> Alert:
    return Alert(
        alert_id=f"a-{i}",
        event_id=f"tx-{i}",
        time=1_700_000_000.0 + i,
        rule=rule,
        reason=f"score above the 99.5% quantile ({i})",
        anomaly_score=0.97,
        proba={"0": 0.2, "1": 0.8},
        predicted=predicted,
        model_version="test-1",
        source="transactions",
        partition=0,
        offset=i,
    )


# -- (a) Prometheus scrapes a MetricsServer ------------------------------------------------------------------
def test_prometheus_scrapes_telemetry_and_answers_promql(tmp_path):
    tools = require("prometheus", "promtool")
    t = Telemetry(CollectorRegistry(), classes=["0", "1"], detectors=["hst"])
    t.set_ready(True)
    t.add_state_source(
        lambda: {
            0: ProcessorStats(
                300, {"0": 0.98, "1": 0.02}, {"0": 0.97, "1": 0.03}, {"hst": 0.91}, {"recall": {"1": 0.75}}
            )
        }
    )
    for n in (100, 200, 300):
        batch(t, n, dead_letters={"bad_json": 1}, alerts={("hst", "1"): 2})
    t.set_lag(0, 42, 3.5)
    with MetricsServer("127.0.0.1:0", t) as server:
        text = http(f"http://{server.address}/metrics")[2]
        lint = subprocess.run([tools["promtool"], "check", "metrics"], input=text, capture_output=True)
        assert lint.returncode == 0, lint.stdout + lint.stderr

        with PrometheusServer(tmp_path / "prom", {"streamimb": [server.address]}) as prom:
            prom.wait_up("streamimb")
            wait_until(
                lambda: prom.value('streamimb_events_consumed_total{job="streamimb"}') == 600,
                10,
                "the consumed counter",
            )
            assert prom.value("streamimb_events_processed_total") == 597
            assert prom.value('streamimb_dead_letters_total{reason="bad_json"}') == 3
            assert prom.value('streamimb_alerts_total{detector="hst", class="1"}') == 6
            assert prom.value('streamimb_alerts_total{detector="hst", class="0"}') == 0
            assert prom.value('streamimb_prevalence_estimate{class="1"}') == pytest.approx(0.02)
            assert prom.value('streamimb_rolling_recall{class="1"}') == pytest.approx(0.75)
            assert prom.value('streamimb_consumer_lag_records{partition="0"}') == 42
            assert prom.value("streamimb_processing_latency_seconds_count") == 597
            assert prom.value("streamimb_ready") == 1
            assert prom.value('streamimb_build_info{job="streamimb"}') == 1

            # a later batch shows up at the next scrape; so does model state read at scrape time
            batch(t, 50)
            wait_until(
                lambda: prom.value("streamimb_events_consumed_total") == 650,
                10,
                "the next batch to be scraped",
            )
            p50 = prom.value(
                "histogram_quantile(0.5, sum by (le) (streamimb_processing_latency_seconds_bucket))"
            )
            assert 2.5e-5 < p50 <= 5e-5  # every latency was 40 us

            # every PromQL expression of the shipped dashboard is valid for this Prometheus
            for expr in dashboard_exprs(json.loads(DASHBOARD.read_text())):
                prom.query(substitute_grafana_variables(expr))


# -- (b) a shipped rule fires through Alertmanager to a webhook ----------------------------------------------
def test_shipped_drift_rule_fires_through_alertmanager(tmp_path):
    require("prometheus", "alertmanager")
    t = Telemetry(CollectorRegistry(), drift_signals=["error"])  # "error" pre-bound at 0, "score" born at 1
    with (
        WebhookReceiver() as hook,
        AlertmanagerServer(tmp_path / "am", fast_alertmanager_config(hook.url)) as am,
        MetricsServer("127.0.0.1:0", t) as server,
        PrometheusServer(
            tmp_path / "prom", {"streamimb": [server.address]}, rule_files=[RULES], alertmanager=am.url
        ) as prom,
    ):
        prom.wait_up("streamimb")
        wait_until(lambda: prom.value('streamimb_drifts_total{signal="error"}') == 0, 10, "a first scrape")
        batch(t, 10, drifts={"error": 1, "score": 2})

        def drift_notification(signal: str):
            def match(payload):
                return payload["status"] == "firing" and any(
                    a["labels"].get("alertname") == "StreamimbDriftDetected"
                    and a["labels"].get("signal") == signal
                    for a in payload["alerts"]
                )

            return match

        started = time.monotonic()
        for signal in ("error", "score"):
            payload = hook.wait_for(drift_notification(signal), 30, f"StreamimbDriftDetected on {signal}")
            (alert,) = [a for a in payload["alerts"] if a["labels"]["signal"] == signal]
            assert alert["labels"]["severity"] == "warning"
            assert alert["labels"]["job"] == "streamimb"
            assert alert["annotations"]["summary"].startswith(f"Drift detected on signal {signal}")
        assert time.monotonic() - started < 30
        # Alertmanager holds them as active alerts too
        names = {(a["labels"]["alertname"], a["labels"].get("signal")) for a in am.alerts()}
        assert {("StreamimbDriftDetected", "error"), ("StreamimbDriftDetected", "score")} <= names


# -- (c) AlertmanagerSink against Alertmanager ---------------------------------------------------------------
def test_alertmanager_sink_posts_deduplicates_and_resolves(tmp_path):
    require("alertmanager")
    with (
        WebhookReceiver() as hook,
        AlertmanagerServer(tmp_path / "am", fast_alertmanager_config(hook.url)) as am,
    ):
        sink = AlertmanagerSink(
            am.url, {"team": "fraud", "env": "test"}, resolve_after_seconds=600, timeout=5, max_retries=2
        )
        first, second = make_alert(1), make_alert(2, rule="classifier")
        sink.send(first)
        sink.send(second.to_json())  # the JSON document other sinks receive works too
        sink.flush()
        assert sink.stats["sent"] == 2 and set(sink.active) == {"a-1", "a-2"}

        alerts = {a["labels"]["alert_id"]: a for a in am.alerts(filter='team="fraud"')}
        assert set(alerts) == {"a-1", "a-2"}
        got = alerts["a-1"]
        assert got["labels"] == {
            "alertname": "StreamimbDetection",
            "severity": "warning",
            "team": "fraud",
            "env": "test",
            "detector": "half_space_trees",
            "class": "1",
            "alert_id": "a-1",
        }
        assert alerts["a-2"]["labels"]["detector"] == "classifier"
        assert got["annotations"]["reason"] == first.reason
        assert float(got["annotations"]["anomaly_score"]) == pytest.approx(0.97)
        assert json.loads(got["annotations"]["proba"]) == {"0": 0.2, "1": 0.8}
        assert got["status"]["state"] == "active"

        # the webhook gets the firing group
        hook.wait_for(
            lambda p: (
                p["status"] == "firing" and any(a["labels"].get("alert_id") == "a-1" for a in p["alerts"])
            ),
            15,
            "the firing detection",
        )

        # an alert already sent and still active is not posted again: Alertmanager's updatedAt stays put
        updated = got["updatedAt"]
        time.sleep(0.05)
        sink.send(first)
        sink.flush()
        assert sink.stats["deduplicated"] == 1 and sink.stats["sent"] == 2
        again = {a["labels"]["alert_id"]: a for a in am.alerts(filter='team="fraud"')}
        assert again["a-1"]["updatedAt"] == updated

        # resolving ends it in Alertmanager; the other one stays
        assert sink.resolve("a-1")
        sink.flush()
        assert sink.stats["resolved"] == 1 and sink.active == ["a-2"]
        wait_until(
            lambda: {a["labels"]["alert_id"] for a in am.alerts(filter='team="fraud"')} == {"a-2"},
            10,
            "a-1 to be resolved",
        )
        hook.wait_for(
            lambda p: (
                p["status"] == "resolved"
                or any(
                    a["labels"].get("alert_id") == "a-1" and a["status"] == "resolved" for a in p["alerts"]
                )
            ),
            15,
            "the resolved notification",
        )

        # an alert posted with a short lifetime is resolved by Alertmanager at its endsAt
        short = AlertmanagerSink(am.url, {"team": "short"}, resolve_after_seconds=1.5)
        short.send(make_alert(3))
        short.flush()
        assert [a["labels"]["alert_id"] for a in am.alerts(filter='team="short"')] == ["a-3"]
        wait_until(lambda: am.alerts(filter='team="short"') == [], 10, "a-3 to expire")
        assert short.active == []


# -- (d) PrometheusSource reads Prometheus scraping a tiny exporter ------------------------------------------
def test_prometheus_source_follows_a_scraped_gauge_and_its_spike(tmp_path):
    require("prometheus")
    registry = CollectorRegistry()
    depth = Gauge("demo_queue_depth", "Queue depth.", ["queue"], registry=registry)
    broken = Gauge("demo_broken", "Always NaN.", registry=registry)
    for q in ("a", "b", "c"):
        depth.labels(q).set(1.0)
    broken.set(float("nan"))
    httpd, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    exporter = f"127.0.0.1:{httpd.server_address[1]}"
    try:
        with PrometheusServer(tmp_path / "prom", {"demo": [exporter]}) as prom:
            prom.wait_up("demo")
            query = 'demo_queue_depth{queue="a"}'
            wait_until(
                lambda: prom.value(f"count_over_time({query}[1m])") >= 5, 15, "4 s of samples in Prometheus"
            )
            src = PrometheusSource(prom.url, [query], interval_seconds=1, lookback_seconds=2, step=1)

            warm = src.poll()  # range query over the last 2 s: 3 grid points
            assert len(warm) == 3
            key = f'demo_queue_depth{{instance="{exporter}",job="demo",queue="a"}}'
            assert {s.series_key for s in warm} == {key}
            assert warm[0].labels == {
                "__name__": "demo_queue_depth",
                "instance": exporter,
                "job": "demo",
                "queue": "a",
            }
            assert [s.value for s in warm] == [1.0] * 3
            times = [s.timestamp for s in warm]
            assert times == sorted(set(times)) and all(t == int(t) for t in times)

            # inject a spike; Prometheus scrapes it; the next polls see it, without repeating old points
            def poll_until(samples: list, done, what: str) -> None:
                def step():
                    samples.extend(src.poll())
                    return done(samples)

                wait_until(step, 10, what, interval=0.2)

            depth.labels("a").set(100.0)
            spike: list = []
            poll_until(spike, lambda ss: any(s.value == 100.0 for s in ss), "the spike")
            assert min(s.timestamp for s in spike) > times[-1]
            depth.labels("a").set(1.0)
            after: list = []
            poll_until(after, lambda ss: bool(ss) and ss[-1].value == 1.0, "the return to normal")
            seen = [s.timestamp for s in warm + spike + after]
            assert seen == sorted(seen) and len(seen) == len(set(seen))
            assert src.stats["duplicates"] == 0

            # a gap between polls is backfilled by a range query on the same grid
            time.sleep(2.2)
            gap = src.poll()
            assert len(gap) >= 2
            assert [s.timestamp for s in gap] == [seen[-1] + i for i in range(1, len(gap) + 1)]

            # max_series caps the streams; NaN samples are skipped and counted
            capped = PrometheusSource(
                prom.url, ["demo_queue_depth", "demo_broken"], interval_seconds=1, max_series=2
            )
            out = capped.poll()
            # streams are admitted in (time, key) order: demo_broken (NaN) and queue a; b and c are dropped
            assert sorted(capped.series) == sorted([f'demo_broken{{instance="{exporter}",job="demo"}}', key])
            assert [s.series_key for s in out] == [key]
            assert capped.stats["dropped_series"] == 2 and capped.stats["dropped_samples"] == 2
            assert capped.stats["non_finite"] == 1
            nan_src = PrometheusSource(prom.url, ["demo_broken"], interval_seconds=1)
            assert nan_src.poll() == [] and nan_src.stats["non_finite"] == 1
            keep = PrometheusSource(prom.url, ["demo_broken"], interval_seconds=1, drop_non_finite=False)
            (nan_sample,) = keep.poll()
            assert math.isnan(nan_sample.value)

            # iteration polls every interval until closed
            it = PrometheusSource(prom.url, [query], interval_seconds=0.5, step=0.5)
            got = []
            for sample in it:
                got.append(sample)
                if len(got) == 3:
                    it.close()
            assert [s.timestamp for s in got] == sorted({s.timestamp for s in got})

            # a bad query is Prometheus's error, not retried
            bad = PrometheusSource(prom.url, ["rate(demo_queue_depth)"], interval_seconds=1, max_retries=3)
            with pytest.raises(SourceError, match="bad_data"):
                bad.poll()
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
