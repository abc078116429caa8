"""Kafka edge of streamimb over kafka-python: a consumer-group source and a producer sink.

This is the only module that imports ``kafka`` (``streamimb.io.confluent`` the only one that imports
``confluent_kafka``; neither imports the other). Everything it returns is plain Python
(:class:`RawRecord`, tuples of ``(topic, partition)``, ints), so the runner and the tests never touch
kafka-python types.

* :class:`KafkaConfig` -- one frozen, validated model for every client (consumer, producer, admin); it
  lives in ``streamimb.io.settings`` (no client imported) and is re-exported here, as are
  :class:`RawRecord` and :class:`Partition` (``streamimb.io.interfaces``).
* :class:`KafkaSource` -- consumer group member with manual commits, seek, lag and rebalance callbacks
  (an :class:`~streamimb.io.interfaces.EventSource`); ``streamimb.io.sources.open_source`` returns it, or
  its confluent-kafka twin when ``KafkaConfig.client`` is ``"confluent"`` (also importable from here).
* :class:`KafkaSink` -- ``acks=all`` producer whose :meth:`KafkaSink.flush` raises
  :class:`~streamimb.errors.SinkError` if any record was not delivered.
* :func:`produce_records`, :func:`ensure_topics`, :func:`check_broker` -- small helpers for tests,
  examples, the demo producer and the embedded broker.

Offsets follow Kafka's convention: a committed offset is the *next* offset to read (last processed + 1).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import kafka.errors as kerrors
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener as _SyncListenerBase
from kafka.future import Future as _KafkaFuture
from kafka.structs import OffsetAndMetadata

from streamimb.errors import BrokerAuthError, SinkError, SourceError
from streamimb.io.consumer import (
    CallbackRunner,
    SourceLifecycle,
    any_server_reachable,
    backoff_delays,
    checked_offsets,
    retrying,
    sorted_partitions,
)
from streamimb.io.interfaces import HeadersLike, Partition, PartitionCallback, RawRecord, is_oversized
from streamimb.io.settings import PRODUCER_OVERHEAD_BYTES, ConsumerClient, KafkaConfig, as_config

if TYPE_CHECKING:
    from streamimb.io.sources import open_source

try:  # kafka-python >= 3: rebalance listeners run on the client's IO thread
    from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener as _AsyncListenerBase
except ImportError:  # pragma: no cover - kafka-python 2.x runs listeners inside poll() on the caller thread
    _AsyncListenerBase = None

__all__ = [
    "ConsumerClient",
    "KafkaConfig",
    "KafkaSink",
    "KafkaSource",
    "Partition",
    "RawRecord",
    "check_broker",
    "ensure_topics",
    "is_oversized",
    "open_source",
    "produce_records",
    "topic_partitions",
]

log = logging.getLogger(__name__)

SECRET_CLIENT_KEYS = ("sasl_plain_password", "ssl_password")  # the kafka-python arguments that carry secrets


class _MaskClientSecrets(logging.Filter):
    """Masks secrets in the configuration that kafka-python's admin client logs at DEBUG.

    >>> args = ({"ssl_password": "x"},)
    >>> record = logging.LogRecord("kafka", logging.DEBUG, "", 0, "config: %s", args, None)
    >>> _ = _MaskClientSecrets().filter(record)
    >>> record.getMessage()
    "config: {'ssl_password': '**********'}"
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, Mapping):  # a lone mapping argument (LogRecord unpacks it)
            record.args = _masked(record.args)
        elif isinstance(record.args, tuple):
            record.args = tuple(_masked(a) if isinstance(a, Mapping) else a for a in record.args)
        return True


def _masked(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: "**********" if k in SECRET_CLIENT_KEYS and v else v for k, v in config.items()}


logging.getLogger("kafka.admin.client").addFilter(_MaskClientSecrets())


# --------------------------------------------------------------------------------------------- helpers
def _is_retriable(exc: BaseException) -> bool:
    return bool(getattr(exc, "retriable", False))


def _require_reachable(servers: Sequence[str]) -> None:
    if not any_server_reachable(servers, 2.0):
        raise kerrors.KafkaConnectionError(f"no bootstrap server reachable: {list(servers)}")


def _to_tp(partition: Partition) -> TopicPartition:
    return TopicPartition(partition[0], int(partition[1]))


