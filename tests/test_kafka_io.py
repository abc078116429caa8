"""KafkaConfig (offline) and KafkaSource / KafkaSink against the real embedded broker (no mocks)."""

from __future__ import annotations

import importlib.util
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from kafka_broker import CLIENTS, fast_config, poll_count, poll_until, require_client, start_broker_or_skip
from pydantic import ValidationError

from streamimb.errors import SinkError, SourceError
from streamimb.io.kafka import (
    KafkaConfig,
    KafkaSink,
    KafkaSource,
    RawRecord,
    is_oversized,
    open_source,
    produce_records,
)
from streamimb.service.broker import EmbeddedBroker

kafka = pytest.mark.kafka
TopicFactory = Callable[..., str]
ConfigFactory = Callable[..., KafkaConfig]


# ------------------------------------------------------------------------------------ config (offline)
def test_config_defaults_and_comma_separated_servers() -> None:
    cfg = KafkaConfig(bootstrap_servers=" a:9092 ,b:9093,")
    assert cfg.bootstrap_servers == ["a:9092", "b:9093"]
    assert (cfg.events_topic, cfg.labels_topic, cfg.alerts_topic, cfg.dead_letter_topic) == (
        "events",
        None,
        "alerts",
        "dead-letters",
    )
    assert (cfg.session_timeout_ms, cfg.heartbeat_interval_ms, cfg.max_poll_records) == (10_000, 1_000, 500)
    assert cfg.max_message_bytes == 1_000_000
    consumer = cfg.consumer_kwargs()
    assert consumer["enable_auto_commit"] is False and consumer["group_id"] == "streamimb"
    producer = cfg.producer_kwargs()
    assert producer["acks"] == "all"
    assert producer["delivery_timeout_ms"] >= producer["request_timeout_ms"] + producer["linger_ms"]


def test_config_is_frozen_and_rejects_unknown_fields() -> None:
    cfg = KafkaConfig()
    with pytest.raises(ValidationError):
        cfg.group_id = "other"
    with pytest.raises(ValidationError, match="extra"):
        KafkaConfig(bootstrap="x:1")
    with pytest.raises(ValidationError, match="security_protocol"):
        KafkaConfig(security_protocol="TLS")
    with pytest.raises(ValidationError, match="heartbeat_interval_ms"):
        KafkaConfig(session_timeout_ms=1000, heartbeat_interval_ms=1000)
    with pytest.raises(ValidationError, match="bootstrap"):
        KafkaConfig(bootstrap_servers=" , ")


