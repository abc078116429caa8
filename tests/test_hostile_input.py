"""Hostile input and security: the service never crashes, every bad record is dead-lettered with a reason,
``consumed == processed + dead-lettered`` holds exactly, and secrets, config and HTTP give nothing away."""

from __future__ import annotations

import json
import logging
import math
import random
import subprocess
import sys
import urllib.error
import urllib.request
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka_broker import poll_count
from test_checkpoint_service import produce_by_partition

from streamimb.config import ServiceConfig, load_config
from streamimb.decoding import REASONS
from streamimb.errors import ConfigError, SinkError
from streamimb.events import Event
from streamimb.io.kafka import KafkaSource, RawRecord, produce_records
from streamimb.service.runner import ServiceRunner
from streamimb.service.telemetry import MetricsServer, Telemetry

MAX_BYTES = 4096
ALLOWED_REASONS = {*REASONS, "processing_error"}


def hostile_config(**kafka) -> ServiceConfig:
    return ServiceConfig.model_validate(
        {
            "kafka": {"labels_topic": "labels", "max_message_bytes": MAX_BYTES, **kafka},
            "schema": {"positive_class": "1", "classes": ["0", "1"]},
            "model": {"calibration": {"warmup": 5}, "min_positive_labels": 2},
        }
    )


