"""Prometheus as a source: poll PromQL queries, score every series, alert, and export the scores.

Each series (a query's result label set) gets its own SeriesAnomalyDetector (trend and daily/weekly
seasonality aware), capped at ``source.max_series`` with LRU eviction. Scores are on one scale for every
series (0.5 is the alarm level), so one threshold serves them all. Scores are exported back to Prometheus as
``streamimb_series_anomaly_score{series}`` and alerts go to the configured sinks.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily

from streamimb import __version__
from streamimb.config import ServiceConfig
from streamimb.detectors.timeseries import SeriesAnomalyDetector, SeriesRegistry
from streamimb.errors import SinkError, SourceError
from streamimb.events import Alert
from streamimb.io.prometheus import PrometheusSourceConfig, Sample

log = logging.getLogger(__name__)


class SeriesWatcher:
    """Scores samples per series and turns crossings of the threshold into alerts (pure, no I/O)."""

    def __init__(self, threshold: float = 0.5, max_series: int = 1000, **detector_params: Any) -> None:
        self.threshold = threshold
        self.registry = SeriesRegistry(
            lambda: SeriesAnomalyDetector(**detector_params), max_series=max_series
        )
        self.latest: dict[str, float] = {}
        self.samples = 0
        self.model_version = f"streamimb-{__version__}"

    def process(self, samples: list[Sample]) -> list[Alert]:
        alerts = []
        for sample in samples:
            score = self.registry.score_learn(sample.series_key, sample.value, sample.timestamp)
            self.samples += 1
            self.latest[sample.series_key] = score
            if score >= self.threshold:
                alerts.append(self.alert(sample, score))
        if len(self.latest) > self.registry.max_series:
            self.latest = {k: v for k, v in self.latest.items() if k in self.registry}
        return alerts

    def alert(self, sample: Sample, score: float) -> Alert:
        digest = hashlib.sha1(sample.series_key.encode()).hexdigest()[:12]
        return Alert(
            alert_id=f"prometheus-{digest}-{int(sample.timestamp)}-series",
            event_id=sample.series_key,
            time=sample.timestamp,
            rule="series",
            reason=f"{sample.series_key} = {sample.value:g} scored {score:.3f} >= {self.threshold:g}",
            anomaly_score=score,
            proba={},
            predicted=None,
            model_version=self.model_version,
            source="prometheus",
        )


class _ScoreCollector:
    """Exports the latest score of every followed series at scrape time."""

    def __init__(self, watcher: SeriesWatcher) -> None:
        self.watcher = watcher

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "streamimb_series_anomaly_score",
            "Latest anomaly score of a watched series (0.5 = alarm level).",
            labels=["series"],
        )
        for key, score in list(self.watcher.latest.items()):
            if math.isfinite(score):
                family.add_metric([key], score)
        yield family
        tracked = GaugeMetricFamily("streamimb_series_tracked", "Series with detector state.")
        tracked.add_metric([], len(self.watcher.registry))
        yield tracked


def run_watch(
    config: ServiceConfig, stop: threading.Event | None = None, max_polls: int | None = None
) -> dict:
    """Poll Prometheus until stopped (or ``max_polls``), alerting through the configured sinks."""
    from streamimb.io.files import JsonlSink
    from streamimb.service.runner import AlertSinks
    from streamimb.service.telemetry import MetricsServer, Telemetry

    source_cfg = config.source
    if not isinstance(source_cfg, PrometheusSourceConfig):
        raise ValueError("run_watch needs source.kind: prometheus")
    stop = stop or threading.Event()
    watcher = SeriesWatcher(config.series.threshold, source_cfg.max_series, **config.series.params)
    telemetry = Telemetry(detectors=("series",))
    telemetry.registry.register(_ScoreCollector(watcher))
    server = MetricsServer(config.metrics.address, telemetry).start() if config.metrics.address else None
    others = [config.alertmanager.build()] if config.alertmanager else []
    sinks = AlertSinks(None, JsonlSink(config.alerts_file.path) if config.alerts_file.path else None, others)
    source = source_cfg.build()
    polls = alerts_sent = 0
    try:
        while not stop.is_set() and (max_polls is None or polls < max_polls):
            started = time.monotonic()
            try:
                samples = source.poll()
                telemetry.set_ready(True)
            except SourceError as exc:
                telemetry.set_ready(False)
                log.warning("polling Prometheus failed: %s", exc)
                samples = []
            polls += 1
            alerts = watcher.process(samples)
            for alert in alerts:
                sinks.send(alert)
            try:
                sinks.flush()
            except SinkError as exc:
                log.warning("alert delivery failed (will retry with the next flush): %s", exc)
            alerts_sent += len(alerts)
            telemetry.record_batch(
                len(samples), len(samples), alerts={("series", ""): len(alerts)} if alerts else None
            )
            for alert in alerts:
                log.warning("ALERT %s", alert.reason)
            if max_polls is None or polls < max_polls:
                stop.wait(max(0.0, source_cfg.interval_seconds - (time.monotonic() - started)))
    finally:
        source.close()
        sinks.close()
        if server is not None:
            server.stop()
    return {
        "polls": polls,
        "samples": watcher.samples,
        "series": len(watcher.registry),
        "alerts": alerts_sent,
    }
