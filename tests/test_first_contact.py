"""What a new user meets first: `run` and `replay` on ordinary data with no config at all."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from test_fault_kill import free_port, scrape

from streamimb.cli import main
from streamimb.config import EventSchema, ServiceConfig
from streamimb.decoding import infer_schema
from streamimb.io.kafka import RawRecord, produce_records
from streamimb.replay import replay
from streamimb.service.runner import ServiceRunner
from streamimb.service.telemetry import stream_telemetry

MALFORMED = [b"{not json", b'{"id": "x1", "account": "a1", "amount": "lots", "hour": 3, "label": 0}']


def account_events(n: int, seed: int = 3) -> list[dict]:
    """The shape a user sends: an id, an account (a string), numbers, a 0/1 label; fraud is rare and
    spends more on more items at night."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        fraud = rng.random() < 0.03
        out.append(
            {
                "id": f"e{i}",
                "account": f"a{rng.randrange(40)}",
                "amount": round(rng.expovariate(1 / (300 if fraud else 30)), 2),
                "hour": rng.randrange(0, 5) if fraud else rng.randrange(24),
                "n_items": rng.randrange(4, 9) if fraud else rng.randrange(1, 4),
                "label": int(fraud),
            }
        )
    return out


@pytest.mark.kafka
def test_run_without_config_infers_the_schema_and_dead_letters_only_malformed_records(
    kafka_broker, topic_factory
):
    events_topic, alerts_topic = topic_factory(3, "events"), topic_factory(1, "alerts")
    docs = account_events(3000)
    for p in range(3):
        values = [json.dumps(d).encode() for d in docs[p::3]]
        if p == 1:
            values[100:100] = MALFORMED
        produce_records(kafka_broker.bootstrap, events_topic, values, partition=p)
    cmd = [sys.executable, "-m", "streamimb", "run", "--bootstrap-servers", kafka_broker.bootstrap]
    cmd += ["--events-topic", events_topic, "--alerts-topic", alerts_topic, "--dead-letter-topic"]
    cmd += [topic_factory(1, "dead"), "--group-id", f"g-{events_topic}", "--idle-timeout", "3"]
    env = {
        **os.environ,
        "STREAMIMB_KAFKA__SESSION_TIMEOUT_MS": "6000",
        "STREAMIMB_KAFKA__HEARTBEAT_INTERVAL_MS": "1000",
    }
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["consumed"] == 3000 + len(MALFORMED)
    assert summary["dead_letters"] == len(MALFORMED)
    assert summary["processed"] == 3000
    assert summary["alerts"] > 0
    log = proc.stderr
    assert "schema inferred from" in log and "numeric ['amount', 'hour', 'n_items']" in log
    assert "categorical ['account']" in log and "label 'label', id 'id'" in log


def test_inference_holds_records_back_until_a_sample_is_in_and_keeps_their_order():
    config = ServiceConfig.model_validate({"model": {"calibration": {"warmup": 100}}})
    runner = ServiceRunner(config)
    assert runner._inference is not None
    docs = account_events(50)
    records = [RawRecord("events", 0, i, None, json.dumps(d).encode(), 0) for i, d in enumerate(docs)]
    inference = runner._inference
    inference.sample_records = 30
    assert inference.offer(records[:20]) == [] and inference.holding
    inference.forget([("events", 1)])  # another partition's revoke leaves these alone
    released = inference.offer(records[20:40])
    assert [r.offset for r in released] == list(range(40))
    runner._adopt(inference.schema)
    outcome = runner.process_batch(released + records[40:])
    assert outcome.processed == 50 and not outcome.dead_letters
    assert runner.states[0].schema.categorical == ["account"]
    assert runner.states[0].snapshot()["schema"] == runner.schema  # checkpointed with the model


def test_a_restored_checkpoint_brings_the_schema_its_model_was_trained_on():
    runner = ServiceRunner(ServiceConfig())
    trained = EventSchema(id="id", time="ts", label="label", numeric=["amount"], categorical=["account"])
    fresh = ServiceRunner(ServiceConfig())
    snapshot = fresh._new_state(0).snapshot() | {"schema": trained}
    state = runner._new_state(0, snapshot)
    assert state.schema == trained and runner._inference.schema == trained
    assert state.pipeline.decoder.inner.schema == trained


