"""NAB benchmark of streamimb's time-series anomaly detector, with simple baselines scored in the same run.

Runs every series of ``../shared/data/nab`` (seen from the project root) in time order, a fresh detector
per series, score then learn; scores the corpus with :mod:`streamimb.evaluation.nab` (one threshold per
profile for the whole corpus, normalised with the null and perfect detectors) and writes
``benchmarks/results/nab.md``.

    .venv/bin/python benchmarks/nab.py            # full run (about a minute on 2 cores)
    .venv/bin/python benchmarks/nab.py --quick    # 12 series, streamimb + rolling z-score only; prints only
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import sys
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from river import anomaly, compose, preprocessing

from streamimb.detectors.timeseries import SeriesAnomalyDetector
from streamimb.evaluation.nab import (
    PROFILES,
    SeriesScores,
    score_all_profiles,
    score_corpus,
    windows_to_indices,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from readme_figures import provenance, write_figures

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "nab"
RESULTS = ROOT / "benchmarks" / "results" / "nab.md"

# Published standard / reward_low_FP / reward_low_FN scores on this part of NAB (shared/data/README.md).
ANCHORS = {
    "CAD-OSE": (75.9, 72.4, 79.2),
    "Numenta HTM": (75.5, 70.7, 79.0),
    "ARTime": (74.6, 66.5, 79.4),
    "Random Cut Forest": (59.4, 49.1, 65.9),
    "KNN-CAD": (58.5, 48.6, 63.5),
    "rolling z-score (1000)": (45.4, 35.9, 51.7),
    "windowed Gaussian": (41.4, 26.5, 48.4),
}


@dataclass
class Series:
    name: str
    seconds: np.ndarray  # float epoch seconds
    values: np.ndarray
    windows: list[tuple[int, int]]


def load_corpus(data_dir: Path) -> list[Series]:
    """Every labelled series of the folder, with its windows as index ranges."""
    labels = json.loads((data_dir / "labels" / "combined_windows.json").read_text())
    out = []
    for name in sorted(labels):
        path = data_dir / "data" / name
        if not path.exists():
            continue
        with path.open(newline="") as f:
            rows = list(csv.reader(f))[1:]
        ts = np.array([np.datetime64(r[0]) for r in rows]).astype("datetime64[s]")
        values = np.array([float(r[1]) for r in rows])
        limits = [(np.datetime64(a), np.datetime64(b)) for a, b in labels[name]]
        out.append(Series(name, ts.astype(np.int64).astype(float), values, windows_to_indices(ts, limits)))
    return out


# ----------------------------------------------------------------------------------------------- detectors
def run_streamimb(s: Series, **params) -> np.ndarray:
    det = SeriesAnomalyDetector(**params)
    return np.array(
        [det.score_learn_one(float(v), float(t)) for v, t in zip(s.values, s.seconds, strict=True)]
    )


def run_rolling_z(s: Series, window: int = 1000) -> np.ndarray:
    """|x - mean| / std over the previous ``window`` points (no variance floor beyond exact zero)."""
    out = np.zeros(len(s.values))
    buf: deque[float] = deque()
    total = total_sq = 0.0
    for i, x in enumerate(s.values):
        n = len(buf)
        if n >= 2:
            m = total / n
            sd = math.sqrt(max(total_sq / n - m * m, 0.0))
            out[i] = abs(x - m) / sd if sd > 1e-12 else (0.0 if abs(x - m) < 1e-12 else 1e12)
        buf.append(x)
        total += x
        total_sq += x * x
        if len(buf) > window:
            y = buf.popleft()
            total -= y
            total_sq -= y * y
    return out


def run_hst(s: Series) -> np.ndarray:
    """river HalfSpaceTrees on the value scaled online to [0, 1] (MinMaxScaler), seed 42."""
    model = compose.Pipeline(preprocessing.MinMaxScaler(), anomaly.HalfSpaceTrees(seed=42))
    out = np.empty(len(s.values))
    for i, v in enumerate(s.values):
        x = {"value": float(v)}
        out[i] = model.score_one(x)
        model.learn_one(x)
    return out


def run_hst_squash(s: Series) -> np.ndarray:
    """river HalfSpaceTrees behind streamimb's SquashScaler (standardise, then logistic squash), seed 42."""
    from streamimb.detectors.anomaly import SquashScaler

    model = compose.Pipeline(SquashScaler(), anomaly.HalfSpaceTrees(seed=42))
    out = np.empty(len(s.values))
    for i, v in enumerate(s.values):
        x = {"value": float(v)}
        out[i] = model.score_one(x)
        model.learn_one(x)
    return out


