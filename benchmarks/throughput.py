"""Throughput and latency of the default pipeline, side by side with plain river and the Kafka client floor.

One run measures, on the same card-transaction stream (JSON events with their label inline):

* **replay**: ``Pipeline.handle`` over batches of 500 raw JSON records (decode + process), in batch mode
  (``model.batch: true``, the default) and one event at a time (``model.batch: false``);
* **plain river**: the same models written the usual river way, one event at a time (``json.loads``, one-hot,
  ``MinMaxScaler | HalfSpaceTrees``, oversampling online bagging of ten ``HoeffdingTreeClassifier``, two
  ``ADWIN`` and river metrics);
* **end to end** through the embedded broker (tansu): the real ``ServiceRunner`` (poll -> decode -> process
  -> alert sinks -> commit) in both modes and, in batch mode, with the confluent-kafka consumer
  (``kafka.client: confluent``); plain river behind the same ``KafkaSource``; and the **floor**: each
  client consuming, decoding and committing the same events with no processing;
* a per-component profile (cProfile, attributed by caller), the time spent inside the compiled (numba)
  kernels, and the resident memory over a long replay.

The replayed pipelines take turns over the same stream, 1,000 events each (a change of the machine's speed
during a round falls on all of them alike), in fresh rounds; the median round is reported and a ratio is the
median of the rounds' own ratios. The end-to-end consumers run one after the other, round by round. Every
pipeline (plain river and the floor included) runs with the garbage collector set as ``streamimb run`` and
``replay`` set it (``streamimb.runtime.prepare_gc_for_streaming``: start-up heap frozen, young objects
collected every 20,000 allocations) and after a short warm-up replay (numba loads or compiles its kernels
once a process). Throughput is events per CPU-second of this process for replay (robust to other jobs on the
machine) and events per wall-clock second end to end (the broker and client threads count).

    .venv/bin/python benchmarks/throughput.py          # full run: results/throughput.md and .json
    .venv/bin/python benchmarks/throughput.py --quick  # < 1 minute, prints only
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import importlib.util
import json
import math
import os
import platform
import pstats
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import river
from river import anomaly, drift, metrics, preprocessing, tree

from streamimb.config import ServiceConfig
from streamimb.decoding import EventDecoder
from streamimb.demo import DEMO_CONFIG
from streamimb.pipeline import InputRecord, Pipeline
from streamimb.processor import Processor
from streamimb.runtime import prepare_gc_for_streaming
from streamimb.simulate.cards import CardStream

sys.path.insert(0, str(Path(__file__).resolve().parent))
from readme_figures import provenance, write_figures

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "throughput.md"
SCHEMA = DEMO_CONFIG["schema"]
NUMERIC = SCHEMA["numeric"]
CATEGORICAL = SCHEMA["categorical"]
BATCH = 500
CHUNK = 1_000  # events each replayed pipeline processes in its turn


# --------------------------------------------------------------------------------------------- data
def card_records(n: int, seed: int = 42) -> list[bytes]:
    """JSON card transactions with their label inline (fraud rate shifting 0.5% -> 2% -> 0.3%)."""
    out = []
    for tx, label in islice(CardStream(seed=seed), n):
        out.append(json.dumps({**tx, "label": label["label"]}, separators=(",", ":")).encode())
    return out


def service_config(batch: bool, **extra: Any) -> ServiceConfig:
    """The default model (no model settings but the mode) on the card schema."""
    return ServiceConfig.model_validate({"schema": SCHEMA, "model": {"batch": batch}, **extra})


def pipeline_of(cfg: ServiceConfig) -> tuple[Pipeline, Processor]:
    """A fresh pipeline for ``cfg`` on the card stream's classes, and its Processor."""
    processor = Processor(cfg.model, positive="1", classes=["0", "1"])
    return Pipeline(processor, EventDecoder(cfg.event_schema)), processor


def bench_inputs(records: list[bytes], offset: int = 0) -> list[InputRecord]:
    """Raw records as a source hands them to ``Pipeline.handle``, numbered from ``offset``."""
    return [InputRecord(r, None, None, "bench", 0, offset + i) for i, r in enumerate(records)]


def handle_all(pipeline: Pipeline, inputs: list[InputRecord]) -> None:
    """``Pipeline.handle`` over ``inputs`` in batches of ``BATCH``."""
    for k in range(0, len(inputs), BATCH):
        pipeline.handle(inputs[k : k + BATCH])


@dataclass
class Measurement:
    name: str
    events: int
    wall_s: float
    cpu_s: float
    latencies: np.ndarray = field(repr=False)

    @property
    def eps_wall(self) -> float:
        return self.events / self.wall_s if self.wall_s > 0 else math.nan

    @property
    def eps_cpu(self) -> float:
        return self.events / self.cpu_s if self.cpu_s > 0 else math.nan

    def p(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) if len(self.latencies) else math.nan


