"""Start-up against a broker that accepts TCP but never answers: the service waits and is not ready, then
consumes everything once the broker answers; refused credentials stop it with one clear line."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time

import pytest
from kafka_broker import fast_config, start_broker_or_skip

from streamimb.cli import main
from streamimb.config import ServiceConfig
from streamimb.errors import BrokerAuthError, SourceError
from streamimb.io import kafka as kafka_io
from streamimb.io.kafka import produce_records, topic_partitions
from streamimb.service.runner import ServiceRunner
from streamimb.service.telemetry import stream_telemetry

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_frozen_broker_at_start_is_waited_for_not_a_crash(caplog):
    broker = start_broker_or_skip(port=0)
    try:
        broker.create_topics(["events", "labels"], 2)
        broker.create_topics(["alerts", "dead"], 1)
        docs = [{"id": f"e{i}", "amount": float(i % 7), "label": str(int(i % 20 == 0))} for i in range(400)]
        for p in range(2):
            produce_records(
                broker.bootstrap, "events", [json.dumps(d).encode() for d in docs[p::2]], partition=p
            )
        kafka = fast_config(
            broker.bootstrap,
            events_topic="events",
            labels_topic="labels",
            alerts_topic="alerts",
            dead_letter_topic="dead",
            group_id="frozen-start",
        )
        config = ServiceConfig.model_validate(
            {"kafka": kafka.model_dump(), "schema": {"numeric": ["amount"]}, "service": {"idle_timeout": 3}}
        )
        os.kill(broker.pid, signal.SIGSTOP)
        frozen = True
        try:
            with pytest.raises(SourceError, match="broker did not answer"):
                topic_partitions(kafka, timeout_s=2)
            telemetry = stream_telemetry()
            runner = ServiceRunner(config, telemetry=telemetry)
            result: dict = {}
            thread = threading.Thread(target=lambda: result.update(summary=runner.run()), daemon=True)
            with caplog.at_level(logging.WARNING, logger="streamimb.service.runner"):
                thread.start()
                wait_for(
                    lambda: any("cannot read partition counts" in r.getMessage() for r in caplog.records),
                    60,
                    "the start-up warning",
                )
            assert thread.is_alive()  # waiting, not dead
            assert not telemetry.ready
            os.kill(broker.pid, signal.SIGCONT)
            frozen = False
            thread.join(timeout=120)
            assert not thread.is_alive()
        finally:
            if frozen:
                os.kill(broker.pid, signal.SIGCONT)
        assert result["summary"]["consumed"] == 400 and result["summary"]["dead_letters"] == 0
        warning = next(r.getMessage() for r in caplog.records if "partition counts" in r.getMessage())
        assert "broker did not answer" in warning and "503" in warning
    finally:
        broker.stop()


def test_refused_credentials_stop_run_with_one_line_and_exit_2(monkeypatch, capsys, kafka_broker):
    """The broker's refusal, as kafka-python raises it, becomes `error: authentication failed: ...`."""

    class RefusingAdmin:
        def __init__(self, **kwargs):
            raise kafka_io.kerrors.SaslAuthenticationFailedError("invalid credentials")

    monkeypatch.setattr(kafka_io, "KafkaAdminClient", RefusingAdmin)
    with pytest.raises(BrokerAuthError, match="authentication failed"):
        topic_partitions(kafka_broker.bootstrap)
    rc = main(["run", "--bootstrap-servers", kafka_broker.bootstrap, "--labels-topic", "labels"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: authentication failed")


def test_a_broker_frozen_mid_stream_makes_the_service_not_ready_until_it_answers_again():
    broker = start_broker_or_skip(port=0)
    try:
        broker.create_topics(["events"], 2)
        broker.create_topics(["alerts", "dead"], 1)
        first = [json.dumps({"id": f"a{i}", "amount": float(i % 7)}).encode() for i in range(200)]
        produce_records(broker.bootstrap, "events", first, partition=0)
        kafka = fast_config(
            broker.bootstrap, events_topic="events", alerts_topic="alerts", dead_letter_topic="dead"
        )
        config = ServiceConfig.model_validate(
            {"kafka": kafka.model_dump(), "schema": {"numeric": ["amount"]}}
        )
        telemetry = stream_telemetry()
        runner = ServiceRunner(config, telemetry=telemetry)
        thread = threading.Thread(target=runner.run, daemon=True)
        thread.start()
        wait_for(lambda: runner.consumed == 200 and telemetry.ready, 60, "the first events")
        os.kill(broker.pid, signal.SIGSTOP)
        try:
            wait_for(lambda: not telemetry.ready, 60, "readiness to drop while the broker is frozen")
            assert thread.is_alive()
        finally:
            os.kill(broker.pid, signal.SIGCONT)
        wait_for(lambda: telemetry.ready, 60, "readiness once the broker answers")
        more = [json.dumps({"id": f"b{i}", "amount": float(i % 5)}).encode() for i in range(100)]
        produce_records(broker.bootstrap, "events", more, partition=1)
        wait_for(lambda: runner.consumed == 300, 60, "the events produced after the freeze")
        runner.stop()
        thread.join(timeout=60)
        assert not thread.is_alive() and runner.dead_lettered == 0
    finally:
        broker.stop()
