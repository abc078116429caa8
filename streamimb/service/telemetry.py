"""Prometheus instruments, a scrape-time collector of model state, and the /metrics, /healthz, /readyz server.

The runner calls :class:`Telemetry` once per poll batch (never per event); the model's state (prevalence
estimates, thresholds, rolling metrics) is read from registered *state sources* only when Prometheus scrapes.
Everything lives on the registry passed in, never on prometheus_client's global one.

>>> from prometheus_client import CollectorRegistry, generate_latest
>>> t = Telemetry(CollectorRegistry(), clock=lambda: 1000.0)
>>> t.record_batch(consumed=3, processed=2, latencies_seconds=[2e-5, 3e-5], dead_letters={"bad_json": 1},
...                alerts={("hst", "1"): 1}, labels={"joined": 2})
>>> t.set_checkpoint(0, 990.0)
>>> t.add_state_source(lambda: {0: ProcessorStats(learned_events=2, prevalence_estimate={"1": 0.01})})
>>> text = generate_latest(t.registry).decode()
>>> 'streamimb_events_processed_total 2.0' in text
True
>>> 'streamimb_checkpoint_age_seconds{partition="0"} 10.0' in text
True
>>> 'streamimb_prevalence_estimate{class="1"} 0.01' in text
True
"""

from __future__ import annotations

import bisect
import collections
import logging
import math
import platform
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, make_wsgi_app
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from streamimb.labels import OUTCOMES as JOIN_OUTCOMES

__all__ = [
    "LABEL_OUTCOMES",
    "LATENCY_BUCKETS",
    "LISTEN_BACKLOG",
    "ROLLING_METRICS",
    "SUPPRESSION_REASONS",
    "MetricsServer",
    "ProcessorStats",
    "Telemetry",
]

log = logging.getLogger(__name__)

