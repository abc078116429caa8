"""Scale-out: service processes in one consumer group share the partitions; state moves with its partition.

Three real processes (``python -m streamimb run``: all on kafka-python, all on confluent-kafka, or one on
kafka-python and two on confluent, as in a rolling switch of clients) join one group mid-stream while events
keep arriving; one leaves gracefully (SIGTERM) and one is killed (SIGKILL). Every partition's
model must end up having learned every event of its partition exactly once, whichever processes held it on
the way, and the checkpoints' group generation must have grown.

The stream has no fixed length: a round of events every half second until the test, once the kill is behind
it, ends it. So the joins, the leave and the kill all happen mid-stream however fast or slow the machine is.
"""

from __future__ import annotations

import json
import signal
import threading
import time

import pytest
from kafka_broker import require_client
from test_checkpoint_service import KEY, make_events, store_of
from test_fault_kill import (
    free_port,
    log_tail,
    scrape,
    start_service,
    wait_consumed,
    wait_consuming,
    write_service_config,
)

from streamimb.config import ServiceConfig, load_config
from streamimb.io.kafka import produce_records
from streamimb.service.runner import ServiceRunner
from streamimb.service.state import FileCheckpointStore, SnapshotCodec, config_hash

PARTITIONS = 6


# Each process's consumer client (``--kafka-client``); the mixed group is a rolling switch of clients.
GROUPS = {
    "kafka-python": {"a": "kafka-python", "b": "kafka-python", "c": "kafka-python"},
    "confluent": {"a": "confluent", "b": "confluent", "c": "confluent"},
    "mixed": {"a": "kafka-python", "b": "confluent", "c": "confluent"},
}


@pytest.mark.parametrize("clients", list(GROUPS.values()), ids=list(GROUPS))
def test_three_processes_join_and_leave_mid_stream(
    kafka_broker, kafka_config, topic_factory, tmp_path, monkeypatch, clients
):
    for client in set(clients.values()):
        require_client(client)
    topics = {
        "events_topic": topic_factory(PARTITIONS, "events"),
        "alerts_topic": topic_factory(1, "alerts"),
        "dead_letter_topic": topic_factory(1, "dead"),
    }
    per_round, max_rounds = 40, 360  # a round every 0.5 s: the cap (3 min) is only a safety net
    events, _ = make_events(PARTITIONS * max_rounds * per_round, seed=31)
    produced = {p: 0 for p in range(PARTITIONS)}
    rounds = [0]
    end_of_stream = threading.Event()

    def stream() -> None:
        for r in range(max_rounds):
            if end_of_stream.is_set():
                return
            for p in range(PARTITIONS):
                start = (r * PARTITIONS + p) * per_round
                produce_records(
                    kafka_broker.bootstrap,
                    topics["events_topic"],
                    events[start : start + per_round],
                    partition=p,
                )
                produced[p] += per_round
            rounds[0] += 1
            end_of_stream.wait(0.5)

    def wait_rounds(at_least: int, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while rounds[0] < at_least and producer.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert rounds[0] >= at_least, f"the stream is stuck at {rounds[0]} rounds"

    producer = threading.Thread(target=stream, daemon=True)
    producer.start()
    kafka = kafka_config(max_poll_records=50, session_timeout_ms=3000, heartbeat_interval_ms=500, **topics)
    config_path = write_service_config(
        tmp_path / "svc.yaml", kafka.model_dump(mode="json"), tmp_path / "state"
    )

    procs, ports = {}, {}
    try:
        for group in (("a",), ("b", "c")):  # a first, then b and c join while a consumes
            for name in group:
                ports[name] = free_port()
                procs[name] = start_service(
                    config_path, ports[name], "--idle-timeout", "6", "--kafka-client", clients[name]
                )
            for name in group:
                assert wait_consuming(ports[name], procs[name], 60), f"process {name} never consumed"
        assert producer.is_alive(), "the stream ended before the third process joined"
        procs["a"].send_signal(signal.SIGTERM)  # a leaves gracefully: checkpoint on revoke, commit, leave
        out_a, _ = procs["a"].communicate(timeout=60)
        assert procs["a"].returncode == 0, log_tail(procs["a"])
        # b goes on consuming after a left (the stream still runs), then crashes: its partitions go back
        # to their checkpoints
        b_at_a_exit = scrape(ports["b"])["streamimb_events_consumed_total"]
        assert wait_consumed(ports["b"], procs["b"], b_at_a_exit + 1, 60), log_tail(procs["b"])
        assert producer.is_alive(), "the stream ended before b was killed"
        procs["b"].send_signal(signal.SIGKILL)
        procs["b"].communicate(timeout=30)
        wait_rounds(rounds[0] + 4)  # events keep arriving after the kill, then the stream ends
        end_of_stream.set()
        producer.join(timeout=60)
        assert not producer.is_alive()
        out_c, _ = procs["c"].communicate(timeout=120)
        assert procs["c"].returncode == 0, log_tail(procs["c"])
    finally:
        end_of_stream.set()
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()

    summary_a = json.loads(out_a.strip().splitlines()[-1])
    summary_c = json.loads(out_c.strip().splitlines()[-1])
    monkeypatch.setenv("STREAMIMB_CHECKPOINT__KEY", KEY)
    headers = {p: h for (_, p), h in store_of(load_config(config_path)).headers().items()}
    assert {p: h.learned for p, h in headers.items()} == produced, log_tail(procs["c"])
    assert {p: h.offsets[topics["events_topic"]] for p, h in headers.items()} == produced
    assert sorted(int(p) for p in summary_c["partitions"]) == list(
        range(PARTITIONS)
    )  # c took over everything
    assert summary_c["restored"], "c must have restored state that a or b had checkpointed"
    assert summary_a["consumed"] > 0 and max(h.generation for h in headers.values()) >= 2
    assert scrape(ports["c"]) == {}  # c is gone


def test_a_stale_owner_cannot_overwrite_a_newer_generation(tmp_path):
    """Both runners believe they own partition 0; only the newer generation's checkpoint stands."""
    config = ServiceConfig.model_validate(
        {
            "schema": {"positive_class": "1", "classes": ["0", "1"]},
            "checkpoint": {"directory": str(tmp_path), "key": KEY},
        }
    )
    good, _ = make_events(200, seed=5)
    from streamimb.io.kafka import RawRecord

    records = [RawRecord("events", 0, i, None, v, 0) for i, v in enumerate(good)]
    stale, owner = ServiceRunner(config), ServiceRunner(config)
    stale.process_batch(records[:100])
    stale.states[0].generation = 4
    owner.process_batch(records)
    owner.states[0].generation = 5
    assert owner.checkpoint() == 1
    assert stale.checkpoint() == 0  # fenced: generation 4 may not replace generation 5's checkpoint
    assert 0 not in stale.states  # and the stale copy is dropped
    codec = SnapshotCodec(KEY.encode(), config_hash(config.model, config.event_schema))
    header = FileCheckpointStore(tmp_path, codec, config.kafka.group_id).read_header("events", 0)
    assert (header.generation, header.learned, header.offsets) == (5, 200, {"events": 200})
