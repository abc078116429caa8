"""The I/O edge's boundaries: the pure parts import no Kafka client, and every source and sink has the
interface the service loop relies on."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

from streamimb.io.confluent import ConfluentSource
from streamimb.io.files import JsonlSink
from streamimb.io.interfaces import AlertSink, DocumentSink, EventSource, RecordSink
from streamimb.io.kafka import KafkaSink, KafkaSource
from streamimb.io.memory import MemorySink
from streamimb.io.prometheus import AlertmanagerSink

NO_CLIENT = """
import sys
import streamimb.processor, streamimb.replay, streamimb.pipeline, streamimb.config, streamimb.io.settings
loaded = [m for m in sys.modules if m == "kafka" or m.startswith(("kafka.", "confluent_kafka"))]
assert not loaded, loaded
"""


def test_the_processor_replay_and_config_load_no_kafka_client():
    done = subprocess.run([sys.executable, "-c", NO_CLIENT], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def test_open_source_is_still_importable_from_the_kafka_module():
    from streamimb.io import kafka, sources

    assert kafka.open_source is sources.open_source


def _members(protocol: type) -> dict[str, object]:
    return {name: value for name, value in vars(protocol).items() if not name.startswith("_")}


@pytest.mark.parametrize(
    "cls, protocol",
    [
        (KafkaSource, EventSource),
        (ConfluentSource, EventSource),
        (KafkaSink, RecordSink),
        (JsonlSink, DocumentSink),
        (MemorySink, DocumentSink),
        (AlertmanagerSink, AlertSink),
    ],
)
def test_each_implementation_has_its_interface(cls, protocol):
    """Every member of the protocol exists on the class, and each method takes the protocol's parameters."""
    for name, member in _members(protocol).items():
        assert hasattr(cls, name), f"{cls.__name__} lacks {name}"
        if isinstance(member, property):
            assert isinstance(getattr(cls, name), property), f"{cls.__name__}.{name} is not a property"
            continue
        wanted = list(inspect.signature(member).parameters)
        have = inspect.signature(getattr(cls, name)).parameters
        assert all(p in have for p in wanted), f"{cls.__name__}.{name}{tuple(have)} does not take {wanted}"


def test_sinks_built_offline_are_instances_of_their_interface(tmp_path):
    assert isinstance(MemorySink(), DocumentSink)
    sink = JsonlSink(tmp_path / "alerts.jsonl")
    assert isinstance(sink, DocumentSink)
    sink.close()
    assert isinstance(AlertmanagerSink("http://127.0.0.1:9093"), AlertSink)
    assert not isinstance(MemorySink(), EventSource)