#: Upper bounds (seconds) of the latency histogram: per-event latencies (~5 us .. 50 ms) and whole batches.
LATENCY_BUCKETS: tuple[float, ...] = (
    5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

#: The rolling metrics exported per class, as ``<namespace>_rolling_<metric>{class}``.
ROLLING_METRICS: tuple[str, ...] = ("precision", "recall", "f1", "kappa", "gmean", "roc_auc")

#: Outcomes of a label arriving at the LabelJoiner; pre-bound so that rate() sees them from zero.
LABEL_OUTCOMES: tuple[str, ...] = JOIN_OUTCOMES

#: Why the Processor's AlertGuard withholds a classifier alert; pre-bound at zero.
SUPPRESSION_REASONS: tuple[str, ...] = ("no_skill", "rate_cap")

OVERFLOW_LABEL = "other"


@dataclass
class ProcessorStats:
    """A snapshot of one partition's model state, produced by the Processor and read at scrape time.

    ``rolling`` maps a metric name from :data:`ROLLING_METRICS` to ``{class: value}``; undefined values
    are NaN. ``alerts_suppressed`` counts the classifier alerts withheld so far, by reason.
    ``pending_predictions`` and ``early_labels`` are the partition's label join (set by the service).
    """

    learned_events: int = 0
    prevalence_estimate: dict[str, float] = field(default_factory=dict)
    observed_prevalence: dict[str, float] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    rolling: dict[str, dict[str, float]] = field(default_factory=dict)
    alerts_suppressed: dict[str, float] = field(default_factory=dict)
    pending_predictions: int = 0
    early_labels: int = 0
    candidates: dict[str, float] = field(default_factory=dict)
    served: str | None = None
    model_switches: int = 0

    @classmethod
    def from_stats(cls, stats: Mapping[str, Any]) -> ProcessorStats:
        """From ``Processor.stats()`` (class keys become strings; keys it lacks stay empty)."""
        return cls(
            learned_events=stats.get("learned_events", 0),
            prevalence_estimate={str(k): v for k, v in stats.get("prevalence_estimate", {}).items()},
            observed_prevalence={str(k): v for k, v in stats.get("observed_prevalence", {}).items()},
            thresholds=dict(stats.get("thresholds", {})),
            rolling={m: dict(v) for m, v in stats.get("rolling", {}).items()},
            alerts_suppressed=dict(stats.get("alerts_suppressed", {})),
            candidates=dict(stats.get("candidates", {})),
            served=stats.get("served"),
            model_switches=int(stats.get("model_switches", 0)),
        )


StateSource = Callable[[], Mapping[int, ProcessorStats]]


class _BoundedChildren:
    """Pre-bound label children of one metric, with a cap on distinct label values (extra ones -> 'other')."""

    def __init__(self, metric: Counter | Gauge, limit: int) -> None:
        self._metric = metric
        self._limit = limit
        self._children: dict[tuple[str, ...], Any] = {}
        self._lock = threading.Lock()

    def get(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is not None:
            return child
        with self._lock:
            child = self._children.get(values)
            if child is None:
                if len(self._children) >= self._limit:
                    values = tuple(OVERFLOW_LABEL for _ in values)
                    child = self._children.get(values)
                if child is None:
                    child = self._metric.labels(*values)
                    self._children[values] = child
        return child

    def remove(self, *values: str) -> None:
        with self._lock:
            if self._children.pop(values, None) is not None:
                self._metric.remove(*values)


class _BatchHistogram:
    """A histogram updated a batch at a time under one lock; exported by :class:`_ScrapeCollector`."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(sorted(bounds))
        self._counts = [0] * (len(self.bounds) + 1)  # last slot: above the largest bound (+Inf)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe_many(self, values: Iterable[float]) -> None:
        bounds, counts = self.bounds, [0] * (len(self.bounds) + 1)
        total = 0.0
        for v in values:
            if v != v:  # NaN: Prometheus histograms cannot place it; drop it
                continue
            counts[bisect.bisect_left(bounds, v)] += 1
            total += v
        with self._lock:
            for i, c in enumerate(counts):
                if c:
                    self._counts[i] += c
            self._sum += total

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, buckets = 0, []
        for bound, c in zip((*self.bounds, math.inf), counts, strict=True):
            cumulative += c
            buckets.append(("+Inf" if bound == math.inf else repr(float(bound)), float(cumulative)))
        return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=total)


def _number(value: object) -> float:
    """A gauge value: floats and ints as they are, anything else (None, text) as NaN."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def _weighted_means(per_partition: list[tuple[float, Mapping[str, float]]]) -> dict[str, float]:
    """Average each key over partitions, weighted by learned events (equal weights when all are zero).

    NaN (and None) entries are skipped; a key with only such entries is NaN.

    >>> _weighted_means([(3.0, {"a": 1.0}), (1.0, {"a": 5.0, "b": None})])
    {'a': 2.0, 'b': nan}
    """
    if len(per_partition) == 1:  # the common case, exact
        return {str(k): _number(v) for k, v in per_partition[0][1].items()}
    use_weights = any(w > 0 for w, _ in per_partition)
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    for w, values in per_partition:
        weight = w if use_weights else 1.0
        for key, raw in values.items():
            key, value = str(key), _number(raw)
            sums.setdefault(key, 0.0)
            weights.setdefault(key, 0.0)
            if value == value and weight > 0:
                sums[key] += weight * value
                weights[key] += weight
    return {k: (sums[k] / weights[k] if weights[k] > 0 else math.nan) for k in sums}


def _fold(values: Mapping[str, float], limit: int, additive: bool) -> dict[str, float]:
    """At most ``limit`` keys: the largest values kept, the rest as one ``other`` key (their sum where the
    values add up, like prevalences; NaN otherwise).

    >>> _fold({"a": 0.5, "b": 0.3, "c": 0.15, "d": 0.05}, 3, additive=True)
    {'a': 0.5, 'b': 0.3, 'other': 0.2}
    """
    if len(values) <= limit:
        return dict(values)
    ranked = sorted(values, key=lambda k: (values[k] == values[k], values[k]), reverse=True)
    kept = {k: values[k] for k in ranked[: limit - 1] if k != OVERFLOW_LABEL}
    rest = [values[k] for k in values if k not in kept]
    kept[OVERFLOW_LABEL] = math.fsum(v for v in rest if v == v) if additive else math.nan
    return kept


def _version(dist: str) -> str:
    try:
        return _dist_version(dist)
    except PackageNotFoundError:
        return "unknown"


class Telemetry:
    """All of streamimb's Prometheus instruments on one registry.

    Parameters
    ----------
    registry
        Where the instruments live; a fresh private registry when None (never the global one).
    namespace
        Prefix of every metric name.
    classes, detectors, drift_signals, dead_letter_reasons
        Label values known up front: their counters are created at zero so that ``rate()`` and
        ``increase()`` see the first event.
    max_label_values
        Cap on distinct label values per metric; further values are counted under ``other`` (model-state
        gauges keep the largest values and show the rest as ``other``).
    clock
        Wall clock (epoch seconds) used for checkpoint ages.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        namespace: str = "streamimb",
        *,
        classes: Sequence[str] = (),
        detectors: Sequence[str] = (),
        drift_signals: Sequence[str] = (),
        dead_letter_reasons: Sequence[str] = (),
        max_label_values: int = 64,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.namespace = namespace
        self.max_label_values = max_label_values
        self._clock = clock
        ns, reg = namespace, self.registry

        self._consumed = Counter(
            "events_consumed", "Event records read from the source.", namespace=ns, registry=reg
        )
        self._label_records = Counter(
            "label_records_consumed", "Records read from the labels topic.", namespace=ns, registry=reg
        )
        self._processed = Counter(
            "events_processed", "Events scored by the processor.", namespace=ns, registry=reg
        )
        dead = Counter(
            "dead_letters",
            "Records sent to the dead-letter sink, by reason.",
            ["reason"],
            namespace=ns,
            registry=reg,
        )
        alerts = Counter(
            "alerts",
            "Alerts raised, by detector and class.",
            ["detector", "class"],
            namespace=ns,
            registry=reg,
        )
        drifts = Counter("drifts", "Drifts detected, by signal.", ["signal"], namespace=ns, registry=reg)
        labels = Counter(
            "labels", "Labels received, by join outcome.", ["outcome"], namespace=ns, registry=reg
        )
        lag_records = Gauge(
            "consumer_lag_records",
            "Records behind the end of the partition.",
            ["partition"],
            namespace=ns,
            registry=reg,
        )
        lag_seconds = Gauge(
            "consumer_lag_seconds",
            "Age of the last consumed record.",
            ["partition"],
            namespace=ns,
            registry=reg,
        )
        self._ready = Gauge(
            "ready", "1 when the service is ready to process events.", namespace=ns, registry=reg
        )
        build = Gauge(
            "build_info",
            "Build information; the value is always 1.",
            ["version", "river_version", "python_version"],
            namespace=ns,
            registry=reg,
        )
        from streamimb import __version__

        build.labels(__version__, _version("river"), platform.python_version()).set(1)

        self._dead = _BoundedChildren(dead, max_label_values)
        self._alerts = _BoundedChildren(alerts, max_label_values)
        self._drifts = _BoundedChildren(drifts, max_label_values)
        self._labels = _BoundedChildren(labels, max_label_values)
        self._lag_records = _BoundedChildren(lag_records, max_label_values)
        self._lag_seconds = _BoundedChildren(lag_seconds, max_label_values)
        for reason in dead_letter_reasons:
            self._dead.get(reason)
        for detector in detectors:
            for cls in classes:
                self._alerts.get(detector, cls)
        for signal in drift_signals:
            self._drifts.get(signal)
        for outcome in LABEL_OUTCOMES:
            self._labels.get(outcome)

        self._latency = _BatchHistogram(LATENCY_BUCKETS)
        self._checkpoints: dict[int, float] = {}
        self._sources: list[StateSource] = []
        self._last_state: dict[int, dict[int, ProcessorStats]] = {}
        self._state_lock = threading.Lock()
        self._last_beat: float | None = None
        self._is_ready = False
        self._ready.set(0)
        reg.register(_ScrapeCollector(self))

    # -- called by the runner, once per batch ----------------------------------------------------------------
    def record_batch(
        self,
        consumed: int,
        processed: int,
        latencies_seconds: Sequence[float] = (),
        dead_letters: Mapping[str, int] | None = None,
        alerts: Mapping[tuple[str, str], int] | None = None,
        drifts: Mapping[str, int] | None = None,
        labels: Mapping[str, int] | None = None,
        label_records: int = 0,
    ) -> None:
        """Count one poll batch: event records consumed, events processed, their latencies and outcomes.

        ``latencies_seconds`` are per-event processing latencies (or one batch latency); ``labels`` maps a
        join outcome (see :data:`LABEL_OUTCOMES`) to a count; ``label_records`` counts the records read from
        the labels topic. Also counts as a liveness heartbeat.
        """
        if consumed:
            self._consumed.inc(consumed)
        if label_records:
            self._label_records.inc(label_records)
        if processed:
            self._processed.inc(processed)
        if len(latencies_seconds):  # a list or a numpy array
            self._latency.observe_many(latencies_seconds)
        for reason, n in (dead_letters or {}).items():
            if n:
                self._dead.get(reason).inc(n)
        for (detector, cls), n in (alerts or {}).items():
            if n:
                self._alerts.get(detector, cls).inc(n)
        for signal, n in (drifts or {}).items():
            if n:
                self._drifts.get(signal).inc(n)
        for outcome, n in (labels or {}).items():
            if n:
                self._labels.get(outcome).inc(n)
        self.heartbeat()

    def set_lag(self, partition: int, records: int, seconds: float) -> None:
        """Consumer lag of one partition, in records behind the end and in seconds behind now."""
        p = str(partition)
        self._lag_records.get(p).set(records)
        self._lag_seconds.get(p).set(seconds)

    def set_checkpoint(self, partition: int, unix_time: float) -> None:
        """When the last checkpoint covering ``partition`` was written; its age is computed at scrape time."""
        with self._state_lock:
            self._checkpoints[partition] = float(unix_time)

    def remove_partition(self, partition: int) -> None:
        """Forget a revoked partition's lag and checkpoint series."""
        p = str(partition)
        self._lag_records.remove(p)
        self._lag_seconds.remove(p)
        with self._state_lock:
            self._checkpoints.pop(partition, None)

    def set_ready(self, ready: bool) -> None:
        """Readiness: /readyz answers 200 and ``streamimb_ready`` is 1 while True.

        The loop calls it after every poll, so it also counts as a liveness heartbeat.
        """
        self._is_ready = bool(ready)
        self._ready.set(1 if ready else 0)
        self.heartbeat()

    @property
    def ready(self) -> bool:
        return self._is_ready

    def heartbeat(self) -> None:
        """Mark the processing loop alive; call once per loop iteration, even when a poll returns nothing
        (``record_batch`` and ``set_ready`` do it too)."""
        self._last_beat = time.monotonic()

    def alive(self, timeout_seconds: float) -> bool:
        """False once heartbeats have started and the last one is older than ``timeout_seconds``."""
        last = self._last_beat
        return last is None or time.monotonic() - last <= timeout_seconds

    def add_state_source(self, fn: StateSource) -> None:
        """Register ``fn() -> {partition: ProcessorStats}``, called from the HTTP thread at each scrape.

        It must be cheap and safe to call concurrently with processing. If it raises, the scrape uses its
        previous result and logs the error.
        """
        with self._state_lock:
            self._sources.append(fn)

    # -- read at scrape time ---------------------------------------------------------------------------------
    def _read_state(self) -> dict[int, ProcessorStats]:
        with self._state_lock:
            sources = list(enumerate(self._sources))
        merged: dict[int, ProcessorStats] = {}
        for i, fn in sources:
            try:
                result = {int(p): s for p, s in fn().items()}
            except Exception:
                log.exception("telemetry state source %r failed; using its previous result", fn)
                result = self._last_state.get(i, {})
            self._last_state[i] = result
            merged.update(result)
        return merged

    def _state_families(self) -> Iterator[Metric]:
        ns = self.namespace
        state = self._read_state()
        parts = sorted(state.items())
        learned = GaugeMetricFamily(
            f"{ns}_learned_events", "Labelled events the model has learned from.", labels=["partition"]
        )
        pending = GaugeMetricFamily(
            f"{ns}_pending_predictions", "Predictions waiting for their label.", labels=["partition"]
        )
        early = GaugeMetricFamily(
            f"{ns}_pending_early_labels", "Labels waiting for their event's prediction.", labels=["partition"]
        )
        for p, s in parts:
            learned.add_metric([str(p)], _number(s.learned_events))
            pending.add_metric([str(p)], _number(s.pending_predictions))
            early.add_metric([str(p)], _number(s.early_labels))
        yield learned
        yield pending
        yield early

        weights = [w if (w := _number(s.learned_events)) == w else 0.0 for _, s in parts]

        def by_key(
            name: str,
            doc: str,
            label: str,
            getter: Callable[[ProcessorStats], Mapping[str, float]],
            additive: bool = False,
        ) -> GaugeMetricFamily:
            fam = GaugeMetricFamily(f"{ns}_{name}", doc, labels=[label])
            values = _weighted_means([(w, getter(s)) for w, (_, s) in zip(weights, parts, strict=True)])
            values = _fold(values, self.max_label_values, additive)
            for key in sorted(values):
                fam.add_metric([str(key)], values[key])
            return fam

        yield by_key(
            "prevalence_estimate",
            "Estimated class prevalence (decayed prior tracker).",
            "class",
            lambda s: s.prevalence_estimate,
            additive=True,
        )
        yield by_key(
            "observed_prevalence",
            "Class prevalence among recently labelled events.",
            "class",
            lambda s: s.observed_prevalence,
            additive=True,
        )
        yield by_key(
            "decision_threshold",
            "Current decision threshold per detector.",
            "detector",
            lambda s: s.thresholds,
        )
        for metric in ROLLING_METRICS:
            yield by_key(
                f"rolling_{metric}",
                f"Rolling prequential {metric.replace('_', ' ')} per class.",
                "class",
                lambda s, m=metric: s.rolling.get(m, {}),
            )

        yield by_key(
            "candidate_pr_auc",
            "Decayed prequential PR AUC of the rare class, per candidate model of the portfolio.",
            "candidate",
            lambda s: s.candidates,
        )
        served = GaugeMetricFamily(
            f"{ns}_served_model",
            "Share of the partitions held that serve each candidate model (or their blend).",
            labels=["candidate"],
        )
        serving = collections.Counter(s.served for _, s in parts if s.served is not None)
        for name in sorted({n for _, s in parts for n in s.candidates} | set(serving)):
            served.add_metric([name], serving.get(name, 0) / max(1, sum(serving.values())))
        yield served
        switches = CounterMetricFamily(
            f"{ns}_model_switches",
            "Times the portfolio switched the model it serves (summed over the partitions held).",
        )
        switches.add_metric([], float(sum(s.model_switches for _, s in parts)))
        yield switches

        suppressed = dict.fromkeys(SUPPRESSION_REASONS, 0.0)
        for _, s in parts:
            for reason, n in s.alerts_suppressed.items():
                if reason in suppressed and (n := _number(n)) == n:
                    suppressed[reason] += n
        withheld = CounterMetricFamily(
            f"{ns}_alerts_suppressed",
            "Classifier alerts withheld, by reason: no measured skill, or the alert-rate cap (summed over "
            "the partitions held; it moves with a partition).",
            labels=["reason"],
        )
        for reason, n in suppressed.items():
            withheld.add_metric([reason], n)
        yield withheld

        ages = GaugeMetricFamily(
            f"{ns}_checkpoint_age_seconds", "Seconds since the last checkpoint.", labels=["partition"]
        )
        with self._state_lock:
            checkpoints = sorted(self._checkpoints.items())
        now = self._clock()
        for p, t in checkpoints:
            ages.add_metric([str(p)], max(0.0, now - t))
        yield ages

    def _families(self) -> Iterator[Metric]:
        yield self._latency.family(
            f"{self.namespace}_processing_latency_seconds", "Processing latency per event (or per batch)."
        )
        try:
            yield from self._state_families()
        except Exception:  # a broken state snapshot must not break /metrics
            log.exception("telemetry: cannot export model state")


class _ScrapeCollector:
    """Exports the batch histogram, the model state and checkpoint ages of one Telemetry at scrape time."""

    def __init__(self, telemetry: Telemetry) -> None:
        self._telemetry = telemetry

    def describe(self) -> list[Metric]:
        ns = self._telemetry.namespace
        names = [
            "learned_events",
            "prevalence_estimate",
            "observed_prevalence",
            "decision_threshold",
            "checkpoint_age_seconds",
            "candidate_pr_auc",
            "served_model",
            *(f"rolling_{m}" for m in ROLLING_METRICS),
        ]
        out: list[Metric] = [GaugeMetricFamily(f"{ns}_{n}", "") for n in names]
        out.append(CounterMetricFamily(f"{ns}_alerts_suppressed", ""))
        out.append(CounterMetricFamily(f"{ns}_model_switches", ""))
        out.append(HistogramMetricFamily(f"{ns}_processing_latency_seconds", ""))
        return out

    def collect(self) -> Iterator[Metric]:
        return self._telemetry._families()


def _split_address(address: str) -> tuple[str, int]:
    """``"HOST:PORT"`` (``"[::1]:PORT"`` for IPv6) -> (host, port).

    >>> _split_address("127.0.0.1:0"), _split_address("[::1]:9464")
    (('127.0.0.1', 0), ('::1', 9464))
    """
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"metrics address must be HOST:PORT, got {address!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


#: Connections the metrics server's socket queues before it accepts them. socketserver's default (5) made
#: 50 parallel scrapes time out; accepted connections each get a (daemon) thread.
LISTEN_BACKLOG = 128
#: Seconds a connection may stay silent before the server drops it.
REQUEST_TIMEOUT = 30.0
_PLAIN = [("Content-Type", "text/plain; charset=utf-8")]


class _Server(ThreadingMixIn, WSGIServer):
    """wsgiref's server, a thread per request, a listen backlog of :data:`LISTEN_BACKLOG`."""

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that goes away is logged at debug level; anything else with its traceback, in the log."""
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            log.debug("metrics server: client %s: %s", client_address, exc)
        else:
            log.exception("metrics server: error serving %s", client_address)


class _Handler(WSGIRequestHandler):
    timeout = REQUEST_TIMEOUT

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics server: " + format, *args)


class MetricsServer:
    """A threaded HTTP server for ``/metrics``, ``/healthz`` and ``/readyz``; 404 elsewhere.

    ``/metrics`` is prometheus_client's WSGI app (content negotiation, gzip, ``name[]`` filters) on the
    telemetry's registry. ``address`` is ``"HOST:PORT"``; port 0 binds a free port, read back from
    :attr:`address` after :meth:`start`. ``/healthz`` answers 503 once the runner's heartbeats are older than
    ``liveness_timeout``; ``/readyz`` 503 while the telemetry is not ready.
    """

    def __init__(self, address: str, telemetry: Telemetry, *, liveness_timeout: float = 60.0) -> None:
        self._host, self._port = _split_address(address)
        self.telemetry = telemetry
        self.liveness_timeout = liveness_timeout
        self._metrics_app = make_wsgi_app(telemetry.registry)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        """The bound ``HOST:PORT`` (the real port once started)."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{host}:{self._port}"

    def app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """The WSGI application: ``/metrics``, ``/healthz``, ``/readyz``, 404 elsewhere."""
        path = environ.get("PATH_INFO", "")
        try:
            if path == "/metrics":
                return self._metrics_app(environ, start_response)
            if environ.get("REQUEST_METHOD") != "GET":
                status, body = "405 Method Not Allowed", b"method not allowed\n"
            elif path == "/healthz":
                ok = self.telemetry.alive(self.liveness_timeout)
                status, body = ("200 OK", b"ok\n") if ok else ("503 Service Unavailable", b"loop stalled\n")
            elif path == "/readyz":
                ok = self.telemetry.ready
                status, body = ("200 OK", b"ready\n") if ok else ("503 Service Unavailable", b"not ready\n")
            else:
                status, body = "404 Not Found", b"not found\n"
        except Exception:
            log.exception("metrics server: %s failed", path)
            status, body = "500 Internal Server Error", b"internal error\n"
        start_response(status, list(_PLAIN))
        return [body]

    def start(self) -> MetricsServer:
        if self._server is not None:
            return self
        server_cls = type("_BoundServer", (_Server,), {})
        if ":" in self._host:
            server_cls.address_family = socket.AF_INET6
        server = server_cls((self._host, self._port), _Handler)
        server.set_app(self.app)
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="streamimb-metrics", daemon=True
        )
        self._thread.start()
        log.info("metrics server listening on http://%s", self.address)
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def processor_stats(processor: Any) -> ProcessorStats:
    """What the scrape reads of one Processor (one partition's model)."""
    return ProcessorStats.from_stats(processor.stats())


def stream_telemetry(classes: Sequence[str] = (), registry: CollectorRegistry | None = None) -> Telemetry:
    """The instruments of a stream of events (the service, or a replay) with its label values pre-bound."""
    from streamimb.decoding import REASONS

    return Telemetry(
        registry,
        classes=classes,
        detectors=("anomaly", "classifier"),
        drift_signals=("score", "error", "prevalence", "feature"),
        dead_letter_reasons=REASONS,
    )
