"""Shared fixtures. Kafka: one embedded broker per test session, a unique topic per call."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kafka_broker import CLIENTS, fast_config, require_client, safe_topic_name, start_broker_or_skip

from streamimb.io.kafka import KafkaConfig
from streamimb.service.broker import EmbeddedBroker


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[EmbeddedBroker]:
    """A running in-memory broker shared by the whole session (skipped without the tansu binary)."""
    broker = start_broker_or_skip()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def topic_factory(kafka_broker: EmbeddedBroker, request: pytest.FixtureRequest) -> Callable[..., str]:
    """``topic_factory(partitions=1, prefix=None) -> name``: create a fresh topic on the session broker."""

    def make(partitions: int = 1, prefix: str | None = None) -> str:
        name = safe_topic_name(prefix or request.node.name)
        kafka_broker.create_topics([name], partitions)
        return name

    return make


@pytest.fixture
def kafka_config(kafka_broker: EmbeddedBroker) -> Callable[..., KafkaConfig]:
    """``kafka_config(**overrides) -> KafkaConfig`` for the session broker, unique group, fast joins."""

    def make(**overrides: Any) -> KafkaConfig:
        return fast_config(kafka_broker.bootstrap, **overrides)

    return make


@pytest.fixture(params=CLIENTS)
def client_config(request: pytest.FixtureRequest, kafka_config: Callable[..., KafkaConfig]):
    """``kafka_config`` once per consumer client (``kafka.client``): what holds for one holds for both."""
    require_client(request.param)
    return lambda **overrides: kafka_config(client=request.param, **overrides)
