"""The Kafka service end to end against the real embedded broker (no mocks)."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from kafka_broker import poll_count

from streamimb.config import ServiceConfig
from streamimb.io.kafka import KafkaSource, produce_records
from streamimb.service.runner import ServiceRunner

pytestmark = pytest.mark.kafka

BAD_RECORDS = [
    b"{not json",
    b'{"id": "nan", "amount": "NaN"}',
    b"[1, 2, 3]",
    b'{"id": "txt", "amount": "lots"}',
]


def events(n, rate=0.05, seed=0, with_label=True):
    rng = random.Random(seed)
    out, labels = [], []
    for i in range(n):
        positive = rng.random() < rate
        doc = {"id": f"e{i}", "amount": rng.gauss(4.0 if positive else 0.0, 1.0), "n": rng.random()}
        label = "1" if positive else "0"
        if with_label:
            doc["label"] = label
        out.append(json.dumps(doc).encode())
        labels.append(json.dumps({"id": f"e{i}", "label": label}).encode())
    return out, labels


def service_config(make_kafka, topics, **extra):
    kafka_settings = make_kafka(
        events_topic=topics["events"],
        alerts_topic=topics["alerts"],
        dead_letter_topic=topics["dead"],
        labels_topic=topics.get("labels"),
        **extra.pop("kafka", {}),
    )
    return ServiceConfig.model_validate(
        {
            "kafka": kafka_settings.model_dump(),
            "schema": {"positive_class": "1", "classes": ["0", "1"]},
            "model": {"calibration": {"warmup": 100}},
            **extra,
        }
    )


@pytest.fixture
def topics(topic_factory):
    return {
        "events": topic_factory(2, "events"),
        "alerts": topic_factory(1, "alerts"),
        "dead": topic_factory(1, "dead"),
        "labels": topic_factory(2, "labels"),
    }


def read_all(kafka, topic, count, timeout_s=20.0):
    source = KafkaSource(kafka(), [topic])
    try:
        return poll_count(source, count, timeout_s) if count else []
    finally:
        source.close()


def test_events_to_alerts_and_dead_letters(kafka_broker, client_config, topics):
    good, _ = events(1500)
    produce_records(
        kafka_broker.bootstrap,
        topics["events"],
        good[:700] + BAD_RECORDS + good[700:],
        keys=[str(i % 5).encode() for i in range(len(good) + len(BAD_RECORDS))],
    )
    config = service_config(client_config, topics, service={"max_events": 1504, "idle_timeout": 15})
    summary = ServiceRunner(config).run()
    assert summary["consumed"] == 1504
    assert summary["processed"] + summary["dead_letters"] == summary["consumed"]
    assert summary["dead_letters"] == 4
    assert sum(summary["learned"].values()) == 1500

    dead = [json.loads(r.value) for r in read_all(client_config, topics["dead"], 4)]
    assert sorted(d["reason"] for d in dead) == [
        "bad_number",
        "malformed_json",
        "non_finite",
        "not_an_object",
    ]
    assert all(d["source"] == topics["events"] and d["offset"] >= 0 and d["raw"] for d in dead)

    alerts = [json.loads(r.value) for r in read_all(client_config, topics["alerts"], summary["alerts"])]
    assert len(alerts) == summary["alerts"] > 0
    ids = [a["alert_id"] for a in alerts]
    assert len(set(ids)) == len(ids)
    assert all(a["alert_id"] == f"{a['source']}-{a['partition']}-{a['offset']}-{a['rule']}" for a in alerts)
    late = [a for a in alerts if a["offset"] > 500]
    assert late and sum(a["rule"] == "classifier" for a in late) > 0


def test_delayed_labels_are_joined_and_learned(kafka_broker, client_config, topics):
    unlabelled, labels = events(1200, with_label=False, seed=1)
    keys = [str(i % 4).encode() for i in range(1200)]
    produce_records(kafka_broker.bootstrap, topics["events"], unlabelled, keys=keys)
    extra = [b'{"id": "never-seen", "label": "0"}', labels[0], b'{"id": "e5", "label": "maybe"}']
    produce_records(
        kafka_broker.bootstrap, topics["labels"], labels[:1000] + extra, keys=keys[:1000] + [b"0"] * 3
    )
    config = service_config(client_config, topics, service={"idle_timeout": 4})
    runner = ServiceRunner(config)
    summary = runner.run()
    assert summary["consumed"] == 1200 and summary["labels_consumed"] == 1003
    assert summary["labels"]["joined"] == 1000
    assert summary["labels"]["duplicate"] == 1
    assert runner.joiner.early_labels == 1  # "never-seen" waits for an event, until its TTL
    assert summary["dead_letters"] == 1  # the unknown class "maybe"
    assert sum(summary["learned"].values()) == 1000
    assert len(runner.joiner) == 200  # still waiting for their labels


def test_restarted_consumer_resumes_from_committed_offset(kafka_broker, client_config, topics):
    good, _ = events(1000, seed=2)
    produce_records(
        kafka_broker.bootstrap, topics["events"], good, keys=[str(i).encode() for i in range(1000)]
    )
    config = service_config(
        client_config,
        topics,
        service={"max_events": 400, "idle_timeout": 10},
        kafka={"max_poll_records": 100},
    )
    first = ServiceRunner(config).run()
    assert 400 <= first["consumed"] < 1000
    again = config.model_copy(
        update={"service": config.service.model_copy(update={"max_events": None, "idle_timeout": 4})}
    )
    second = ServiceRunner(again).run()
    assert first["consumed"] + second["consumed"] == 1000


def test_offsets_are_committed_when_due_and_at_shutdown(kafka_broker, kafka_config, topics):
    good, _ = events(600, seed=4)
    keys = [str(i).encode() for i in range(600)]
    produce_records(kafka_broker.bootstrap, topics["events"], good, keys=keys)
    config = service_config(
        kafka_config,
        topics,
        service={"max_events": 600, "idle_timeout": 10},
        kafka={"max_poll_records": 50, "commit_interval_ms": 600_000},
    )
    seen_committed = []

    def on_batch(runner, outcome):
        seen_committed.append(sum(v or 0 for v in runner.source.committed().values()))

    summary = ServiceRunner(config, on_batch=on_batch).run()
    assert summary["consumed"] == 600 and len(seen_committed) >= 12
    assert set(seen_committed) == {0}  # not due during the run: no commit round trip per batch
    # at shutdown the outputs were acknowledged and everything consumed was committed
    alerts = read_all(kafka_config, topics["alerts"], summary["alerts"])
    assert len(alerts) == summary["alerts"] > 0
    rest = ServiceRunner(
        service_config(
            kafka_config, topics, service={"idle_timeout": 3}, kafka={"group_id": config.kafka.group_id}
        )
    ).run()
    assert rest["consumed"] == 0


def test_two_consumers_split_the_partitions(kafka_broker, client_config, topic_factory):
    topics = {
        "events": topic_factory(4, "events4"),
        "alerts": topic_factory(1, "a"),
        "dead": topic_factory(1, "d"),
    }
    good, _ = events(2000, seed=3)
    produce_records(
        kafka_broker.bootstrap, topics["events"], good, keys=[str(i).encode() for i in range(2000)]
    )
    config = service_config(
        client_config, topics, service={"idle_timeout": 8}, kafka={"max_poll_records": 50}
    )
    runners = [ServiceRunner(config), ServiceRunner(config)]
    results = [None, None]

    def work(i):
        results[i] = runners[i].run()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert all(r is not None for r in results)
    assert sum(r["consumed"] for r in results) >= 2000
    assert all(r["consumed"] > 0 for r in results)
    # each partition's events were learned by exactly one process, never both
    learned = {}
    for r in results:
        for partition, n in r["learned"].items():
            learned[partition] = learned.get(partition, 0) + n
    assert sum(learned.values()) == sum(r["consumed"] for r in results)


def consumed_total(metrics_url):
    try:
        text = urllib.request.urlopen(metrics_url, timeout=2).read().decode()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith("streamimb_events_consumed_total "):
            return float(line.split()[1])
    return 0.0


def test_cli_run_stops_gracefully_on_sigterm(kafka_broker, client_config, topics):
    good, _ = events(3000, seed=4)
    keys = [str(i).encode() for i in range(3000)]
    head = 1000  # produced up front; the rest only once the service stopped, so SIGTERM comes mid-stream
    produce_records(kafka_broker.bootstrap, topics["events"], good[:head], keys=keys[:head])
    group, client = client_config().group_id, client_config().client
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "streamimb",
        "run",
        "--bootstrap-servers",
        kafka_broker.bootstrap,
        "--events-topic",
        topics["events"],
        "--alerts-topic",
        topics["alerts"],
        "--dead-letter-topic",
        topics["dead"],
        "--group-id",
        group,
        "--kafka-client",
        client,
        "--metrics-address",
        f"127.0.0.1:{port}",
    ]
    env = {
        **os.environ,
        "STREAMIMB_KAFKA__SESSION_TIMEOUT_MS": "6000",
        "STREAMIMB_KAFKA__MAX_POLL_RECORDS": "50",
    }
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and consumed_total(f"http://127.0.0.1:{port}/metrics") == 0:
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert 0 < summary["consumed"] <= head
    produce_records(kafka_broker.bootstrap, topics["events"], good[head:], keys=keys[head:])
    # what it committed is exactly what it consumed: a new member of the group reads the rest
    rest = ServiceRunner(
        service_config(client_config, topics, service={"idle_timeout": 4}, kafka={"group_id": group})
    ).run()
    assert summary["consumed"] + rest["consumed"] == 3000
    assert rest["consumed"] >= 3000 - head