def run_gaussian(s: Series) -> np.ndarray:
    """river GaussianScorer (defaults: all history, grace period 100) on the value."""
    model = anomaly.GaussianScorer()
    out = np.empty(len(s.values))
    for i, v in enumerate(s.values):
        out[i] = model.score_one(None, float(v))
        model.learn_one(None, float(v))
    return out


DETECTORS: dict[str, Callable[[Series], np.ndarray]] = {
    "streamimb SeriesAnomalyDetector": run_streamimb,
    "rolling z-score (1000)": run_rolling_z,
    "river HalfSpaceTrees (min-max scaled)": run_hst,
    "river HalfSpaceTrees (SquashScaler)": run_hst_squash,
    "river GaussianScorer": run_gaussian,
}

ABLATIONS: dict[str, dict] = {
    "without novelty": {"novelty_margin": math.inf},
    "without level change": {"change_z": math.inf},
    "without seasonal scorers": {"seasonality_gate": 0.0},
    "without seasonal novelty": {"seasonal_novelty_margin": math.inf},
    "without likelihood": {"likelihood_surprise": math.inf},
    "without rest period": {"rest": 0},
    "novelty only (no change, seasonal, likelihood)": {
        "change_z": math.inf,
        "seasonality_gate": 0.0,
        "likelihood_surprise": math.inf,
    },
}

SENSITIVITY: dict[str, dict] = {
    "novelty_margin 0.04": {"novelty_margin": 0.04},
    "novelty_margin 0.06": {"novelty_margin": 0.06},
    "seasonal_novelty_margin 0.05": {"seasonal_novelty_margin": 0.05},
    "seasonal_novelty_margin 0.2": {"seasonal_novelty_margin": 0.2},
    "seasonality_gate 0.3": {"seasonality_gate": 0.3},
    "seasonality_gate 0.7": {"seasonality_gate": 0.7},
    "change_z 6": {"change_z": 6.0},
    "change_z 8": {"change_z": 8.0},
    "likelihood_surprise 10": {"likelihood_surprise": 10.0},
    "likelihood_surprise 14": {"likelihood_surprise": 14.0},
    "change_window 8": {"change_window": 8},
    "change_window 16": {"change_window": 16},
    "rest 15": {"rest": 15},
    "rest 60": {"rest": 60},
    "history 2000": {"history": 2000},
    "history 8000": {"history": 8000},
}


def _job(args: tuple) -> tuple[str, int, np.ndarray, float]:
    label, fn_name, params, idx, series = args
    fn = DETECTORS.get(fn_name, run_streamimb)
    t0 = time.perf_counter()
    scores = fn(series, **params) if params else fn(series)
    return label, idx, scores, time.perf_counter() - t0


def run_all(corpus: list[Series], jobs: dict[str, tuple[str, dict]], workers: int) -> dict[str, tuple]:
    """Run every (label -> (detector, params)) on every series; returns label -> (series scores, seconds)."""
    tasks = [(label, fn, params, i, s) for label, (fn, params) in jobs.items() for i, s in enumerate(corpus)]
    outs: dict[str, dict[int, np.ndarray]] = {label: {} for label in jobs}
    secs: dict[str, float] = dict.fromkeys(jobs, 0.0)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_job, tasks, chunksize=1))
    else:
        results = [_job(t) for t in tasks]
    for label, i, scores, sec in results:
        outs[label][i] = scores
        secs[label] += sec
    return {
        label: ([SeriesScores(s.name, outs[label][i], s.windows) for i, s in enumerate(corpus)], secs[label])
        for label in jobs
    }


# ------------------------------------------------------------------------------------------------- report
def _row(name: str, series: list[SeriesScores], seconds: float, n_points: int) -> tuple[str, dict]:
    res = score_all_profiles(series)
    st = res["standard"]
    cells = " | ".join(f"{res[p].normalized:.1f}" for p in PROFILES)
    us = 1e6 * seconds / n_points
    scored = np.concatenate([s.scores[s.probation :] for s in series])
    top = np.nanmax(scored)
    ties = int((scored == top).sum())
    line = (
        f"| {name} | {cells} | {st.detected_windows}/{st.windows} | {st.false_positives} | "
        f"{st.threshold:.4g} | {ties} | {us:.1f} |"
    )
    return line, res


