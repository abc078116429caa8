"""kill -9 at random moments, restart: every event is learned exactly once and none is lost.

The service runs as a real subprocess (``python -m streamimb run``) with a short checkpoint interval and is
SIGKILLed a few times while it consumes. Two thirds of the events carry their label; the others are labelled
later on a co-partitioned labels topic, so the joiner's pending predictions and early labels must survive the
kills too. At the end, each partition's checkpoint must have learned exactly as many events as were produced
to it, and must cover every offset.

The kill moments are progress points, not delays: each process is killed once its own
``streamimb_events_consumed_total`` reaches a seeded random target, and the stream is produced in chunks, the
next one only after the kill, so that every kill lands mid-stream however fast the machine is.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from kafka_broker import poll_until
from test_checkpoint_service import KEY, make_events, store_of

from streamimb.config import load_config
from streamimb.io.kafka import KafkaSource, produce_records

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PARTITIONS = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[str, float]:
    """The unlabelled and labelled samples of /metrics as ``{'name{labels}': value}``; {} when down."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def write_service_config(path: Path, kafka: dict, checkpoint_dir: Path, **extra) -> Path:
    doc = {
        "kafka": kafka,
        "schema": {"positive_class": "1", "classes": ["0", "1"]},
        "model": {"calibration": {"warmup": 100}},
        "checkpoint": {"directory": str(checkpoint_dir), "every_events": 150, "every_seconds": 0.5},
        "logging": {"level": "WARNING"},
        **extra,
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def start_service(config_path: Path, port: int, *extra_args: str) -> subprocess.Popen:
    """``streamimb run`` in a subprocess; its log goes to a file (``log_tail(proc)``), never to a pipe."""
    env = {**os.environ, "STREAMIMB_CHECKPOINT__KEY": KEY}  # the key from the environment, not the file
    cmd = [sys.executable, "-m", "streamimb", "run", "--config", str(config_path)]
    cmd += ["--metrics-address", f"127.0.0.1:{port}", *extra_args]
    log_path = config_path.parent / f"service-{port}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, env=env, text=True)
    proc.log_path = log_path
    return proc


def log_tail(proc: subprocess.Popen, chars: int = 4000) -> str:
    return proc.log_path.read_text(errors="replace")[-chars:]


def wait_consumed(port: int, proc: subprocess.Popen, at_least: float, timeout_s: float = 40.0) -> float:
    """Poll /metrics until the process's ``streamimb_events_consumed_total`` reaches ``at_least``; return the
    count seen then, or 0.0 when the process exited or ``timeout_s`` passed first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        consumed = scrape(port).get("streamimb_events_consumed_total", 0.0)
        if consumed >= at_least:
            return consumed
        time.sleep(0.02)
    return 0.0


def wait_consuming(port: int, proc: subprocess.Popen, timeout_s: float = 40.0) -> bool:
    """Until the process consumed its first record (False if it exited or ``timeout_s`` passed first)."""
    return wait_consumed(port, proc, 1, timeout_s) > 0


def test_kill_9_at_random_moments_loses_nothing_and_learns_nothing_twice(
    kafka_broker, kafka_config, topic_factory, tmp_path, monkeypatch
):
    topics = {
        "events_topic": topic_factory(PARTITIONS, "events"),
        "labels_topic": topic_factory(PARTITIONS, "labels"),
        "alerts_topic": topic_factory(1, "alerts"),
        "dead_letter_topic": topic_factory(1, "dead"),
    }
    n, kills = 6000, 3
    labelled, _ = make_events(n, seed=11)
    unlabelled, labels = make_events(n, seed=11, labelled=False)
    ids = {p: list(range(p, n, PARTITIONS)) for p in range(PARTITIONS)}
    late = {i for i in range(n) if (i // PARTITIONS) % 3 == 0}  # a third of the events: labelled later
    per_chunk = n // PARTITIONS // (kills + 1)  # events per partition and chunk (the last: after the kills)
    produced = {p: 0 for p in range(PARTITIONS)}

    def produce_chunk(c: int) -> int:
        """Chunk ``c`` of every partition (events, then their late labels, on the same partition); returns
        the number of event records (what ``streamimb_events_consumed_total`` counts)."""
        records = 0
        for p in range(PARTITIONS):
            chunk = ids[p][c * per_chunk : (c + 1) * per_chunk if c < kills else None]
            values = [unlabelled[i] if i in late else labelled[i] for i in chunk]
            produce_records(kafka_broker.bootstrap, topics["events_topic"], values, partition=p)
            late_labels = [labels[i] for i in chunk if i in late]
            produce_records(kafka_broker.bootstrap, topics["labels_topic"], late_labels, partition=p)
            produced[p] += len(values)
            records += len(values)
        return records

    kafka = kafka_config(
        max_poll_records=50, session_timeout_ms=3000, heartbeat_interval_ms=500, **topics
    ).model_dump(mode="json")
    config_path = write_service_config(tmp_path / "service.yaml", kafka, tmp_path / "state")
    rng = random.Random(2024)
    consumed_at_kill: list[int] = []
    for c in range(kills):
        new_records = produce_chunk(c)
        # every process consumes at least this chunk's events (plus what it replays since the last
        # checkpoint), so it reaches any target below that; the next chunk is produced only after the kill
        target = rng.randint(50, new_records - 50)
        port = free_port()
        proc = start_service(config_path, port)
        try:
            done = wait_consumed(port, proc, target, timeout_s=60)
            assert done >= target, log_tail(proc)
            proc.send_signal(signal.SIGKILL)  # mid-batch, or between a batch and its checkpoint
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
        assert proc.returncode == -signal.SIGKILL  # killed, not exited on its own
        consumed_at_kill.append(int(done))
        assert sum(produced.values()) < n  # the kill came before the end of the stream: by construction
    print(f"\n{kills} kills; consumed by each process before its kill: {consumed_at_kill}")
    produce_chunk(kills)  # the rest of the stream
    assert sum(produced.values()) == n

    port = free_port()
    proc = start_service(config_path, port, "--idle-timeout", "4")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, log_tail(proc)
    summary = json.loads(out.strip().splitlines()[-1])

    monkeypatch.setenv("STREAMIMB_CHECKPOINT__KEY", KEY)
    config = load_config(config_path)
    headers = {p: h for (_, p), h in store_of(config).headers().items()}
    assert {p: h.learned for p, h in headers.items()} == produced  # exactly once, nothing lost
    assert {p: h.offsets[topics["events_topic"]] for p, h in headers.items()} == produced
    assert {p: h.offsets[topics["labels_topic"]] for p, h in headers.items()} == {
        p: len(range(p, n, 3 * PARTITIONS)) for p in range(PARTITIONS)
    }
    assert {int(p): v for p, v in summary["learned_total"].items()} == produced
    assert summary["dead_letters"] == 0

    source = KafkaSource(kafka_config(), [topics["alerts_topic"]])
    try:
        alerts = poll_until(source, lambda recs: len(recs) > 0, timeout_s=30)
        alerts += source.poll(timeout_ms=1000)
    finally:
        source.close()
    ids = [json.loads(r.value)["alert_id"] for r in alerts]
    assert all(i.startswith(topics["events_topic"]) for i in ids)
