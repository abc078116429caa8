"""Prometheus as a source: per-series anomaly detection, alerts and exported scores."""

from __future__ import annotations

import json
import random
import threading
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from promstack import PrometheusServer, free_port, require, wait_until
from test_service import consumed_total

from streamimb.config import ServiceConfig
from streamimb.io.prometheus import Sample
from streamimb.service.watch import SeriesWatcher, run_watch


def noisy_series(key, n, rng, level=10.0):
    return [Sample(key, {}, float(i), level + rng.gauss(0, 1)) for i in range(n)]


class _BandedLatency:
    """A latency gauge that moves within a fixed band, a new value each scrape, until ``spike`` is set.

    The band's edges come back every few scrapes, so a detector that has seen a dozen values knows the
    band (Gaussian noise would keep setting new extremes, which a 20-point warm-up rightly flags now and
    then); the spike is 25 times the level.
    """

    def __init__(self, spike: threading.Event) -> None:
        self.spike = spike
        self.scrapes = 0
        self.rng = random.Random(2)

    def collect(self):
        self.scrapes += 1
        edge = {1: 0.19, 3: 0.21}.get(self.scrapes % 4)
        value = 5.0 if self.spike.is_set() else edge or 0.2 + self.rng.uniform(-0.01, 0.01)
        gauge = GaugeMetricFamily("demo_latency_seconds", "Request latency.")
        gauge.add_metric([], value)
        yield gauge


def samples_watched(metrics_port: int) -> float:
    """``streamimb_events_consumed_total`` of a running watch: the samples it has scored (0 while down)."""
    return consumed_total(f"http://127.0.0.1:{metrics_port}/metrics")


def test_watcher_flags_a_spike_and_not_the_noise():
    rng = random.Random(0)
    watcher = SeriesWatcher(threshold=0.5)
    quiet = watcher.process(noisy_series("a", 300, rng) + noisy_series("b", 300, rng, level=500.0))
    assert len(quiet) <= 6  # Gaussian noise alone: at most 1% false alarms
    alerts = watcher.process([Sample("a", {}, 300.0, 100.0), Sample("b", {}, 300.0, 500.5)])
    assert [a.event_id for a in alerts] == ["a"]
    alert = alerts[0]
    assert alert.rule == "series" and 0.5 <= alert.anomaly_score < 1.0
    again = SeriesWatcher(threshold=0.5)
    again.process(noisy_series("a", 300, random.Random(0)))
    assert again.alert(Sample("a", {}, 300.0, 100.0), 0.9).alert_id == alert.alert_id  # deterministic


def test_watcher_bounds_series_state():
    watcher = SeriesWatcher(max_series=10)
    rng = random.Random(1)
    for k in range(50):
        watcher.process(noisy_series(f"s{k}", 5, rng))
    assert len(watcher.registry) == 10
    assert len(watcher.latest) <= 11


@pytest.mark.prometheus
def test_watch_reads_real_prometheus_and_flags_injected_anomaly(tmp_path):
    require("prometheus")
    registry = CollectorRegistry()
    spike = threading.Event()
    registry.register(_BandedLatency(spike))
    httpd, _ = start_http_server(0, addr="127.0.0.1", registry=registry)
    exporter = f"127.0.0.1:{httpd.server_address[1]}"
    alerts_path = tmp_path / "alerts.jsonl"
    metrics_port = free_port()
    try:
        with PrometheusServer(tmp_path / "prom", {"demo": [exporter]}) as prom:
            prom.wait_up("demo")
            wait_until(
                lambda: (prom.value("count_over_time(demo_latency_seconds[1m])") or 0) >= 14, 30, "14 s"
            )
            config = ServiceConfig.model_validate(
                {
                    "source": {
                        "kind": "prometheus",
                        "url": prom.url,
                        "queries": ["demo_latency_seconds"],
                        "interval_seconds": 0.5,
                        "lookback_seconds": 12,
                        "step": 0.5,
                    },
                    "series": {"params": {"warmup": 20}},
                    "alerts_file": {"path": str(alerts_path)},
                    "metrics": {"address": f"127.0.0.1:{metrics_port}"},
                }
            )
            stop = threading.Event()
            result = {}
            worker = threading.Thread(target=lambda: result.update(run_watch(config, stop)))
            worker.start()
            try:
                # the first poll scores the lookback window (the warm-up), each later one the newest point:
                # wait for 4 live points after the warm-up (2 s of noise at the 0.5 s interval)
                warm = wait_until(lambda: samples_watched(metrics_port), 30, "the first poll")
                wait_until(lambda: samples_watched(metrics_port) >= warm + 4, 30, "4 live samples")
                assert not alerts_path.exists() or alerts_path.read_text() == ""  # noise alone: no alert
                spike.set()
                wait_until(lambda: alerts_path.exists() and alerts_path.read_text().strip(), 20, "an alert")
                scraped = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
            finally:
                stop.set()
                worker.join(timeout=20)
    finally:
        httpd.shutdown()
    alerts = [json.loads(line) for line in alerts_path.read_text().splitlines()]
    assert alerts[0]["rule"] == "series" and "demo_latency_seconds" in alerts[0]["event_id"]
    assert alerts[0]["anomaly_score"] >= 0.5
    assert "streamimb_series_anomaly_score{series=" in scraped
    assert result["samples"] >= 24 and result["series"] == 1
