"""Prometheus as a source (PromQL polling over the HTTP API) and Alertmanager as an alert sink.

Both speak HTTP through the standard library's urllib, retry transient failures with exponential backoff and
raise :class:`~streamimb.errors.SourceError` / :class:`~streamimb.errors.SinkError` after the last retry.

>>> cfg = PrometheusSourceConfig(url="http://127.0.0.1:9090", queries=["up"], interval_seconds=5)
>>> src = cfg.build()
>>> src.step, src.queries
(5.0, ('up',))
>>> samples = parse_query_result("up", {"resultType": "vector", "result": [
...     {"metric": {"__name__": "up", "job": "a"}, "value": [10.0, "1"]}]})
>>> samples[0].series_key, samples[0].timestamp, samples[0].value
('up{job="a"}', 10.0, 1.0)
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NamedTuple

from streamimb.errors import SinkError, SourceError
from streamimb.events import Alert
from streamimb.io.settings import LABEL_NAME, AlertmanagerConfig, PrometheusSourceConfig, check_url

__all__ = [
    "AlertmanagerConfig",
    "AlertmanagerSink",
    "PrometheusSource",
    "PrometheusSourceConfig",
    "Sample",
    "parse_query_result",
    "series_key",
]

log = logging.getLogger(__name__)

_MAX_BACKOFF = 30.0
_MAX_RANGE_POINTS = 11_000  # Prometheus refuses range queries with more points per series


# -- HTTP ----------------------------------------------------------------------------------------------------
class _HTTPFailure(Exception):
    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def _request(url: str, body: bytes | None, content_type: str, timeout: float) -> bytes:
    req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    if body is not None:
        req.add_header("Content-Type", content_type)
    req.add_header("Accept", "application/json")
    req.add_header("User-Agent", "streamimb")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:500].decode("utf-8", "replace").strip()
        retryable = exc.code >= 500 or exc.code == 429
        raise _HTTPFailure(f"HTTP {exc.code} from {url}: {detail}", retryable) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise _HTTPFailure(f"cannot reach {url}: {reason}", True) from exc


def _with_retries(
    call: Callable[[], bytes],
    max_retries: int,
    backoff: float,
    sleep: Callable[[float], None],
    error: type[Exception],
) -> bytes:
    """``call()``, retried ``max_retries`` times on transient failures with backoff * 2**attempt."""
    for attempt in range(max_retries + 1):
        try:
            return call()
        except _HTTPFailure as exc:
            if not exc.retryable or attempt == max_retries:
                tries = attempt + 1
                raise error(f"{exc} (after {tries} attempt{'s' if tries > 1 else ''})") from exc
            delay = min(_MAX_BACKOFF, backoff * 2**attempt)
            log.warning("%s; retrying in %.2fs", exc, delay)
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def _rfc3339(t: float) -> str:
    """Epoch seconds -> RFC 3339 in UTC with milliseconds.

    >>> _rfc3339(0.25)
    '1970-01-01T00:00:00.250Z'
    """
    ms = round(t * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


# -- Alertmanager sink ---------------------------------------------------------------------------------------
class AlertmanagerSink:
    """Posts streamimb alerts to Alertmanager's v2 API (``POST /api/v2/alerts``).

    Each alert carries the static ``labels`` plus ``alertname``, ``severity``, ``detector`` (the alert's
    rule), ``class`` (the predicted class, when any) and ``alert_id``, so that Alertmanager keeps distinct
    alerts apart and a resolve targets exactly one. Static labels override the default ``alertname`` and
    ``severity``. Annotations carry the reason, the scores and where the event came from.

    ``send``/``write`` only buffer; ``flush`` delivers (call it once per batch and before a checkpoint).
    An alert id that was sent and is still active is not posted again. Alerts are posted with
    ``endsAt = now + resolve_after_seconds``, so Alertmanager resolves them by itself even if this process
    dies; :meth:`resolve` ends one earlier (posted with ``endsAt`` a second ago on the next flush). A flush
    that still fails after ``max_retries`` retries raises :class:`SinkError` and keeps its alerts buffered.
    """

    def __init__(
        self,
        url: str,
        labels: Mapping[str, str] | None = None,
        resolve_after_seconds: float = 300.0,
        timeout: float = 5.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        *,
        alertname: str = "StreamimbDetection",
        severity: str = "warning",
        generator_url: str | None = None,
        batch_size: int = 100,
        max_pending: int = 10_000,
        max_active: int = 100_000,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = check_url(url)
        self.labels = dict(labels or {})
        for name in self.labels:
            if not LABEL_NAME.match(name):
                raise ValueError(f"invalid Alertmanager label name {name!r}")
        if resolve_after_seconds <= 0:
            raise ValueError("resolve_after_seconds must be > 0")
        self.resolve_after_seconds = float(resolve_after_seconds)
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.alertname = alertname
        self.severity = severity
        self.generator_url = generator_url
        self.batch_size = batch_size
        self.max_pending = max_pending
        self.max_active = max_active
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.RLock()
        self._pending: OrderedDict[str, Alert] = OrderedDict()
        self._resolving: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._active: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()  # id -> (expiry, body)
        self.stats = {"sent": 0, "resolved": 0, "deduplicated": 0, "dropped": 0, "failed_flushes": 0}

    @classmethod
    def from_config(cls, config: AlertmanagerConfig) -> AlertmanagerSink:
        return cls(
            config.url,
            config.labels,
            config.resolve_after_seconds,
            config.timeout,
            config.max_retries,
            config.backoff,
            alertname=config.alertname,
            severity=config.severity,
            generator_url=config.generator_url,
            batch_size=config.batch_size,
        )

    # -- the sink protocol (send / flush / close) ------------------------------------------------------------
    def send(self, alert: Alert | str | Mapping[str, Any]) -> None:
        """Buffer an alert (an :class:`Alert`, its JSON from ``Alert.to_json()``, or a dict of its fields)."""
        if isinstance(alert, str):
            alert = Alert(**json.loads(alert))
        elif not isinstance(alert, Alert):
            alert = Alert(**alert)
        self.write(alert)

    def write(self, alert: Alert) -> None:
        with self._lock:
            self._expire(self._clock())
            if alert.alert_id in self._active or alert.alert_id in self._pending:
                self.stats["deduplicated"] += 1
                return
            if len(self._pending) >= self.max_pending:
                dropped, _ = self._pending.popitem(last=False)
                self.stats["dropped"] += 1
                log.warning("alertmanager sink: buffer full, dropped alert %s", dropped)
            self._pending[alert.alert_id] = alert

    def write_many(self, alerts: Iterable[Alert]) -> None:
        for alert in alerts:
            self.write(alert)

    def resolve(self, alert_id: str) -> bool:
        """End an active alert now (posted on the next flush); False if it is not active."""
        with self._lock:
            if self._pending.pop(alert_id, None) is not None:
                return True  # never sent: nothing to resolve
            entry = self._active.pop(alert_id, None)
            if entry is None:
                return False
            expiry, body = entry[0], dict(entry[1])
            # Alertmanager keeps the later of two end times unless the update is already over when it is
            # merged, so an end of "now" could arrive a fraction of a millisecond early and be ignored: end it
            # a second ago (never before it started).
            started = expiry - self.resolve_after_seconds
            body["endsAt"] = _rfc3339(max(self._clock() - 1.0, started, 0.0))
            self._resolving[alert_id] = body
            return True

    def flush(self) -> None:
        """Deliver buffered alerts and resolves; raises SinkError (and keeps them) when Alertmanager fails."""
        with self._lock:
            now = self._clock()
            self._expire(now)
            resolving = list(self._resolving.items())
            firing = [(a.alert_id, self._body(a, now)) for a in self._pending.values()]
            items = [(i, b, False) for i, b in resolving] + [(i, b, True) for i, b in firing]
            for start in range(0, len(items), self.batch_size):
                chunk = items[start : start + self.batch_size]
                try:
                    self._post([b for _, b, _ in chunk])
                except SinkError:
                    self.stats["failed_flushes"] += 1
                    raise
                for alert_id, body, is_firing in chunk:
                    if is_firing:
                        self._pending.pop(alert_id, None)
                        self._active[alert_id] = (now + self.resolve_after_seconds, body)
                        self.stats["sent"] += 1
                    else:
                        self._resolving.pop(alert_id, None)
                        self.stats["resolved"] += 1
            while len(self._active) > self.max_active:
                self._active.popitem(last=False)  # Alertmanager resolves it at its endsAt anyway

    def close(self) -> None:
        self.flush()

    @property
    def active(self) -> list[str]:
        """Ids of alerts sent and not yet ended."""
        with self._lock:
            self._expire(self._clock())
            return list(self._active)

    # -- internals -------------------------------------------------------------------------------------------
    def _expire(self, now: float) -> None:
        while self._active:
            alert_id, (expiry, _) = next(iter(self._active.items()))
            if expiry > now:
                break
            del self._active[alert_id]

    def _body(self, alert: Alert, now: float) -> dict[str, Any]:
        labels = {"alertname": self.alertname, "severity": self.severity, **self.labels}
        labels["detector"] = alert.rule or "unknown"
        labels["alert_id"] = alert.alert_id
        if alert.predicted:
            labels["class"] = str(alert.predicted)
        annotations = {
            "summary": f"{alert.rule or 'streamimb'} alert on event {alert.event_id}",
            "reason": alert.reason,
            "anomaly_score": repr(float(alert.anomaly_score)),
            "proba": json.dumps(alert.proba, sort_keys=True, default=str),
            "event_id": alert.event_id,
            "event_time": "" if alert.time is None else repr(alert.time),
            "model_version": alert.model_version,
            "source": alert.source,
            "partition": str(alert.partition),
            "offset": str(alert.offset),
        }
        body: dict[str, Any] = {
            "labels": {k: str(v) for k, v in labels.items() if v not in (None, "")},
            "annotations": {k: v for k, v in annotations.items() if v != ""},
            "startsAt": _rfc3339(now),
            "endsAt": _rfc3339(now + self.resolve_after_seconds),
        }
        if self.generator_url:
            body["generatorURL"] = self.generator_url
        return body

    def _post(self, bodies: list[dict[str, Any]]) -> None:
        payload = json.dumps(bodies, allow_nan=False).encode("utf-8")
        url = f"{self.url}/api/v2/alerts"
        _with_retries(
            lambda: _request(url, payload, "application/json", self.timeout),
            self.max_retries,
            self.backoff,
            self._sleep,
            SinkError,
        )


# -- Prometheus source ---------------------------------------------------------------------------------------
class Sample(NamedTuple):
    """One point of one series: ``series_key`` names the stream, stable across polls."""

    series_key: str
    labels: dict[str, str]
    timestamp: float
    value: float


def series_key(query: str, labels: Mapping[str, str]) -> str:
    """A stable name for one series: ``name{k="v",...}``; expressions without a metric name use the query.

    >>> series_key("rate(x[1m])", {"job": "a", "instance": "h:1"})
    'rate(x[1m]){instance="h:1",job="a"}'
    >>> series_key("up", {"__name__": "up", "job": "a"})
    'up{job="a"}'
    """
    name = labels.get("__name__") or query.strip()
    inner = ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(labels.items()) if k != "__name__")
    return f"{name}{{{inner}}}"


def _value(raw: Any) -> float | None:
    try:
        return float(raw)
    except (TypeError, ValueError):
        return None


def parse_query_result(query: str, data: Mapping[str, Any]) -> list[Sample]:
    """The samples of one API ``data`` object (vector, matrix or scalar); values that are not numbers are
    returned as NaN (strings are skipped).

    >>> parse_query_result("1+1", {"resultType": "scalar", "result": [5.0, "2"]})
    [Sample(series_key='1+1{}', labels={}, timestamp=5.0, value=2.0)]
    """
    kind = data.get("resultType")
    result = data.get("result")
    out: list[Sample] = []
    if kind == "scalar" and isinstance(result, list) and len(result) == 2:
        value = _value(result[1])
        out.append(Sample(series_key(query, {}), {}, float(result[0]), math.nan if value is None else value))
    elif kind in ("vector", "matrix") and isinstance(result, list):
        for series in result:
            labels = {str(k): str(v) for k, v in (series.get("metric") or {}).items()}
            key = series_key(query, labels)
            points = [series["value"]] if kind == "vector" else series.get("values") or []
            for ts, raw in points:
                value = _value(raw)
                out.append(Sample(key, labels, float(ts), math.nan if value is None else value))
    return out


class PrometheusSource:
    """Polls PromQL queries on Prometheus's HTTP API and yields new samples in time order.

    Queries are evaluated on a grid of ``step`` seconds (default: the interval). The first poll fills
    ``lookback_seconds`` of history with a range query (``/api/v1/query_range``); later polls ask for the
    newest grid point with an instant query (``/api/v1/query``), or backfill with a range query when polls
    were missed. Each label set is one stream (``series_key``); a sample whose timestamp is not newer than
    the last one of its stream is a duplicate and is skipped. At most ``max_series`` streams are followed:
    samples of further ones are dropped and counted in ``stats``. Non-numeric values, NaN and infinities are
    skipped and counted unless ``drop_non_finite`` is False (then NaN and infinities are yielded).

    ``delay_seconds`` evaluates behind real time so that the latest scrape has landed; streams not seen for
    ``stale_after_seconds`` are forgotten (freeing their slot). Iterating polls every ``interval_seconds``
    until :meth:`close`; a poll failing after its retries is logged and retried at the next tick, and
    ``max_consecutive_failures`` failed polls in a row raise :class:`SourceError`.
    """

    def __init__(
        self,
        url: str,
        queries: Iterable[str],
        interval_seconds: float = 15.0,
        lookback_seconds: float = 0.0,
        step: float | None = None,
        max_series: int = 1000,
        *,
        delay_seconds: float = 0.0,
        timeout: float = 10.0,
        max_retries: int = 2,
        backoff: float = 0.5,
        drop_non_finite: bool = True,
        stale_after_seconds: float | None = None,
        max_consecutive_failures: int = 10,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = check_url(url)
        self.queries = tuple(queries)
        if not self.queries:
            raise ValueError("at least one query is needed")
        if interval_seconds <= 0 or (step is not None and step <= 0):
            raise ValueError("interval_seconds and step must be > 0")
        self.interval_seconds = float(interval_seconds)
        self.step = float(step if step is not None else interval_seconds)
        self.lookback_seconds = max(0.0, float(lookback_seconds))
        self.max_series = max_series
        self.delay_seconds = delay_seconds
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.drop_non_finite = drop_non_finite
        self.stale_after_seconds = (
            stale_after_seconds
            if stale_after_seconds is not None
            else max(3600.0, 10 * self.interval_seconds, 2 * self.lookback_seconds)
        )
        self.max_consecutive_failures = max_consecutive_failures
        self._clock = clock
        self._sleep = sleep
        self._closed = threading.Event()
        self._last_end: float | None = None
        self._last_ts: dict[str, float] = {}
        self._last_seen: dict[str, float] = {}
        self._dropped_keys: set[str] = set()
        self.stats = {
            "polls": 0,
            "samples": 0,
            "duplicates": 0,
            "dropped_series": 0,
            "dropped_samples": 0,
            "non_finite": 0,
            "failures": 0,
        }

    @classmethod
    def from_config(cls, config: PrometheusSourceConfig) -> PrometheusSource:
        return cls(
            config.url,
            config.queries,
            config.interval_seconds,
            config.lookback_seconds,
            config.step,
            config.max_series,
            delay_seconds=config.delay_seconds,
            timeout=config.timeout,
            max_retries=config.max_retries,
            backoff=config.backoff,
            drop_non_finite=config.drop_non_finite,
            stale_after_seconds=config.stale_after_seconds,
            max_consecutive_failures=config.max_consecutive_failures,
        )

    @property
    def series(self) -> list[str]:
        """Keys of the streams being followed."""
        return list(self._last_ts)

    def poll(self) -> list[Sample]:
        """One round of queries: the new samples since the previous round, sorted by (timestamp, key)."""
        step = self.step
        end = math.floor((self._clock() - self.delay_seconds) / step) * step
        if self._last_end is None:
            start = end - math.floor(self.lookback_seconds / step) * step
        elif end <= self._last_end:
            return []
        else:
            start = self._last_end + step
        start = max(start, end - (_MAX_RANGE_POINTS - 1) * step)
        raw: list[Sample] = []
        for query in self.queries:
            if start >= end:
                data = self._api("query", {"query": query, "time": _fmt(end)})
            else:
                params = {"query": query, "start": _fmt(start), "end": _fmt(end), "step": _fmt(step)}
                data = self._api("query_range", params)
            raw.extend(parse_query_result(query, data))
        self._last_end = end
        self.stats["polls"] += 1
        return self._admit(raw, now=self._clock())

    def snapshot(self) -> dict[str, Any]:
        """The read position (last grid time, last timestamp per stream) as JSON data, for checkpoints."""
        return {"last_end": self._last_end, "last_ts": dict(self._last_ts)}

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        """Resume from :meth:`snapshot`: the next poll backfills from there, and nothing is yielded twice."""
        self._last_end = snapshot.get("last_end")
        self._last_ts = {str(k): float(v) for k, v in (snapshot.get("last_ts") or {}).items()}
        now = self._clock()
        self._last_seen = dict.fromkeys(self._last_ts, now)

    def iter_batches(self) -> Iterator[list[Sample]]:
        """One list of new samples per poll, every ``interval_seconds``, until :meth:`close`."""
        failures = 0
        while not self._closed.is_set():
            started = time.monotonic()
            try:
                batch = self.poll()
                failures = 0
            except SourceError as exc:
                failures += 1
                self.stats["failures"] += 1
                if failures >= self.max_consecutive_failures:
                    raise
                log.warning("prometheus source: %s (failure %d in a row)", exc, failures)
                batch = []
            yield batch
            self._closed.wait(max(0.0, self.interval_seconds - (time.monotonic() - started)))

    def __iter__(self) -> Iterator[Sample]:
        for batch in self.iter_batches():
            yield from batch

    def close(self) -> None:
        self._closed.set()

    # -- internals -------------------------------------------------------------------------------------------
    def _api(self, endpoint: str, params: Mapping[str, str]) -> dict[str, Any]:
        url = f"{self.url}/api/v1/{endpoint}"
        body = urllib.parse.urlencode(params).encode("utf-8")
        raw = _with_retries(
            lambda: _request(url, body, "application/x-www-form-urlencoded", self.timeout),
            self.max_retries,
            self.backoff,
            self._sleep,
            SourceError,
        )
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise SourceError(f"{url}: response is not JSON") from exc
        if doc.get("status") != "success":
            raise SourceError(f"{url}: {doc.get('errorType', 'error')}: {doc.get('error', doc)}")
        for warning in doc.get("warnings") or ():
            log.warning("prometheus: %s", warning)
        return doc.get("data") or {}

    def _admit(self, raw: list[Sample], now: float) -> list[Sample]:
        self._forget_stale(now)
        raw.sort(key=lambda s: (s.timestamp, s.series_key))
        out: list[Sample] = []
        for sample in raw:
            key = sample.series_key
            last = self._last_ts.get(key)
            if last is None:
                if len(self._last_ts) >= self.max_series:
                    if key not in self._dropped_keys:
                        self._dropped_keys.add(key)
                        self.stats["dropped_series"] += 1
                        log.warning(
                            "prometheus source: max_series=%d reached, dropping %s", self.max_series, key
                        )
                    self.stats["dropped_samples"] += 1
                    continue
                self._dropped_keys.discard(key)
                last = -math.inf
            self._last_seen[key] = now
            if sample.timestamp <= last:
                self.stats["duplicates"] += 1
                continue
            if self.drop_non_finite and not math.isfinite(sample.value):
                self.stats["non_finite"] += 1
                self._last_ts[key] = sample.timestamp  # seen; a later re-read is not new either
                continue
            self._last_ts[key] = sample.timestamp
            out.append(sample)
        self.stats["samples"] += len(out)
        return out

    def _forget_stale(self, now: float) -> None:
        horizon = now - self.stale_after_seconds
        for key in [k for k, seen in self._last_seen.items() if seen < horizon]:
            self._last_seen.pop(key, None)
            self._last_ts.pop(key, None)
        if len(self._dropped_keys) > 10 * self.max_series:
            self._dropped_keys.clear()  # bound memory; such series are counted again if they persist


def _fmt(t: float) -> str:
    return f"{t:.3f}"