def test_config_sasl_ssl_pass_through_and_secret_masking() -> None:
    with pytest.raises(ValidationError, match="sasl_mechanism is required"):
        KafkaConfig(security_protocol="SASL_SSL")
    with pytest.raises(ValidationError, match="sasl_username and sasl_password"):
        KafkaConfig(security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512", sasl_username="u")
    with pytest.raises(ValidationError, match="not SASL"):
        KafkaConfig(sasl_mechanism="PLAIN")
    cfg = KafkaConfig(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username="svc",
        sasl_password="s3cret-pw",
        ssl_cafile="/etc/ca.pem",
        ssl_certfile="/etc/cert.pem",
        ssl_keyfile="/etc/key.pem",
        ssl_password="key-pw",
    )
    for text in (repr(cfg), str(cfg), cfg.model_dump_json()):
        assert "s3cret-pw" not in text and "key-pw" not in text
    kwargs = cfg.client_kwargs()
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-256"
    assert kwargs["sasl_plain_username"] == "svc" and kwargs["sasl_plain_password"] == "s3cret-pw"
    assert kwargs["ssl_cafile"] == "/etc/ca.pem" and kwargs["ssl_password"] == "key-pw"
    assert "sasl_mechanism" not in KafkaConfig().client_kwargs()


def test_oversized_helper_counts_key_value_and_headers() -> None:
    rec = RawRecord("t", 0, 5, b"k" * 4, b"v" * 6, 0, (("h", b"12"),))
    assert rec.size == 13 and rec.next_offset == 6
    assert is_oversized(rec, 12) and not is_oversized(rec, 13)
    assert RawRecord("t", 0, 0, None, None, 0).size == 0


# ------------------------------------------------------------------------------------ source
def _json_record(i: int, size: int) -> bytes:
    base = json.dumps({"id": i, "amount": i % 97 * 1.25, "pad": ""})
    return json.dumps({"id": i, "amount": i % 97 * 1.25, "pad": "x" * (size - len(base))}).encode()


def _values(n: int, start: int = 0) -> list[bytes]:
    return [json.dumps({"id": i, "amount": i * 1.5}).encode() for i in range(start, start + n)]


@kafka
def test_round_trip_order_join_time_lag_and_oversized_detection(
    topic_factory: TopicFactory, client_config: ConfigFactory
) -> None:
    topic = topic_factory(partitions=1)
    values = _values(50)
    keys = [f"acct-{i % 7}".encode() for i in range(50)]
    before_ms = int(time.time() * 1000) - 1000
    assert produce_records(client_config(), topic, values, keys) == 50
    big = b"x" * 1_200_000  # above max_message_bytes: still fetched, then flagged for the dead letters
    produce_records(client_config(), topic, [big, b"after"])
    cfg = client_config()
    t0 = time.perf_counter()
    with open_source(cfg, [topic]) as source:
        first = poll_count(source, 1)
        join_s = time.perf_counter() - t0
        records = first + poll_count(source, 52 - len(first))
        assert source.assignment() == [(topic, 0)]
        assert source.connected
        assert source.lag() == {(topic, 0): 0}
    print(f"group join + first records: {join_s:.2f}s")
    assert [r.value for r in records] == [*values, big, b"after"]
    assert [r.key for r in records] == [*keys, None, None]
    assert [r.offset for r in records] == list(range(52))
    assert all(r.topic == topic and r.partition == 0 and r.timestamp_ms >= before_ms for r in records)
    assert [r.offset for r in records if is_oversized(r, cfg.max_message_bytes)] == [50]


@kafka
def test_lag_commit_and_restarted_consumer_resumes_from_committed_offset(
    topic_factory: TopicFactory, client_config: ConfigFactory
) -> None:
    topic = topic_factory(partitions=1)
    produce_records(client_config(), topic, _values(100))
    cfg = client_config()
    with open_source(cfg, [topic]) as source:
        done = poll_until(source, lambda recs: len(recs) >= 30, max_records=30)[:30]
        assert [r.offset for r in done] == list(range(30))
        assert source.position(topic, 0) == 30
        assert source.lag() == {(topic, 0): 70}  # highwater 100 - position 30
        source.commit({(topic, 0): done[-1].next_offset})
        assert source.committed() == {(topic, 0): 30}
        with pytest.raises(ValueError):
            source.commit({(topic, 0): -1})
    with open_source(cfg, [topic]) as again:  # same group: resumes at 30, nothing lost or repeated
        rest = poll_count(again, 70)
    assert [r.offset for r in rest] == list(range(30, 100))


class _CallLog:
    """Stands in for a client's consumer: passes every call on and keeps its name and keyword arguments."""

    def __init__(self, consumer: Any) -> None:
        self._consumer, self.calls = consumer, []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._consumer, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, kwargs))
            return attr(*args, **kwargs)

        return call