# --------------------------------------------------------------------------------------------- replay
class Replay:
    """One pipeline replaying the stream chunk by chunk; its CPU time, wall time and latencies add up.

    ``handle(records, offset)`` processes one chunk and returns each event's latency.
    """

    def __init__(self, name: str, handle: Callable[[list[bytes], int], list[float]], n: int) -> None:
        self.name, self.handle = name, handle
        self.latencies = np.empty(n)
        self.done = 0
        self.wall = self.cpu = 0.0

    def feed(self, records: list[bytes]) -> None:
        wall, cpu = time.perf_counter(), time.thread_time()
        lat = self.handle(records, self.done)
        self.cpu += time.thread_time() - cpu
        self.wall += time.perf_counter() - wall
        self.latencies[self.done : self.done + len(lat)] = lat
        self.done += len(lat)

    def measurement(self) -> Measurement:
        return Measurement(self.name, self.done, self.wall, self.cpu, self.latencies[: self.done])


def streamimb_replay(batch: bool, n: int) -> Replay:
    """``Pipeline.handle`` over batches of raw JSON records; latency = batch start to the event's verdict."""
    pipeline, _ = pipeline_of(service_config(batch))

    def handle(records: list[bytes], offset: int) -> list[float]:
        out: list[float] = []
        for k in range(0, len(records), BATCH):
            lat = pipeline.handle(bench_inputs(records[k : k + BATCH], offset + k)).latencies
            out += lat if batch else np.cumsum(lat).tolist()
        return out

    return Replay(f"streamimb {'batch' if batch else 'per-event'}", handle, n)


def river_replay(n: int) -> Replay:
    model = PlainRiver()
    clock = time.perf_counter

    def handle(records: list[bytes], offset: int) -> list[float]:
        out = []
        for raw in records:
            started = clock()
            model.step(raw)
            out.append(clock() - started)
        return out

    return Replay("plain river", handle, n)


def replay_round(records: list[bytes], kinds: dict[str, Callable[[int], Replay]]) -> dict[str, Measurement]:
    """Every pipeline over the same stream, ``CHUNK`` events each in turn, so that the machine's changes of
    speed during the round (other jobs, clock throttling) fall on all of them alike."""
    runs = {kind: make(len(records)) for kind, make in kinds.items()}
    gc.collect()
    for k in range(0, len(records), CHUNK):
        for run in runs.values():
            run.feed(records[k : k + CHUNK])
    return {kind: run.measurement() for kind, run in runs.items()}


class PlainRiver:
    """The default pipeline's models, the way a river user writes them: one event at a time, dicts.

    Half-space trees on min-max scaled features; oversampling online bagging (OOB) of ``N_MODELS``
    Hoeffding trees set up as streamimb's (Gini, majority-class leaves, grace 50, delta 1e-3), each
    learning an event ``Poisson(λ_y)`` times with ``λ`` from decayed class counts; a prior-corrected
    decision; ADWIN on the score (per block) and the error; river metrics.
    """

    N_MODELS = 10

    def __init__(self, seed: int = 42) -> None:
        self.detector = preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(
            n_trees=25, height=8, window_size=250, seed=seed
        )
        self.models = [
            tree.HoeffdingTreeClassifier(
                grace_period=50,
                delta=1e-3,
                split_criterion="gini",
                leaf_prediction="mc",
                max_share_to_split=1.0,
            )
            for _ in range(self.N_MODELS)
        ]
        self.rng = np.random.default_rng(seed)
        self.score_drift = drift.ADWIN()
        self.error_drift = drift.ADWIN()
        self.metrics = [metrics.F1(pos_val="1"), metrics.ROCAUC(pos_val="1"), metrics.CohenKappa()]
        self.counts = {"0": 1.0, "1": 1.0}
        self.block = 0.0
        self.n = 0

    def step(self, raw: bytes) -> bool:
        doc = json.loads(raw)
        x = {name: float(doc[name]) for name in NUMERIC if doc.get(name) is not None}
        for name in CATEGORICAL:
            if doc.get(name) is not None:
                x[f"{name}={doc[name]}"] = 1.0
        y = str(doc["label"])
        score = self.detector.score_one(x)
        votes = [m.predict_proba_one(x) for m in self.models]
        p1 = sum(v.get("1", 0.0) for v in votes) / len(votes)
        predicted = "1" if p1 > 0.5 else "0"  # members learn a balanced sample: 0.5 is the prior-free cut
        self.detector.learn_one(x)
        self.block += score
        self.n += 1
        if self.n % 250 == 0:
            self.score_drift.update(self.block / 250)
            self.block = 0.0
        for m in self.metrics:
            m.update(y, p1 if isinstance(m, metrics.ROCAUC) else predicted)
        self.error_drift.update(float(predicted != y))
        for c in self.counts:
            self.counts[c] *= 0.9995
        self.counts[y] += 1.0
        rate = max(self.counts.values()) / self.counts[y]
        for model, k in zip(self.models, self.rng.poisson(rate, self.N_MODELS), strict=True):
            if k:
                model.learn_one(x, y, w=float(k))
        return predicted == "1"


