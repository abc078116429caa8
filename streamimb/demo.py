"""`streamimb demo`: the whole service on a laptop, with nothing but the installed packages.

It starts the embedded broker, a producer that streams realistic card transactions (fraud bursts, a fraud
rate that shifts from 0.5% to 2% to 0.3%, chargeback labels that arrive later on the labels topic), and the
service with /metrics on localhost. It prints live status and alerts as they happen, and stops on Ctrl-C or
after ``--duration`` seconds.
"""

from __future__ import annotations

import heapq
import json
import socket
import sys
import threading
import time
from typing import Any, TextIO

from streamimb.config import ServiceConfig
from streamimb.io.kafka import KafkaConfig, KafkaSink
from streamimb.service.broker import EmbeddedBroker
from streamimb.service.runner import BatchOutcome, ServiceRunner
from streamimb.simulate.cards import CardStream

TOPICS = {"events": 3, "labels": 3, "alerts": 1, "dead-letters": 1}

DEMO_CONFIG: dict[str, Any] = {
    "schema": {
        "id": "id",
        "time": "time",
        "key": "card",
        "label": "label",
        "positive_class": "1",
        "classes": ["0", "1"],
        "numeric": ["amount", "hour"],
        "categorical": ["country", "category"],
        "entities": ["card"],  # raw transactions: per-card features come from the card's history
    },
    "model": {
        "detectors": [{"kind": "half_space_trees", "params": {"n_trees": 25, "height": 8}}],
        "calibration": {"kind": "budget", "alerts": 10, "per_events": 1000, "warmup": 500},
        "min_positive_labels": 20,
    },
    "labels": {"clock": "event"},
    "service": {"status_interval": 1e9},
}


def free_port(preferred: int) -> int:
    """``preferred`` if it is free on loopback, else any free port."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]


class Producer(threading.Thread):
    """Streams transactions at ``rate`` per second and their labels once event time reaches them."""

    def __init__(self, kafka: KafkaConfig, rate: float, seed: int = 42, bad_every: int = 5000) -> None:
        super().__init__(name="demo-producer", daemon=True)
        self.kafka = kafka
        self.rate = rate
        self.bad_every = bad_every
        self.stream = CardStream(
            seed=seed, chargeback_days=(0.02, 0.2), legit_label_days=0.05, producer_features=False
        )
        self.stop_event = threading.Event()
        self.produced = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the demo, which then stops
            self.error = exc

    def _run(self) -> None:
        events = KafkaSink(self.kafka, "events")
        labels = KafkaSink(self.kafka, "labels")
        pending: list[tuple[float, str, bytes, bytes]] = []
        started = time.monotonic()
        try:
            for tx, label in self.stream:
                if self.stop_event.is_set():
                    break
                key = tx["card"].encode()
                events.send(json.dumps(tx).encode(), key=key)
                heapq.heappush(pending, (label["time"], label["id"], key, json.dumps(label).encode()))
                while pending and pending[0][0] <= tx["time"]:
                    _, _, k, value = heapq.heappop(pending)
                    labels.send(value, key=k)
                self.produced += 1
                if self.bad_every and self.produced % self.bad_every == 0:
                    events.send(b'{"id": "broken", "amount": "NaN"', key=key)  # malformed on purpose
                if self.produced % 250 == 0:
                    events.flush()
                    labels.flush()
                    ahead = self.produced / self.rate - (time.monotonic() - started)
                    if ahead > 0:
                        self.stop_event.wait(ahead)
        finally:
            events.close()
            labels.close()


class Display:
    """Live status every ``interval`` seconds and alerts as they happen (at most a few per second)."""

    def __init__(self, out: TextIO, interval: float = 2.0, max_alert_lines_per_status: int = 3) -> None:
        self.out = out
        self.interval = interval
        self.max_alert_lines = max_alert_lines_per_status
        self.started = time.monotonic()
        self.last = self.started
        self.last_consumed = 0
        self.shown = 0
        self.drifts_seen = 0

    def __call__(self, runner: ServiceRunner, outcome: BatchOutcome) -> None:
        for alert in outcome.alerts:
            if self.shown < self.max_alert_lines:
                self.shown += 1
                self.out.write(f"  ALERT {alert.event_id:<10} {alert.rule:<10} {alert.reason}\n")
        for drift in outcome.drifts:
            self.out.write(f"  DRIFT {drift.signal} at event {drift.index} ({drift.detector})\n")
        now = time.monotonic()
        if now - self.last >= self.interval:
            rate = (runner.consumed - self.last_consumed) / (now - self.last)
            totals = runner.totals()
            self.out.write(
                f"[{now - self.started:5.0f}s] {runner.consumed:>7} events {rate:>6.0f}/s | "
                f"est. fraud rate {totals['prevalence']:.2%} | alerts {runner.alerts_sent} | "
                f"precision {totals['precision']:.2f} recall {totals['recall']:.2f} (rolling) | "
                f"drifts {totals['drifts']} | dead letters {runner.dead_lettered}\n"
            )
            self.out.flush()
            self.last, self.last_consumed, self.shown = now, runner.consumed, 0


def run_demo(
    duration: float = 60.0, rate: float = 1500.0, metrics_port: int = 9108, out: TextIO = sys.stdout
):
    """Run the demo; returns the service summary."""
    from streamimb.service.app import run_service

    out.write("starting the embedded Kafka broker ...\n")
    with EmbeddedBroker(port=0) as broker:
        broker.start()
        for topic, partitions in TOPICS.items():
            broker.create_topics([topic], partitions)
        kafka = {
            "bootstrap_servers": [broker.bootstrap],
            "group_id": "streamimb-demo",
            "labels_topic": "labels",
            "session_timeout_ms": 6000,
            "heartbeat_interval_ms": 1000,
            "poll_timeout_ms": 200,
        }
        address = f"127.0.0.1:{free_port(metrics_port)}"
        config = ServiceConfig.model_validate(
            {**DEMO_CONFIG, "kafka": kafka, "metrics": {"address": address}}
        )
        producer = Producer(KafkaConfig(**kafka), rate=rate)
        display = Display(out)

        def on_start(runner: ServiceRunner, metrics: str | None) -> None:
            out.write(
                f"broker {broker.bootstrap} | topics {', '.join(TOPICS)} | metrics http://{metrics}/metrics\n"
                f"producing ~{rate:.0f} card transactions/s; fraud rate 0.5% -> 2% -> 0.3% -> 1%; "
                f"chargebacks arrive later on 'labels'. Ctrl-C stops.\n"
            )
            producer.start()
            timer = threading.Timer(duration, runner.stop)
            timer.daemon = True
            timer.start()

        def on_batch(runner: ServiceRunner, outcome: BatchOutcome) -> None:
            display(runner, outcome)
            if producer.error is not None:
                out.write(f"producer failed: {producer.error}\n")
                runner.stop()

        try:
            summary = run_service(config, on_batch=on_batch, on_start=on_start)
        finally:
            producer.stop_event.set()
            producer.join(timeout=10)
        out.write(
            f"\nstopped: {summary['consumed']} events consumed, {summary['processed']} processed, "
            f"{summary['dead_letters']} dead letters, {summary['alerts']} alerts, "
            f"labels {summary['labels']}\n"
        )
        return summary
