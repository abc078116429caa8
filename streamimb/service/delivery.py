"""Outputs and offsets: alerts and dead letters sent with their batch, acknowledged before any commit or
checkpoint covers them, and the processed offsets owed to the consumer group.

Every batch's alerts and dead letters are sent at once (the alerts file and the other sinks are flushed with
the batch); the Kafka topics' acknowledgements are awaited only before offsets are committed or a checkpoint
is written, so that no commit ever covers an output not yet delivered, while the round trips stay off the
per-batch path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from streamimb.errors import SinkError, SourceError
from streamimb.events import Alert, DeadLetter
from streamimb.io.interfaces import AlertSink, DocumentSink, EventSource, Partition, RecordSink

log = logging.getLogger(__name__)

MAX_UNCONFIRMED_OUTPUTS = 10_000  # alerts and dead letters sent but not acknowledged: confirmed at once


class AlertSinks:
    """Fans alerts out to the configured sinks; ``flush`` raises SinkError if any delivery failed."""

    def __init__(
        self,
        kafka: RecordSink | None = None,
        file: DocumentSink | None = None,
        others: Iterable[AlertSink] = (),
    ):
        self.kafka = kafka
        self.file = file
        self.others = list(others)

    def send(self, alert: Alert) -> None:
        document = alert.to_json()
        self._to_kafka(alert, document)
        if self.file is not None:
            self.file.send(document)
        for sink in self.others:
            sink.send(alert)

    def send_to_kafka(self, alert: Alert) -> None:
        """Send the alert to the Kafka topic alone (again, after a failed delivery)."""
        self._to_kafka(alert, alert.to_json())

    def _to_kafka(self, alert: Alert, document: str) -> None:
        if self.kafka is not None:
            self.kafka.send(document.encode(), key=alert.event_id.encode())

    def flush(self) -> None:
        self.flush_kafka()
        self.flush_others()

    def flush_kafka(self) -> None:
        """Wait for the Kafka topic's acknowledgements of every alert sent so far."""
        if self.kafka is not None:
            self.kafka.flush()

    def flush_others(self) -> None:
        """Flush the alerts file and the other sinks (Alertmanager, ...)."""
        for sink in (self.file, *self.others):
            if sink is not None:
                sink.flush()

    def close(self) -> None:
        for sink in (self.kafka, self.file, *self.others):
            if sink is not None:
                sink.close()