@pytest.mark.parametrize("column", ["ts", "time", "timestamp", "event_time", "created_at", "date"])
def test_a_time_column_is_event_time_never_a_feature(column, tmp_path):
    rows = ["id,account,amount," + column + ",label"]
    rows += [f"e{i},a{i % 5},{i % 7}.5,{1_700_000_000 + 60 * i},{int(i % 25 == 0)}" for i in range(300)]
    path = tmp_path / "events.csv"
    path.write_text("\n".join(rows) + "\n")
    report = replay(path, ServiceConfig(), progress=False)
    assert report["schema"]["time"] == column
    assert column not in report["schema"]["numeric"] and report["schema"]["numeric"] == ["amount"]
    assert report["dead_letters"] == 0


def test_date_strings_are_time_and_further_time_columns_are_left_out():
    rows = [
        {
            "when": f"2024-03-{1 + i % 28:02d}T10:00:00Z",
            "updated_at": 1_700_000_000 + i,
            "customer_id": 1000 + i,
            "amount": i * 1.5,
            "label": i % 9 == 0,
        }
        for i in range(100)
    ]
    schema = infer_schema(rows)
    assert schema.time == "when"
    assert schema.numeric == ["amount"]
    assert schema.drop == ["updated_at", "customer_id"]  # a second time column and an id are no features


def test_replay_serves_the_service_metrics_and_holds_until_interrupted(tmp_path):
    path = tmp_path / "events.jsonl"
    lines = [json.dumps(d) for d in account_events(1500)] + ["{not json"]
    path.write_text("\n".join(lines) + "\n")
    port = free_port()
    cmd = [sys.executable, "-m", "streamimb", "replay", str(path), "--quiet"]
    cmd += ["--metrics-address", f"127.0.0.1:{port}", "--hold"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        metrics: dict[str, float] = {}
        while time.monotonic() < deadline and proc.poll() is None:
            metrics = scrape(port)
            if metrics.get("streamimb_events_processed_total") == 1500:
                break
            time.sleep(0.2)
        assert metrics.get("streamimb_events_processed_total") == 1500, proc.stderr.read()
        assert metrics['streamimb_dead_letters_total{reason="malformed_json"}'] == 1
        assert metrics["streamimb_events_consumed_total"] == 1501
        assert any(k.startswith("streamimb_prevalence_estimate") for k in metrics)
        assert proc.poll() is None  # held after the end
        health = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert health.status == 200
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "precision" in out and "until Ctrl-C" in err


def test_replay_counts_what_the_service_counts(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join([json.dumps(d) for d in account_events(3000)] + ["[1]"]) + "\n")
    telemetry = stream_telemetry()
    report = replay(path, ServiceConfig(), progress=False, telemetry=telemetry)
    value = telemetry.registry.get_sample_value
    assert value("streamimb_events_processed_total") == report["events"] == 3000
    assert value("streamimb_dead_letters_total", {"reason": "not_an_object"}) == 1
    alerts = [
        s.value
        for metric in telemetry.registry.collect()
        if metric.name == "streamimb_alerts"
        for s in metric.samples
        if s.name == "streamimb_alerts_total"
    ]
    assert sum(alerts) == report["alerts"] > 0


def test_a_stream_that_is_mostly_dead_letters_is_reported_at_once(tmp_path, caplog):
    """A misconfiguration (a text column declared numeric) is a warning with the top reason, not silence."""
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(json.dumps(d) for d in account_events(300)) + "\n")
    config = ServiceConfig.model_validate({"schema": {"numeric": ["amount", "account"]}})
    with caplog.at_level("WARNING"):
        report = replay(path, config, progress=False)
    assert report["dead_letters"] == 300
    warnings = [r.getMessage() for r in caplog.records if "dead-lettered" in r.getMessage()]
    assert len(warnings) == 1  # rate-limited
    assert "300 of 300 records (100%)" in warnings[0] and "bad_number 300 (field 'account'" in warnings[0]


def test_replay_summary_says_which_column_is_time(tmp_path, capsys):
    rows = ["ts,amount,label"] + [f"{1_700_000_000 + i},{i % 3},{int(i % 10 == 0)}" for i in range(200)]
    path = tmp_path / "e.csv"
    path.write_text("\n".join(rows) + "\n")
    assert main(["replay", str(path), "--quiet"]) == 0
    assert "event time 'ts', 1 numeric" in capsys.readouterr().out


def test_an_event_without_an_id_is_known_by_topic_partition_offset():
    config = ServiceConfig.model_validate({"schema": {"numeric": ["amount"]}, "kafka": {"labels_topic": "l"}})
    runner = ServiceRunner(config)
    runner.process_batch([RawRecord("events", p, 0, None, b'{"amount": 1.0}', 0) for p in (0, 1)])
    pending = {event_id for state in runner.states.values() for event_id in state.joiner._pending}
    assert pending == {"events-0-0", "events-1-0"}  # offsets repeat across partitions; these do not
