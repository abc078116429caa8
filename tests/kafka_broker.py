"""Helpers for tests that talk to the embedded Kafka-protocol broker (used by conftest.py fixtures).

The broker joins consumer groups fastest with ``session_timeout_ms=6000, heartbeat_interval_ms=1000``;
:func:`fast_config` applies those settings plus short timeouts, so a failing test fails in seconds.

>>> safe_topic_name("test_x[param-1]")[:15]
'test_x_param-1_'
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from typing import Any, get_args

import pytest

from streamimb.errors import BrokerError
from streamimb.io.kafka import ConsumerClient, KafkaConfig, KafkaSource, RawRecord
from streamimb.service.broker import EmbeddedBroker, resolve_binary

CLIENTS = list(get_args(ConsumerClient))  # the values of ``kafka.client``: the source tests run on each


def require_client(client: str) -> None:
    """Skip the test when ``client``'s library is not installed (confluent-kafka is an optional extra)."""
    if client == "confluent":
        pytest.importorskip("confluent_kafka")


FAST_GROUP_SETTINGS: dict[str, Any] = {
    "session_timeout_ms": 6_000,
    "heartbeat_interval_ms": 1_000,
    "poll_timeout_ms": 200,
    "request_timeout_ms": 10_000,
    "retry_backoff_max_ms": 1_000,
    "delivery_timeout_ms": 10_000,
    "max_block_ms": 5_000,
}


def start_broker_or_skip(**kwargs: Any) -> EmbeddedBroker:
    """Start an :class:`EmbeddedBroker`; skip the test when no tansu binary is installed."""
    try:
        resolve_binary()
    except BrokerError as exc:
        pytest.skip(f"embedded Kafka broker unavailable: {exc}")
    broker = EmbeddedBroker(**kwargs)
    broker.start()
    return broker


def safe_topic_name(prefix: str) -> str:
    """A unique, legal Kafka topic name starting with ``prefix``."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", prefix).strip("_")[:120] or "t"
    return f"{clean}_{uuid.uuid4().hex[:10]}"


def fast_config(bootstrap: str, **overrides: Any) -> KafkaConfig:
    """A :class:`KafkaConfig` for ``bootstrap`` with a unique group id and the fast group settings."""
    settings = {**FAST_GROUP_SETTINGS, "group_id": safe_topic_name("group"), **overrides}
    return KafkaConfig(bootstrap_servers=bootstrap, **settings)


def poll_until(
    source: KafkaSource,
    done: Callable[[list[RawRecord]], bool],
    timeout_s: float = 20.0,
    max_records: int | None = None,
) -> list[RawRecord]:
    """Poll ``source`` until ``done(records_so_far)`` is true; fail the test at ``timeout_s``."""
    records: list[RawRecord] = []
    deadline = time.monotonic() + timeout_s
    while not done(records):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s with {len(records)} records")
        records.extend(source.poll(max_records=max_records))
    return records


def poll_count(source: KafkaSource, count: int, timeout_s: float = 20.0) -> list[RawRecord]:
    """Poll until at least ``count`` records arrived (the group join is included in ``timeout_s``)."""
    return poll_until(source, lambda recs: len(recs) >= count, timeout_s)