# --------------------------------------------------------------------------------------------- kafka
class Broker:
    """The embedded broker with the benchmark's events topic, produced once."""

    def __init__(self, records: list[bytes]) -> None:
        from streamimb.io.kafka import produce_records
        from streamimb.service.broker import EmbeddedBroker

        self.broker = EmbeddedBroker()
        self.broker.start()
        self.topic = f"bench-events-{uuid.uuid4().hex[:8]}"
        self.broker.create_topics([self.topic, "bench-alerts", "bench-dead"], 1)
        started = time.perf_counter()
        produce_records(self.broker.bootstrap, self.topic, records, timeout_s=120.0)
        self.produce_s = time.perf_counter() - started
        self.n = len(records)

    def kafka(self, **overrides: Any):
        from streamimb.io.kafka import KafkaConfig

        settings = {
            "bootstrap_servers": self.broker.bootstrap,
            "group_id": f"bench-{uuid.uuid4().hex[:10]}",
            "events_topic": self.topic,
            "alerts_topic": "bench-alerts",
            "dead_letter_topic": "bench-dead",
            "session_timeout_ms": 6_000,
            "heartbeat_interval_ms": 1_000,
            "poll_timeout_ms": 200,
            **overrides,
        }
        return KafkaConfig(**settings)

    def stop(self) -> None:
        self.broker.stop()


class BatchClock:
    """Times a consumer loop from the end of its first non-empty batch (the group join is left out)."""

    def __init__(self) -> None:
        self.first: tuple[float, float] | None = None
        self.last: tuple[float, float] = (0.0, 0.0)
        self.events = 0
        self.latencies: list[float] = []
        self._prev = 0.0

    def batch(self, n: int) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        if self.first is None:
            self.first = (now, cpu)
        else:
            self.events += n
            self.latencies.extend([now - self._prev] * n)
        self._prev = now
        self.last = (now, cpu)

    def measurement(self, name: str) -> Measurement:
        if self.first is None:
            return Measurement(name, 0, math.nan, math.nan, np.array([]))
        wall = self.last[0] - self.first[0]
        cpu = self.last[1] - self.first[1]
        return Measurement(name, self.events, wall, cpu, np.asarray(self.latencies))


class CommitTimer:
    """When a floor commits: as often as the service does (`kafka.commit_interval_ms`), and at the end."""

    def __init__(self, broker: Broker) -> None:
        self.interval = broker.kafka().commit_interval_ms / 1000
        self.n = broker.n
        self.last = time.monotonic()

    def due(self, seen: int) -> bool:
        if seen < self.n and time.monotonic() - self.last < self.interval:
            return False
        self.last = time.monotonic()
        return True


def e2e_streamimb(broker: Broker, batch: bool, client: str = "kafka-python") -> Measurement | None:
    """The real service loop; a batch's latency is its cycle: poll, decode, process, deliver, commit.
    ``client``: the consumer's client (``kafka.client``); None if that client is not installed."""
    from streamimb.service.runner import ServiceRunner

    if client == "confluent" and importlib.util.find_spec("confluent_kafka") is None:
        return None
    clock = BatchClock()
    cfg = service_config(
        batch,
        kafka=broker.kafka(client=client).model_dump(),
        service={"max_events": broker.n, "idle_timeout": 30.0, "status_interval": 1e9},
    )
    ServiceRunner(cfg, on_batch=lambda _runner, outcome: clock.batch(outcome.consumed)).run()
    suffix = "" if client == "kafka-python" else f" ({client} client)"
    return clock.measurement(f"streamimb {'batch' if batch else 'per-event'}{suffix}")


def _kafka_python_loop(broker: Broker, name: str, handle: Callable[[list], None]) -> Measurement:
    from streamimb.io.kafka import KafkaSource

    clock = BatchClock()
    source = KafkaSource(broker.kafka(), [broker.topic])
    seen = 0
    deadline = time.monotonic() + 120
    commits = CommitTimer(broker)
    try:
        while seen < broker.n and time.monotonic() < deadline:
            records = source.poll()
            if not records:
                continue
            handle(records)
            seen += len(records)
            if commits.due(seen):
                source.commit({(broker.topic, 0): records[-1].offset + 1})
            clock.batch(len(records))
    finally:
        source.close()
    return clock.measurement(name)


def e2e_plain_river(broker: Broker) -> Measurement:
    model = PlainRiver()

    def handle(records: list) -> None:
        for r in records:
            model.step(r.value)

    return _kafka_python_loop(broker, "plain river", handle)


def floor_kafka_python(broker: Broker, decode: bool = True) -> Measurement:
    decoder = EventDecoder(service_config(True).event_schema)

    def handle(records: list) -> None:
        if decode:
            for r in records:
                decoder.decode_json(r.value)

    name = "floor kafka-python: consume + decode" if decode else "floor kafka-python: consume only"
    return _kafka_python_loop(broker, name, handle)


def floor_confluent(broker: Broker, decode: bool = True) -> Measurement | None:
    try:
        from confluent_kafka import Consumer
    except ImportError:
        return None
    decoder = EventDecoder(service_config(True).event_schema)
    consumer = Consumer(
        {
            "bootstrap.servers": broker.broker.bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex[:10]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000,
        }
    )
    clock = BatchClock()
    consumer.subscribe([broker.topic])
    seen = 0
    deadline = time.monotonic() + 120
    commits = CommitTimer(broker)
    try:
        while seen < broker.n and time.monotonic() < deadline:
            messages = consumer.consume(num_messages=BATCH, timeout=0.2)
            values = [m.value() for m in messages if m.error() is None]
            if not values:
                continue
            if decode:
                for v in values:
                    decoder.decode_json(v)
            seen += len(values)
            if commits.due(seen):
                consumer.commit(message=messages[-1], asynchronous=False)
            clock.batch(len(values))
    finally:
        consumer.close()
    name = "floor confluent-kafka: consume + decode" if decode else "floor confluent-kafka: consume only"
    return clock.measurement(name)


