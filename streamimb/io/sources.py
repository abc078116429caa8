"""The Kafka source the configuration asks for: kafka-python's or confluent-kafka's."""

from __future__ import annotations

from collections.abc import Sequence

from streamimb.io.interfaces import EventSource, PartitionCallback
from streamimb.io.settings import KafkaConfig

__all__ = ["open_source"]


def open_source(
    config: KafkaConfig,
    topics: Sequence[str],
    on_assign: PartitionCallback | None = None,
    on_revoke: PartitionCallback | None = None,
    on_lost: PartitionCallback | None = None,
) -> EventSource:
    """A :class:`~streamimb.io.kafka.KafkaSource`, or with ``config.client == "confluent"`` its
    confluent-kafka twin (:class:`~streamimb.io.confluent.ConfluentSource`: same methods, same semantics).
    Only the chosen client library is imported."""
    if config.client == "confluent":
        from streamimb.io.confluent import ConfluentSource

        return ConfluentSource(config, topics, on_assign, on_revoke, on_lost)
    from streamimb.io.kafka import KafkaSource

    return KafkaSource(config, topics, on_assign, on_revoke, on_lost)
