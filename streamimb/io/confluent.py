"""A consumer-group source over confluent-kafka (librdkafka), behind the interface of ``KafkaSource``.

Chosen with ``kafka.client: confluent`` (install ``streamimb[confluent]``). kafka-python checks and parses
every record in Python, a third of what the default pipeline's processing costs per event;
librdkafka does it in C (``benchmarks/throughput.py`` measures both). The source is the only part that
changes: producers (alerts, dead letters: a small share of the events) stay on kafka-python.

Semantics are ``KafkaSource``'s, in the same tests: manual commits, batches grouped by partition in
offset order, blocking rebalance callbacks (librdkafka runs them inside ``poll`` on the caller's thread),
a callback error re-raised by the next ``poll`` with its fetch undone, retries with capped backoff.
A seek made while ``on_assign`` runs becomes the partition's start offset in the assignment (librdkafka
cannot seek a partition before it is assigned).
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from streamimb.errors import SourceError
from streamimb.io.consumer import (
    CallbackRunner,
    SourceLifecycle,
    any_server_reachable,
    checked_offsets,
    retrying,
    sorted_partitions,
)
from streamimb.io.interfaces import Partition, PartitionCallback, RawRecord
from streamimb.io.settings import KafkaConfig

try:
    import confluent_kafka as ck
except ImportError:  # pragma: no cover - the optional extra is not installed
    ck = None

__all__ = ["ConfluentSource", "confluent_settings"]

log = logging.getLogger(__name__)

_INVALID = -1001  # librdkafka's OFFSET_INVALID: no position / nothing committed / use the committed offset
_HEALTH_CHECK_S = 1.0  # while the brokers look down, how often `connected` asks the cluster again


def confluent_settings(config: KafkaConfig) -> dict[str, Any]:
    """librdkafka properties equivalent to :meth:`KafkaConfig.consumer_kwargs` (secrets unwrapped here).

    >>> s = confluent_settings(KafkaConfig(bootstrap_servers="k1:9092,k2:9092", group_id="fraud"))
    >>> s["bootstrap.servers"], s["group.id"], s["enable.auto.commit"]
    ('k1:9092,k2:9092', 'fraud', False)
    """
    settings: dict[str, Any] = {
        "bootstrap.servers": ",".join(config.bootstrap_servers),
        "client.id": config.client_id,
        "security.protocol": config.security_protocol,
        "group.id": config.group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": config.auto_offset_reset,
        "session.timeout.ms": config.session_timeout_ms,
        "heartbeat.interval.ms": config.heartbeat_interval_ms,
        "max.partition.fetch.bytes": config.max_partition_fetch_bytes,
        "fetch.max.bytes": max(config.fetch_max_bytes, config.max_partition_fetch_bytes),
        "socket.timeout.ms": config.request_timeout_ms,
        "retry.backoff.ms": config.retry_backoff_ms,
        "reconnect.backoff.max.ms": config.retry_backoff_max_ms,
        "partition.assignment.strategy": "range",  # eager, as the kafka-python source
        "logger": log,
    }
    if config.sasl_mechanism is not None:
        settings["sasl.mechanism"] = config.sasl_mechanism
    if config.sasl_username is not None:
        settings["sasl.username"] = config.sasl_username
    if config.sasl_password is not None:
        settings["sasl.password"] = config.sasl_password.get_secret_value()
    for name, key in (
        ("ssl_cafile", "ssl.ca.location"),
        ("ssl_certfile", "ssl.certificate.location"),
        ("ssl_keyfile", "ssl.key.location"),
    ):
        if getattr(config, name) is not None:
            settings[key] = getattr(config, name)
    if config.ssl_password is not None:
        settings["ssl.key.password"] = config.ssl_password.get_secret_value()
    return settings


def group_generation(metadata: Any) -> int:
    """The generation id in librdkafka's serialised group metadata (``CGMDv2:``, then a native int32);
    -1 for a format this does not know.

    >>> group_generation(b"CGMDv2:" + (7).to_bytes(4, "little") + b"group\\x00member\\x00\\x00")
    7
    >>> group_generation(b"CGMDv9:...")
    -1
    """
    raw = bytes(metadata) if isinstance(metadata, bytes | bytearray) else b""
    if not raw.startswith(b"CGMDv2:") or len(raw) < 11:
        return -1
    return int(struct.unpack_from("=i", raw, 7)[0])


class ConfluentSource(SourceLifecycle):
    """``KafkaSource`` over confluent-kafka (see the module docstring); same constructor and methods.

    Use it from one thread, as the runner does (librdkafka serves the callbacks on the polling thread).
    """

    def __init__(
        self,
        config: KafkaConfig,
        topics: Sequence[str],
        on_assign: PartitionCallback | None = None,
        on_revoke: PartitionCallback | None = None,
        on_lost: PartitionCallback | None = None,
    ) -> None:
        if ck is None:
            raise SourceError(
                "kafka.client 'confluent' needs confluent-kafka: pip install 'streamimb[confluent]'"
            )
        self.config = config
        self.topics = self._topic_list(topics)
        self._on_assign, self._on_revoke, self._on_lost = on_assign, on_revoke, on_lost
        self._closed = False
        self._healthy = False
        self._down_since: float | None = None  # when librdkafka reported every broker down
        self._checked_at = 0.0
        self._runner = CallbackRunner()  # keeps a callback's error for poll() to re-raise
        self._assignment: list[Partition] = []
        self._generation = -1
        self._seeks: dict[Partition, int] | None = None  # seeks made while on_assign runs
        self._consumer = self._with_retries("connect", self._connect)
        try:
            self._consumer.subscribe(
                self.topics, on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost
            )
        except BaseException:
            self._consumer.close()
            raise

    # -- lifecycle -------------------------------------------------------------------------------
    def _connect(self) -> Any:
        if not any_server_reachable(self.config.bootstrap_servers, 2.0):
            raise _Unreachable(f"no bootstrap server reachable: {list(self.config.bootstrap_servers)}")
        return ck.Consumer({**confluent_settings(self.config), "error_cb": self._on_error})

    def close(self, timeout_s: float = 10.0) -> None:
        """Leave the group (``on_revoke`` runs first) and close the consumer. Idempotent. ``timeout_s`` is
        not used: the binding's close takes none (with the brokers down it returns within seconds)."""
        if self._closed:
            return
        try:
            self._consumer.close()
        except ck.KafkaException as exc:
            log.warning("closing the Kafka consumer: %s", exc)
        finally:
            self._closed = True
            self._healthy = False
        self._raise_callback_error()

    # -- health ----------------------------------------------------------------------------------
    def _on_error(self, error: Any) -> None:
        if error.code() == ck.KafkaError._ALL_BROKERS_DOWN:
            self._healthy = False
            self._down_since = time.monotonic()
        elif error.fatal():
            self._healthy = False
            log.error("kafka consumer: fatal error %s", error)
        else:
            log.warning("kafka consumer: %s", error)

    @property
    def connected(self) -> bool:
        """True while the consumer is open, its last call succeeded and a broker answers."""
        if self._closed:
            return False
        if self._down_since is not None and time.monotonic() - self._checked_at >= _HEALTH_CHECK_S:
            self._checked_at = time.monotonic()
            try:
                self._consumer.list_topics(self.topics[0], timeout=0.5)
            except ck.KafkaException:
                return False
            self._down_since, self._healthy = None, True
        return self._healthy and self._down_since is None

    # -- rebalance callbacks (librdkafka calls them inside consume(), on the caller's thread) -------
    def _assigned(self, consumer: Any, tps: list[Any]) -> None:
        self._assignment = sorted_partitions(tps)
        try:  # read here, on the polling thread: asked while another thread polls, librdkafka can block
            self._generation = group_generation(consumer.consumer_group_metadata())
        except ck.KafkaException:
            self._generation = -1
        self._seeks = {}
        try:
            self._runner.call(self._on_assign, tps)
            seeks = self._seeks
        finally:
            self._seeks = None
        consumer.assign([ck.TopicPartition(t, p, seeks.get((t, p), _INVALID)) for t, p in self._assignment])

    def _revoked(self, consumer: Any, tps: list[Any]) -> None:
        if tps:
            self._runner.call(self._on_revoke, tps)
        self._assignment = []

    def _lost(self, consumer: Any, tps: list[Any]) -> None:
        self._generation = -1
        if tps:
            self._runner.call(self._on_lost or self._on_revoke, tps)
        self._assignment = []

    # -- consuming -------------------------------------------------------------------------------
    def poll(self, max_records: int | None = None, timeout_ms: int | None = None) -> list[RawRecord]:
        """Return up to ``max_records`` records, grouped by (topic, partition) in order; ``[]`` on timeout."""
        self._check_open()
        max_records = self.config.max_poll_records if max_records is None else max_records
        timeout_ms = self.config.poll_timeout_ms if timeout_ms is None else timeout_ms
        messages = self._with_retries(
            "poll", lambda: self._consumer.consume(num_messages=max_records, timeout=timeout_ms / 1000)
        )
        out: list[RawRecord] = []
        for m in messages:
            error = m.error()
            if error is not None:
                self._on_message_error(error)
                continue
            headers = m.headers()
            out.append(
                RawRecord(
                    m.topic(), m.partition(), m.offset(), m.key(), m.value(), m.timestamp()[1],
                    tuple(headers) if headers else (),
                )
            )  # fmt: skip
        if self._runner.error is not None:  # undo this fetch so that nothing is skipped, then raise
            self._rewind(out)
            self._raise_callback_error()
        if len(self._assignment) > 1:
            out.sort(key=lambda r: (r.topic, r.partition))  # stable: offsets stay in order
        return out

    def _on_message_error(self, error: Any) -> None:
        if error.fatal():
            self._healthy = False
            raise SourceError(f"kafka poll failed: {error}")
        log.warning("kafka poll: %s", error)

    def _rewind(self, records: list[RawRecord]) -> None:
        first: dict[Partition, int] = {}
        for r in records:
            first.setdefault((r.topic, r.partition), r.offset)
        for (topic, part), offset in first.items():
            if (topic, part) in self._assignment:
                self.seek(topic, part, offset)

    def commit(self, offsets: Mapping[Partition, int]) -> None:
        """Synchronously commit ``{(topic, partition): next_offset}``; raise ``SourceError`` on failure."""
        self._check_open()
        if not offsets:
            return
        payload = [ck.TopicPartition(t, p, o) for t, p, o in checked_offsets(offsets)]
        self._with_retries("commit", lambda: self._consumer.commit(offsets=payload, asynchronous=False))

    def seek(self, topic: str, partition: int, offset: int) -> None:
        """Read ``topic[partition]`` from ``offset`` on the next poll (resume from a checkpoint)."""
        self._check_open()
        key = (topic, int(partition))
        if key not in self._assignment:
            raise SourceError(f"cannot seek {topic}[{partition}] to {offset}: the partition is not assigned")
        if self._seeks is not None:  # inside on_assign: the assignment starts there
            self._seeks[key] = int(offset)
            return
        try:
            self._consumer.seek(ck.TopicPartition(topic, int(partition), int(offset)))
        except ck.KafkaException as exc:
            raise SourceError(f"cannot seek {topic}[{partition}] to {offset}: {exc}") from exc

    def generation(self) -> int:
        """The consumer-group generation this member last joined (-1 before the first join or once lost).

        Generations only grow in a group; a checkpoint store uses them to fence a stale owner.
        """
        self._check_open()
        return self._generation

    def assignment(self) -> list[Partition]:
        """The partitions this member owns now, sorted."""
        self._check_open()
        return list(self._assignment)

    def position(self, topic: str, partition: int) -> int | None:
        """The offset of the next record this member will return for an assigned partition: before its
        first fetch, the committed offset or else the one ``auto_offset_reset`` picks (as kafka-python)."""
        self._check_open()
        tp = ck.TopicPartition(topic, int(partition))
        found = self._with_retries("position", lambda: self._consumer.position([tp]))
        offset = found[0].offset if found else _INVALID
        if offset >= 0:
            return offset
        committed = self.committed([(topic, int(partition))]).get((topic, int(partition)))
        if committed is not None:
            return committed
        timeout = self.config.request_timeout_ms / 1000
        low, high = self._with_retries(
            "position", lambda: self._consumer.get_watermark_offsets(tp, timeout=timeout)
        )
        return low if self.config.auto_offset_reset == "earliest" else high

    def committed(self, partitions: Iterable[Partition] | None = None) -> dict[Partition, int | None]:
        """Committed offsets of ``partitions`` (default: the assignment); ``None`` if never committed."""
        self._check_open()
        wanted = self.assignment() if partitions is None else sorted(partitions)
        if not wanted:
            return {}
        timeout = self.config.request_timeout_ms / 1000
        found = self._with_retries(
            "committed",
            lambda: self._consumer.committed([ck.TopicPartition(t, p) for t, p in wanted], timeout=timeout),
        )
        return {(tp.topic, tp.partition): (tp.offset if tp.offset >= 0 else None) for tp in found}

    def lag(self) -> dict[Partition, int]:
        """Records behind the highwater mark per assigned partition (those fetched since assigned).

        Read from the client's own state, with no request to the brokers: the service asks after every
        batch. A partition just assigned keeps the highwater of an earlier assignment until its first fetch,
        but has no position yet; it is left out until then.
        """
        self._check_open()
        out: dict[Partition, int] = {}
        for topic, part in self._assignment:
            tp = ck.TopicPartition(topic, part)
            _, highwater = self._consumer.get_watermark_offsets(tp, cached=True)
            if highwater < 0:  # not fetched yet
                continue
            position = self._with_retries("position", lambda tp=tp: self._consumer.position([tp]))[0].offset
            if position >= 0:
                out[(topic, part)] = max(highwater - position, 0)
        return out

    # -- internals -------------------------------------------------------------------------------
    def _with_retries(self, what: str, op: Callable[[], Any]) -> Any:
        errors = (ck.KafkaException, _Unreachable)
        result = retrying(self.config, what, op, errors, _retriable, self._unhealthy)
        if self._down_since is None:
            self._healthy = True
        return result


class _Unreachable(Exception):
    """No bootstrap server accepts a TCP connection (retried, then a ``SourceError``)."""


def _retriable(exc: BaseException) -> bool:
    """An unreachable bootstrap, or a librdkafka error it flags as retriable."""
    error = exc.args[0] if exc.args else None
    return isinstance(exc, _Unreachable) or (hasattr(error, "retriable") and bool(error.retriable()))