def _wait_fetched_once(source: Any, partitions: list[tuple[str, int]], timeout_s: float = 20.0) -> None:
    """Until the client holds a highwater mark for each partition, i.e. fetched each at least once.

    kafka-python fetches only inside ``poll()``: what the last poll fetched is all there is, nothing to wait
    for. librdkafka fetches in a background thread: wait for it (the empty partition included)."""
    if source.config.client != "confluent":
        return
    import confluent_kafka as ck

    def fetched(topic: str, partition: int) -> bool:
        tp = ck.TopicPartition(topic, partition)
        return source._consumer.get_watermark_offsets(tp, cached=True)[1] >= 0

    deadline = time.monotonic() + timeout_s
    while not all(fetched(t, p) for t, p in partitions):
        if time.monotonic() > deadline:
            pytest.fail(f"{partitions} not all fetched within {timeout_s}s")
        time.sleep(0.02)


@kafka
def test_lag_is_read_from_the_client_without_asking_the_broker(
    topic_factory: TopicFactory, client_config: ConfigFactory
) -> None:
    """The service reads the lag after every batch: it must not cost a request. A partition without a
    position yet (here: an empty one; in the service: one just assigned) used to send the confluent source to
    the broker for its committed offset and watermarks, which stalled a service for the request timeout."""
    topic = topic_factory(partitions=2)
    produce_records(client_config(), topic, _values(40), partition=0)  # partition 1 stays empty
    with open_source(client_config(), [topic]) as source:
        poll_until(source, lambda recs: len(recs) >= 10, max_records=10)
        _wait_fetched_once(source, [(topic, 0), (topic, 1)])
        consumer, source._consumer = source._consumer, _CallLog(source._consumer)
        try:
            lag = source.lag()
            calls = source._consumer.calls
        finally:
            source._consumer = consumer
    assert lag[(topic, 0)] == 30 and lag.get((topic, 1), 0) == 0
    local = {"assignment", "highwater", "position", "get_watermark_offsets"}
    assert calls and {name for name, _ in calls} <= local
    assert all(kw.get("cached") for name, kw in calls if name == "get_watermark_offsets")


@kafka
def test_seek_and_seek_from_on_assign_for_checkpoint_resume(
    topic_factory: TopicFactory, client_config: ConfigFactory
) -> None:
    topic = topic_factory(partitions=1)
    produce_records(client_config(), topic, _values(20))
    with open_source(client_config(), [topic]) as source:
        assert len(poll_count(source, 20)) == 20
        source.seek(topic, 0, 5)
        again = poll_count(source, 15)
        assert [r.offset for r in again] == list(range(5, 20))
        with pytest.raises(SourceError, match="cannot seek"):
            source.seek(topic, 3, 0)  # not assigned

    holder: dict[str, Any] = {}
    assigned: list[list[tuple[str, int]]] = []

    def on_assign(partitions: list[tuple[str, int]]) -> None:  # what the runner does with a checkpoint
        assigned.append(partitions)
        for t, p in partitions:
            holder["source"].seek(t, p, 12)

    source = open_source(client_config(), [topic], on_assign=on_assign)
    holder["source"] = source
    with source:
        resumed = poll_count(source, 8)
    assert assigned == [[(topic, 0)]]
    assert [r.offset for r in resumed] == list(range(12, 20))


@kafka
def test_callback_exception_is_raised_by_poll_and_skips_nothing(
    topic_factory: TopicFactory, client_config: ConfigFactory
) -> None:
    topic = topic_factory(partitions=1)
    produce_records(client_config(), topic, _values(5))

    class CheckpointMissing(RuntimeError):
        pass

    calls: list[list[tuple[str, int]]] = []

    def on_assign(partitions: list[tuple[str, int]]) -> None:
        calls.append(partitions)
        if len(calls) == 1:
            raise CheckpointMissing(f"no state for {partitions}")

    with open_source(client_config(), [topic], on_assign=on_assign) as source:
        with pytest.raises(CheckpointMissing, match=topic):
            poll_until(source, lambda recs: False, timeout_s=15)
        assert source.assignment() == [(topic, 0)]
        assert [r.offset for r in poll_count(source, 5)] == list(range(5))


