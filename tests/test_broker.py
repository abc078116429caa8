"""The embedded tansu broker: start/stop, readiness, topics, errors, and the ``serve`` entry point."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from kafka_broker import safe_topic_name, start_broker_or_skip

from streamimb.errors import BrokerError
from streamimb.io.kafka import check_broker, produce_records, topic_partitions
from streamimb.service.broker import EmbeddedBroker, resolve_binary

pytestmark = pytest.mark.kafka


def _accepts_tcp(bootstrap: str) -> bool:
    host, port = bootstrap.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def _reaped(pid: int) -> bool:
    """True once ``pid`` is gone for good: a zombie would still answer signal 0."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_start_answers_metadata_creates_topics_and_stop_reaps() -> None:
    t0 = time.perf_counter()
    broker = start_broker_or_skip(topics=["alpha", "beta"], partitions=3)
    ready_s = time.perf_counter() - t0
    try:
        pid = broker.pid
        assert broker.running and pid is not None
        assert broker.bootstrap == f"127.0.0.1:{broker.port}" and broker.port > 0
        assert {"alpha", "beta"} <= set(check_broker(broker.bootstrap))
        parts = topic_partitions(broker.bootstrap)
        assert parts["alpha"] == 3 and parts["beta"] == 3
        assert produce_records(broker.bootstrap, "alpha", [b"x"], partition=2) == 1
        print(f"broker ready (incl. 2 topics) in {ready_s * 1000:.0f} ms")
    finally:
        broker.stop()
    assert not broker.running
    assert _reaped(pid)
    assert not _accepts_tcp(broker.bootstrap)
    broker.stop()  # idempotent


def test_explicit_port_in_context_manager() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    resolve_or_skip()
    with EmbeddedBroker(port=port) as broker:
        assert broker.bootstrap == f"127.0.0.1:{port}"
        assert _accepts_tcp(broker.bootstrap)
        pid = broker.pid
    assert pid is not None and _reaped(pid)


def resolve_or_skip() -> None:
    try:
        resolve_binary()
    except BrokerError as exc:
        pytest.skip(str(exc))


def test_create_topics_is_idempotent(kafka_broker: EmbeddedBroker) -> None:
    name = safe_topic_name("idem")
    assert kafka_broker.create_topics([name], partitions=2) == [name]
    assert kafka_broker.create_topics([name], partitions=5) == []
    assert topic_partitions(kafka_broker.bootstrap)[name] == 2


def test_missing_binary_is_a_clear_broker_error(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    with pytest.raises(BrokerError, match="missing or not executable"):
        EmbeddedBroker(binary=str(tmp_path / "no-such-tansu")).start()
    monkeypatch.setenv("CALF_TANSU_BIN", str(tmp_path / "nope"))
    with pytest.raises(BrokerError, match="no tansu broker binary"):
        EmbeddedBroker().start()


def test_port_already_taken_fails_fast_with_broker_output() -> None:
    resolve_or_skip()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        t0 = time.perf_counter()
        broker = EmbeddedBroker(port=port)
        with pytest.raises(BrokerError, match="exited during start") as info:
            broker.start(timeout=10)
        assert time.perf_counter() - t0 < 5
    assert "Address in use" in str(info.value) and "\x1b[" not in str(info.value)
    assert broker.log_path is None and not broker.running  # temp log removed, nothing left running


def _serve_proc() -> subprocess.Popen[str]:
    code = "import sys; from streamimb.service.broker import serve; sys.exit(serve(0, 'orders,payments', 2))"
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _first_line(proc: subprocess.Popen[str], timeout_s: float) -> str:
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout_s)
    if not line:
        proc.kill()
        pytest.fail(f"serve printed nothing in {timeout_s}s; stderr: {proc.stderr.read()}")
    return line[0]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_prints_bootstrap_and_stops_on_signal(sig: signal.Signals) -> None:
    resolve_or_skip()
    proc = _serve_proc()
    try:
        line = _first_line(proc, 20)
        assert line.startswith("bootstrap=127.0.0.1:") and line.endswith("\n")
        bootstrap = line.strip().split("=", 1)[1]
        parts = topic_partitions(bootstrap)
        assert parts["orders"] == 2 and parts["payments"] == 2
        children = _children(proc.pid)
        assert children, "serve should run the broker as its child"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out == ""  # exactly one line in total
    assert not _accepts_tcp(bootstrap)  # the broker went down with serve
    assert all(_reaped(pid) for pid in children)


def _children(pid: int) -> list[int]:
    try:
        task_dir = f"/proc/{pid}/task"
        found = []
        for tid in os.listdir(task_dir):
            with open(f"{task_dir}/{tid}/children") as fh:
                found += [int(c) for c in fh.read().split()]
        return found
    except OSError:
        pytest.skip("needs Linux /proc to find the broker process")
