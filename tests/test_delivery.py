"""Outputs of the service loop: sent with their batch, acknowledged before a commit, sent again on failure."""

from __future__ import annotations

import json

from streamimb.config import ServiceConfig
from streamimb.errors import SinkError
from streamimb.events import Alert, DeadLetter
from streamimb.io.memory import MemorySink
from streamimb.service.runner import AlertSinks, ServiceRunner


class FlakyTopic:
    """Stands in for a KafkaSink: keeps what the topic acknowledged; the first ``failures`` flushes fail and
    lose what was in flight (as a broker that went away would)."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.in_flight: list[bytes] = []
        self.acknowledged: list[bytes] = []
        self.flushes = 0

    def send(self, value: bytes, key: bytes | None = None, headers=None) -> None:
        self.in_flight.append(value)

    def flush(self, timeout: float | None = None) -> None:
        self.flushes += 1
        if self.failures:
            self.failures -= 1
            self.in_flight.clear()
            raise SinkError("broker unreachable")
        self.acknowledged += self.in_flight
        self.in_flight = []

    def close(self) -> None:
        pass


def alert(i: int) -> Alert:
    return Alert(
        f"events-0-{i}-anomaly", f"e{i}", float(i), "anomaly", "why", 0.9, {}, "1", "v", "events", 0, i
    )


def runner_with(alerts_topic: FlakyTopic, dead_topic: FlakyTopic, file=None) -> ServiceRunner:
    runner = ServiceRunner(ServiceConfig())
    runner.outputs.alert_sinks = AlertSinks(alerts_topic, file)
    runner.outputs.dead_sink = dead_topic
    return runner


def test_a_batch_is_sent_at_once_and_acknowledged_before_the_commit():
    topic, dead, memory = FlakyTopic(), FlakyTopic(), MemorySink()
    runner = runner_with(topic, dead, memory)
    for batch in range(3):
        runner.outputs.deliver([alert(2 * batch), alert(2 * batch + 1)], [])
    assert len(topic.in_flight) == 6 and topic.flushes == 0  # sent, no round trip per batch
    assert memory.flushed == 6  # the alerts file (and any other sink) is flushed with each batch
    runner.outputs.confirm()
    assert len(topic.acknowledged) == 6 and not runner.outputs.unconfirmed
    runner.outputs.confirm()  # nothing unconfirmed: no round trip
    assert topic.flushes == 1


def test_outputs_lost_in_flight_are_sent_again_until_acknowledged():
    topic, dead = FlakyTopic(failures=2), FlakyTopic()
    runner = runner_with(topic, dead)
    letter = DeadLetter("malformed_json", "bad", b"{x", "events", 0, 7)
    runner.outputs.deliver([alert(1)], [letter])
    runner.outputs.deliver([alert(2)], [])
    runner.outputs.confirm()  # two failed flushes, then every unacknowledged output again
    ids = [json.loads(v)["alert_id"] for v in topic.acknowledged]
    assert ids == ["events-0-1-anomaly", "events-0-2-anomaly"] and topic.flushes == 3
    assert [json.loads(v)["offset"] for v in dead.acknowledged] == [7]


def test_a_rebalance_callback_tries_once_and_leaves_the_rest_to_the_loop():
    topic = FlakyTopic(failures=1)
    runner = runner_with(topic, FlakyTopic())
    runner.outputs.deliver([alert(1)], [])
    assert runner.outputs.confirm(once=True) is False and topic.flushes == 1  # no retry inside a callback
    assert runner.outputs.unconfirmed  # still owed: the loop confirms it later
    assert runner.outputs.confirm() is True
    assert [json.loads(v)["alert_id"] for v in topic.acknowledged] == ["events-0-1-anomaly"]


def test_unacknowledged_outputs_are_bounded(monkeypatch):
    monkeypatch.setattr("streamimb.service.delivery.MAX_UNCONFIRMED_OUTPUTS", 4)
    topic = FlakyTopic()
    runner = runner_with(topic, FlakyTopic())
    runner.outputs.deliver([alert(1), alert(2)], [])
    assert topic.flushes == 0 and runner.outputs.unconfirmed == 2
    runner.outputs.deliver([alert(3), alert(4)], [])  # the cap: confirmed at once
    assert topic.flushes == 1 and runner.outputs.unconfirmed == 0 and len(topic.acknowledged) == 4