class Outputs:
    """The alerts and dead letters of every batch, from sending to the Kafka topics' acknowledgement.

    ``stopping`` tells whether the service is shutting down (delivery then gives up after a while);
    ``set_ready`` reports a failed delivery (not ready) to the health endpoint.
    """

    def __init__(self, stopping: Callable[[], bool], set_ready: Callable[[bool], None]) -> None:
        self.alert_sinks: AlertSinks | None = None
        self.dead_sink: RecordSink | None = None
        self._stopping = stopping
        self._set_ready = set_ready
        self._unconfirmed_alerts: list[Alert] = []  # sent to Kafka, not acknowledged yet
        self._unconfirmed_dead: list[DeadLetter] = []
        self._resend: set[str] = set()  # topics whose deliveries failed: send their unconfirmed outputs again

    def deliver(self, alerts: list[Alert], dead_letters: list[DeadLetter]) -> None:
        """Send a batch's alerts and dead letters and flush the alerts file and the other sinks; the Kafka
        topics' acknowledgements are awaited by :meth:`confirm`, before a commit or checkpoint covers them."""
        sinks = self.alert_sinks
        assert sinks is not None

        def send() -> None:
            for alert in alerts:
                sinks.send(alert)
            self._send_dead_letters(dead_letters)
            sinks.flush_others()

        self._until_delivered(send)
        self._unconfirmed_alerts += alerts
        self._unconfirmed_dead += dead_letters
        if self.unconfirmed >= MAX_UNCONFIRMED_OUTPUTS:  # bounded, checkpoints on or off
            self.confirm()

    @property
    def unconfirmed(self) -> int:
        """Alerts and dead letters sent to Kafka and not acknowledged yet."""
        return len(self._unconfirmed_alerts) + len(self._unconfirmed_dead)

    def confirm(self, once: bool = False) -> bool:
        """Wait until the Kafka topics acknowledged every alert and dead letter sent so far. After a failed
        delivery every unacknowledged output is sent again (alert ids are deterministic: duplicates can
        be dropped downstream), until the topics take them, or once with ``once`` (inside a rebalance
        callback, which must not block). Returns whether everything is acknowledged."""
        if not self.unconfirmed and not self._resend:
            return True
        if once:
            try:
                self._confirm_attempt()
            except SinkError as exc:
                log.warning("outputs not acknowledged (%s)", exc)
                return False
        else:
            self._until_delivered(self._confirm_attempt)
        self._unconfirmed_alerts, self._unconfirmed_dead = [], []
        return True

    def close(self) -> None:
        """Close every sink (each delivers what it still holds)."""
        if self.alert_sinks is not None:
            self.alert_sinks.close()
        if self.dead_sink is not None:
            self.dead_sink.close()

    def _send_dead_letters(self, letters: list[DeadLetter]) -> None:
        assert self.dead_sink is not None
        for letter in letters:
            self.dead_sink.send(letter.to_json().encode())

    def _confirm_attempt(self) -> None:
        alerts, dead = self.alert_sinks, self.dead_sink
        assert alerts is not None and dead is not None
        if "alerts" in self._resend:
            for alert in self._unconfirmed_alerts:
                alerts.send_to_kafka(alert)
        if "dead" in self._resend:
            self._send_dead_letters(self._unconfirmed_dead)
        self._resend = set()
        errors = []
        for topic, flush in (("alerts", alerts.flush_kafka), ("dead", dead.flush)):
            try:
                flush()
            except SinkError as exc:
                self._resend.add(topic)
                errors.append(exc)
        if errors:
            raise errors[0]

    def _until_delivered(self, attempt: Callable[[], None]) -> None:
        """Run ``attempt`` until no sink raises, backing off between tries."""
        delay = 0.2
        while True:
            try:
                attempt()
                return
            except SinkError as exc:
                self._set_ready(False)
                if self._stopping() and delay > 5:
                    raise
                log.warning("delivery failed (%s); retrying in %.1fs", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)


class OffsetCommits:
    """Processed offsets owed to the consumer group, committed once the outputs they cover are acknowledged.

    >>> commits = OffsetCommits(lambda: None, interval_ms=1_000)
    >>> commits.owe({("events", 0): 5}); commits.owe({("events", 0): 3})
    >>> commits.pending
    {('events', 0): 5}
    """

    def __init__(self, source: Callable[[], EventSource | None], interval_ms: int) -> None:
        self.pending: dict[Partition, int] = {}
        self.last = time.monotonic()
        self._source = source
        self._interval_s = interval_ms / 1000.0

    def owe(self, offsets: dict[Partition, int]) -> None:
        """Offsets processed, to be committed with the next commit."""
        pending = self.pending
        for key, offset in offsets.items():
            pending[key] = max(pending.get(key, 0), offset)

    def due(self) -> bool:
        """Without checkpoints: whether the processed offsets are to be committed now."""
        return time.monotonic() - self.last >= self._interval_s

    def commit(self, offsets: dict[Partition, int]) -> None:
        """Commit ``offsets`` and any that could not be committed before; never while disconnected.

        A failed commit is kept and retried later (a checkpoint, when on, is authoritative anyway), so a
        broker outage never blocks the loop in commit retries. Call after :meth:`Outputs.confirm`.
        """
        self.owe(offsets)
        pending = self.pending
        self.last = time.monotonic()
        source = self._source()
        if source is None or not pending or not source.connected:
            return
        try:
            source.commit(pending)
        except SourceError as exc:
            log.warning("offset commit failed (%s); it is retried with the next batch or checkpoint", exc)
            return
        self.pending = {}

    def keep(self, owned: set[Partition]) -> None:
        """Forget what is owed for partitions this member no longer owns (after an assignment)."""
        self.pending = {k: v for k, v in self.pending.items() if k in owned}

    def forget(self, partitions: Iterable[Partition]) -> None:
        """Forget what is owed for released partitions: a late commit could rewind the next owner."""
        for key in partitions:
            self.pending.pop(key, None)