@kafka
def test_two_consumers_split_four_partitions_without_duplicates(
    topic_factory: TopicFactory, client_config: ConfigFactory
) -> None:
    topic = topic_factory(partitions=4)
    cfg = client_config()
    keys = [f"acct-{i}".encode() for i in range(400)]
    produce_records(cfg, topic, _values(400), keys)
    t_start = time.perf_counter()

    class Member:
        def __init__(self, name: str) -> None:
            self.name = name
            self.records: list[RawRecord] = []
            self.revoked: list[list[tuple[str, int]]] = []
            self.stop = threading.Event()
            self.error: BaseException | None = None
            self.source = open_source(cfg, [topic], on_revoke=self.on_revoke)
            self.thread = threading.Thread(target=self.run, name=name)
            self.thread.start()

        def on_revoke(self, partitions: list[tuple[str, int]]) -> None:
            # commit what was processed before the partitions move: a blocking commit inside the callback
            self.revoked.append(partitions)
            self.source.commit({p: self.source.position(*p) for p in partitions})

        def run(self) -> None:
            try:
                while not self.stop.is_set():
                    self.records.extend(self.source.poll(timeout_ms=100))
            except BaseException as exc:
                self.error = exc

        def shutdown(self) -> None:
            self.stop.set()
            self.thread.join(15)
            self.source.close()

    a = Member("a")
    poll_deadline = time.monotonic() + 25
    while not a.records and time.monotonic() < poll_deadline:
        time.sleep(0.05)
    first_generation = a.source.generation()
    b = Member("b")
    try:
        while time.monotonic() < poll_deadline:
            parts_a, parts_b = a.source.assignment(), b.source.assignment()
            if len(parts_a) == 2 and len(parts_b) == 2:
                break
            time.sleep(0.05)
        rebalanced_s = time.perf_counter() - t_start
        assert sorted(parts_a + parts_b) == [(topic, p) for p in range(4)]
        # the generation fences checkpoints: both members see the new one, above the first join's
        assert a.source.generation() == b.source.generation() > first_generation >= 0
        produce_records(cfg, topic, _values(400, start=400), keys)
        while len(a.records) + len(b.records) < 800 and time.monotonic() < poll_deadline:
            time.sleep(0.05)
    finally:
        a.shutdown()
        b.shutdown()
    assert a.error is None and b.error is None
    seen = [(r.partition, r.offset) for r in a.records + b.records]
    assert len(seen) == 800 and len(set(seen)) == 800  # everything exactly once across the rebalance
    assert a.revoked and a.revoked[0] == [(topic, p) for p in range(4)]
    late_b = {r.partition for r in b.records}
    assert late_b and late_b <= {p for _, p in parts_b}
    print(f"4 partitions split across 2 members {rebalanced_s:.1f}s after the first join started")


@kafka
def test_consume_throughput_20k_json_records(
    topic_factory: TopicFactory, client_config: ConfigFactory
) -> None:
    topic = topic_factory(partitions=1)
    values = [_json_record(i, 300) for i in range(20_000)]
    assert all(len(v) == 300 for v in values)
    produce_records(client_config(), topic, values)
    with open_source(client_config(), [topic]) as source:
        first = poll_count(source, 1)
        t0 = time.perf_counter()
        rest = poll_count(source, 20_000 - len(first), timeout_s=30)
        elapsed = time.perf_counter() - t0
    records = first + rest
    assert [r.offset for r in records] == list(range(20_000))
    assert records[-1].value == values[-1]
    print(f"KafkaSource consumed {len(rest)} x 300 B records at {len(rest) / elapsed:,.0f} events/s")


# ------------------------------------------------------------------------------------ sink
@kafka
def test_sink_flush_delivers_with_headers(topic_factory: TopicFactory, kafka_config: ConfigFactory) -> None:
    topic = topic_factory(partitions=1)
    with KafkaSink(kafka_config(), topic) as sink:
        for i in range(20):
            sink.send(f"alert-{i}".encode(), key=b"acct-1", headers={"kind": "alert", "n": str(i).encode()})
        sink.flush(timeout=10)
        assert (sink.delivered, sink.failed) == (20, 0)
    with KafkaSource(kafka_config(), [topic]) as source:
        records = poll_count(source, 20)
    assert [r.value for r in records] == [f"alert-{i}".encode() for i in range(20)]
    assert records[3].headers == (("kind", b"alert"), ("n", b"3")) and records[3].key == b"acct-1"