def check_broker(config: KafkaConfig | str | Sequence[str], timeout_s: float = 5.0) -> list[str]:
    """Send a real Metadata request and return the topic names; raise ``SourceError`` if it fails."""
    cfg = as_config(config, request_timeout_ms=max(1_000, int(timeout_s * 1000)))
    with _admin(cfg, min(timeout_s, 2.0), "metadata request") as admin:
        return sorted(admin.list_topics())


def topic_partitions(config: KafkaConfig | str | Sequence[str], timeout_s: float = 10.0) -> dict[str, int]:
    """Partition count of every topic the broker reports (a real Metadata request)."""
    cfg = as_config(config, request_timeout_ms=max(1_000, int(timeout_s * 1000)))
    with _admin(cfg, min(timeout_s, 2.0), "describing topics") as admin:
        return {t["name"]: len(t["partitions"]) for t in admin.describe_topics() if not t["error_code"]}


@contextmanager
def _admin(cfg: KafkaConfig, probe_s: float, what: str) -> Iterator[KafkaAdminClient]:
    """An admin client for one request; every failure is a ``SourceError`` that names its cause
    (``BrokerAuthError`` for refused credentials or permissions).

    >>> with _admin(KafkaConfig(bootstrap_servers=["127.0.0.1:1"]), 0.2, "x"): pass
    Traceback (most recent call last):
    ...
    streamimb.errors.SourceError: broker unreachable: no bootstrap server accepts connections: ['127.0.0.1:1']
    """
    servers = cfg.bootstrap_servers
    if not any_server_reachable(servers, probe_s):
        raise SourceError(f"broker unreachable: no bootstrap server accepts connections: {servers}")
    try:
        admin = KafkaAdminClient(**cfg.client_kwargs())
    except kerrors.KafkaError as exc:
        raise _source_error(exc, f"connecting to {servers}") from None
    try:
        yield admin
    except kerrors.KafkaError as exc:
        raise _source_error(exc, f"{what} on {servers}") from None
    finally:
        admin.close()


def _source_error(exc: BaseException, doing: str) -> SourceError:
    """A client error in the operator's words: authentication failed, or the broker did not answer."""
    if isinstance(exc, kerrors.SaslAuthenticationFailedError | kerrors.UnsupportedSaslMechanismError):
        return BrokerAuthError(f"authentication failed: {doing}: {exc}")
    if isinstance(exc, kerrors.AuthorizationError):
        return BrokerAuthError(f"not authorised: {doing}: {exc}")
    if isinstance(exc, kerrors.KafkaTimeoutError | kerrors.BrokerNotAvailableError):
        return SourceError(f"broker did not answer: {doing}: {exc}")
    return SourceError(f"broker error: {doing}: {exc}")


def ensure_topics(
    config: KafkaConfig | str | Sequence[str],
    names: Iterable[str],
    partitions: int = 1,
    replication_factor: int = 1,
    timeout_s: float = 30.0,
) -> list[str]:
    """Create the missing topics among ``names`` (idempotent); return the names that were created.

    Existing topics are left alone, whatever their partition count.
    """
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return []
    if partitions < 1 or replication_factor < 1:
        raise ValueError("partitions and replication_factor must be >= 1")
    cfg = as_config(config)
    deadline = time.monotonic() + timeout_s
    delays = iter(backoff_delays(cfg.model_copy(update={"max_retries": 1_000})))
    while True:
        try:
            return _create_topics_once(cfg, wanted, partitions, replication_factor, timeout_s)
        except kerrors.KafkaError as exc:
            if not _is_retriable(exc) or time.monotonic() >= deadline:
                raise SourceError(f"could not create topics {wanted}: {exc}") from exc
            time.sleep(min(next(delays), max(0.0, deadline - time.monotonic())))


def _create_topics_once(
    cfg: KafkaConfig, wanted: list[str], partitions: int, replication_factor: int, timeout_s: float
) -> list[str]:
    admin = KafkaAdminClient(**cfg.client_kwargs())
    try:
        existing = set(admin.list_topics())
        missing = [name for name in wanted if name not in existing]
        if not missing:
            return []
        spec = {
            name: {"num_partitions": partitions, "replication_factor": replication_factor} for name in missing
        }
        response = admin.create_topics(spec, timeout_ms=int(timeout_s * 1000), raise_errors=False)
        created = []
        for topic in response["topics"]:
            error = kerrors.for_code(topic["error_code"])
            if error is kerrors.NoError:
                created.append(topic["name"])
            elif error is not kerrors.TopicAlreadyExistsError:
                raise error(f"creating topic {topic['name']!r}: {topic.get('error_message')}")
        if created and hasattr(admin, "wait_for_topics"):
            admin.wait_for_topics(created, timeout_ms=int(timeout_s * 1000))
        return created
    finally:
        admin.close()


