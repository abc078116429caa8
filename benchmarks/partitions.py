"""Benchmark: does the rare class starve as the stream is split over more partitions?

The demo's card simulator (`streams.card_simulator`, 100,000 transactions, fraud about 0.8%, labels with the
events) is split by card as a keyed topic splits it (crc32 of the card id modulo P), for P = 1, 4 and 12.
The stream is polled in batches of 500 events across partitions; each partition's share of a poll goes
through that partition's `Processor.process_many`, in partition order. Two shapes, side by side in one run:

- **per partition**: every partition's Processor has a supervised model of its own (each learns 1/P of the
  frauds);
- **shared model**: the Processors share one `SupervisedModel` (classifier, priors, threshold policy), which
  learns the labelled events of every partition and scores all of them; detectors, calibration, metrics and
  the alert guard stay with each partition.

For the library default and for river's logistic regression with no imbalance treatment
(`logistic_regression`, strategy `none`). Metrics: minority F1 of the alerts a user sees and PR AUC of
p(fraud), both pooled over all partitions, and the mean PR AUC per partition; CPU-seconds of the Processors.

    .venv/bin/python benchmarks/partitions.py            # full run: writes benchmarks/results/partitions.*
    .venv/bin/python benchmarks/partitions.py --quick    # 20,000 events, prints only
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import streams as S
from readme_figures import provenance, write_figures

from streamimb.config import ModelConfig
from streamimb.evaluation.metrics import binary_metrics, pr_auc
from streamimb.events import Event
from streamimb.model import SupervisedModel
from streamimb.processor import Processor

RESULTS = Path(__file__).resolve().parent / "results"
POLL = 500  # events per poll across partitions
PARTITIONS = (1, 4, 12)
CONFIGS = {
    "default": {},
    "logistic regression, no treatment": {
        "classifier": {"kind": "logistic_regression"},
        "imbalance": {"strategy": "none"},
    },
}
SHAPES = ("per partition", "shared model")


def partition_of(key: str, partitions: int) -> int:
    """The partition a keyed topic would give ``key`` (crc32 here; Kafka's murmur2 spreads keys alike)."""
    return zlib.crc32(key.encode()) % partitions


def run(stream: S.Stream, model: dict, partitions: int, shared: bool) -> dict:
    """The stream through `partitions` Processors, polled in batches of `POLL`: pooled and per-partition
    metrics of the alerts a user sees and of p(rare)."""
    config = ModelConfig.model_validate(model)
    positive, classes = str(stream.positive), [str(c) for c in stream.classes]
    common = SupervisedModel(config, positive, classes) if shared else None
    processors = [Processor(config, positive, classes, model=common) for _ in range(partitions)]
    owner = np.array([partition_of(k, partitions) for k in stream.keys])
    n = len(stream)
    scores, alerts = np.zeros(n), np.zeros(n, dtype=bool)
    cpu = 0.0
    for start in range(0, n, POLL):
        polled = np.arange(start, min(n, start + POLL))
        for p, processor in enumerate(processors):
            mine = polled[owner[polled] == p]
            if not len(mine):
                continue
            events = [Event(str(i), float(i), stream.events[i][0], str(stream.events[i][1])) for i in mine]
            t0 = time.process_time()
            verdicts, _ = processor.process_many(events)
            cpu += time.process_time() - t0
            for i, v in zip(mine, verdicts, strict=True):
                scores[i] = v.proba.get(positive, 0.0)
                alerts[i] = v.alert
    truth = np.array([bool(y) for _, y in stream.events])
    per_partition = [pr_auc(truth[owner == p], scores[owner == p]) for p in range(partitions)]
    f1 = binary_metrics(truth.tolist(), alerts.tolist())["f1"]
    return {
        "f1": f1,
        "pr_auc": pr_auc(truth, scores),
        "mean_partition_pr_auc": float(np.nanmean(per_partition)),
        "positives_per_partition": [int(truth[owner == p].sum()) for p in range(partitions)],
        "cpu_s": cpu,
    }


def render(doc: dict) -> str:
    figures = doc["figures"]
    lines = [
        "## Partitions: one model across partitions\n",
        f"{doc['date']}, commit {doc['commit']}. Command: `{doc['command']}`.\n",
        f"Stream: {figures['stream']}; split by card (crc32 modulo P), polled {POLL} events at a time across "
        "partitions. F1: minority F1 of the alerts a user sees; PR AUC of p(fraud); both pooled over all "
        "partitions, then the mean PR AUC per partition.\n",
        "| model | partitions | per partition: F1 / PR AUC / mean per partition | shared model: F1 / PR AUC "
        "/ mean per partition | CPU s (per partition / shared) |",
        "|---|---|---|---|---|",
    ]
    for name, by_p in figures["results"].items():
        for p, shapes in by_p.items():
            cells = [
                f"{r['f1']:.3f} / {r['pr_auc']:.3f} / {r['mean_partition_pr_auc']:.3f}"
                for r in (shapes[s] for s in SHAPES)
            ]
            cpu = " / ".join(f"{shapes[s]['cpu_s']:.0f}" for s in SHAPES)
            lines.append(f"| {name} | {p} | {cells[0]} | {cells[1]} | {cpu} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="20,000 events; print, write nothing")
    args = parser.parse_args(argv)
    origin = provenance(".venv/bin/python benchmarks/partitions.py" + (" --quick" if args.quick else ""))
    stream = S.card_simulator(20_000 if args.quick else 100_000)
    results: dict[str, dict[str, dict[str, dict]]] = {}
    for name, model in CONFIGS.items():
        for p in PARTITIONS:
            for shape in SHAPES:
                r = run(stream, model, p, shape == "shared model")
                results.setdefault(name, {}).setdefault(str(p), {})[shape] = r
                print(
                    f"{name:36s} P={p:2d} {shape:14s} F1 {r['f1']:.3f} PR AUC {r['pr_auc']:.3f} "
                    f"mean/partition {r['mean_partition_pr_auc']:.3f} cpu {r['cpu_s']:.0f}s",
                    flush=True,
                )
    figures = {"stream": stream.description, "n": len(stream), "results": results}
    doc = {**origin, "figures": figures}
    if args.quick:
        print(json.dumps(figures["results"], indent=1)[:2000])
        return 0
    write_figures("partitions", origin, figures)
    (RESULTS / "partitions.md").write_text(render(doc), encoding="utf-8")
    print(f"wrote {RESULTS / 'partitions.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