@kafka
def test_sink_rejects_oversized_record_at_send(
    topic_factory: TopicFactory, kafka_config: ConfigFactory
) -> None:
    topic = topic_factory(partitions=1)
    with KafkaSink(kafka_config(max_message_bytes=1_000), topic) as sink:
        with pytest.raises(SinkError, match="oversized"):
            sink.send(b"x" * 1_001)
        sink.send(b"x" * 1_000)
        sink.flush(timeout=10)
        assert (sink.delivered, sink.failed) == (1, 1)


@kafka
def test_sink_error_when_broker_down_then_recovers_with_a_new_producer() -> None:
    broker = start_broker_or_skip(topics=["alerts"])
    port = broker.port
    cfg = fast_config(broker.bootstrap, delivery_timeout_ms=2_000, request_timeout_ms=1_500, max_retries=3)
    sink = KafkaSink(cfg, "alerts")
    restarted: EmbeddedBroker | None = None
    try:
        sink.send(b"before")
        sink.flush(timeout=10)
        broker.stop()
        sink.send(b"lost")  # queued: metadata for the topic is cached
        t0 = time.perf_counter()
        with pytest.raises(SinkError, match=r"not delivered|did not complete"):
            sink.flush(timeout=8)
        assert time.perf_counter() - t0 < 9
        restarted = EmbeddedBroker(port=port, topics=["alerts"])
        restarted.start()
        sink.send(b"after")  # a fresh producer: the old one may be wedged after the broker restart
        sink.flush(timeout=10)
        assert sink.delivered == 2 and sink.failed >= 1
        with KafkaSource(fast_config(restarted.bootstrap), ["alerts"]) as source:
            assert [r.value for r in poll_count(source, 1)] == [b"after"]
    finally:
        sink.close(timeout=2)
        broker.stop()
        if restarted is not None:
            restarted.stop()


@kafka
@pytest.mark.parametrize("client", CLIENTS)
def test_source_reports_disconnect_and_closes_promptly(client: str) -> None:
    require_client(client)
    broker = start_broker_or_skip(topics=["events"])
    produce_records(broker.bootstrap, "events", [b"1"])
    cfg = fast_config(broker.bootstrap, request_timeout_ms=2_000, client=client)
    source = open_source(cfg, ["events"])
    try:
        assert poll_count(source, 1)[0].value == b"1"
        assert source.connected
        broker.stop()
        deadline = time.monotonic() + 10
        while source.connected and time.monotonic() < deadline:
            source.poll(timeout_ms=100)
        assert not source.connected
    finally:
        t0 = time.perf_counter()
        source.close(timeout_s=3)
        broker.stop()
    assert time.perf_counter() - t0 < 6
    assert not source.connected
    with pytest.raises(SourceError, match="closed"):
        source.poll()


@kafka
def test_unreachable_broker_is_a_source_and_sink_error() -> None:
    cfg = KafkaConfig(bootstrap_servers="127.0.0.1:1", max_retries=2, retry_backoff_ms=50)
    t0 = time.perf_counter()
    with pytest.raises(SourceError, match="connect"):
        KafkaSource(cfg, ["events"])
    if importlib.util.find_spec("confluent_kafka") is not None:
        with pytest.raises(SourceError, match="connect"):
            open_source(cfg.model_copy(update={"client": "confluent"}), ["events"])
    with pytest.raises(SinkError, match="producer"):
        KafkaSink(cfg, "alerts")
    assert time.perf_counter() - t0 < 10
