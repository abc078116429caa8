"""Soak: 1 million card transactions through the service's code path; memory must stay flat.

Replays ``streamimb.simulate.cards.CardStream`` (fraud bursts, a shifting fraud rate, chargeback labels that
arrive 1-10 days later in event time) as raw Kafka-shaped records through ``ServiceRunner.process_batch``:
decode, one Processor and one LabelJoiner per partition (3 partitions, keyed by card), late labels on a
co-partitioned labels topic, dead letters for a malformed record every 1,000 events, and a signed checkpoint
of every partition every 100,000 events. The Kafka client is left out (poll batches of 500 are built in
memory) so that the 1M events fit in minutes on 2 cores; the end-to-end Kafka path is measured by
``benchmarks/throughput.py`` and the fault tests.

Every 50,000 events it records the process's resident memory (VmRSS), the pending predictions and early
labels held by the joiners, and the last checkpoint sizes. Writes ``benchmarks/results/soak.md``.

    .venv/bin/python benchmarks/soak.py            # 1,000,000 events per variant: results/soak.md and .json
    .venv/bin/python benchmarks/soak.py --quick    # 60,000 events, prints only
"""

from __future__ import annotations

import argparse
import gc
import heapq
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from streamimb.config import ServiceConfig  # noqa: E402
from streamimb.demo import DEMO_CONFIG  # noqa: E402
from streamimb.io.kafka import RawRecord  # noqa: E402
from streamimb.service.runner import ServiceRunner  # noqa: E402
from streamimb.simulate.cards import CardStream  # noqa: E402

sys.path.insert(0, str(HERE))
from readme_figures import provenance, write_figures  # noqa: E402

PARTITIONS = 3
BATCH = 500
#: The demo's model as shipped (10 numpy Hoeffding trees per partition, bounded by their node budget), and
#: river's Hoeffding tree in their place: river's own size cap (``max_size``) is never enforced under weighted
#: learning (it is checked when the *weight* seen is a multiple of ``memory_estimate_period``, which
#: fractional sample weights practically never hit). Each variant runs in its own process so that the RSS is
#: its own.
RIVER_TREE = {"classifier": {"kind": "hoeffding_tree"}, "imbalance": {"strategy": "weighting"}}
VARIANTS: dict[str, tuple[dict, bool]] = {  # name: (model config overrides, write checkpoints)
    "default": ({}, True),
    "default, no checkpoints": ({}, False),
    "river tree (weighting)": (RIVER_TREE, True),
}


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def records(n: int, seed: int = 7) -> Iterator[list[RawRecord]]:
    """Poll-sized batches: transactions (keyed by card) and, once event time reaches them, their labels."""
    offsets = {("events", p): 0 for p in range(PARTITIONS)} | {("labels", p): 0 for p in range(PARTITIONS)}
    pending: list[tuple[float, str, int, bytes]] = []
    batch: list[RawRecord] = []

    def record(topic: str, partition: int, value: bytes) -> RawRecord:
        offset = offsets[(topic, partition)]
        offsets[(topic, partition)] = offset + 1
        return RawRecord(topic, partition, offset, None, value, 0)

    for i, (tx, label) in enumerate(CardStream(seed=seed)):
        if i >= n:
            break
        partition = int(tx["card"].split("-")[1]) % PARTITIONS
        batch.append(record("events", partition, json.dumps(tx).encode()))
        heapq.heappush(pending, (label["time"], label["id"], partition, json.dumps(label).encode()))
        while pending and pending[0][0] <= tx["time"]:
            _, _, p, value = heapq.heappop(pending)
            batch.append(record("labels", p, value))
        if i % 1000 == 999:
            batch.append(record("events", partition, b'{"id": "broken", "amount": NaN'))
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def run(n: int, every: int, checkpoint_every: int, variant: str = "default") -> dict:
    state_dir = tempfile.mkdtemp(prefix="streamimb-soak-")
    config = ServiceConfig.model_validate(
        {
            **DEMO_CONFIG,
            "model": {**DEMO_CONFIG["model"], **VARIANTS[variant][0]},
            "kafka": {"events_topic": "events", "labels_topic": "labels"},
            "checkpoint": {"directory": state_dir, "key": "soak-benchmark-key-0123456789"},
        }
    )
    runner = ServiceRunner(config)
    rows = []
    gc.collect()
    start_rss = rss_mib()
    started = time.perf_counter()
    events = labels = dead = 0
    next_row, next_checkpoint = every, checkpoint_every if VARIANTS[variant][1] else float("inf")
    checkpoint_s = 0.0
    for batch in records(n):
        outcome = runner.process_batch(batch)
        events += outcome.consumed
        labels += outcome.label_records
        dead += len(outcome.dead_letters)
        if events >= next_checkpoint:
            t = time.perf_counter()
            runner.checkpoint("soak", commit=False)
            checkpoint_s = time.perf_counter() - t
            next_checkpoint += checkpoint_every
        if events >= next_row:
            next_row += every
            rows.append(
                {
                    "events": events,
                    "seconds": time.perf_counter() - started,
                    "rss_mib": rss_mib(),
                    "pending": len(runner.joiner),
                    "early": runner.joiner.early_labels,
                    "learned": sum(s.processor.n_learned for s in runner.states.values()),
                    "checkpoint_mib": sum(runner.checkpoint_bytes.values()) / 2**20,
                    "checkpoint_s": checkpoint_s,
                }
            )
            r = rows[-1]
            print(
                f"{r['events']:>9,} events {r['seconds']:7.1f}s  RSS {r['rss_mib']:7.1f} MiB  "
                f"pending {r['pending']:>7,}  early {r['early']:>5,}  learned {r['learned']:>9,}  "
                f"checkpoints {r['checkpoint_mib']:6.1f} MiB in {r['checkpoint_s']:.2f}s",
                flush=True,
            )
    summary = runner.summary()
    shutil.rmtree(state_dir, ignore_errors=True)
    return {
        "variant": variant,
        "events": events,
        "labels": labels,
        "dead_letters": dead,
        "seconds": time.perf_counter() - started,
        "start_rss_mib": start_rss,
        "rows": rows,
        "labels_outcomes": summary["labels"],
    }