# --------------------------------------------------------------------------------------------- profile
COMPONENTS: list[tuple[str, str, str]] = [
    # (label, path fragment of the callee's file, function name or "*")
    ("decode (JSON + schema)", "streamimb/decoding.py", "*"),
    ("feature extraction", "streamimb/features.py", "*"),
    ("anomaly detector", "streamimb/processor.py", "score_learn_many"),
    ("anomaly detector", "river/compose/pipeline.py", "*"),
    ("anomaly detector", "streamimb/detectors/hst.py", "*"),
    ("classifier predict (imbalance wrapper + tree)", "streamimb/imbalance/strategy.py", "predict_proba_one"),
    (
        "classifier predict (imbalance wrapper + tree)",
        "streamimb/imbalance/strategy.py",
        "predict_proba_batch",
    ),
    ("classifier learn (imbalance wrapper + tree)", "streamimb/imbalance/strategy.py", "learn_one"),
    ("classifier learn (imbalance wrapper + tree)", "streamimb/imbalance/strategy.py", "learn_batch"),
    ("threshold policy", "streamimb/imbalance/threshold.py", "*"),
    ("prior tracker", "streamimb/imbalance/priors.py", "*"),
    ("score calibration", "streamimb/detectors/calibration.py", "*"),
    ("drift monitors", "streamimb/detectors/drift.py", "*"),
    ("prequential metrics", "streamimb/evaluation/prequential.py", "*"),
    ("records (Event, Verdict, Alert)", "<string>", "__init__"),
]
OWNERS = ("streamimb/processor.py", "streamimb/pipeline.py")


def _component(key: tuple[str, int, str]) -> str | None:
    filename, _, func = key
    for label, fragment, name in COMPONENTS:
        if fragment in filename and (name == "*" or name == func):
            return label
    return None


def profile_components(records: list[bytes], batch: bool, wall_us: float) -> list[tuple[str, float, float]]:
    """Share of the pipeline's time per component: callees of Processor/Pipeline, by caller attribution."""
    pipeline, _ = pipeline_of(service_config(batch))
    inputs = bench_inputs(records)
    profiler = cProfile.Profile()
    profiler.enable()
    handle_all(pipeline, inputs)
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    total = 0.0
    for key, (_, _, _, ct, _) in stats.items():
        if key[0].endswith("streamimb/pipeline.py") and key[2] == "handle":
            total += ct
    shares: dict[str, float] = {}
    for key, (_, _, _, _, callers) in stats.items():
        label = _component(key)
        if label is None:
            continue
        for caller, (_, _, _, ct) in callers.items():
            if any(caller[0].endswith(owner) for owner in OWNERS) and _component(caller) != label:
                shares[label] = shares.get(label, 0.0) + ct
    shares["Processor + Pipeline own code"] = max(total - sum(shares.values()), 0.0)
    rows = sorted(shares.items(), key=lambda kv: -kv[1])
    return [(label, t / total, t / total * wall_us) for label, t in rows]


def compiled_time(records: list[bytes], warmup: int) -> dict[str, float]:
    """CPU time per event spent inside streamimb's compiled (numba) kernels, call included, in batch mode.

    After ``warmup`` events (every kernel loaded or compiled), each kernel that Python code calls through
    a module global is timed while the rest of ``records`` is replayed; the kernels they call in turn are
    compiled into them. Returns the kernels' us/event, the replay's us/event (timers included) and the
    kernel calls per batch.
    """
    from numba.core.dispatcher import Dispatcher

    pipeline, _ = pipeline_of(service_config(True))
    inputs = bench_inputs(records)
    handle_all(pipeline, inputs[:warmup])
    spent = [0, 0]  # ns inside kernels, calls
    clock = time.thread_time_ns

    def timed(kernel: Any) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            started = clock()
            try:
                return kernel(*args)
            finally:
                spent[0] += clock() - started
                spent[1] += 1

        return call

    patched = [
        (module, name, value)
        for module_name, module in list(sys.modules.items())
        if module_name.startswith("streamimb")
        for name, value in list(vars(module).items())
        if isinstance(value, Dispatcher)
    ]
    measured = inputs[warmup:]
    try:
        for module, name, kernel in patched:
            setattr(module, name, timed(kernel))
        started = clock()
        handle_all(pipeline, measured)
        total = clock() - started
    finally:
        for module, name, kernel in patched:
            setattr(module, name, kernel)
    n = len(measured)
    return {
        "kernel_us": spent[0] / n / 1e3,
        "total_us": total / n / 1e3,
        "calls_per_batch": spent[1] / max(n / BATCH, 1),
        "events": n,
    }


def rss_mib() -> float:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return math.nan


