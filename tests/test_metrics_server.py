"""The metrics server under load: parallel scrapes all answered, clients that hang up leave no traceback."""

from __future__ import annotations

import logging
import socket
import struct
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import GaugeMetricFamily

from streamimb.service.telemetry import LISTEN_BACKLOG, MetricsServer, ProcessorStats, Telemetry

SCRAPERS = 50
ROUNDS = 5


class _Bulk:
    """A collector of ``n`` series, for a /metrics body large enough that writing it takes a while."""

    def __init__(self, n: int) -> None:
        self.n = n

    def collect(self):
        fam = GaugeMetricFamily("bulk_value", "Filler.", labels=["i"])
        for i in range(self.n):
            fam.add_metric([str(i)], float(i))
        yield fam


def fed_telemetry(bulk: int = 0) -> Telemetry:
    registry = CollectorRegistry()
    t = Telemetry(registry, classes=["0", "1"], detectors=["anomaly", "classifier"])
    t.record_batch(100, 100, latencies_seconds=[1e-4] * 100, alerts={("classifier", "1"): 2})
    t.add_state_source(
        lambda: {0: ProcessorStats(learned_events=100, prevalence_estimate={"0": 0.99, "1": 0.01})}
    )
    t.set_ready(True)
    if bulk:
        registry.register(_Bulk(bulk))
    return t


def scrape(address: str, path: str = "/metrics") -> tuple[int, bytes]:
    with urllib.request.urlopen(f"http://{address}{path}", timeout=60) as response:
        return response.status, response.read()


def test_the_listen_backlog_is_larger_than_socketservers_default():
    assert LISTEN_BACKLOG >= 128
    with MetricsServer("127.0.0.1:0", fed_telemetry()) as server:
        assert server._server is not None and server._server.request_queue_size == LISTEN_BACKLOG


def test_parallel_scrapes_are_all_answered(capfd):
    telemetry = fed_telemetry(bulk=2000)
    with MetricsServer("127.0.0.1:0", telemetry) as server, ThreadPoolExecutor(SCRAPERS) as pool:
        for _ in range(ROUNDS):
            results = list(pool.map(lambda _: scrape(server.address), range(SCRAPERS)))
            assert [status for status, _ in results] == [200] * SCRAPERS
            assert all(b"streamimb_prevalence_estimate{" in body for _, body in results)
            assert all(b'bulk_value{i="1999"}' in body for _, body in results)
        paths = ["/healthz", "/readyz"] * (SCRAPERS // 2)
        assert [s for s, _ in pool.map(lambda p: scrape(server.address, p), paths)] == [200] * SCRAPERS
    assert "Traceback" not in capfd.readouterr().err


def _hang_up(address: str, request: bytes | None) -> None:
    """Connect, maybe send a request, and reset the connection at once (RST, no reading)."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if request is not None:
            sock.sendall(request)


def test_clients_that_hang_up_leave_no_traceback(capfd, caplog):
    caplog.set_level(logging.DEBUG, logger="streamimb.service.telemetry")
    with MetricsServer("127.0.0.1:0", fed_telemetry(bulk=50_000)) as server:
        requests = [b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", b"GET /met", None]
        with ThreadPoolExecutor(10) as pool:
            list(pool.map(lambda i: _hang_up(server.address, requests[i % 3]), range(30)))
        time.sleep(1.0)  # the server threads meet the closed connections
        status, body = scrape(server.address)  # and the server still answers
        assert status == 200 and b"streamimb_ready 1.0" in body
    err = capfd.readouterr().err
    assert "Traceback" not in err and "BrokenPipeError" not in err and "ConnectionResetError" not in err
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("method", ["POST", "DELETE"])
def test_only_get_is_served(method):
    with MetricsServer("127.0.0.1:0", fed_telemetry()) as server:
        request = urllib.request.Request(f"http://{server.address}/healthz", method=method)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=10)
        assert err.value.code == 405
