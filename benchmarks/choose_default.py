"""Choose the default model by leave-one-stream-out, on the streams of benchmarks/detection.py.

Every candidate configuration (`CONFIGS`) runs through streamimb's Processor on every stream. A
configuration's score on a stream is the mean of its PR AUC and minority F1, each divided by the best value
any configuration reached on that stream (so every stream counts the same). For each stream left out, the
configuration with the best mean score on the *other* streams is chosen and reported on the one left out;
the default shipped is the one chosen on all streams. Writes benchmarks/results/default_choice.{json,md}.

    .venv/bin/python benchmarks/choose_default.py --jobs 2           # full run
    .venv/bin/python benchmarks/choose_default.py --quick            # smoke test, prints only
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import detection as D
from readme_figures import provenance, write_figures

RESULTS = Path(__file__).resolve().parent / "results"


def _portfolio(candidates: list[str], **boosting: object) -> dict:
    specs = {
        "linear": {"kind": "numpy_logistic_regression", "strategy": "none"},
        "trees": {"kind": "numpy_hoeffding_tree", "strategy": "oob"},
        "boosting": {"kind": "windowed_boosting", "strategy": "none", "params": dict(boosting)},
    }
    return {"classifier": {"kind": "portfolio", "params": {"candidates": {c: specs[c] for c in candidates}}}}


def _sliced(model: dict, learn_slice: int) -> dict:
    return {**model, "learn_slice": learn_slice}


LINEAR_BOOSTING = _portfolio(["linear", "boosting"])
ALL_THREE = _portfolio(["linear", "trees", "boosting"])
CONFIGS: dict[str, dict] = {  # every one names its learn_slice: the default's must not leak in
    "oob(10 numpy HT)": _sliced({"classifier": {"kind": "numpy_hoeffding_tree"}}, 500),  # previous default
    "linear+boosting": _sliced(LINEAR_BOOSTING, 500),
    "linear+trees+boosting": _sliced(ALL_THREE, 500),
    "linear+boosting, slices of 100": _sliced(LINEAR_BOOSTING, 100),
    "linear+trees+boosting, slices of 100": _sliced(ALL_THREE, 100),
    "oob(10 numpy HT), slices of 100": _sliced({"classifier": {"kind": "numpy_hoeffding_tree"}}, 100),
}


def _job(job: tuple[str, bool, str]) -> tuple[str, str, dict]:
    name, quick, config = job
    stream, delay = D._stream(name, quick)
    return name, config, D.run_processor(stream, CONFIGS[config], delay)


def score_table(results: dict[str, dict[str, dict]]) -> dict[str, dict[str, float]]:
    """stream -> config -> mean of PR AUC and F1, each relative to the best configuration on the stream."""
    table: dict[str, dict[str, float]] = {}
    for stream, by_config in results.items():
        best = {m: max(_value(r, m) for r in by_config.values()) for m in ("pr_auc", "f1")}
        table[stream] = {
            config: sum(_value(r, m) / best[m] if best[m] > 0 else 0.0 for m in best) / 2
            for config, r in by_config.items()
        }
    return table


def _value(result: dict, metric: str) -> float:
    v = result.get(metric)
    return 0.0 if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def choose(table: dict[str, dict[str, float]], leave_out: str | None = None) -> str:
    """The configuration with the best mean score over the streams (less ``leave_out``); ties: first one."""
    streams = [s for s in table if s != leave_out]
    configs = list(next(iter(table.values())))
    return max(configs, key=lambda c: (sum(table[s][c] for s in streams) / len(streams), -configs.index(c)))


def leave_one_stream_out(results: dict[str, dict[str, dict]]) -> dict:
    table = score_table(results)
    chosen_all = choose(table)
    held_out = {}
    for stream in results:
        pick = choose(table, leave_out=stream)
        held_out[stream] = {
            "chosen": pick,
            "pr_auc": results[stream][pick]["pr_auc"],
            "f1": results[stream][pick]["f1"],
            "in_sample_pr_auc": results[stream][chosen_all]["pr_auc"],
            "in_sample_f1": results[stream][chosen_all]["f1"],
        }
    return {"chosen_on_all": chosen_all, "scores": table, "held_out": held_out}


def render(doc: dict) -> str:
    f = doc["figures"]
    results, loso = f["results"], f["loso"]
    configs = list(CONFIGS)
    lines = [
        "# Choosing the default model: leave-one-stream-out",
        "",
        f"Generated {doc['date']} at commit {doc['commit']} in {f['wall_s']:.0f} s. Reproduce with "
        f"`{doc['command']}`. Streams and metrics: benchmarks/detection.py (batches of 500, labels as each "
        "stream says). Score = mean of PR AUC and minority F1, each relative to the best configuration on "
        "that stream.",
        "",
        f"**Chosen on all streams: {loso['chosen_on_all']}.**",
        "",
        "| stream | chosen without it | its PR AUC | its F1 | in-sample choice's PR AUC | in-sample F1 |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for stream, h in loso["held_out"].items():
        lines.append(
            f"| {stream} | {h['chosen']} | {D._fmt(h['pr_auc'])} | {D._fmt(h['f1'])} | "
            f"{D._fmt(h['in_sample_pr_auc'])} | {D._fmt(h['in_sample_f1'])} |"
        )
    lines += ["", "## Every configuration on every stream (PR AUC / F1 / events per CPU-second)", ""]
    lines.append("| stream | " + " | ".join(configs) + " |")
    lines.append("|---|" + "---:|" * len(configs))
    for stream, by_config in results.items():
        cells = [_cell(by_config[c]) for c in configs]
        lines.append(f"| {stream} | " + " | ".join(cells) + " |")
    lines += ["", "Configurations:", ""]
    lines += [f"- {name}: `{json.dumps(model)}`" for name, model in CONFIGS.items()]
    return "\n".join(lines) + "\n"


def _cell(result: dict) -> str:
    return f"{D._fmt(result['pr_auc'])} / {D._fmt(result['f1'])} / {D._eps(result.get('events_per_cpu_s'))}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="", help="comma-separated streams")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    only = [s for s in args.only.split(",") if s] or None
    names = D.stream_names(args.quick, only)
    jobs = [(name, args.quick, config) for name in names for config in CONFIGS]
    start = time.perf_counter()
    origin = provenance(" ".join([".venv/bin/python benchmarks/choose_default.py", *(argv or sys.argv[1:])]))
    results: dict[str, dict[str, dict]] = {name: {} for name in names}
    with ProcessPoolExecutor(max(1, args.jobs)) as pool:
        for name, config, result in pool.map(_job, jobs):
            results[name][config] = result
            print(
                f"{name:<18} {config:<36} PR AUC {D._fmt(result['pr_auc'])}  F1 {D._fmt(result['f1'])}",
                flush=True,
            )
    results = {name: {c: results[name][c] for c in CONFIGS} for name in names}
    doc = {
        "benchmark": "default_choice",
        **origin,
        "figures": {
            "wall_s": time.perf_counter() - start,
            "configs": CONFIGS,
            "results": D._json_safe(results),
            "loso": D._json_safe(leave_one_stream_out(results)),
        },
    }
    text = render(doc)
    print(text)
    if not (args.no_write or args.quick):  # a smoke run writes nothing
        write_figures("default_choice", origin, doc["figures"], RESULTS)
        (RESULTS / "default_choice.md").write_text(text)
    return 0


if __name__ == "__main__":
    D.PS._pin_hash_seed()
    raise SystemExit(main())
