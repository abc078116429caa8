"""The worked examples end to end: each example's producer and ``streamimb run`` with the example's config,
as subprocesses, against the real embedded Kafka broker (card fraud, churn) or a real Prometheus (ops).

The streams are short versions of the README walkthroughs; the assertions are on what the programs print
and publish (counts, the analyst budget, label joins, alerts on the injected anomaly), not on exact model
metrics, which move as the default models are tuned.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from kafka import KafkaConsumer, TopicPartition
from kafka_broker import poll_count
from prometheus_client.parser import text_string_to_metric_families
from promstack import PrometheusServer, binary, free_port, http, require, wait_until

from streamimb.io.kafka import KafkaSource
from streamimb.service.broker import EmbeddedBroker

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def load_producer(example: str) -> ModuleType:
    """An example's producer.py as a module (to rebuild the exact stream it produced)."""
    path = EXAMPLES / example / "producer.py"
    spec = importlib.util.spec_from_file_location(f"{example}_producer", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def env() -> dict[str, str]:
    """The test's environment without STREAMIMB_ overrides (the example configs must stand alone)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("STREAMIMB_")}


class Service:
    """``python -m streamimb run ...`` in the background, its output in files under ``workdir``."""

    def __init__(self, workdir: Path, args: list[str]) -> None:
        self.metrics = f"127.0.0.1:{free_port()}"
        self.stdout_path = workdir / "service.out"
        self.stderr_path = workdir / "service.err"
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streamimb", "run", *args, "--metrics-address", self.metrics],
                stdout=out,
                stderr=err,
                cwd=workdir,
                env=env(),
            )

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_consuming(self, timeout: float = 60.0) -> None:
        """Until /readyz answers 200 and the consumer group assigned the partitions (the runner logs it), so
        that the producer starts on a live consumer rather than a backlog; fail if the service exits first."""

        def assigned() -> bool:
            if self.proc.poll() is not None:
                pytest.fail(f"streamimb run exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            return http(f"http://{self.metrics}/readyz", timeout=1.0)[0] == 200 and "assigned [" in self.log()

        wait_until(assigned, timeout, "the service to be ready with its partitions assigned")

    def events_consumed(self) -> float:
        """Event records the service has consumed, from /metrics: processed or dead-lettered (0 when down)."""
        scraped = self.scrape()
        dead = sum(v for (name, _), v in scraped.items() if name == "streamimb_dead_letters_total")
        return scraped.get(("streamimb_events_processed_total", ()), 0.0) + dead

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """The service's /metrics as ``{(sample name, sorted labels): value}`` (empty if unreachable)."""
        try:
            status, _, body = http(f"http://{self.metrics}/metrics", timeout=2.0)
        except OSError:
            return {}
        if status != 200:
            return {}
        out = {}
        for family in text_string_to_metric_families(body.decode()):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def summary(self, timeout: float = 60.0) -> dict[str, Any]:
        """Wait for the process to exit; its last stdout line is the JSON summary."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"streamimb run did not stop within {timeout}s:\n{self.log()[-3000:]}")
        assert code == 0, self.log()[-3000:]
        lines = self.stdout_path.read_text().strip().splitlines()
        assert lines, f"no summary printed:\n{self.log()[-3000:]}"
        return json.loads(lines[-1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


@pytest.fixture
def service_runs() -> Iterator[list[Service]]:
    """Services started by a test; any still running at the end are stopped."""
    started: list[Service] = []
    yield started
    for service in started:
        service.stop()


def read_topic(kafka_config, topic: str, count: int) -> list[dict[str, Any]]:
    if count == 0:
        return []
    source = KafkaSource(kafka_config(), [topic])
    try:
        return [json.loads(r.value) for r in poll_count(source, count, timeout_s=30.0)]
    finally:
        source.close()


def max_in_window(offsets: list[int], window: int) -> int:
    """The most offsets that fall in any ``window`` consecutive offsets.

    >>> max_in_window([0, 5, 999, 1000, 1998], 1000)
    3
    """
    offsets = sorted(offsets)
    best, lo = 0, 0
    for hi, o in enumerate(offsets):
        while o - offsets[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def topic_ends(consumer: KafkaConsumer, topics: list[str]) -> int:
    """The records in the given one-partition topics (the sum of their end offsets)."""
    return sum(consumer.end_offsets([TopicPartition(t, 0) for t in topics]).values())


def run_service_example(
    example: str,
    broker: EmbeddedBroker,
    topic_factory,
    service_runs: list[Service],
    workdir: Path,
    producer_args: list[str],
    expected_records: int,
    watch_metrics: bool = False,
    pause_at: int | None = None,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, str], list[dict]]:
    """Start ``streamimb run`` with the example's service.yaml on fresh topics, run the producer against it,
    and return (producer summary, service summary, topics, /metrics samples taken during the run).

    Without ``watch_metrics`` the service stops by itself after ``expected_records`` event records. With it,
    /metrics is sampled while the stream flows, and at progress points rather than moments: once the events
    topic holds ``pause_at`` records the producer is paused (SIGSTOP) until the service has consumed every
    event produced so far, sampled, and resumed; after the producer's end, the last sample is taken once the
    service has consumed every event, and the service is then stopped (SIGTERM) at once, as --max-events
    would have.
    """
    topics = {
        "events": topic_factory(1, f"{example}-events"),
        "labels": topic_factory(1, f"{example}-labels"),
        "alerts": topic_factory(1, f"{example}-alerts"),
        "dead": topic_factory(1, f"{example}-dead"),
    }
    config = EXAMPLES / example / "service.yaml"
    stop_args = [] if watch_metrics else ["--max-events", str(expected_records)]  # else: SIGTERM
    service = Service(
        workdir,
        [
            "--config", str(config),
            "--bootstrap-servers", broker.bootstrap,
            "--events-topic", topics["events"],
            "--labels-topic", topics["labels"],
            "--alerts-topic", topics["alerts"],
            "--dead-letter-topic", topics["dead"],
            "--group-id", f"{topics['events']}-group",
            *stop_args,
            "--idle-timeout", "20",  # a safety net: --max-events (or SIGTERM) stops it
        ],
    )  # fmt: skip
    service_runs.append(service)
    service.wait_consuming()
    producer = subprocess.Popen(
        [
            sys.executable, str(EXAMPLES / example / "producer.py"),
            "--bootstrap", broker.bootstrap,
            "--events-topic", topics["events"],
            "--labels-topic", topics["labels"],
            *producer_args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
        cwd=REPO,
    )  # fmt: skip
    ends = KafkaConsumer(bootstrap_servers=broker.bootstrap)

    def sample_once_all_consumed(what: str) -> None:
        """Until the service consumed every record in the events topic; then sample /metrics."""
        wait_until(lambda: service.events_consumed() >= topic_ends(ends, [topics["events"]]), 60, what)
        scraped = service.scrape()
        assert scraped, f"/metrics unreachable:\n{service.log()[-3000:]}"
        samples.append(scraped)

    samples: list[dict] = []
    paused = stopped = False
    try:
        while watch_metrics and producer.poll() is None:
            scraped = service.scrape()
            if scraped:
                samples.append(scraped)
            if pause_at is not None and not paused and topic_ends(ends, [topics["events"]]) >= pause_at:
                producer.send_signal(signal.SIGSTOP)
                paused = stopped = True
                sample_once_all_consumed(f"the service to catch up with the paused producer ({pause_at})")
                producer.send_signal(signal.SIGCONT)
                stopped = False
            time.sleep(0.05)
        out, err = producer.communicate(timeout=120)
        assert producer.returncode == 0, err[-3000:]
        produced = json.loads(out.strip().splitlines()[-1])
        assert produced["event_records"] == expected_records, produced
        assert paused or pause_at is None, f"the stream ended before the events topic held {pause_at} records"
        if watch_metrics:
            sample_once_all_consumed("the service to consume the whole stream")
            service.proc.send_signal(signal.SIGTERM)
    finally:
        if stopped:
            producer.send_signal(signal.SIGCONT)
        if producer.poll() is None:
            producer.kill()
            producer.communicate()
        ends.close()
    return produced, service.summary(), topics, samples


def check_counts_and_joins(produced: dict[str, Any], summary: dict[str, Any], malformed: int) -> None:
    """Every record consumed, bad ones dead-lettered, every label consumed joined to its prediction."""
    assert summary["consumed"] == produced["event_records"]
    assert summary["dead_letters"] == malformed == produced["malformed"]
    assert summary["processed"] == produced["event_records"] - malformed
    labels = summary["labels"]
    assert 0 < labels["joined"] == summary["labels_consumed"] <= produced["labels_sent"], (labels, summary)
    assert labels["expired"] == labels["unknown"] == labels["duplicate"] == 0
    assert sum(summary["learned"].values()) == labels["joined"]


# -- card fraud ------------------------------------------------------------------------------------------
CARD_EVENTS = 16000
CARD_BAD_EVERY = 4000


@pytest.mark.kafka
@pytest.mark.slow
def test_card_fraud_example_alerts_within_the_analyst_budget(
    kafka_broker, topic_factory, kafka_config, service_runs, tmp_path
):
    args = ["--events", str(CARD_EVENTS), "--bad-every", str(CARD_BAD_EVERY), "--rate", "1000"]
    malformed = CARD_EVENTS // CARD_BAD_EVERY
    produced, summary, topics, _ = run_service_example(
        "card_fraud", kafka_broker, topic_factory, service_runs, tmp_path, args, CARD_EVENTS + malformed
    )
    check_counts_and_joins(produced, summary, malformed)
    assert produced["fraud_labels_sent"] >= 20  # enough chargebacks for the classifier to take over

    dead = read_topic(kafka_config, topics["dead"], summary["dead_letters"])
    assert sorted(d["reason"] for d in dead) == [
        "bad_number",
        "malformed_json",
        "non_finite",
        "not_an_object",
    ]

    # The analyst budget: 20 alerts per 1,000 transactions, from each decision route (anomaly detectors
    # until 20 frauds are learned, the classifier after); the two can overlap in one window at the switch.
    service = yaml.safe_load((EXAMPLES / "card_fraud" / "service.yaml").read_text())
    budget = service["model"]["threshold"]["params"]
    assert budget == {"max_alerts": 20, "per_events": 1000}
    assert service["model"]["calibration"]["alerts"] == budget["max_alerts"]
    alerts = read_topic(kafka_config, topics["alerts"], summary["alerts"])
    assert 0 < len(alerts) == summary["alerts"]
    assert len({a["alert_id"] for a in alerts}) == len(alerts)
    rules = {a["rule"] for a in alerts}
    assert "classifier" in rules, rules
    for rule in rules:
        offsets = [a["offset"] for a in alerts if a["rule"] == rule]
        assert max_in_window(offsets, budget["per_events"]) <= budget["max_alerts"], rule
    assert max_in_window([a["offset"] for a in alerts], budget["per_events"]) <= 2 * budget["max_alerts"]
    windows = math.ceil(CARD_EVENTS / budget["per_events"])
    assert len(alerts) <= budget["max_alerts"] * (windows + 1)

    # The budget goes to suspicious transactions: frauds are far more common among alerts than overall.
    producer = load_producer("card_fraud")
    rows = itertools.islice(producer.make_stream(producer.parse_args(args)), CARD_EVENTS)
    frauds = {tx["id"] for tx, label in rows if label["label"] == "1"}
    base_rate = len(frauds) / CARD_EVENTS
    caught = [a for a in alerts if a["event_id"] in frauds]
    assert len(caught) / len(alerts) > 4 * base_rate, (len(caught), len(alerts), base_rate)


# -- churn -----------------------------------------------------------------------------------------------
CHURN_CUSTOMERS = 500
CHURN_MONTHS = 18
CHURN_CAMPAIGN = 12
CHURN_BAD_EVERY = 3000


def prevalence(sample: dict) -> float | None:
    return sample.get(("streamimb_prevalence_estimate", (("class", "1"),)))


@pytest.mark.kafka
@pytest.mark.slow
def test_churn_example_follows_the_churn_rate_down_after_the_campaign(
    kafka_broker, topic_factory, kafka_config, service_runs, tmp_path
):
    events = CHURN_CUSTOMERS * CHURN_MONTHS
    args = [
        "--events", str(events),
        "--customers", str(CHURN_CUSTOMERS),
        "--campaign-month", str(CHURN_CAMPAIGN),
        "--bad-every", str(CHURN_BAD_EVERY),
        "--rate", "1000",
    ]  # fmt: skip
    malformed = events // CHURN_BAD_EVERY
    produced, summary, topics, samples = run_service_example(
        "churn",
        kafka_broker,
        topic_factory,
        service_runs,
        tmp_path,
        args,
        events + malformed,
        watch_metrics=True,
        # a sample once the service has consumed the first half of the pre-campaign months (and the few
        # records the producer sent before it was paused): in the window checked below by construction
        pause_at=CHURN_CAMPAIGN * CHURN_CUSTOMERS // 2 + 100,
    )
    check_counts_and_joins(produced, summary, malformed)
    assert 0.06 < produced["churn_rate_before"] < 0.10 and 0.015 < produced["churn_rate_after"] < 0.045
    # The churn-rate estimate (exported on /metrics) sits near 8% before the campaign and follows the rate
    # down to about 3% once the outcomes of post-campaign months arrive.
    campaign = produced["campaign_index"]
    curve = [
        (s[("streamimb_events_processed_total", ())], prevalence(s))
        for s in samples
        if prevalence(s) is not None
    ]
    before = [p for n, p in curve if campaign // 2 <= n <= campaign]
    assert before and max(before) > 0.06, curve
    assert curve[-1][0] >= events - 1000 and curve[-1][1] < 0.05, curve

    # Alerts flag customers who do leave far more often than the churn rate.
    alerts = read_topic(kafka_config, topics["alerts"], summary["alerts"])
    assert 0 < len(alerts) == summary["alerts"]
    producer = load_producer("churn")
    rows = list(itertools.islice(producer.make_stream(producer.parse_args(args)), events))
    leavers = {record["id"] for record, label in rows if label["label"] == "1"}
    caught = sum(a["event_id"] in leavers for a in alerts)
    assert caught / len(alerts) > 2.5 * len(leavers) / events, (caught, len(alerts), len(leavers))


# -- ops metrics -----------------------------------------------------------------------------------------
OPS_STEP = 0.2  # the walkthrough's 1 s scrape and poll interval, five times faster
OPS_PERIOD = 8.0  # the shop's compressed "day" (40 s in the walkthrough), five times faster
OPS_ANOMALY_AT = 22.0  # seconds after the exporter starts


@pytest.mark.prometheus
@pytest.mark.slow
def test_ops_metrics_example_flags_the_injected_anomaly(tmp_path, service_runs):
    require("prometheus")
    promtool = binary("promtool")
    if promtool:
        check = subprocess.run(
            [promtool, "check", "config", str(EXAMPLES / "ops_metrics" / "prometheus.yml")],
            capture_output=True,
            text=True,
        )
        assert check.returncode == 0, check.stdout + check.stderr
    # Prometheus first, scraping the exporter's port before the exporter is up: the exporter's clock (the
    # anomaly comes OPS_ANOMALY_AT s after its start) then starts with the scrapes, so the history before
    # the anomaly holds ~OPS_ANOMALY_AT / OPS_STEP points however long Prometheus took to start.
    target = f"127.0.0.1:{free_port()}"
    interval = f"{round(OPS_STEP * 1000)}ms"
    with PrometheusServer(tmp_path / "prometheus", {"shop": [target]}, interval=interval) as prom:
        exporter = subprocess.Popen(
            [
                sys.executable, str(EXAMPLES / "ops_metrics" / "producer.py"),
                "--port", target.rsplit(":", 1)[1],
                "--period", str(OPS_PERIOD),
                "--anomaly-at", str(OPS_ANOMALY_AT),
                "--duration", "120",
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=env(),
            cwd=REPO,
        )  # fmt: skip
        try:
            serving = json.loads(exporter.stdout.readline())["serving"]
            assert serving == f"http://{target}/metrics", serving
            prom.wait_up("shop")
            # enough history for the detectors' warm-up (the config's lookback reads it at start)
            config = yaml.safe_load((EXAMPLES / "ops_metrics" / "local.yaml").read_text())
            warmup = config["series"]["params"]["warmup"]
            assert warmup + 20 < OPS_ANOMALY_AT / OPS_STEP  # enough history before the anomaly
            history = 'count_over_time(shop_latency_seconds{job="shop",service="checkout"}[5m])'
            wait_until(lambda: (prom.value(history) or 0) >= warmup + 5, 30, f"{warmup + 5} scrapes")
            config["source"].update(url=prom.url, interval_seconds=OPS_STEP, step=OPS_STEP)
            (tmp_path / "local.yaml").write_text(yaml.safe_dump(config))
            service = Service(tmp_path, ["--config", str(tmp_path / "local.yaml")])
            service_runs.append(service)
            injected = json.loads(exporter.stdout.readline())
            assert injected["injected"] == "shift"
            assert injected["series"] == 'shop_latency_seconds{service="checkout"}'
            alerts_path = tmp_path / config["alerts_file"]["path"]

            def alert_on_target() -> dict | None:
                if not alerts_path.exists():
                    return None
                for line in alerts_path.read_text().splitlines():
                    alert = json.loads(line)
                    key = alert["event_id"]
                    on_target = key.startswith("shop_latency_seconds{") and 'service="checkout"' in key
                    if on_target and alert["time"] >= injected["at"] - OPS_STEP:
                        return alert
                return None

            alert = wait_until(alert_on_target, 20, "an alert on the injected series")
            service.stop()
            summary = service.summary(timeout=10)
        finally:
            exporter.terminate()
            exporter.wait(timeout=10)
    assert alert["rule"] == "series" and alert["anomaly_score"] >= config["series"]["threshold"]
    assert alert["time"] <= injected["at"] + 10 * OPS_STEP  # found within a few points
    alerts = [json.loads(line) for line in alerts_path.read_text().splitlines()]
    early = [a for a in alerts if a["event_id"] == alert["event_id"] and a["time"] < alert["time"]]
    assert not early, early  # the noise before the anomaly raised no alert on that series
    assert 'ALERT shop_latency_seconds{instance="' in service.log()
    assert summary["series"] == 6 and summary["alerts"] >= 1 and summary["samples"] > 6 * warmup, summary