def memory_profile(n: int, keep_history: bool, seed: int = 7) -> list[tuple[int, float, int]]:
    """RSS after every tenth of a long batch-mode replay (events generated on the fly, taking no room)."""
    cfg = ServiceConfig.model_validate(
        {"schema": SCHEMA, "model": {"batch": True, "evaluation": {"keep_history": keep_history}}}
    )
    pipeline, processor = pipeline_of(cfg)
    stream = iter(CardStream(seed=seed))
    points = []
    done = 0
    step = max(n // 10, BATCH)
    gc.collect()
    while done < n:
        chunk = [
            InputRecord(json.dumps({**tx, "label": lab["label"]}).encode(), None, None, "m", 0, done + i)
            for i, (tx, lab) in enumerate(islice(stream, BATCH))
        ]
        pipeline.handle(chunk)
        done += len(chunk)
        if done % step < BATCH:
            gc.collect()
            tree_nodes = sum(getattr(m, "n_nodes", 0) for m in getattr(processor.classifier, "models", []))
            points.append((done, rss_mib(), tree_nodes))
    return points


# --------------------------------------------------------------------------------------------- driver
def median_of(runs: list[Measurement]) -> Measurement:
    """The run with the median CPU throughput (its latencies come with it)."""
    ordered = sorted(runs, key=lambda m: m.eps_cpu if not math.isnan(m.eps_cpu) else -1)
    return ordered[len(ordered) // 2]


def median_wall(runs: list[Measurement]) -> Measurement:
    ordered = sorted(runs, key=lambda m: m.eps_wall if not math.isnan(m.eps_wall) else -1)
    return ordered[len(ordered) // 2]


def run(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"args": vars(args)}
    records = card_records(max(args.events, args.e2e_events))
    replay_records = records[: args.events]
    out["record_bytes"] = float(np.mean([len(r) for r in replay_records]))
    # As `streamimb run` and `replay` do before their loops; every pipeline measured below runs after it.
    prepare_gc_for_streaming()
    replay_round(replay_records[:2000], {"batch": lambda n: streamimb_replay(True, n)})  # warm-up: compiled
    print(f"{len(replay_records)} events, {out['record_bytes']:.0f} bytes each on average", flush=True)
    kinds: dict[str, Callable[[int], Replay]] = {
        "batch": lambda n: streamimb_replay(True, n),
        "per_event": lambda n: streamimb_replay(False, n),
        "river": river_replay,
    }
    replay_runs: dict[str, list[Measurement]] = {k: [] for k in kinds}
    for r in range(args.repeats):
        for kind, m in replay_round(replay_records, kinds).items():
            replay_runs[kind].append(m)
            print(f"  replay round {r + 1} {m.name:<22} {m.eps_cpu:>9,.0f} events/CPU-s", flush=True)
    out["replay"] = {k: median_of(v) for k, v in replay_runs.items()}
    out["replay_all"] = replay_runs

    print("profile (cProfile, attributed by caller)", flush=True)
    prof_records = replay_records[: args.profile_events]
    out["profile"] = {
        mode: profile_components(prof_records, mode == "batch", 1e6 / out["replay"][key].eps_cpu)
        for mode, key in (("batch", "batch"), ("per-event", "per_event"))
    }

    print("time in compiled kernels", flush=True)
    warmup = min(5_000, len(replay_records) // 3)
    out["compiled"] = compiled_time(replay_records[: warmup + args.profile_events], warmup)

    if not args.no_kafka:
        out.update(run_kafka(records[: args.e2e_events], args.e2e_repeats, args.client_rounds))
    if args.memory_events:
        print("memory", flush=True)
        out["memory"] = {
            keep: memory_profile(args.memory_events, keep) for keep in (False, True) if keep or not args.quick
        }
    return out


def run_kafka(records: list[bytes], repeats: int, client_rounds: int) -> dict[str, Any]:
    try:
        broker = Broker(records)
    except Exception as exc:  # no tansu binary, or it would not start
        print(f"embedded broker unavailable, end-to-end skipped: {exc}", flush=True)
        return {"e2e_skipped": str(exc)}
    print(f"broker up, {broker.n} events produced in {broker.produce_s:.1f}s", flush=True)
    kinds: dict[str, Callable[[], Measurement | None]] = {
        "batch": lambda: e2e_streamimb(broker, True),
        "batch_confluent": lambda: e2e_streamimb(broker, True, "confluent"),
        "per_event": lambda: e2e_streamimb(broker, False),
        "river": lambda: e2e_plain_river(broker),
        "floor": lambda: floor_kafka_python(broker, True),
        "floor_consume": lambda: floor_kafka_python(broker, False),
        "confluent": lambda: floor_confluent(broker, True),
        "confluent_consume": lambda: floor_confluent(broker, False),
    }
    runs: dict[str, list[Measurement]] = {k: [] for k in kinds}
    pairs: list[tuple[Measurement, Measurement]] = []
    try:
        for r in range(repeats):
            for kind, fn in kinds.items():
                m = fn()
                if m is None:
                    continue
                runs[kind].append(m)
                print(f"  e2e round {r + 1} {m.name:<40} {m.eps_wall:>9,.0f} events/s", flush=True)
        for r in range(client_rounds if "batch_confluent" in {k for k, v in runs.items() if v} else 0):
            # the two consumers back to back, in alternating order: a ratio within a round of the machine
            first, second = ("batch", "batch_confluent") if r % 2 == 0 else ("batch_confluent", "batch")
            got = {first: kinds[first](), second: kinds[second]()}
            pairs.append((got["batch"], got["batch_confluent"]))
            print(f"  client round {r + 1}: {got['batch_confluent'].eps_wall / got['batch'].eps_wall:.2f}x")
    finally:
        broker.stop()
    return {
        "e2e": {k: median_wall(v) for k, v in runs.items() if v},
        "e2e_events": len(records),
        "client_pairs": pairs,
    }


# --------------------------------------------------------------------------------------------- report
def _row(m: Measurement, wall: bool = False) -> str:
    eps = m.eps_wall if wall else m.eps_cpu
    return (
        f"| {m.name} | {eps:,.0f} | {1e6 / eps:,.1f} | {m.p(50) * 1e3:,.2f} | {m.p(99) * 1e3:,.2f} |"
        if eps and not math.isnan(eps)
        else f"| {m.name} | - | - | - | - |"
    )


def report(out: dict[str, Any]) -> str:
    args = out["args"]
    rp = out["replay"]
    lines = [
        "# Throughput: the default pipeline vs plain river vs the Kafka client floor",
        "",
        f"Generated by `{out['origin']['command']}` on {out['origin']['date']} at commit "
        f"{out['origin']['commit']}, Python {platform.python_version()}, river {river.__version__}, "
        f"numpy {np.__version__}, {os.cpu_count()} CPUs (shared with other jobs: compare within this file).",
        "",
        f"Stream: {args['events']:,} card transactions (`streamimb.simulate.cards`, JSON with the label "
        f"inline, {out['record_bytes']:.0f} bytes on average, fraud 0.5% -> 2%), the default model config "
        "(numpy/river half-space trees 25x8 + `oob` over 10 numpy Hoeffding trees (river's Hoeffding "
        "trees in per-event mode) + `max_f1` threshold + drift monitors on score and error + prequential "
        "metrics). Every event is labelled, so the classifier learns every event. Medians of "
        f"{args['repeats']} interleaved rounds. All pipelines run with the garbage collector set as "
        "`streamimb run` and `replay` set it (`streamimb.runtime.prepare_gc_for_streaming`: start-up heap "
        "frozen, young objects collected every 20,000 allocations).",
        "",
        "## Replay (decode + process, batches of 500, one thread)",
        "",
        "Events per CPU-second of the benchmark thread; latency from the moment a batch is handed over to "
        "the event's verdict (batch mode: the whole batch; per-event: the events before it in the batch, "
        "and itself; plain river: the event alone).",
        "",
        "| pipeline | events/CPU-s | us/event | p50 latency ms | p99 latency ms |",
        "|---|---:|---:|---:|---:|",
        _row(rp["batch"]),
        _row(rp["per_event"]),
        _row(rp["river"]),
        "",
    ]
    batch_eps = rp["batch"].eps_cpu
    lines += [
        f"- batch mode vs plain river: **{ratio(out, 'river'):.2f}x** (goal: >= 10x); "
        f"vs per-event mode: {ratio(out, 'per_event'):.2f}x.",
        f"- batch mode: **{batch_eps:,.0f} events/CPU-s** (goal: >= 50,000).",
        "",
        "Per-round numbers (events/CPU-s): "
        + "; ".join(
            f"{k}: " + ", ".join(f"{m.eps_cpu:,.0f}" for m in v) for k, v in out["replay_all"].items()
        )
        + "; batch / plain river by round: "
        + ", ".join(f"{r:.2f}x" for r in round_ratios(out, "river")),
        "",
        f"## Where the time goes (cProfile over {args['profile_events']:,} events, attributed by caller)",
        "",
        "Share of `Pipeline.handle`'s profiled time spent in each component called by the Processor or the "
        "Pipeline; us/event scales the share to the unprofiled time above (cProfile inflates pure-Python "
        "code more than numpy code, so read these as proportions).",
        "",
    ]
    for mode, rows in out["profile"].items():
        lines += [f"**{mode}**", "", "| component | share | us/event |", "|---|---:|---:|"]
        lines += [f"| {label} | {share:.1%} | {us:.1f} |" for label, share, us in rows]
        lines.append("")
    compiled = out["compiled"]
    lines += [
        "**Compiled code.** Timed inside every numba kernel that Python calls (the trees' routing, "
        "counting, split search and drift watch, the half-space trees and their scaler, the calibrators), "
        f"over {compiled['events']:,} batch-mode events after a warm-up: **{compiled['kernel_us']:.1f} "
        f"us/event** in {compiled['calls_per_batch']:.0f} calls per batch of {BATCH}, of "
        f"{compiled['total_us']:.1f} us/event in all (timers included). The rest is Python and numpy "
        "calls around them: decoding, feature dicts, rows, verdicts, bookkeeping.",
        "",
    ]
    if "e2e" in out:
        e2e = out["e2e"]
        lines += [
            f"## End to end through the embedded broker ({out['e2e_events']:,} events, 1 partition)",
            "",
            "Events per wall-clock second from the end of the first poll batch to the last (the group join "
            "is left out); latency = the batch's cycle (poll, decode, process, send alerts; commits, after "
            "the alerts they cover are acknowledged, every `kafka.commit_interval_ms` = 1 s). The floor "
            "consumes, decodes and commits (as often) the same events with no processing.",
            "",
            "| consumer | events/s | us/event | p50 batch cycle ms | p99 batch cycle ms |",
            "|---|---:|---:|---:|---:|",
        ]
        lines += [_row(m, wall=True) for m in e2e.values()]
        lines.append("")
        floor = e2e["floor"].eps_wall
        if "batch" in e2e:
            lines.append(
                f"- streamimb batch mode reaches **{e2e['batch'].eps_wall / floor:.0%} of the kafka-python "
                f"floor** (goal: >= 80%); per-event mode {e2e['per_event'].eps_wall / floor:.0%}; "
                f"plain river {e2e['river'].eps_wall / floor:.0%}."
            )
        if "confluent" in e2e and "batch_confluent" in e2e:
            fast = e2e["batch_confluent"].eps_wall
            lines.append(
                f"- With `kafka.client: confluent` (librdkafka) streamimb batch mode runs at {fast:,.0f} "
                f"events/s and reaches **{fast / e2e['confluent'].eps_wall:.0%} of the confluent-kafka "
                f"floor** (goal: >= 80%); that floor is {e2e['confluent'].eps_wall / floor:.1f}x "
                f"kafka-python's ({1e6 / e2e['confluent'].eps_wall:.1f} vs {1e6 / floor:.1f} us/event)."
            )
        if out.get("client_pairs"):
            ratios = client_ratios(out)
            lines.append(
                f"- Client against client, {len(ratios)} more rounds of the two batch-mode services back to "
                "back (alternating which goes first): the confluent consumer gives "
                f"**{float(np.median(ratios)):.2f}x** the kafka-python consumer's throughput (rounds: "
                + ", ".join(f"{r:.2f}x" for r in ratios)
                + ")."
            )
        lines.append("")
    elif "e2e_skipped" in out:
        lines += ["## End to end", "", f"Skipped: {out['e2e_skipped']}", ""]
    if "memory" in out:
        lines += [
            "## Memory (resident set size during a long batch-mode replay)",
            "",
            "| evaluation.keep_history | "
            + " | ".join(f"{n:,}" for n, _, _ in next(iter(out["memory"].values())))
            + " |",
            "|---|" + "---:|" * len(next(iter(out["memory"].values()))),
        ]
        for keep, points in out["memory"].items():
            lines.append(f"| {keep} | " + " | ".join(f"{mib:.0f} MiB" for _, mib, _ in points) + " |")
        points = next(iter(out["memory"].values()))
        lines.append("| Hoeffding tree nodes | " + " | ".join(f"{nodes:,}" for _, _, nodes in points) + " |")
        lines.append("")
        for keep, points in out["memory"].items():
            half = points[len(points) // 2 - 1]
            growth = (points[-1][1] - half[1]) / max(points[-1][0] - half[0], 1) * 1e6
            lines.append(
                f"- keep_history={keep}: {growth:,.0f} MiB per million events (second half of the run)."
            )
        lines.append("")
    lines += conclusions(out)
    return "\n".join(lines)


def round_ratios(out: dict[str, Any], other: str) -> list[float]:
    """Batch mode's throughput over ``other``'s, round by round (both measured side by side)."""
    runs = out["replay_all"]
    return [b.eps_cpu / o.eps_cpu for b, o in zip(runs["batch"], runs[other], strict=True)]


def client_ratios(out: dict[str, Any]) -> list[float]:
    """End to end, the confluent consumer's throughput over kafka-python's, round by round."""
    return [fast.eps_wall / slow.eps_wall for slow, fast in out["client_pairs"]]


def ratio(out: dict[str, Any], other: str) -> float:
    """The median of the rounds' ratios of batch mode over ``other``."""
    return float(np.median(round_ratios(out, other)))


def floor_goals(e2e: dict[str, Measurement]) -> dict[str, bool]:
    """Per consumer client measured: whether streamimb batch mode reached 80% of that client's floor."""
    clients = (("kafka-python", "batch", "floor"), ("confluent", "batch_confluent", "confluent"))
    return {
        name: e2e[kind].eps_wall >= 0.8 * e2e[floor].eps_wall
        for name, kind, floor in clients
        if kind in e2e and floor in e2e
    }


def goals(out: dict[str, Any]) -> str:
    rp, e2e = out["replay"], out.get("e2e", {})
    checks = [
        ("10x plain river", ratio(out, "river") >= 10),
        ("50,000 events/s", rp["batch"].eps_cpu >= 50_000),
    ]
    checks += [(f"80% of the client floor ({name})", met) for name, met in floor_goals(e2e).items()]
    return ", ".join(f"{name} **{'met' if ok else 'not met'}**" for name, ok in checks)


def conclusions(out: dict[str, Any]) -> list[str]:
    """What the numbers say, computed from them (so a rerun cannot leave stale prose behind)."""
    shares = {label: us for label, _, us in out["profile"]["batch"]}
    river_detector = {label: us for label, _, us in out["profile"]["per-event"]}.get("anomaly detector", 0.0)
    classifier = sum(us for label, us in shares.items() if label.startswith("classifier"))
    total = sum(shares.values())
    lines = [
        "## Reading these numbers",
        "",
        f"- Batch mode is {ratio(out, 'per_event'):.1f}x the per-event path and "
        f"{ratio(out, 'river'):.1f}x plain river. Goals: {goals(out)}.",
        "- The classifier (10 numpy Hoeffding trees behind `oob`, scoring and learning each batch as "
        f"arrays) costs {classifier:.0f} of the {total:.0f} us an event costs in batch mode; the "
        f"half-space trees (compiled with numba) {shares.get('anomaly detector', 0.0):.1f} us (river's: "
        f"{river_detector:.0f} us). The largest parts: "
        + ", ".join(f"{label} {us:.1f} us" for label, us in sorted(shares.items(), key=lambda kv: -kv[1])[:4])
        + " (cProfile inflates pure-Python code: the decode and bookkeeping shares are upper bounds).",
    ]
    e2e = out.get("e2e", {})
    if "batch" in e2e and "batch_confluent" in e2e and out.get("client_pairs"):
        lines.append(
            f"- The confluent-kafka consumer (`kafka.client: confluent`) gives "
            f"{float(np.median(client_ratios(out))):.2f}x the end-to-end throughput (median of the client "
            f"rounds): kafka-python spends {1e6 / e2e['floor_consume'].eps_wall:.1f} us/event checking and "
            f"parsing records in Python, librdkafka {1e6 / e2e['confluent_consume'].eps_wall:.1f} us. The "
            "rest is the pipeline's own processing"
            + (
                ", which is why neither reaches 80% of its floor."
                if not any(floor_goals(e2e).values())
                else "."
            )
        )
    kernels = out["compiled"]["kernel_us"]
    budgets = [
        (name, 0.25 * 1e6 / e2e[floor].eps_wall)
        for name, floor in (("kafka-python", "floor"), ("confluent-kafka", "confluent"))
        if floor in e2e
    ]
    if budgets:
        lines.append(
            "- What 80% of a floor allows: a consumer at 80% of the floor's rate may spend 1.25x the floor's "
            "time per event, so 0.25x the floor's time is left for processing: "
            + " and ".join(f"{us:.1f} us/event with {name}" for name, us in budgets)
            + f". The default models' compiled kernels alone take {kernels:.1f} us/event"
            + (
                ", so on this machine no amount of Python overhead removed reaches those goals with these "
                "models on one thread."
                if kernels > max(us for _, us in budgets)
                else "."
            )
        )
    lines.append(
        f"- 50,000 events/CPU-s is 20 us/event; the compiled kernels take {kernels:.1f}, which leaves "
        f"{max(20.0 - kernels, 0.0):.1f} us/event for decoding and everything done per event in Python "
        f"(now {max(1e6 / out['replay']['batch'].eps_cpu - kernels, 0.0):.1f})."
    )
    if "memory" in out:
        lines.append(
            "- Memory: the pipeline's own state is bounded (fixed-size half-space trees and windows, "
            "Hoeffding trees capped by `max_nodes`); what grows is, with `evaluation.keep_history` "
            "(the default, meant for replay reports), the per-event history kept for exact AUCs "
            "(capped at `max_history` events)."
        )
    lines.append("")
    return lines


def figures(out: dict[str, Any]) -> dict[str, Any]:
    """The key figures measured (benchmarks/results/throughput.json, quoted by the README)."""
    e2e = out.get("e2e", {})
    return {
        "cpus": os.cpu_count(),
        "events": out["args"]["events"],
        "replay": {
            kind: {"eps": round(m.eps_cpu, 1), "us_per_event": round(1e6 / m.eps_cpu, 2)}
            for kind, m in out["replay"].items()
        },
        "ratio_river": round(ratio(out, "river"), 3),
        "ratio_river_rounds": [round(x, 3) for x in round_ratios(out, "river")],
        "ratio_per_event": round(ratio(out, "per_event"), 3),
        "kernel_us": round(out["compiled"]["kernel_us"], 2),
        "e2e": {kind: round(m.eps_wall, 1) for kind, m in e2e.items()},
        "client_ratio": round(float(np.median(client_ratios(out))), 3) if out.get("client_pairs") else None,
        "client_ratio_rounds": [round(x, 3) for x in client_ratios(out)] if out.get("client_pairs") else [],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small run (< 1 minute); prints only")
    parser.add_argument("--events", type=int, default=None, help="replay events")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved replay rounds")
    parser.add_argument("--e2e-events", type=int, default=None, help="events through the broker")
    parser.add_argument("--e2e-repeats", type=int, default=None)
    parser.add_argument(
        "--client-rounds", type=int, default=None, help="extra rounds: batch mode, kafka-python vs confluent"
    )
    parser.add_argument("--profile-events", type=int, default=None)
    parser.add_argument("--memory-events", type=int, default=None, help="0: skip the memory run")
    parser.add_argument("--no-kafka", action="store_true", help="skip the broker runs")
    parser.add_argument(
        "--out", type=Path, default=None, help=f"results file (default {RESULTS} unless quick)"
    )
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "events": 5_000 if quick else 40_000,
        "repeats": 1 if quick else 3,
        "e2e_events": 5_000 if quick else 40_000,
        "e2e_repeats": 1 if quick else 2,
        "client_rounds": 2 if quick else 6,
        "profile_events": 3_000 if quick else 15_000,
        "memory_events": 20_000 if quick else 200_000,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    cli = argv if argv is not None else sys.argv[1:]
    origin = provenance(" ".join([".venv/bin/python benchmarks/throughput.py", *cli]))
    out = run(args)
    out["origin"] = origin
    text = report(out)
    print()
    print(text)
    target = args.out if args.out is not None else (None if args.quick else RESULTS)
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text + f"\nTotal benchmark time: {time.perf_counter() - started:.0f} s.\n")
        figures_file = write_figures(target.stem, origin, figures(out), target.parent)
        print(f"written to {target} and {figures_file}")
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