def per_category(series: list[SeriesScores], threshold: float) -> list[str]:
    lines = ["| category | series | windows | standard (corpus threshold) | detected | false positives |"]
    lines.append("|---|---:|---:|---:|---:|---:|")
    cats: dict[str, list[SeriesScores]] = {}
    for s in series:
        cats.setdefault(s.name.split("/")[0], []).append(s)
    for cat, group in cats.items():
        r = score_corpus(group, PROFILES["standard"], threshold=threshold)
        norm = f"{r.normalized:.1f}" if r.windows else "n/a (no windows)"
        lines.append(
            f"| {cat} | {len(group)} | {r.windows} | {norm} | {r.detected_windows} | {r.false_positives} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="12 series, streamimb and rolling z-score; no file")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="NAB folder (data/, labels/)")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--out", type=Path, default=None, help=f"results file (default {RESULTS} on a full run)")
    args = ap.parse_args(argv)
    if not (args.data / "labels" / "combined_windows.json").exists():
        print(f"skip: NAB data not found under {args.data}", file=sys.stderr)
        return 0
    origin = provenance(".venv/bin/python benchmarks/nab.py" + (" --quick" if args.quick else ""))
    corpus = load_corpus(args.data)
    if args.quick:
        corpus = corpus[::3][:12]
    n_points = sum(len(s.values) for s in corpus)
    jobs: dict[str, tuple[str, dict]] = {name: (name, {}) for name in DETECTORS}
    if args.quick:
        jobs = {k: jobs[k] for k in ("streamimb SeriesAnomalyDetector", "rolling z-score (1000)")}
    else:
        jobs.update({f"streamimb, {k}": ("streamimb", v) for k, v in {**ABLATIONS, **SENSITIVITY}.items()})
    t0 = time.perf_counter()
    results = run_all(corpus, jobs, args.workers)
    wall = time.perf_counter() - t0

    header = [
        "| detector | standard | reward_low_FP | reward_low_FN | windows detected (standard) "
        "| false positives (standard) | threshold (standard) | points tied at the top score | us / point |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    main_rows, abl_rows, sens_rows = list(header), list(header), list(header)
    ours = None
    scores: dict[str, dict] = {}
    for label, (series, secs) in results.items():
        line, res = _row(label, series, secs, n_points)
        scores[label] = {p: round(res[p].normalized, 1) for p in PROFILES}
        if label == "streamimb SeriesAnomalyDetector":
            ours = (series, res)
        target = main_rows
        if label.startswith("streamimb, "):
            key = label.removeprefix("streamimb, ")
            target = abl_rows if key in ABLATIONS else sens_rows
        target.append(line)
        print(line, flush=True)
    anchor_rows = ["| published detector (this part of NAB) | standard | reward_low_FP | reward_low_FN |"]
    anchor_rows.append("|---|---:|---:|---:|")
    anchor_rows += [f"| {k} | {a} | {b} | {c} |" for k, (a, b, c) in ANCHORS.items()]
    print(f"{len(corpus)} series, {n_points} points, {wall:.1f}s wall", flush=True)
    if args.quick and args.out is None:
        return 0
    assert ours is not None
    cat_rows = per_category(ours[0], ours[1]["standard"].threshold)
    summary = []
    for j, prof in enumerate(PROFILES):
        mine = ours[1][prof].normalized
        above = [k for k, v in ANCHORS.items() if round(mine, 1) > v[j]]
        below = [f"{k} {v[j]}" for k, v in ANCHORS.items() if round(mine, 1) < v[j]]
        tied = [k for k, v in ANCHORS.items() if round(mine, 1) == v[j]]
        line = f"* {prof}: **{mine:.1f}**"
        if below:
            line += f"; below {', '.join(below)}"
        if tied:
            line += f"; tied with {', '.join(tied)}"
        line += (
            f"; above the other {len(above)} published anchors" if below or tied else "; above every anchor"
        )
        summary.append(line)
    n_windows = sum(len(s.windows) for s in corpus)
    text = REPORT.format(
        n_series=len(corpus),
        n_points=n_points,
        n_windows=n_windows,
        summary="\n".join(summary),
        main="\n".join(main_rows),
        anchors="\n".join(anchor_rows),
        ablations="\n".join(abl_rows),
        sensitivity="\n".join(sens_rows),
        categories="\n".join(cat_rows),
        wall=wall,
        workers=args.workers,
        python=platform.python_version(),
        machine=platform.machine(),
        cpus=os.cpu_count(),
        date=origin["date"],
        commit=origin["commit"],
        defaults="`SeriesAnomalyDetector("
        + ", ".join(f"{k}={v!r}" for k, v in SeriesAnomalyDetector()._get_params().items())
        + ")`",
    )
    out = args.out or RESULTS
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    st = ours[1]["standard"]
    figures = {
        "series": len(corpus),
        "points": n_points,
        "windows": n_windows,
        "wall_s": round(wall, 1),
        "streamimb": {
            **scores["streamimb SeriesAnomalyDetector"],
            "detected_windows": st.detected_windows,
            "false_positives": st.false_positives,
        },
        "detectors": scores,
        "anchors": {k: dict(zip(PROFILES, v, strict=True)) for k, v in ANCHORS.items()},
    }
    print(f"wrote {out} and {write_figures('nab', origin, figures, out.parent)}")
    return 0


REPORT = """# NAB benchmark: streamimb `SeriesAnomalyDetector`

Command: `.venv/bin/python benchmarks/nab.py` (full run: {wall:.0f} s wall on {workers} worker processes;
Python {python}, {machine}, {cpus} CPUs; {date}, commit {commit}). `--quick` runs 12 series and prints only.

Data: `../shared/data/nab` -- the part of the Numenta Anomaly Benchmark shipped with the project: {n_series}
series, {n_points} points, {n_windows} labelled windows (realAWSCloudwatch, realAdExchange, realTraffic,
artificialWithAnomaly, artificialNoAnomaly; `labels/combined_windows.json`). Each series is run in time order
with a fresh detector, score then learn.

Scoring: `streamimb.evaluation.nab`, written from the NAB definition (Lavin & Ahmad, ICMLA 2015) and
checked against the semantics of NAB's threshold sweep: earliest detection per window rewarded by the scaled
sigmoid of its position, false positives weighted by the sigmoid of their distance after the previous window
(full weight before the first window), missed windows cost `fnWeight`, probation = first
`min(floor(0.15 n), 750)` points unscored, one threshold per profile for the whole corpus (exact sweep),
normalised `100 * (S - S_null) / (S_perfect - S_null)`. The rolling z-score row below is the check of the
scorer: the shared README gives 45.4 / 35.9 / 51.7 for it on this part of the corpus.

## Summary (streamimb against the published anchors below)

{summary}

## Results (all rows from this run)

{main}

`us / point`: single-core CPU time of score + learn inside the benchmark (noisy: the machine is shared).
`points tied at the top score`: scored points (after probation) equal to the detector's maximum; a big tie at
the top (river's GaussianScorer returns exactly 1.0 on every far outlier, e.g. on flat metrics) makes every
threshold worse than never firing, hence its 0.0.

Published anchors on this part of the corpus (from `shared/data/README.md`, not rerun here):

{anchors}

## Per category (streamimb, standard profile, at the corpus-wide threshold)

{categories}

## Ablations (one component switched off, all else default)

{ablations}

## Sensitivity (one hyper-parameter moved, all else default)

{sensitivity}

## What was tuned on this corpus

One set of hyper-parameters for every series; no per-series or per-category setting. The defaults were
chosen by looking at this same corpus (there is no held-out NAB part here), so the headline number is
optimistic by an unknown amount:

{defaults}

* the choice of components (range novelty, short-window level change, gated seasonal change and seasonal
  novelty, HTM-style likelihood, rest period) was made by trying alternatives on this corpus and keeping what
  scored: empirical-tail p-values of residual z-scores, rank statistics, a variance-change scorer, the minimum
  of predictor errors as the only signal, and an ungated seasonal scorer all scored lower and were dropped;
* picked from small grids on this corpus: `novelty_margin` 0.05, `seasonal_novelty_margin` 0.1, `change_z` 7,
  `likelihood_surprise` 12, `likelihood_window` 10 (HTM's value; 5, 15, 20 tried), `change_window` 12,
  `history` 4000, `baseline_span` 500, `seasonality_gate` 0.5, `rest` 30 and `rest_level` 0.95; the
  sensitivity table shows what moving each one alone does (a point or two; `rest` 60 costs three);
* not tuned (round values set up front; 48 bins and 5 days were tried and changed nothing): `seasonal_bins`
  24, `seasonal_days` 3, `warmup` 100, `range_window` 10000 (longer than every NAB series).

With 64 windows, one window more or less moves the standard score by about 1.5 points: differences of that
size between detectors are within the noise of this benchmark.
"""


if __name__ == "__main__":
    raise SystemExit(main())
