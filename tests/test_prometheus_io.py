"""Unit tests of streamimb.io.prometheus: payloads, de-duplication, retries, the evaluation grid, parsing and
the config models. The real Prometheus and Alertmanager are exercised in test_prometheus_e2e.py; here a
tiny HTTP endpoint that fails on purpose tests the retry logic, and a recorded ``_api`` the query plan."""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from promstack import free_port
from pydantic import ValidationError

from streamimb.errors import SinkError, SourceError
from streamimb.events import Alert
from streamimb.io.prometheus import (
    AlertmanagerConfig,
    AlertmanagerSink,
    PrometheusSource,
    PrometheusSourceConfig,
    Sample,
    parse_query_result,
    series_key,
)


def alert(i: int, **kw: Any) -> Alert:
    fields = dict(
        alert_id=f"id-{i}",
        event_id=f"ev-{i}",
        time=float(i),
        rule="hst",
        reason="score above threshold",
        anomaly_score=0.9,
        proba={"1": 0.7},
        predicted="1",
        model_version="m1",
    )
    fields.update(kw)
    return Alert(**fields)


class Endpoint:
    """Answers POSTs with the queued statuses (then 200), recording each JSON body."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.bodies: list[Any] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.bodies.append(json.loads(body))
                status = outer.statuses.pop(0) if outer.statuses else 200
                reply = b'{"code":400,"message":"bad alert"}' if status == 400 else b""
                self.send_response(status)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Endpoint:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# -- AlertmanagerSink ----------------------------------------------------------------------------------------
def test_sink_payload_labels_annotations_and_times():
    clock = Clock(1_700_000_000.0)
    with Endpoint() as ep:
        sink = AlertmanagerSink(
            ep.url, {"team": "fraud", "severity": "page"}, resolve_after_seconds=120, clock=clock,
            generator_url="http://grafana/d/streamimb",
        )  # fmt: skip
        sink.send(alert(1))
        assert ep.bodies == []  # send only buffers
        sink.flush()
    (body,) = ep.bodies
    (posted,) = body
    assert posted["labels"] == {
        "alertname": "StreamimbDetection",
        "severity": "page",  # a static label overrides the default severity
        "team": "fraud",
        "detector": "hst",
        "alert_id": "id-1",
        "class": "1",
    }
    assert posted["annotations"]["reason"] == "score above threshold"
    assert posted["annotations"]["event_id"] == "ev-1"
    assert json.loads(posted["annotations"]["proba"]) == {"1": 0.7}
    assert posted["startsAt"] == "2023-11-14T22:13:20.000Z"
    assert posted["endsAt"] == "2023-11-14T22:15:20.000Z"
    assert posted["generatorURL"] == "http://grafana/d/streamimb"
    assert all(isinstance(v, str) and v for v in posted["annotations"].values())


def test_sink_deduplicates_resolves_and_expires():
    clock = Clock()
    with Endpoint() as ep:
        sink = AlertmanagerSink(ep.url, resolve_after_seconds=60, clock=clock)
        sink.write_many([alert(1), alert(2), alert(1)])  # a duplicate in the buffer
        sink.flush()
        assert len(ep.bodies[0]) == 2 and sink.stats["deduplicated"] == 1
        sink.send(alert(2))  # sent and still active
        sink.flush()
        assert len(ep.bodies) == 1 and sink.stats["deduplicated"] == 2

        clock.t += 10
        assert sink.resolve("id-1") and not sink.resolve("nope")
        sink.flush()
        (resolved,) = ep.bodies[1]
        assert resolved["labels"]["alert_id"] == "id-1"
        assert resolved["startsAt"] == ep.bodies[0][0]["startsAt"]
        assert resolved["endsAt"] == "2023-11-14T22:13:29.000Z"  # a second ago: the resolve always wins
        assert sink.active == ["id-2"]

        clock.t += 60  # id-2 has ended by itself (Alertmanager has its endsAt): it may fire again
        assert sink.active == []
        sink.send(alert(2))
        sink.flush()
        assert len(ep.bodies) == 3 and sink.stats["sent"] == 3


def test_sink_retries_transient_failures_with_backoff():
    sleeps: list[float] = []
    with Endpoint([503, 500]) as ep:
        sink = AlertmanagerSink(ep.url, max_retries=3, backoff=0.25, sleep=sleeps.append)
        sink.send(alert(1))
        sink.flush()
    assert sleeps == [0.25, 0.5]
    assert len(ep.bodies) == 3 and sink.stats["sent"] == 1


def test_sink_raises_after_the_last_retry_and_keeps_the_alert():
    sleeps: list[float] = []
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    sink = AlertmanagerSink(url, max_retries=2, backoff=0.1, timeout=1, sleep=sleeps.append)
    sink.send(alert(1))
    with pytest.raises(SinkError, match="after 3 attempts"):
        sink.flush()
    assert sleeps == [0.1, 0.2]
    assert sink.stats["failed_flushes"] == 1 and sink.active == []
    # the alert is still buffered and goes out once Alertmanager answers
    with Endpoint() as ep:
        sink.url = ep.url
        sink.flush()
    assert [a["labels"]["alert_id"] for a in ep.bodies[0]] == ["id-1"]


def test_sink_does_not_retry_a_rejected_request():
    sleeps: list[float] = []
    with Endpoint([400]) as ep:
        sink = AlertmanagerSink(ep.url, max_retries=5, sleep=sleeps.append)
        sink.send(alert(1))
        with pytest.raises(SinkError, match=r"HTTP 400.*bad alert"):
            sink.flush()
    assert sleeps == [] and len(ep.bodies) == 1


def test_sink_batches_posts():
    with Endpoint() as ep:
        sink = AlertmanagerSink(ep.url, batch_size=2)
        sink.write_many(alert(i) for i in range(5))
        sink.flush()
    assert [len(b) for b in ep.bodies] == [2, 2, 1]


def test_sink_rejects_bad_labels_and_urls():
    with pytest.raises(ValueError, match="label name"):
        AlertmanagerSink("http://am:9093", {"bad-name": "x"})
    with pytest.raises(ValueError, match="http"):
        AlertmanagerSink("am:9093")


# -- PrometheusSource: the query plan ------------------------------------------------------------------------
class Recorded(PrometheusSource):
    """A source whose HTTP calls are recorded and answered from ``series`` (a function of time)."""

    def __init__(self, series, **kw: Any) -> None:
        self.calls: list[tuple[str, dict[str, str]]] = []
        self.series_fn = series
        super().__init__("http://prom:9090", ["q"], **kw)

    def _api(self, endpoint: str, params: dict[str, str]) -> dict[str, Any]:
        self.calls.append((endpoint, dict(params)))
        if endpoint == "query":
            t = float(params["time"])
            return {
                "resultType": "vector",
                "result": [{"metric": m, "value": [t, v]} for m, v in self.series_fn(t)],
            }
        start, end, step = (float(params[k]) for k in ("start", "end", "step"))
        points = [start + i * step for i in range(round((end - start) / step) + 1)]
        by_series: dict[str, dict[str, Any]] = {}
        for t in points:
            for m, v in self.series_fn(t):
                entry = by_series.setdefault(json.dumps(m, sort_keys=True), {"metric": m, "values": []})
                entry["values"].append([t, v])
        return {"resultType": "matrix", "result": list(by_series.values())}


def one_series(t: float):
    return [({"__name__": "m", "job": "j"}, str(t % 7))]


def test_first_poll_warms_up_on_the_step_grid_then_instant_queries():
    clock = Clock(1000.4)
    src = Recorded(one_series, interval_seconds=5, lookback_seconds=20, clock=clock)
    warm = src.poll()
    assert src.calls[-1] == (
        "query_range",
        {"query": "q", "start": "980.000", "end": "1000.000", "step": "5.000"},
    )
    assert [s.timestamp for s in warm] == [980.0, 985.0, 990.0, 995.0, 1000.0]
    assert src.poll() == []  # same grid point: nothing new, no query
    assert len(src.calls) == 1
    clock.t = 1005.1
    (nxt,) = src.poll()
    assert src.calls[-1] == ("query", {"query": "q", "time": "1005.000"})
    assert nxt.timestamp == 1005.0 and nxt.value == 1005.0 % 7


def test_a_missed_poll_is_backfilled_without_duplicates():
    clock = Clock(1000.0)
    src = Recorded(one_series, interval_seconds=5, clock=clock)
    assert [s.timestamp for s in src.poll()] == [1000.0]
    assert src.calls[-1][0] == "query"
    clock.t = 1017.0  # polls at 1005, 1010 and 1015 were missed
    gap = src.poll()
    assert src.calls[-1] == (
        "query_range",
        {"query": "q", "start": "1005.000", "end": "1015.000", "step": "5.000"},
    )
    assert [s.timestamp for s in gap] == [1005.0, 1010.0, 1015.0]
    assert src.stats["duplicates"] == 0


def test_snapshot_and_restore_resume_without_repeats():
    clock = Clock(1000.0)
    src = Recorded(one_series, interval_seconds=5, lookback_seconds=10, clock=clock)
    first = src.poll()
    state = json.loads(json.dumps(src.snapshot()))  # survives a JSON checkpoint
    clock.t = 1012.0
    resumed = Recorded(one_series, interval_seconds=5, lookback_seconds=10, clock=clock)
    resumed.restore(state)
    out = resumed.poll()
    assert resumed.calls[-1][0] == "query_range"  # backfill from the snapshot, not a fresh warm-up
    assert [s.timestamp for s in out] == [1005.0, 1010.0]
    assert first[-1].timestamp == 1000.0 and resumed.stats["duplicates"] == 0


def test_delay_evaluates_behind_now():
    src = Recorded(one_series, interval_seconds=1, delay_seconds=2.5, clock=Clock(100.2))
    src.poll()
    assert src.calls[-1][1]["time"] == "97.000"


def test_max_series_and_samples_in_time_order():
    def many(t: float):
        return [({"__name__": "m", "q": name}, "1") for name in ("c", "a", "b")]

    src = Recorded(many, interval_seconds=1, lookback_seconds=2, max_series=2, clock=Clock(10.0))
    out = src.poll()
    assert [(s.timestamp, s.labels["q"]) for s in out] == [
        (8.0, "a"), (8.0, "b"), (9.0, "a"), (9.0, "b"), (10.0, "a"), (10.0, "b"),
    ]  # fmt: skip
    assert src.stats["dropped_series"] == 1 and src.stats["dropped_samples"] == 3


def test_stale_series_free_their_slot():
    live = {"a"}

    def some(t: float):
        return [({"__name__": "m", "q": name}, "1") for name in sorted(live)]

    clock = Clock(0.0)
    src = Recorded(some, interval_seconds=1, max_series=1, stale_after_seconds=5, clock=clock)
    src.poll()
    live.clear()
    live.add("b")
    clock.t = 1.0
    assert src.poll() == [] and src.stats["dropped_series"] == 1
    clock.t = 7.0  # "a" not seen for more than 5 s
    assert {s.labels["q"] for s in src.poll()} == {"b"}
    assert src.series == ['m{q="b"}']


def test_non_finite_and_non_numeric_values():
    def odd(t: float):
        return [({"k": "nan"}, "NaN"), ({"k": "inf"}, "+Inf"), ({"k": "text"}, "abc"), ({"k": "ok"}, "2.5")]

    src = Recorded(odd, interval_seconds=1, clock=Clock(5.0))
    assert [(s.labels["k"], s.value) for s in src.poll()] == [("ok", 2.5)]
    assert src.stats["non_finite"] == 3
    keep = Recorded(odd, interval_seconds=1, drop_non_finite=False, clock=Clock(5.0))
    values = {s.labels["k"]: s.value for s in keep.poll()}
    assert math.isnan(values["nan"]) and values["inf"] == math.inf and math.isnan(values["text"])


def test_iteration_stops_on_close_and_tolerates_failures():
    class Flaky(Recorded):
        fails = 2

        def _api(self, endpoint, params):
            if self.fails:
                self.fails -= 1
                raise SourceError("down")
            return super()._api(endpoint, params)

    clock = Clock(0.0)
    src = Flaky(one_series, interval_seconds=0.01, step=1, max_consecutive_failures=3, clock=clock)
    batches = []
    for b in src.iter_batches():
        batches.append(b)
        clock.t += 1
        if len(batches) == 4:
            src.close()
    assert [len(b) for b in batches] == [0, 0, 1, 1]
    assert src.stats["failures"] == 2

    always = Flaky(one_series, interval_seconds=0.01, max_consecutive_failures=2, clock=Clock(0.0))
    always.fails = 10
    with pytest.raises(SourceError, match="down"):
        list(always)


def test_unreachable_prometheus_raises_source_error_after_retries():
    sleeps: list[float] = []
    src = PrometheusSource(
        f"http://127.0.0.1:{free_port()}", ["up"], max_retries=1, backoff=0.05, timeout=1, sleep=sleeps.append
    )
    with pytest.raises(SourceError, match="after 2 attempts"):
        src.poll()
    assert sleeps == [0.05]


# -- parsing -------------------------------------------------------------------------------------------------
def test_parse_vector_matrix_scalar_and_string():
    vec = {"resultType": "vector", "result": [{"metric": {"job": "a"}, "value": [1.5, "NaN"]}]}
    (s,) = parse_query_result("rate(x[1m])", vec)
    assert s.series_key == 'rate(x[1m]){job="a"}' and math.isnan(s.value)
    mat = {"resultType": "matrix", "result": [{"metric": {"__name__": "x"}, "values": [[1, "1"], [2, "2"]]}]}
    assert parse_query_result("x[1m]", mat) == [
        Sample("x{}", {"__name__": "x"}, 1.0, 1.0),
        Sample("x{}", {"__name__": "x"}, 2.0, 2.0),
    ]
    assert parse_query_result("1", {"resultType": "scalar", "result": [3, "1"]})[0].value == 1.0
    assert parse_query_result('"s"', {"resultType": "string", "result": [3, "s"]}) == []


def test_series_keys_escape_label_values():
    assert series_key("m", {"__name__": "m", "path": 'a"b'}) == 'm{path="a\\"b"}'


# -- config models -------------------------------------------------------------------------------------------
def test_config_models_are_frozen_and_strict():
    cfg = AlertmanagerConfig(url="http://am:9093/", labels={"team": "x"}, resolve_after_seconds=30)
    assert cfg.url == "http://am:9093" and cfg.kind == "alertmanager"
    with pytest.raises(ValidationError):
        cfg.url = "http://other"  # type: ignore[misc]
    with pytest.raises(ValidationError, match="extra"):
        AlertmanagerConfig(url="http://am:9093", nope=1)
    with pytest.raises(ValidationError, match="label names"):
        AlertmanagerConfig(url="http://am:9093", labels={"a-b": "x"})
    with pytest.raises(ValidationError, match="http"):
        AlertmanagerConfig(url="ftp://am")
    sink = cfg.build()
    assert isinstance(sink, AlertmanagerSink) and sink.resolve_after_seconds == 30

    src_cfg = PrometheusSourceConfig.model_validate(
        {
            "url": "http://prom:9090",
            "queries": ["up", "rate(x[5m])"],
            "interval_seconds": 10,
            "lookback_seconds": 600,
        }
    )
    assert src_cfg.kind == "prometheus" and src_cfg.queries == ("up", "rate(x[5m])")
    src = src_cfg.build()
    assert src.step == 10 and src.lookback_seconds == 600 and src.queries == ("up", "rate(x[5m])")
    with pytest.raises(ValidationError):
        PrometheusSourceConfig(url="http://prom:9090", queries=[])
    with pytest.raises(ValidationError):
        PrometheusSourceConfig(url="http://prom:9090", queries=["up"], interval_seconds=0)
    with pytest.raises(ValidationError):
        PrometheusSourceConfig(url="http://prom:9090", queries=["  "])