# -- strategies: everything a producer can get wrong ------------------------------------------------------
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
number_text = st.sampled_from(
    [
        *("NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1e308", "1.7976931348623157e308", "1e200"),
        *(
            "-1e150",
            "1" + "0" * 400,
            "-" + "9" * 5000,
            "0.0",
            "-0",
            "1e-320",
            "123456789012345678901234567890",
        ),
    ]
)
json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    finite,
    st.integers(),
    st.text(max_size=20),
    number_text.map(lambda t: ("raw", t)),
)
json_value = st.recursive(
    json_scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


def render(value) -> str:
    """JSON text, where ``("raw", text)`` is spliced in verbatim (NaN, huge literals, ...)."""
    if isinstance(value, tuple) and value and value[0] == "raw":
        return value[1]
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{render(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(render(v) for v in value) + "]"
    return json.dumps(value)


@st.composite
def event_record(draw, index: int) -> bytes | None:
    kind = draw(st.sampled_from(["good", "good", "good", "fields", "label", "junk", "nested", "big", "none"]))
    doc = {
        "id": f"e{index}",
        "amount": draw(finite.filter(lambda x: abs(x) < 1e6)),
        "n": draw(st.floats(0, 1)),
    }
    if draw(st.booleans()):
        doc["label"] = draw(st.sampled_from(["0", "1", 0, 1, 1.0]))
    if kind == "good":
        return render(doc).encode()
    if kind == "fields":  # wrong types, NaN, infinities, huge numbers in a feature
        doc[draw(st.sampled_from(["amount", "n", "extra"]))] = draw(json_value)
        return render(doc).encode()
    if kind == "label":  # unknown classes and nonsense labels
        doc["label"] = draw(st.one_of(st.sampled_from(["maybe", "2", "", [1], {"a": 1}, 1.5]), json_value))
        return render(doc).encode()
    if kind == "junk":  # malformed JSON, other JSON types, invalid UTF-8
        return draw(
            st.one_of(
                st.binary(max_size=40),
                st.sampled_from([b"{", b'{"id": 1,', b"[]", b"null", b"42", b'"text"', b"\xff\xfe{}", b""]),
                json_value.map(lambda v: render(v).encode()),
            )
        )
    if kind == "nested":
        depth = draw(st.sampled_from([50, 2000, 200_000]))
        return (b'{"id": "deep", "x": ' + b"[" * depth + b"]" * depth + b"}")[: MAX_BYTES * 4]
    if kind == "big":  # oversized records, and long ids
        size = draw(st.sampled_from([MAX_BYTES + 1, MAX_BYTES * 3]))
        return json.dumps({"id": "x" * size, "amount": 1.0}).encode()
    return None  # a tombstone


@st.composite
def label_record(draw, n_events: int) -> bytes:
    kind = draw(st.sampled_from(["good", "good", "junk", "unknown"]))
    target = draw(st.integers(0, n_events + 3))  # ids past the end: labels that never meet their event
    if kind == "good":
        return json.dumps({"id": f"e{target}", "label": draw(st.sampled_from(["0", "1"]))}).encode()
    if kind == "unknown":
        return json.dumps({"id": f"e{target}", "label": draw(st.sampled_from(["maybe", "7"]))}).encode()
    return draw(st.one_of(st.binary(max_size=30), json_value.map(lambda v: render(v).encode())))


@st.composite
def hostile_batches(draw):
    n = draw(st.integers(1, 40))
    events = [draw(event_record(i)) for i in range(n)]
    labels = draw(st.lists(label_record(n), max_size=25))  # duplicates and out-of-order come for free
    records = [RawRecord("events", draw(st.integers(0, 1)), i, None, v, 0) for i, v in enumerate(events)]
    records += [
        RawRecord("labels", draw(st.integers(0, 1)), 1000 + i, None, v, 0) for i, v in enumerate(labels)
    ]
    draw(st.randoms(use_true_random=False)).shuffle(records)
    cuts = sorted(draw(st.lists(st.integers(0, len(records)), max_size=3)))
    return [records[a:b] for a, b in zip([0, *cuts], [*cuts, len(records)], strict=True)]


@settings(max_examples=100, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_batches())
def test_hostile_batches_never_crash_and_every_record_is_accounted_for(batches):
    runner = ServiceRunner(hostile_config())
    for records in batches:
        events = sorted((r for r in records if r.topic == "events"), key=lambda r: (r.partition, r.offset))
        labels = [r for r in records if r.topic == "labels"]
        learned_before = sum(s.processor.n_learned for s in runner.states.values())
        outcome = runner.process_batch(events + labels)

        assert outcome.consumed == len(events) == outcome.processed + outcome.event_dead_letters
        assert outcome.label_records == len(labels)
        assert len(outcome.dead_letters) == outcome.event_dead_letters + outcome.label_dead_letters
        by_offset = {(r.topic, r.partition, r.offset): r for r in records}
        for letter in outcome.dead_letters:
            assert letter.reason in ALLOWED_REASONS and letter.detail
            record = by_offset[(letter.source, letter.partition, letter.offset)]
            assert (record.value or b"").startswith(letter.raw)
            assert len(letter.to_json().encode()) <= MAX_BYTES  # deliverable to the dead-letter topic
        assert len({(d.source, d.partition, d.offset) for d in outcome.dead_letters}) == len(
            outcome.dead_letters
        )
        learned = sum(s.processor.n_learned for s in runner.states.values()) - learned_before
        assert learned <= outcome.processed + outcome.labels["joined"]
    # the models were not poisoned: a clean event still gets finite scores
    for state in runner.states.values():
        verdict, _ = state.processor.process_one(Event("probe", None, {"amount": 1.0, "n": 0.5}))
        assert math.isfinite(verdict.anomaly_score)
        assert all(math.isfinite(p) for p in verdict.proba.values())


class FakeSource:
    """Stands in for KafkaSource where a test drives ``process_batch`` by hand: records seeks and commits."""

    connected = True

    def __init__(self) -> None:
        self.seeks: list[tuple[str, int, int]] = []

    def assignment(self):
        return [("events", 0)]

    def committed(self, partitions):
        return dict.fromkeys(partitions)

    def seek(self, topic, partition, offset):
        self.seeks.append((topic, partition, offset))

    def commit(self, offsets):
        pass


def test_a_model_bug_dead_letters_only_the_poison_record_and_learns_the_rest_once(monkeypatch, tmp_path):
    """A record that makes the model raise (a bug the decoder cannot catch): the partition is rewound to its
    checkpoint, the batch is replayed one record at a time, only that record is dead-lettered."""
    from streamimb.processor import Processor

    one, many = Processor.process_one, Processor.process_many

    def check(events):
        if any(e.features.get("amount") == 13.0 for e in events):
            raise ZeroDivisionError("a model bug")

    monkeypatch.setattr(Processor, "process_one", lambda self, e: (check([e]), one(self, e))[1])
    monkeypatch.setattr(Processor, "process_many", lambda self, es: (check(es), many(self, es))[1])
    docs = [
        json.dumps({"id": f"e{i}", "amount": 13.0 if i == 15 else 1.0, "label": "0"}).encode()
        for i in range(20)
    ]
    records = [RawRecord("events", 0, i, None, d, 0) for i, d in enumerate(docs)]

    config = hostile_config().model_copy(
        update={
            "checkpoint": ServiceConfig.model_validate(
                {"checkpoint": {"directory": str(tmp_path), "key": "k" * 16}}
            ).checkpoint
        }
    )
    runner = ServiceRunner(config)
    runner.source = source = FakeSource()
    assert runner.process_batch(records[:10]).processed == 10
    assert runner.checkpoint() == 1
    rewound = runner.process_batch(records[10:])
    assert rewound.consumed == 0 and source.seeks == [("events", 0, 10)]
    replayed = runner.process_batch(records[10:])  # Kafka delivers them again from the checkpoint's offset
    assert replayed.consumed == 10 and replayed.processed == 9
    assert [(d.reason, d.offset) for d in replayed.dead_letters] == [("processing_error", 15)]
    assert runner.summary()["learned_total"] == {0: 19}  # each good record learned once

    # without checkpoints nothing can be rewound: the failed batch is dead-lettered as a whole
    plain = ServiceRunner(hostile_config())
    outcome = plain.process_batch(records[10:])
    assert outcome.consumed == 10 == outcome.event_dead_letters
    assert {d.reason for d in outcome.dead_letters} == {"processing_error"}


# -- against the real broker --------------------------------------------------------------------------------
def hostile_corpus(seed: int = 0) -> tuple[list[bytes | None], int]:
    """Events: good ones and one of each kind of bad record; returns the records and how many are bad."""
    rng = random.Random(seed)
    bad = [
        b"{not json",
        b"",
        b"\xff\xfe\x00garbage",
        b"[1, 2, 3]",
        b'"just a string"',
        b'{"id": "nan", "amount": NaN}',
        b'{"id": "inf", "amount": Infinity}',
        b'{"id": "ninf", "amount": -1e999}',
        b'{"id": "huge", "amount": 1e300}',
        b'{"id": "hugeint", "amount": 1' + b"0" * 400 + b"}",
        b'{"id": "digits", "amount": ' + b"9" * 5000 + b"}",
        b'{"id": "text", "amount": "lots"}',
        b'{"id": "list", "amount": [1, 2]}',
        b'{"id": "obj", "amount": {"a": 1}}',
        b'{"id": "deep", "amount": ' + b"[" * 1500 + b"]" * 1500 + b"}",
        b'{"id": "cls", "amount": 1.0, "label": "maybe"}',
        b'{"id": "lab", "amount": 1.0, "label": [1]}',
        json.dumps({"id": "big", "amount": 1.0, "pad": "x" * (MAX_BYTES * 2)}).encode(),
        json.dumps({"id": "i" * 2000, "amount": 1.0}).encode(),
        None,
    ]
    good = [
        json.dumps(
            {
                "id": f"e{i}",
                "amount": rng.gauss(0, 1),
                "n": rng.random(),
                "label": str(int(rng.random() < 0.1)),
            }
        )
        for i in range(400)
    ]
    records: list[bytes | None] = [g.encode() for g in good]
    for i, b in enumerate(bad):
        records.insert(rng.randrange(len(records)), b)
        assert len(records) == 400 + i + 1
    return records, len(bad)


@pytest.mark.kafka
def test_hostile_stream_through_the_broker(kafka_broker, kafka_config, topic_factory):
    topics = {
        "events_topic": topic_factory(2, "events"),
        "labels_topic": topic_factory(2, "labels"),
        "alerts_topic": topic_factory(1, "alerts"),
        "dead_letter_topic": topic_factory(1, "dead"),
    }
    records, n_bad = hostile_corpus()
    produce_by_partition(kafka_broker.bootstrap, topics["events_topic"], records, 2)
    # labels: unknown ids, duplicates, out-of-order (labels for e400.. come before any such event), junk
    labels = [json.dumps({"id": f"u{i}", "label": "1"}).encode() for i in range(5)]
    labels += [b"{broken", json.dumps({"id": "e1", "label": "maybe"}).encode(), b"[]"]
    produce_records(kafka_broker.bootstrap, topics["labels_topic"], labels, partition=0)
    config = ServiceConfig.model_validate(
        {
            "kafka": kafka_config(max_message_bytes=MAX_BYTES, **topics).model_dump(),
            "schema": {"positive_class": "1", "classes": ["0", "1"]},
            "model": {"calibration": {"warmup": 50}},
            "service": {"idle_timeout": 3},
        }
    )
    summary = ServiceRunner(config).run()
    assert summary["consumed"] == len(records)
    assert summary["consumed"] == summary["processed"] + summary["event_dead_letters"]
    assert summary["event_dead_letters"] == n_bad
    assert summary["labels_consumed"] == len(labels) and summary["label_dead_letters"] == 3
    assert summary["dead_letters"] == n_bad + 3

    source = KafkaSource(kafka_config(), [topics["dead_letter_topic"]])
    try:
        dead = [json.loads(r.value) for r in poll_count(source, n_bad + 3, timeout_s=30)]
    finally:
        source.close()
    assert len(dead) == n_bad + 3
    assert all(d["reason"] in ALLOWED_REASONS and d["detail"] for d in dead)
    reasons = {d["reason"] for d in dead}
    assert {"malformed_json", "not_an_object", "non_finite", "bad_number", "bad_type", "oversized"} <= reasons
    assert {"unknown_label"} <= reasons


# -- security -----------------------------------------------------------------------------------------------
SECRETS = {
    "sasl": "sasl-secret-password-4711",
    "ssl": "ssl-key-passphrase-0815",
    "key": "hmac-key-never-logged-42",
}


def test_sasl_and_ssl_settings_reach_the_kafka_clients(monkeypatch):
    import streamimb.io.kafka as kafka_io

    seen = []

    class Refuse:
        def __init__(self, **kwargs):
            seen.append(kwargs)
            raise kafka_io.kerrors.KafkaConnectionError("refused by the test")

    monkeypatch.setattr(kafka_io, "_require_reachable", lambda servers: None)
    monkeypatch.setattr(kafka_io, "KafkaProducer", Refuse)
    config = ServiceConfig.model_validate(
        {
            "kafka": {
                "bootstrap_servers": "broker.invalid:9093",
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "SCRAM-SHA-512",
                "sasl_username": "svc",
                "sasl_password": SECRETS["sasl"],
                "ssl_cafile": "/etc/ca.pem",
                "ssl_password": SECRETS["ssl"],
                "max_retries": 0,
            }
        }
    )
    with pytest.raises(SinkError):
        ServiceRunner(config).run()
    kwargs = seen[0]
    assert kwargs["security_protocol"] == "SASL_SSL" and kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "svc" and kwargs["sasl_plain_password"] == SECRETS["sasl"]
    assert kwargs["ssl_cafile"] == "/etc/ca.pem" and kwargs["ssl_password"] == SECRETS["ssl"]
    consumer = config.kafka.consumer_kwargs()
    assert consumer["sasl_plain_password"] == SECRETS["sasl"] and consumer["security_protocol"] == "SASL_SSL"


@pytest.mark.kafka
def test_secrets_never_reach_logs_metrics_summary_or_checkpoints(
    kafka_broker, kafka_config, topic_factory, tmp_path, caplog
):
    topics = {
        "events_topic": topic_factory(1, "events"),
        "alerts_topic": topic_factory(1, "alerts"),
        "dead_letter_topic": topic_factory(1, "dead"),
    }
    produce_records(kafka_broker.bootstrap, topics["events_topic"], hostile_corpus(1)[0][:150])
    kafka = kafka_config(**topics).model_dump()
    kafka["ssl_password"] = SECRETS["ssl"]  # carried (unused on PLAINTEXT) through every client
    config = ServiceConfig.model_validate(
        {
            "kafka": kafka,
            "schema": {"positive_class": "1", "classes": ["0", "1"]},
            "checkpoint": {"directory": str(tmp_path), "key": SECRETS["key"], "every_events": 50},
            "service": {"idle_timeout": 3},
        }
    )
    caplog.set_level(logging.DEBUG)
    telemetry = Telemetry()
    with MetricsServer("127.0.0.1:0", telemetry) as server:
        summary = ServiceRunner(config, telemetry=telemetry).run()
        metrics = urllib.request.urlopen(f"http://{server.address}/metrics", timeout=5).read().decode()
    exposed = [caplog.text, metrics, json.dumps(summary), repr(config), str(config)]
    exposed += [p.read_bytes().decode("latin-1") for p in tmp_path.rglob("*") if p.is_file()]
    for text in exposed:
        for secret in SECRETS.values():
            assert secret not in text
    assert summary["consumed"] == 150 and summary["checkpoints"] > 0


def test_validate_config_masks_secrets_and_config_never_evaluates_code(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(
        "kafka:\n  security_protocol: SASL_SSL\n  sasl_mechanism: PLAIN\n  sasl_username: svc\n"
        f"  sasl_password: {SECRETS['sasl']}\n  ssl_password: {SECRETS['ssl']}\n"
        f"checkpoint:\n  directory: {tmp_path}\n  key: {SECRETS['key']}\n"
    )
    run = subprocess.run(
        [sys.executable, "-m", "streamimb", "validate-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert "sasl_password: '**********'" in run.stdout and "key: '**********'" in run.stdout
    for secret in SECRETS.values():
        assert secret not in run.stdout + run.stderr

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.yaml"
    evil.write_text(f"service: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError):
        load_config(evil)
    bad_env = subprocess.run(
        [sys.executable, "-m", "streamimb", "validate-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            "STREAMIMB_SERVICE__MAX_EVENTS": f"__import__('os').system('touch {marker}')",
            "PATH": "/usr/bin",
        },
    )
    assert bad_env.returncode != 0 and "service.max_events" in bad_env.stderr
    assert not marker.exists()


def test_http_endpoint_serves_only_metrics_health_and_readiness():
    telemetry = Telemetry()
    telemetry.set_ready(True)
    with MetricsServer("127.0.0.1:0", telemetry) as server:
        base = f"http://{server.address}"

        def status(path: str, method: str = "GET") -> int:
            request = urllib.request.Request(
                base + path, method=method, data=b"x" if method != "GET" else None
            )
            try:
                return urllib.request.urlopen(request, timeout=5).status
            except urllib.error.HTTPError as exc:
                return exc.code

        assert [status(p) for p in ("/metrics", "/healthz", "/readyz")] == [200, 200, 200]
        for path in ("/", "/admin", "/metrics/../etc/passwd", "/%2e%2e/etc/passwd", "/debug/vars", "/config"):
            assert status(path) == 404, path
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            assert status("/metrics", method) in (404, 405, 501), method


def test_replay_and_the_service_give_the_same_dead_letters_for_the_same_hostile_corpus(tmp_path):
    """One decode path: the hostile corpus as a file through ``replay`` and as records through the service."""
    from streamimb.replay import replay

    records, _ = hostile_corpus()
    lines = [r for r in records if r]  # a file holds neither tombstones nor empty lines
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    config = hostile_config().model_copy(
        update={
            "event_schema": hostile_config().event_schema.model_copy(update={"numeric": ["amount", "n"]}),
            "source": hostile_config().source.model_copy(update={"max_record_bytes": MAX_BYTES}),
        }
    )
    report = replay(path, config, progress=False)
    outcome = ServiceRunner(config).process_batch(
        [RawRecord("events", 0, i, None, v, 0) for i, v in enumerate(lines)]
    )
    assert report["consumed"] == outcome.consumed == len(lines)  # nothing lost on either path
    assert report["events"] == outcome.processed
    assert report["dead_letter_reasons"] == dict(Counter(d.reason for d in outcome.dead_letters))
    assert {d["row"] for d in report["dead_letter_rows"]} == {d.offset for d in outcome.dead_letters}


@st.composite
def hostile_file(draw) -> list[bytes]:
    """Hostile event records as lines of a JSONL file (a file holds no tombstones, empty or split lines)."""
    n = draw(st.integers(1, 40))
    lines = [draw(event_record(i)) for i in range(n)]
    return [line for line in lines if line and line.strip() and b"\n" not in line and b"\r" not in line]


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(hostile_file())
def test_hostile_files_replay_to_the_end_with_the_service_reasons(tmp_path_factory, lines):
    from streamimb.replay import replay

    path = tmp_path_factory.mktemp("hostile") / "events.jsonl"
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    config = hostile_config()
    config = config.model_copy(
        update={
            "event_schema": config.event_schema.model_copy(update={"numeric": ["amount", "n"]}),
            "source": config.source.model_copy(update={"max_record_bytes": MAX_BYTES}),
        }
    )
    report = replay(path, config, progress=False)
    outcome = ServiceRunner(config).process_batch(
        [RawRecord("events", 0, i, None, v, 0) for i, v in enumerate(lines)]
    )
    assert report["consumed"] == len(lines) == report["events"] + report["dead_letters"]
    assert set(report["dead_letter_reasons"]) <= ALLOWED_REASONS
    assert report["dead_letter_reasons"] == dict(Counter(d.reason for d in outcome.dead_letters))