def produce_records(
    bootstrap: KafkaConfig | str | Sequence[str],
    topic: str,
    values: Iterable[bytes],
    keys: Iterable[bytes | None] | None = None,
    *,
    partition: int | None = None,
    timeout_s: float = 30.0,
) -> int:
    """Send ``values`` (optionally with ``keys``) to ``topic``, wait for every ack, return the count.

    For tests, examples and the demo producer. Raises ``SinkError`` if any record was not delivered.
    Records larger than the usual 1 MB limit are allowed (to exercise oversize handling downstream).
    """
    values = list(values)
    key_list: list[bytes | None] = [None] * len(values) if keys is None else list(keys)
    if len(key_list) != len(values):
        raise ValueError(f"{len(key_list)} keys for {len(values)} values")
    cfg = as_config(bootstrap)
    largest = max((len(v or b"") + len(k or b"") for v, k in zip(values, key_list, strict=True)), default=0)
    kwargs = cfg.producer_kwargs(linger_ms=20)
    kwargs["max_request_size"] = max(kwargs["max_request_size"], largest + PRODUCER_OVERHEAD_BYTES)
    kwargs["batch_size"] = 256 * 1024
    producer = KafkaProducer(**kwargs)
    try:
        futures = [
            producer.send(topic, value=v, key=k, partition=partition)
            for v, k in zip(values, key_list, strict=True)
        ]
        producer.flush(timeout=timeout_s)
    except kerrors.KafkaError as exc:
        _close_producer(producer, 0.0)
        raise SinkError(f"producing to {topic!r} failed: {exc}") from exc
    failed = [f.exception for f in futures if f.failed()]
    _close_producer(producer, 5.0)
    if failed:
        raise SinkError(
            f"{len(failed)} of {len(futures)} records to {topic!r} failed: {failed[0]}"
        ) from failed[0]
    return len(futures)


def _close_producer(producer: KafkaProducer, timeout_s: float) -> None:
    """Close a producer, forcing it when a graceful close cannot finish (e.g. a wedged sender)."""
    try:
        producer.close(timeout=timeout_s)
        return
    except Exception as exc:  # kafka-python's close() raises when its final flush times out
        log.warning("producer did not close cleanly (%s); forcing it", exc)
    sender = getattr(producer, "_sender", None)
    if sender is not None:
        sender.force_close()
        sender.join(1.0)
    with contextlib.suppress(Exception):
        producer._closed = True  # stop __del__ from retrying the same blocking close


# --------------------------------------------------------------------------------------------- source
class _CallbackRunner(CallbackRunner):
    """Runs user rebalance callbacks so that they may block (commit, flush sinks, write snapshots).

    kafka-python 3 invokes rebalance listeners on its IO thread, where a blocking consumer call
    deadlocks. The async listener below hands the callback to a short-lived worker thread and awaits
    its completion, which keeps the IO loop (heartbeats, the commit itself) running. The caller's
    ``poll()`` stays blocked meanwhile, so the callback never runs concurrently with user code.
    """

    def __init__(self, source: Any) -> None:
        super().__init__()
        self._source = source
        self.worker: threading.Thread | None = None

    async def call_off_loop(self, callback: PartitionCallback | None, tps: Iterable[TopicPartition]) -> None:
        if callback is None:
            return
        net = self._source._net
        if net is None:  # pragma: no cover - no IO thread: calling inline is safe
            self.call(callback, tps)
            return
        done = _KafkaFuture()
        tps = list(tps)

        def work() -> None:
            try:
                self.call(callback, tps)
            finally:
                net.call_soon_threadsafe(lambda: done.success(None))

        self.worker = threading.Thread(target=work, name="streamimb-rebalance", daemon=True)
        self.worker.start()
        await done


if _AsyncListenerBase is not None:

    class _Listener(_AsyncListenerBase):
        def __init__(self, runner: _CallbackRunner, on_assign, on_revoke, on_lost) -> None:
            self._runner = runner
            self._on_assign, self._on_revoke, self._on_lost = on_assign, on_revoke, on_lost

        async def on_partitions_revoked(self, revoked):
            if revoked:
                await self._runner.call_off_loop(self._on_revoke, revoked)

        async def on_partitions_assigned(self, assigned):
            await self._runner.call_off_loop(self._on_assign, assigned)

        async def on_partitions_lost(self, lost):
            if lost:
                await self._runner.call_off_loop(self._on_lost or self._on_revoke, lost)

