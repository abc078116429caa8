"""Broker faults: the broker dies mid-stream and comes back; the service waits, is not ready, loses nothing.

The embedded broker (tansu) runs with durable storage: its S3 storage engine, pointed at a local ``moto`` S3
server on loopback. Killing the broker with SIGKILL and starting a new one on the same port and bucket keeps
every topic, record and committed offset.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from kafka_broker import fast_config, poll_count, start_broker_or_skip
from test_checkpoint_service import KEY, make_events, store_of

from streamimb.config import ServiceConfig
from streamimb.io.kafka import KafkaSource, produce_records
from streamimb.service.broker import EmbeddedBroker
from streamimb.service.runner import ServiceRunner
from streamimb.service.telemetry import MetricsServer, Telemetry

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

boto3 = pytest.importorskip("boto3", reason="moto[server] (with boto3) provides the local S3 for tansu")
pytest.importorskip("moto.server", reason="moto[server] provides the local S3 for tansu")

BUCKET = "tansu"
PARTITIONS = 3
TOPICS = {"events": PARTITIONS, "alerts": 1, "dead": 1}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on loopback with an empty bucket; stopped at the end."""
    port = free_port()
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    log.seek(0)
                    pytest.fail(f"moto S3 server did not start: {log.read()[-2000:]!r}")
                time.sleep(0.1)
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            region_name="us-east-1",
        )
        s3.create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def durable_broker(endpoint: str, port: int = 0) -> EmbeddedBroker:
    env = {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT": endpoint,
        "AWS_ALLOW_HTTP": "true",
    }
    return start_broker_or_skip(port=port, storage_engine=f"s3://{BUCKET}/", extra_env=env)


def readyz(address: str) -> int:
    try:
        return urllib.request.urlopen(f"http://{address}/readyz", timeout=2).status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.1)


class OutageTelemetry(Telemetry):
    """Counts the polls that found the source disconnected (the runner reports readiness after each)."""

    def __init__(self) -> None:
        super().__init__()
        self.polls_not_ready = 0

    def set_ready(self, ready: bool) -> None:
        super().set_ready(ready)
        if not ready:
            self.polls_not_ready += 1


def test_broker_killed_and_restarted_mid_stream(s3_endpoint, tmp_path):
    broker = durable_broker(s3_endpoint)
    names = {k: f"{k}-durable" for k in TOPICS}
    for name, partitions in TOPICS.items():
        broker.create_topics([names[name]], partitions)
    events, _ = make_events(3000, seed=21)
    first, second = events[:1500], events[1500:]
    produced = {p: 0 for p in range(PARTITIONS)}

    def produce(bootstrap: str, values: list[bytes]) -> None:
        for p in range(PARTITIONS):
            chunk = values[p::PARTITIONS]
            produce_records(bootstrap, names["events"], chunk, partition=p)
            produced[p] += len(chunk)

    produce(broker.bootstrap, first)
    kafka = fast_config(
        broker.bootstrap,
        events_topic=names["events"],
        alerts_topic=names["alerts"],
        dead_letter_topic=names["dead"],
        max_poll_records=100,
        request_timeout_ms=3_000,
        delivery_timeout_ms=5_000,
        max_block_ms=2_000,
    )
    config = ServiceConfig.model_validate(
        {
            "kafka": kafka.model_dump(),
            "schema": {"positive_class": "1", "classes": ["0", "1"]},
            "model": {"calibration": {"warmup": 100}},
            "checkpoint": {"directory": str(tmp_path), "key": KEY, "every_events": 300, "every_seconds": 1},
        }
    )
    telemetry = OutageTelemetry()
    server = MetricsServer("127.0.0.1:0", telemetry).start()
    paused, killed = threading.Event(), threading.Event()

    def pause_mid_stream(runner: ServiceRunner, _outcome) -> None:
        """The loop holds after its first batch past 300 events until the broker is dead: the kill lands
        mid-stream whatever the machine's speed."""
        if runner.consumed >= 300 and not paused.is_set():
            paused.set()
            killed.wait(60)

    runner = ServiceRunner(config, telemetry=telemetry, on_batch=pause_mid_stream)
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(runner.run()), daemon=True)
    thread.start()
    restarted = None
    try:
        wait_for(lambda: paused.is_set() and readyz(server.address) == 200, 60, "consumption")

        os.kill(broker.pid, signal.SIGKILL)  # the broker dies without any goodbye, mid-stream
        port = broker.port
        broker.stop()
        down_since = time.monotonic()
        at_kill = runner.consumed
        killed.set()
        wait_for(lambda: readyz(server.address) == 503, 30, "/readyz 503 while the broker is down")
        # the service keeps polling (with backoff) through an outage of a few seconds: wait for both the
        # loop's progress (polls that found the broker gone) and the outage's length, whichever comes last
        not_ready_before = telemetry.polls_not_ready
        wait_for(
            lambda: telemetry.polls_not_ready >= not_ready_before + 5 and time.monotonic() - down_since >= 2,
            60,
            "the loop to keep polling while the broker is down",
        )
        assert thread.is_alive()
        assert 300 <= at_kill < 1500, "the broker was meant to die before the first half was consumed"

        restarted = durable_broker(s3_endpoint, port=port)
        produce(restarted.bootstrap, second)  # the topics came back from S3 with the new broker
        wait_for(lambda: runner.consumed >= 3000 and readyz(server.address) == 200, 90, "the second half")
    finally:
        killed.set()  # never leave the loop held, whatever failed
        runner.stop()
        thread.join(timeout=60)
        server.stop()
    try:
        assert not thread.is_alive() and result
        assert result["consumed"] == 3000 and result["dead_letters"] == 0
        headers = {p: h for (_, p), h in store_of(config).headers().items()}
        assert {p: h.learned for p, h in headers.items()} == produced
        assert {p: h.offsets[names["events"]] for p, h in headers.items()} == produced

        # what was written before the crash is still there after it
        reader = KafkaSource(fast_config(restarted.bootstrap), [names["events"]])
        try:
            assert len(poll_count(reader, 3000, timeout_s=30)) == 3000
        finally:
            reader.close()
    finally:
        if restarted is not None:
            restarted.stop()