def figures(results: list[dict]) -> dict:
    """The key figures of each variant (for benchmarks/results/soak.json and the README)."""
    variants = {}
    for result in results:
        rows = result["rows"]
        half = [r["rss_mib"] for r in rows if r["events"] >= result["events"] / 2]
        variants[result["variant"]] = {
            "events": result["events"],
            "labels": result["labels"],
            "seconds": round(result["seconds"], 1),
            "events_per_s": round(result["events"] / result["seconds"]),
            "rss_start_mib": round(result["start_rss_mib"], 1),
            "rss_half_min_mib": round(min(half), 1),
            "rss_half_max_mib": round(max(half), 1),
            "rss_max_mib": round(max(r["rss_mib"] for r in rows), 1),
            "checkpoint_mib": round(rows[-1]["checkpoint_mib"], 2),
            "dead_letters": result["dead_letters"],
        }
    return {"cpus": os.cpu_count(), "variants": variants}


def report(results: list[dict], path: Path, origin: dict) -> None:
    first = results[0]
    lines = [
        "## Soak: 1M events, bounded memory",
        "",
        f"`{origin['command']}` on {platform.machine()} / Python {platform.python_version()} "
        f"({os.cpu_count()} cores, shared with other jobs), {origin['date']}, commit {origin['commit']}. "
        "Each variant: "
        f"{first['events']:,} card transactions (`CardStream`, {PARTITIONS} partitions keyed by card) and "
        f"{first['labels']:,} late labels (chargebacks 1-10 days, other labels 3 days later in event time) "
        "through `ServiceRunner.process_batch` (decode, a Processor and a LabelJoiner per partition, dead "
        "letters for a malformed record every 1,000 events, a signed checkpoint of every partition every "
        "100,000 events) with the demo's model config, in a process of its own. The Kafka client is left "
        "out (poll batches of 500 are built in memory) so that 1M events run in minutes on 2 cores; the "
        "Kafka path itself is covered by `benchmarks/throughput.py` and the fault tests.",
    ]
    for result in results:
        rows = result["rows"]
        half = [r["rss_mib"] for r in rows if r["events"] >= result["events"] / 2]
        lines += [
            "",
            f"### {result['variant']}: {VARIANTS[result['variant']][0] or 'the demo model as shipped'}",
            "",
            f"{result['seconds']:.0f} s ({result['events'] / result['seconds']:,.0f} events/s); RSS at "
            f"start {result['start_rss_mib']:.0f} MiB; over the second half min {min(half):.0f}, max "
            f"{max(half):.0f} MiB. Labels: {result['labels_outcomes']}; "
            f"dead letters {result['dead_letters']:,}.",
            "",
            "| events | elapsed s | RSS MiB | pending predictions | early labels | learned | "
            "checkpoints MiB | last checkpoint s |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            lines.append(
                f"| {r['events']:,} | {r['seconds']:.0f} | {r['rss_mib']:.0f} | {r['pending']:,} | "
                f"{r['early']:,} | {r['learned']:,} | {r['checkpoint_mib']:.1f} | {r['checkpoint_s']:.2f} |"
            )
    lines += [
        "",
        "What the service holds is bounded by configuration: pending predictions by `labels.ttl_seconds` "
        "(event time here) and `labels.max_pending` per partition, early labels by the same, joined ids by "
        "the joiner's memory (100,000 per partition), the evaluator by its rolling window (the service "
        "keeps no per-event history), categorical features by `schema.max_categories`, drift events by a "
        "fixed cap, HalfSpaceTrees by its fixed size, and the default classifier's numpy Hoeffding trees "
        "by their node budget (`max_nodes`, 1,023 per tree). The second table is the same run without "
        "checkpoints, to tell the state from the buffers of writing checkpoints: RSS levels off once the "
        "label delay (3 days of event time, about 130,000 pending predictions) and the joiners' memory of "
        "joined ids have filled up. The third table replaces the classifier by river's Hoeffding tree "
        "(under the `weighting` strategy): river caps it at `max_size` MiB (100 by default), but checks the "
        "cap only when the total sample *weight* seen is a multiple of `memory_estimate_period`, which "
        "fractional weights practically never hit, so that tree (and RSS, and the checkpoints) keeps "
        "growing; limit its depth (`max_depth`) when you choose it.",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {path} and {write_figures('soak', origin, figures(results), path.parent)}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="60,000 events per variant, print only")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--variant", choices=sorted(VARIANTS), help="run one variant here, print its JSON")
    args = parser.parse_args()
    n = 60_000 if args.quick else args.events
    if args.variant:
        every, checkpoint_every = (10_000, 20_000) if args.quick else (50_000, 100_000)
        result = run(n, every, checkpoint_every, args.variant)
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    origin = provenance(".venv/bin/python benchmarks/soak.py" + (f" --events {n}" if n != 1_000_000 else ""))
    results = []
    for variant in VARIANTS:
        cmd = [sys.executable, __file__, "--variant", variant, "--events", str(n)] + (
            ["--quick"] if args.quick else []
        )
        print(f"== {variant}", flush=True)
        out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("RESULT "):
                results.append(json.loads(line[len("RESULT ") :]))
            else:
                print(line, flush=True)
    if not args.quick:
        report(results, HERE / "results" / "soak.md", origin)
    return 0


if __name__ == "__main__":
    sys.exit(main())