else:  # pragma: no cover

    class _Listener(_SyncListenerBase):
        def __init__(self, runner: _CallbackRunner, on_assign, on_revoke, on_lost) -> None:
            self._runner = runner
            self._on_assign, self._on_revoke, self._on_lost = on_assign, on_revoke, on_lost

        def on_partitions_revoked(self, revoked):
            if revoked:
                self._runner.call(self._on_revoke, revoked)

        def on_partitions_assigned(self, assigned):
            self._runner.call(self._on_assign, assigned)

        def on_partitions_lost(self, lost):
            if lost:
                self._runner.call(self._on_lost or self._on_revoke, lost)


class KafkaSource(SourceLifecycle):
    """A consumer-group member with manual commits, returning :class:`RawRecord` batches.

    Callbacks receive sorted lists of ``(topic, partition)``. ``on_assign`` is called after every
    rebalance with the full new assignment (possibly empty); ``on_revoke`` before partitions are given
    up (rebalance or :meth:`close`), while this member can still commit them; ``on_lost`` (default:
    ``on_revoke``) when the membership was lost and commits would fail. Callbacks may block and may call
    :meth:`commit` and :meth:`seek` (e.g. ``on_assign`` seeks to a checkpoint's offsets). An exception
    raised in a callback is re-raised by the next :meth:`poll` (or by :meth:`close`).

    Transient broker errors are retried with capped exponential backoff (``max_retries`` attempts) and
    then raised as :class:`~streamimb.errors.SourceError`.
    """

    def __init__(
        self,
        config: KafkaConfig,
        topics: Sequence[str],
        on_assign: PartitionCallback | None = None,
        on_revoke: PartitionCallback | None = None,
        on_lost: PartitionCallback | None = None,
    ) -> None:
        self.config = config
        self.topics = self._topic_list(topics)
        self._closed = False
        self._closing = False
        self._healthy = False
        self._connection_gauge: Any = None  # the consumer's connection-count metric (False: none)
        self._runner = _CallbackRunner(self)
        self._consumer = self._with_retries("connect", self._connect)
        self._net = getattr(self._consumer, "_net", None)
        try:
            self._consumer.subscribe(
                self.topics, listener=_Listener(self._runner, on_assign, on_revoke, on_lost)
            )
        except BaseException:
            self._consumer.close(autocommit=False, timeout_ms=1_000)
            raise

    # -- lifecycle -------------------------------------------------------------------------------
    def _connect(self) -> KafkaConsumer:
        _require_reachable(self.config.bootstrap_servers)
        return KafkaConsumer(**self.config.consumer_kwargs())

    def close(self, timeout_s: float = 10.0) -> None:
        """Leave the group (``on_revoke`` runs first) and close the consumer. Idempotent."""
        if self._closed or self._closing:
            return
        self._closing = True  # callbacks run by close() may still commit
        try:
            self._consumer.close(autocommit=False, timeout_ms=int(timeout_s * 1000))
        except kerrors.KafkaError as exc:
            log.warning("closing the Kafka consumer: %s", exc)
        finally:
            self._join_worker()
            self._closed = True
            self._healthy = False
        self._raise_callback_error()

    # -- health ----------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """True while the consumer is open, its last call succeeded, it holds a broker connection, and (as a
        group member with partitions) the group coordinator answered a heartbeat within the session timeout:
        a broker that accepts connections but never answers is not connected."""
        if self._closed or not self._healthy:
            return False
        heartbeat = getattr(getattr(self._consumer, "_coordinator", None), "heartbeat", None)
        if heartbeat is not None and heartbeat.session_timeout_expired() and self._consumer.assignment():
            return False
        gauge = self._connection_gauge
        if gauge is None:
            # Found once: the consumer's metrics() builds every metric's value each call (~0.5 ms).
            raw = self._consumer.metrics(raw=True) or {}
            gauge = next(
                (m for k, m in raw.items() if (k.group, k.name) == ("consumer-metrics", "connection-count")),
                False,
            )
            self._connection_gauge = gauge
        if gauge is False:  # metrics disabled or renamed: trust the last call
            return True
        return gauge.value() > 0

    # -- consuming -------------------------------------------------------------------------------
    def poll(self, max_records: int | None = None, timeout_ms: int | None = None) -> list[RawRecord]:
        """Return up to ``max_records`` records, grouped by (topic, partition) in order; ``[]`` on timeout."""
        self._check_open()
        max_records = self.config.max_poll_records if max_records is None else max_records
        timeout_ms = self.config.poll_timeout_ms if timeout_ms is None else timeout_ms
        batches = self._with_retries(
            "poll", lambda: self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        )
        self._join_worker()
        if self._runner.error is not None:  # undo this fetch so that nothing is skipped, then raise
            for tp, records in batches.items():
                if records and tp in self._consumer.assignment():
                    self._consumer.seek(tp, records[0].offset)
            self._raise_callback_error()
        out: list[RawRecord] = []
        for tp in sorted(batches, key=lambda tp: (tp.topic, tp.partition)):
            topic, part = tp.topic, tp.partition
            out.extend(
                RawRecord(
                    topic, part, r.offset, r.key, r.value, r.timestamp, tuple(r.headers) if r.headers else ()
                )
                for r in batches[tp]
            )
        return out

    def commit(self, offsets: Mapping[Partition, int]) -> None:
        """Synchronously commit ``{(topic, partition): next_offset}``; raise ``SourceError`` on failure.

        ``next_offset`` is the next offset to read (last processed offset + 1).
        """
        self._check_open()
        if not offsets:
            return
        payload = {TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for t, p, o in checked_offsets(offsets)}
        self._with_retries("commit", lambda: self._consumer.commit(payload))

    def seek(self, topic: str, partition: int, offset: int) -> None:
        """Read ``topic[partition]`` from ``offset`` on the next poll (resume from a checkpoint)."""
        self._check_open()
        try:
            self._consumer.seek(TopicPartition(topic, int(partition)), int(offset))
        except ValueError as exc:
            raise SourceError(f"cannot seek {topic}[{partition}] to {offset}: {exc}") from exc

    def generation(self) -> int:
        """The consumer-group generation this member last joined (-1 before the first join or once lost).

        Generations only grow in a group; a checkpoint store uses them to fence a stale owner.
        """
        self._check_open()
        metadata = getattr(self._consumer, "group_metadata", None)
        if metadata is not None:
            return int(metadata().generation_id)
        coordinator = getattr(self._consumer, "_coordinator", None)  # kafka-python 2
        generation = getattr(coordinator, "_generation", None)
        return int(getattr(generation, "generation_id", -1))

    def assignment(self) -> list[Partition]:
        """The partitions this member owns now, sorted."""
        self._check_open()
        return sorted_partitions(self._consumer.assignment())

    def position(self, topic: str, partition: int) -> int | None:
        """The offset of the next record this member will return for an assigned partition."""
        self._check_open()
        tp = TopicPartition(topic, int(partition))
        return self._with_retries(
            "position", lambda: self._consumer.position(tp, timeout_ms=self.config.request_timeout_ms)
        )

    def committed(self, partitions: Iterable[Partition] | None = None) -> dict[Partition, int | None]:
        """Committed offsets of ``partitions`` (default: the assignment); ``None`` if never committed."""
        self._check_open()
        wanted = self.assignment() if partitions is None else sorted(partitions)
        return {
            p: self._with_retries(
                "committed",
                lambda p=p: self._consumer.committed(_to_tp(p), timeout_ms=self.config.request_timeout_ms),
            )
            for p in wanted
        }

    def lag(self) -> dict[Partition, int]:
        """Records behind the highwater mark per assigned partition (those fetched at least once)."""
        self._check_open()
        out: dict[Partition, int] = {}
        for tp in sorted(self._consumer.assignment()):
            highwater = self._consumer.highwater(tp)
            if highwater is None:
                continue
            position = self._with_retries(
                "position",
                lambda tp=tp: self._consumer.position(tp, timeout_ms=self.config.request_timeout_ms),
            )
            if position is not None:
                out[(tp.topic, tp.partition)] = max(highwater - position, 0)
        return out

    # -- internals -------------------------------------------------------------------------------
    def _join_worker(self) -> None:
        worker = self._runner.worker
        if worker is not None and worker is not threading.current_thread():
            worker.join()
            self._runner.worker = None

    def _with_retries(self, what: str, op: Callable[[], Any]) -> Any:
        result = retrying(self.config, what, op, (kerrors.KafkaError,), _is_retriable, self._unhealthy)
        self._healthy = True
        return result


# --------------------------------------------------------------------------------------------- sink
def _headers(headers: HeadersLike) -> list[tuple[str, bytes]]:
    if not headers:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(str(k), v.encode() if isinstance(v, str) else bytes(v)) for k, v in items]


class KafkaSink:
    """An ``acks=all`` producer to one topic that reports every undelivered record at :meth:`flush`.

    :meth:`send` is asynchronous; it raises ``SinkError`` at once only for records that can never be
    delivered (larger than ``max_message_bytes``) or when the producer cannot accept them. The runner
    calls :meth:`flush` before committing offsets: it raises ``SinkError`` if any record sent since the
    previous flush failed or is still pending at the timeout, and then replaces the producer (a producer
    that hit a fatal error would otherwise refuse every later record). Transient errors are retried
    inside the producer with backoff until ``delivery_timeout_ms``.
    """

    def __init__(self, config: KafkaConfig, topic: str) -> None:
        self.config = config
        self.topic = topic
        self.delivered = 0
        self.failed = 0
        self._lock = threading.Lock()
        self._generation = 0
        self._pending_errors: list[BaseException] = []
        self._closed = False
        self._producer: KafkaProducer | None = None
        self._producer = self._new_producer()

    def _new_producer(self) -> KafkaProducer:
        delays = iter(backoff_delays(self.config))
        while True:
            try:
                _require_reachable(self.config.bootstrap_servers)
                return KafkaProducer(**self.config.producer_kwargs())
            except kerrors.KafkaError as exc:
                delay = next(delays, None) if _is_retriable(exc) else None
                if delay is None:
                    raise SinkError(f"cannot create a producer for {self.topic!r}: {exc}") from exc
                log.warning("creating the Kafka producer failed (%s); retrying in %.2fs", exc, delay)
                time.sleep(delay)

    def send(self, value: bytes, key: bytes | None = None, headers: HeadersLike = None) -> None:
        """Queue one record; delivery is confirmed (or reported as failed) by :meth:`flush`."""
        if self._closed:
            raise SinkError(f"sink to {self.topic!r} is closed")
        header_list = _headers(headers)
        size = len(value or b"") + len(key or b"") + sum(len(k.encode()) + len(v) for k, v in header_list)
        if size > self.config.max_message_bytes:
            with self._lock:
                self.failed += 1
            raise SinkError(
                f"oversized: record of {size} bytes exceeds max_message_bytes={self.config.max_message_bytes}"
            )
        if self._producer is None:
            self._producer = self._new_producer()
        generation = self._generation
        try:
            future = self._producer.send(self.topic, value=value, key=key, headers=header_list)
        except kerrors.KafkaError as exc:
            with self._lock:
                self.failed += 1
            raise SinkError(f"cannot send to {self.topic!r}: {exc}") from exc
        future.add_callback(self._on_success, generation)
        future.add_errback(self._on_error, generation)

    def _on_success(self, generation: int, _metadata: Any) -> None:
        with self._lock:
            if generation == self._generation:
                self.delivered += 1

    def _on_error(self, generation: int, exc: BaseException) -> None:
        with self._lock:
            if generation == self._generation:
                self.failed += 1
                self._pending_errors.append(exc)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every record sent so far is acknowledged; raise ``SinkError`` if any failed."""
        if self._closed:
            raise SinkError(f"sink to {self.topic!r} is closed")
        if self._producer is None:
            return
        if timeout is None:
            timeout = self.config.delivery_timeout_ms / 1000.0 + 1.0
        timed_out: BaseException | None = None
        try:
            self._producer.flush(timeout=timeout)
        except kerrors.KafkaError as exc:
            timed_out = exc
        with self._lock:
            errors, self._pending_errors = self._pending_errors, []
            if timed_out is not None or errors:
                self._generation += 1  # late callbacks of the old producer are not counted again
        if timed_out is None and not errors:
            return
        self._replace_producer()
        if timed_out is not None:
            raise SinkError(
                f"flush to {self.topic!r} did not complete within {timeout:.1f}s: {timed_out}"
            ) from (timed_out)
        raise SinkError(
            f"{len(errors)} record(s) to {self.topic!r} were not delivered: {errors[0]!r}"
        ) from errors[0]

    def _replace_producer(self) -> None:
        """Drop the producer (it may be wedged or in a fatal state); the next send() builds a new one."""
        old, self._producer = self._producer, None
        if old is not None:
            _close_producer(old, 0.0)

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is pending (bounded by ``timeout``) and close the producer. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._producer is not None:
            _close_producer(self._producer, timeout)
            self._producer = None

    def __enter__(self) -> KafkaSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def __getattr__(name: str) -> Any:
    """``open_source``, kept importable from here; it lives in ``streamimb.io.sources``."""
    if name == "open_source":
        from streamimb.io.sources import open_source

        return open_source
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
