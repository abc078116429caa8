"""What the two consumer-group sources share, with no client library imported.

:class:`~streamimb.io.kafka.KafkaSource` (kafka-python) and :class:`~streamimb.io.confluent.ConfluentSource`
(confluent-kafka) both import this module and neither imports the other; ``streamimb.io.sources`` picks one.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from streamimb.errors import SourceError
from streamimb.io.interfaces import Partition, PartitionCallback
from streamimb.io.settings import KafkaConfig

__all__ = [
    "CallbackRunner",
    "SourceLifecycle",
    "any_server_reachable",
    "backoff_delays",
    "checked_offsets",
    "retrying",
    "sorted_partitions",
]

log = logging.getLogger(__name__)

DEFAULT_PORT = 9092


def backoff_delays(config: KafkaConfig) -> Iterable[float]:
    """Exponential backoff in seconds, capped at ``retry_backoff_max_ms``; ``max_retries`` values.

    >>> list(backoff_delays(KafkaConfig(retry_backoff_ms=100, retry_backoff_max_ms=300, max_retries=4)))
    [0.1, 0.2, 0.3, 0.3]
    """
    for attempt in range(config.max_retries):
        yield min(config.retry_backoff_ms * 2**attempt, config.retry_backoff_max_ms) / 1000.0


def retrying(
    config: KafkaConfig,
    what: str,
    op: Callable[[], Any],
    errors: tuple[type[BaseException], ...],
    retriable: Callable[[BaseException], bool],
    on_error: Callable[[], None] = lambda: None,
) -> Any:
    """``op()``, retried with capped exponential backoff (``max_retries`` times) while it raises one of
    ``errors`` that is ``retriable``; then a ``SourceError`` naming ``what``. ``on_error`` runs at each
    failure (a source marks itself unhealthy)."""
    delays = iter(backoff_delays(config))
    while True:
        try:
            return op()
        except errors as exc:
            on_error()
            delay = next(delays, None) if retriable(exc) else None
            if delay is None:
                raise SourceError(f"kafka {what} failed: {exc}") from exc
            log.warning("kafka %s failed (%s); retrying in %.2fs", what, exc, delay)
            time.sleep(delay)


def checked_offsets(offsets: Mapping[Partition, int]) -> list[tuple[str, int, int]]:
    """A commit's ``(topic, partition, next offset)``; a negative offset is a ``ValueError``.

    >>> checked_offsets({("events", 1): 42})
    [('events', 1, 42)]
    """
    out = []
    for (topic, part), offset in offsets.items():
        if int(offset) < 0:
            raise ValueError(f"negative offset {offset} for {topic}[{part}]")
        out.append((topic, int(part), int(offset)))
    return out


def sorted_partitions(tps: Iterable[Any]) -> list[Partition]:
    """``(topic, partition)`` tuples of any client's topic-partition objects, sorted."""
    return sorted((tp.topic, tp.partition) for tp in tps)


def _split_host_port(server: str) -> tuple[str, int]:
    """
    >>> _split_host_port("k1:9093"), _split_host_port("k1"), _split_host_port("[::1]:9094")
    (('k1', 9093), ('k1', 9092), ('::1', 9094))
    """
    host, sep, port = server.rpartition(":")
    if not sep or not port.isdigit() or (host.count(":") and not host.startswith("[")):
        return server.strip("[]"), DEFAULT_PORT
    return host.strip("[]"), int(port)


def any_server_reachable(servers: Sequence[str], timeout_s: float) -> bool:
    """Cheap TCP probe, so no kafka client is built (and leaks its IO thread) against a dead address."""
    for server in servers:
        try:
            with socket.create_connection(_split_host_port(server), timeout=timeout_s):
                return True
        except OSError:
            continue
    return False


class CallbackRunner:
    """Runs the user's rebalance callbacks and keeps the first error for the caller's ``poll()``."""

    def __init__(self) -> None:
        self.error: BaseException | None = None

    def call(self, callback: PartitionCallback | None, tps: Iterable[Any]) -> None:
        """Run ``callback`` on the sorted partitions; keep its first error for the caller's poll()
        (``tps``: any topic-partition objects, kafka-python's or confluent-kafka's)."""
        if callback is None:
            return
        try:
            callback(sorted_partitions(tps))
        except BaseException as exc:  # surfaced from the source's poll()/close() on the caller's thread
            log.exception("rebalance callback %r failed", callback)
            if self.error is None:
                self.error = exc


class SourceLifecycle:
    """What both consumer sources share: the context manager and the closed check."""

    _closed: bool
    _healthy: bool
    _runner: CallbackRunner

    def close(self, timeout_s: float = 10.0) -> None:  # pragma: no cover - each source closes its own
        raise NotImplementedError

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise SourceError("the Kafka source is closed")

    def _raise_callback_error(self) -> None:
        error, self._runner.error = self._runner.error, None
        if error is not None:
            raise error

    def _unhealthy(self) -> None:
        self._healthy = False

    @staticmethod
    def _topic_list(topics: Sequence[str]) -> list[str]:
        topics = [topics] if isinstance(topics, str) else list(topics)
        if not topics:
            raise ValueError("at least one topic is required")
        return topics
