"""Benchmark: does streamimb find rare events better than every river baseline, on every stream?

On every stream, side by side in one run:

- river baselines, prequential (score with `predict_proba_one`, decide by argmax as `predict_one` does, then
  learn; labels immediate, or `delay` events late where the stream says so): HT, HT+RUS, HT+ROS, LR,
  LR+RUS, ARF(10), ARF(10)+RUS (base learners from benchmarks/prevalence_shift.py; RUS / ROS are river's
  RandomUnderSampler / RandomOverSampler towards a uniform class distribution);
- streamimb through its `Processor` (batches of 500, `process_many`; late labels through `learn_many`), for
  the library default (`model: {}`) and any named configuration (`--config NAME=JSON`);
- an offline bound: scikit-learn's HistGradientBoostingClassifier trained on the first half of the stream
  and scored on the second half (its best F1 over thresholds chosen on that half: an upper bound).

Metrics per (stream, method): prequential PR AUC of p(rare) (exact average precision), minority F1 of the
decisions, the same over the second half (events n/2..n, comparable with the offline bound), and events per
CPU-second of the method (`time.process_time` around predict + learn only).

River baselines are slow (ARF ~1.5 ms/event), so their raw scores are cached in
benchmarks/results/.cache/ per (stream, method, n, fingerprint of the events and delay): a rerun for a new
streamimb configuration costs only the streamimb runs. Writes benchmarks/results/detection.{json,md}.

    .venv/bin/python benchmarks/detection.py                     # full run (writes the results)
    .venv/bin/python benchmarks/detection.py --quick             # ~8k events per stream, prints only
    .venv/bin/python benchmarks/detection.py --only elec2 --config 'lr={"classifier": {"kind": "logistic_regression"}}'
"""  # noqa: E501

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import river
from river import base, imblearn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import prevalence_shift as PS
import streams as S
from readme_figures import provenance, write_figures

from streamimb.evaluation.metrics import binary_metrics, pr_auc

RESULTS = Path(__file__).resolve().parent / "results"
CACHE = RESULTS / ".cache"
BATCH = 500  # events per process_many call (the service's poll batch)
CARD_DELAY = 2_000  # label delay of the delayed card stream, in events (about 67 min of its event time)
QUICK_N = 8_000  # events per stream in --quick
N_MODELS = 10  # ARF members
CACHE_VERSION = 1  # bump when a baseline's definition changes (invalidates the cached runs)
DEFAULT_NAME = "streamimb default"
OFFLINE_NAME = "offline HGB (bound)"


# --------------------------------------------------------------------------------------------------
# streams
# --------------------------------------------------------------------------------------------------
def _card(quick: bool, delayed: bool) -> tuple[S.Stream, int]:
    n = QUICK_N if quick else 100_000
    stream = S.card_simulator(n=n)
    if not delayed:
        return stream, 0
    delay = round(CARD_DELAY * n / 100_000)
    stream.name = "card_sim_delayed"
    stream.description += (
        f"; every label arrives {delay:,} events late (the simulator's own chargeback delays, 1-10 days at "
        "2 s per transaction, exceed the stream)"
    )
    return stream, delay


#: stream name -> builder(quick) -> (stream, label delay in events)
STREAMS: dict[str, Callable[[bool], tuple[S.Stream, int]]] = {
    **{
        f"agrawal_{seed}": (lambda quick, seed=seed: (S.agrawal(seed, n=QUICK_N if quick else 80_000), 0))
        for seed in PS.SEEDS_AGRAWAL
    },
    "bank_marketing": lambda quick: (S.bank_marketing(n=QUICK_N if quick else None), 0),
    "creditcard": lambda quick: (S.creditcard_schedule(scale=0.12 if quick else 1.0), 0),
    "three_class": lambda quick: (S.three_class(n=QUICK_N if quick else 60_000), 0),
    "card_sim": lambda quick: _card(quick, delayed=False),
    "card_sim_delayed": lambda quick: _card(quick, delayed=True),
    "forest_cover": lambda quick: (S.forest_cover(n=QUICK_N if quick else 50_000), 0),
    "elec2": lambda quick: (S.elec2(n=QUICK_N if quick else None), 0),
    "churn_telco": lambda quick: (S.churn_telco(), 0),
}
QUICK_SKIP = ("agrawal_43", "agrawal_44")  # --quick: one Agrawal seed


def stream_names(quick: bool = False, only: Sequence[str] | None = None) -> list[str]:
    names = [s for s in STREAMS if not (quick and s in QUICK_SKIP)]
    if only:
        unknown = set(only) - set(STREAMS)
        if unknown:
            raise SystemExit(f"unknown stream(s) {sorted(unknown)}; known: {', '.join(STREAMS)}")
        names = [s for s in STREAMS if s in only]
    return names


def streams_for(quick: bool, only: Sequence[str] | None = None) -> dict[str, tuple[S.Stream, int]]:
    """Every benchmark stream (or those in `only`): name -> (stream, label delay in events)."""
    if not S.DATA.is_dir():
        raise SystemExit(f"benchmark data not found under {S.DATA} (../shared/data from the repo root)")
    return {name: STREAMS[name](quick) for name in stream_names(quick, only)}


def seed_of(stream: S.Stream) -> int:
    """Model seed: the Agrawal stream's seed, 42 elsewhere (as in prevalence_shift.py)."""
    return int(stream.name.split("_")[1]) if stream.name.startswith("agrawal_") else 42


def truth_of(stream: S.Stream) -> np.ndarray:
    return np.array([y == stream.positive for _, y in stream.events], dtype=bool)


def fingerprint(stream: S.Stream, delay: int) -> str:
    """Hash of what a run depends on: the events in order, the classes, nominal features and the delay."""
    h = hashlib.sha256()
    h.update(repr((stream.positive, stream.classes, stream.nominal, delay, len(stream))).encode())
    for x, y in stream.events:
        h.update(repr((x, y)).encode())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------------
def metrics(scores: Sequence[float], decisions: Sequence[bool], labels: Sequence[bool]) -> dict:
    """Minority-class metrics: PR AUC of the scores and F1 (precision, recall) of the decisions, overall and
    over the second half (events n//2..n). `labels`: True where the event is of the rare class."""
    s = np.asarray(scores, dtype=float)
    d = np.asarray(decisions, dtype=bool)
    y = np.asarray(labels, dtype=bool)
    half = len(y) // 2
    out = {}
    for prefix, sl in (("", slice(None)), ("second_half_", slice(half, None))):
        m = binary_metrics(y[sl], d[sl])
        out[f"{prefix}pr_auc"] = pr_auc(y[sl], s[sl]) if y[sl].any() else math.nan
        for k in ("f1", "precision", "recall"):
            out[f"{prefix}{k}"] = m[k]
    out["alerts"] = int(d.sum())
    return out


def best_f1(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """The best F1 over all thresholds (alert when score >= threshold), and that threshold."""
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=float)
    if not y.any():
        return math.nan, math.nan
    order = np.argsort(-s, kind="mergesort")
    tp = np.cumsum(y[order])
    last = np.r_[np.flatnonzero(np.diff(s[order])), len(s) - 1]  # last index of each tie group
    tp = tp[last]
    alerts = last + 1
    f1 = 2 * tp / (alerts + y.sum())
    k = int(np.argmax(f1))
    return float(f1[k]), float(s[order][last[k]])


@dataclass
class Raw:
    """One method's run: p(rare) and the decision per event, and the CPU seconds it took."""

    scores: np.ndarray
    decisions: np.ndarray
    cpu_s: float
    extra: dict | None = None  # further decision arrays (name -> bool array)


def summarise(raw: Raw, truth: np.ndarray) -> dict:
    out = metrics(raw.scores, raw.decisions, truth)
    out["events_per_cpu_s"] = len(truth) / raw.cpu_s if raw.cpu_s > 0 else math.nan
    out["cpu_s"] = raw.cpu_s
    for name, decisions in (raw.extra or {}).items():
        m = metrics(raw.scores, decisions, truth)
        out[f"f1_{name}"] = m["f1"]
        out[f"second_half_f1_{name}"] = m["second_half_f1"]
    return out


# --------------------------------------------------------------------------------------------------
# river baselines
# --------------------------------------------------------------------------------------------------
def _sampled(
    cls, build: Callable[[S.Stream, int], base.Classifier]
) -> Callable[[S.Stream, int], base.Classifier]:
    """river's sampler `cls` towards a uniform class distribution around the model `build` makes."""

    def make(stream: S.Stream, seed: int) -> base.Classifier:
        return cls(build(stream, seed), desired_dist=PS._uniform(stream), seed=seed)

    return make


def _river_builders() -> dict[str, Callable[[S.Stream, int], base.Classifier]]:
    ps = {m.name: m.build for m in PS.methods(N_MODELS)}
    ht, lr, arf = ps["river HT"], ps["river LR"], ps[f"river ARF({N_MODELS})"]
    return {
        "river HT": ht,
        "river HT+RUS": PS._river_sampler(imblearn.RandomUnderSampler, "ht"),
        "river HT+ROS": PS._river_sampler(imblearn.RandomOverSampler, "ht"),
        "river LR": lr,  # one-vs-rest on multi-class streams
        "river LR+RUS": _sampled(imblearn.RandomUnderSampler, lr),
        f"river ARF({N_MODELS})": arf,
        f"river ARF({N_MODELS})+RUS": _sampled(imblearn.RandomUnderSampler, arf),
    }


RIVER_BUILDERS = _river_builders()
RIVER_METHODS = list(RIVER_BUILDERS)


def run_river(stream: S.Stream, method: str, delay: int = 0, seed: int | None = None) -> Raw:
    """Prequential run of one river baseline. The decision is river's `predict_one` (the argmax of
    `predict_proba_one`, computed once from the same probabilities). With `delay` > 0, event i's label is
    learned right after event i + delay is scored."""
    model = RIVER_BUILDERS[method](stream, seed_of(stream) if seed is None else seed)
    pos = stream.positive
    n = len(stream)
    scores = np.zeros(n)
    decisions = np.zeros(n, dtype=bool)
    events = stream.events
    clock = time.process_time
    cpu = 0.0
    for i, (x, y) in enumerate(events):
        t0 = clock()
        proba = model.predict_proba_one(x)
        if delay == 0:
            model.learn_one(x, y)
        elif i >= delay:
            model.learn_one(*events[i - delay])
        cpu += clock() - t0
        scores[i] = proba.get(pos, 0.0)
        decisions[i] = bool(proba) and max(proba, key=proba.get) == pos
    return Raw(scores, decisions, cpu)


def _cache_path(stream: S.Stream, method: str, delay: int) -> Path:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", method).strip("-")
    key = f"{fingerprint(stream, delay)}-v{CACHE_VERSION}-river{river.__version__}"
    return CACHE / f"{stream.name}--{slug}--{len(stream)}--{key}.npz"


def cached(stream: S.Stream, method: str, delay: int, compute: Callable[[], Raw], use: bool = True) -> Raw:
    """`compute()`, or its stored result for the same stream events, delay and method."""
    path = _cache_path(stream, method, delay)
    if use and path.exists():
        with np.load(path) as z:
            return Raw(z["scores"], z["decisions"], float(z["cpu_s"]))
    raw = compute()
    if use:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, scores=raw.scores, decisions=raw.decisions, cpu_s=raw.cpu_s)
        tmp.replace(path)
    return raw


def run_baselines(
    stream: S.Stream, delay: int = 0, methods: Sequence[str] | None = None, use_cache: bool = True
) -> dict[str, dict]:
    """Every river baseline (or those in `methods`) on `stream`: method -> metrics (cached runs reused)."""
    truth = truth_of(stream)
    return {
        m: summarise(cached(stream, m, delay, lambda m=m: run_river(stream, m, delay), use_cache), truth)
        for m in (methods or RIVER_METHODS)
    }


# --------------------------------------------------------------------------------------------------
# offline bound
# --------------------------------------------------------------------------------------------------
def _offline_raw(stream: S.Stream) -> Raw:
    from sklearn.ensemble import HistGradientBoostingClassifier

    from streamimb.features import FeatureExtractor, dicts_to_rows

    fx = FeatureExtractor()
    xs = [fx.transform_one(x) for x, _ in stream.events]
    numeric = {k for x, _ in stream.events for k, v in x.items() if not isinstance(v, str)}
    columns = sorted({k for x in xs for k in x})  # fixed column order
    absent = [math.nan if c in numeric else 0.0 for c in columns]  # a category not present: 0
    X = dicts_to_rows(xs, {c: i for i, c in enumerate(columns)}, absent)
    y = truth_of(stream)
    half = len(y) // 2
    scores = np.zeros(len(y))
    t0 = time.process_time()
    if y[:half].any():
        model = HistGradientBoostingClassifier(random_state=0)
        model.fit(X[:half], y[:half])
        scores[half:] = model.predict_proba(X[half:])[:, 1]
    return Raw(scores, np.zeros(len(y), dtype=bool), time.process_time() - t0)


def offline_bound(stream: S.Stream, use_cache: bool = True) -> dict:
    """HistGradientBoostingClassifier (scikit-learn defaults, random_state=0) fitted on the first half of
    the stream (numbers as they are, categories one-hot through FeatureExtractor, columns in sorted order),
    scored on the second half: second-half PR AUC and the best F1 over thresholds on that half (the
    threshold is chosen on the scored data: an upper bound). One-vs-rest for the rare class."""
    raw = cached(stream, OFFLINE_NAME, 0, lambda: _offline_raw(stream), use_cache)
    y = truth_of(stream)
    half = len(y) // 2
    f1, threshold = best_f1(y[half:], raw.scores[half:])
    return {
        "second_half_pr_auc": pr_auc(y[half:], raw.scores[half:]) if y[half:].any() else math.nan,
        "second_half_best_f1": f1,
        "threshold": threshold,
        "train_positives": int(y[:half].sum()),
        "events_per_cpu_s": len(y) / raw.cpu_s if raw.cpu_s > 0 else math.nan,
    }


# --------------------------------------------------------------------------------------------------
# streamimb
# --------------------------------------------------------------------------------------------------
def processor_raw(stream: S.Stream, model: dict, delay: int = 0, batch: int = BATCH) -> Raw:
    """The events through `Processor.process_many` in batches of `batch`; with `delay` > 0 events go in
    unlabelled and their labels through `learn_many` once `delay` more events were processed. Decisions:
    the alerts a user sees (`classifier_alert or anomaly_alert`); `extra["predicted"]`: predicted == rare."""
    from streamimb.config import ModelConfig
    from streamimb.events import Event
    from streamimb.processor import Processor

    positive = str(stream.positive)
    proc = Processor(
        ModelConfig.model_validate(model), positive=positive, classes=[str(c) for c in stream.classes]
    )
    n = len(stream)
    labels = [str(y) for _, y in stream.events]
    scores = np.zeros(n)
    alerts = np.zeros(n, dtype=bool)
    predicted = np.zeros(n, dtype=bool)
    pending: list = [None] * n if delay else []
    learned = 0
    clock = time.process_time
    cpu = 0.0
    for start in range(0, n, batch):
        end = min(n, start + batch)
        events = [
            Event(str(i), float(i), stream.events[i][0], None if delay else labels[i])
            for i in range(start, end)
        ]
        t0 = clock()
        verdicts, _ = proc.process_many(events)
        cpu += clock() - t0
        for i, v in enumerate(verdicts, start=start):
            scores[i] = v.proba.get(positive, 0.0)
            alerts[i] = v.classifier_alert or v.anomaly_alert
            predicted[i] = v.predicted == positive
            if delay:
                pending[i] = v
        if delay and end - delay > learned:
            due = [(pending[j], labels[j]) for j in range(learned, end - delay)]
            t0 = clock()
            proc.learn_many(due)
            cpu += clock() - t0
            for j in range(learned, end - delay):
                pending[j] = None
            learned = end - delay
    return Raw(scores, alerts, cpu, {"predicted": predicted})


def run_processor(stream: S.Stream, model: dict, delay: int = 0, batch: int = BATCH) -> dict:
    """streamimb's Processor with the model configuration `model` ({}: the library default): metrics.

    `f1` is over the alerts a user sees; `f1_predicted` over predicted == rare class."""
    return summarise(processor_raw(stream, model, delay, batch), truth_of(stream))


# --------------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------------
_BUILT: dict[tuple[str, bool], tuple[S.Stream, int]] = {}


def _stream(name: str, quick: bool) -> tuple[S.Stream, int]:
    if (name, quick) not in _BUILT:
        _BUILT[(name, quick)] = STREAMS[name](quick)
    return _BUILT[(name, quick)]


def _job(job: tuple[str, bool, str, dict | None, bool]) -> tuple[str, str, dict, float]:
    """One (stream, method): returns (stream, method, metrics, wall seconds)."""
    name, quick, method, model, use_cache = job
    stream, delay = _stream(name, quick)
    t0 = time.perf_counter()
    if method == OFFLINE_NAME:
        result = offline_bound(stream, use_cache)
    elif model is not None:
        result = run_processor(stream, model, delay)
    else:
        result = run_baselines(stream, delay, [method], use_cache)[method]
    return name, method, result, time.perf_counter() - t0


def _cost(job: tuple, sizes: dict[str, int]) -> float:
    """Rough relative cost of a job (longest first keeps every worker busy)."""
    method = job[2]
    weight = 10.0 if "ARF" in method else (3.0 if "ROS" in method else 1.0)
    return sizes[job[0]] * weight


def _fmt(v: float | None, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.{digits}f}"


def _eps(v: float | None) -> str:
    return "n/a" if v is None or math.isnan(v) else f"{v:,.0f}"


def render(doc: dict) -> str:
    """The Markdown report from the results document (what detection.json holds)."""
    figs = doc["figures"]
    out = [
        "# Detection: streamimb vs river baselines on every stream",
        "",
        f"Command: `{doc['command']}` ({doc['date']}, commit {doc['commit']}, Python "
        f"{figs['python']}, river {figs['river']}, scikit-learn {figs['sklearn']}, {figs['cpus']} CPUs "
        "shared with other jobs).",
        "",
        "Protocol: prequential (score, then learn), every method on the same events; labels immediate "
        "except where a stream says they are late. river baselines decide by argmax (`predict_one`); "
        f"streamimb runs through `Processor.process_many` in batches of {BATCH} (late labels through "
        "`learn_many`); its F1 is over the alerts a user sees (`classifier_alert or anomaly_alert`), 'F1 "
        "(pred)' over predicted == rare class (river: the same as F1). PR AUC = exact average "
        "precision of p(rare class); 2nd half = events n/2..n. events/CPU-s: predict + learn of the "
        "method only (noisy: shared machine). "
        "The offline bound is scikit-learn's `HistGradientBoostingClassifier` fitted on the first half "
        "and scored on the second; its F1 is the best over thresholds chosen on that half (an upper "
        "bound, not a deployable result, and no bound at all where the concept changes in the second "
        "half: Agrawal switches function at 70k, Elec2 drifts). River baselines: Hoeffding tree "
        "`grace_period=50, delta=1e-3`; "
        "LR = standardised numbers + one-hot categories -> `LogisticRegression()` (one-vs-rest for 3 "
        f"classes); ARF = `ARFClassifier(n_models={N_MODELS})`; RUS / ROS = river's RandomUnderSampler / "
        "RandomOverSampler towards a uniform class distribution.",
        "",
        "## Summary",
        "",
        "| stream | best river PR AUC | streamimb default PR AUC | best river F1 | streamimb default F1 | "
        "offline bound 2nd-half PR AUC / best F1 |",
        "|---|---|---|---|---|---|",
    ]
    for name, st in figs["streams"].items():
        meth = st["methods"]
        rivers = {m: r for m, r in meth.items() if m.startswith("river ")}
        d = meth.get(DEFAULT_NAME)
        if not rivers or d is None:
            continue
        bp = max(rivers, key=lambda m: _nan_low(rivers[m]["pr_auc"]))
        bf = max(rivers, key=lambda m: _nan_low(rivers[m]["f1"]))
        ob = st.get("offline_bound") or {}
        mark_p = "**" if _nan_low(d["pr_auc"]) > _nan_low(rivers[bp]["pr_auc"]) else ""
        mark_f = "**" if _nan_low(d["f1"]) > _nan_low(rivers[bf]["f1"]) else ""
        out.append(
            f"| {name} | {_fmt(rivers[bp]['pr_auc'])} ({bp}) | {mark_p}{_fmt(d['pr_auc'])}{mark_p} | "
            f"{_fmt(rivers[bf]['f1'])} ({bf}) | {mark_f}{_fmt(d['f1'])}{mark_f} | "
            f"{_fmt(ob.get('second_half_pr_auc'))} / {_fmt(ob.get('second_half_best_f1'))} |"
        )
    out += ["", "Bold: streamimb default above every river baseline.", ""]
    for name, st in figs["streams"].items():
        out += [
            f"## {name}",
            "",
            f"{st['description']}. {st['n']:,} events, {st['positives']:,} rare ({st['prevalence']:.2%})"
            + (f", labels {st['delay']:,} events late" if st["delay"] else ", labels immediate")
            + f". Last run {st['date']}, commit {st['commit']}.",
            "",
            "| method | PR AUC | F1 | F1 (pred) | precision | recall | 2nd-half PR AUC | 2nd-half F1 | "
            "events/CPU-s |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for m, r in st["methods"].items():
            out.append(
                f"| {m} | {_fmt(r['pr_auc'])} | {_fmt(r['f1'])} | {_fmt(r.get('f1_predicted', r['f1']))} | "
                f"{_fmt(r['precision'])} | {_fmt(r['recall'])} | {_fmt(r['second_half_pr_auc'])} | "
                f"{_fmt(r['second_half_f1'])} | {_eps(r['events_per_cpu_s'])} |"
            )
        ob = st.get("offline_bound")
        if ob:
            out.append(
                f"| {OFFLINE_NAME}, upper bound | - | - | - | - | - | {_fmt(ob['second_half_pr_auc'])} | "
                f"{_fmt(ob['second_half_best_f1'])} (best threshold) | "
                f"{_eps(ob['events_per_cpu_s'])} (fit + score) |"
            )
        out.append("")
    configs = figs.get("configs") or {}
    if configs:
        out += ["## streamimb configurations", ""]
        out += [f"- `{k}`: `{json.dumps(v)}`" for k, v in configs.items()]
        out.append("")
    return "\n".join(out) + "\n"


def _json_safe(value):
    """NaN -> None (null in JSON), recursively."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _nan_low(v: float | None) -> float:
    return -1.0 if v is None or math.isnan(v) else v


#: Run next to the default every time: the default model before the portfolio (one numpy tree ensemble
#: behind `oob`, labelled batches learned whole).
PREVIOUS_NAME = "streamimb previous default: oob(10 numpy HT)"
PREVIOUS_DEFAULT = {"classifier": {"kind": "numpy_hoeffding_tree"}, "learn_slice": 500}


def _parse_configs(items: Sequence[str]) -> dict[str, dict]:
    configs = {DEFAULT_NAME: {}, PREVIOUS_NAME: PREVIOUS_DEFAULT}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            raise SystemExit(f"--config takes NAME=JSON, got {item!r}")
        try:
            model = json.loads(text)
        except json.JSONDecodeError as e:
            raise SystemExit(f"--config {name}: not JSON ({e})") from e
        if not isinstance(model, dict):
            raise SystemExit(f"--config {name}: the model configuration must be a JSON object")
        from streamimb.config import ModelConfig

        ModelConfig.model_validate(model)  # fail here, not in a worker
        configs[f"streamimb {name.strip()}"] = model
    return configs


def _selected(methods: str, configs: dict[str, dict]) -> list[str]:
    every = [*RIVER_METHODS, OFFLINE_NAME]
    if not methods:
        return every
    wanted = [m.strip() for m in methods.split(",") if m.strip()]
    groups = {"river": RIVER_METHODS, "offline": [OFFLINE_NAME], "streamimb": []}
    chosen = []
    for w in wanted:
        if w in groups:
            chosen += groups[w]
        elif w in every:
            chosen.append(w)
        elif w not in configs:
            raise SystemExit(f"unknown method {w!r}; known: {', '.join([*every, *configs])}")
    return list(dict.fromkeys(chosen))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help=f"~{QUICK_N:,} events per stream; prints only")
    parser.add_argument("--only", default="", help=f"comma-separated streams ({', '.join(STREAMS)})")
    parser.add_argument(
        "--methods",
        default="",
        help="comma-separated river / offline methods or the groups 'river', 'offline' (default: all); the "
        "streamimb configurations always run",
    )
    parser.add_argument(
        "--config", action="append", default=[], metavar="NAME=JSON", help="a streamimb model configuration"
    )
    parser.add_argument("--jobs", type=int, default=1, help="worker processes over (stream, method) jobs")
    parser.add_argument("--no-write", action="store_true", help="print the report, write no results")
    parser.add_argument("--no-cache", action="store_true", help="recompute baselines, leave the cache alone")
    parser.add_argument("--render", action="store_true", help="rewrite detection.md from detection.json")
    args = parser.parse_args(argv)
    if args.render:
        doc = json.loads((RESULTS / "detection.json").read_text(encoding="utf-8"))
        (RESULTS / "detection.md").write_text(render(doc), encoding="utf-8")
        print(f"wrote {RESULTS / 'detection.md'}")
        return 0
    cli = argv if argv is not None else sys.argv[1:]
    origin = provenance(" ".join([".venv/bin/python benchmarks/detection.py", *cli]))
    configs = _parse_configs(args.config)
    chosen = _selected(args.methods, configs)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    names = stream_names(args.quick, only)
    started = time.perf_counter()
    print(f"building {len(names)} streams ...", flush=True)
    for name in names:
        _stream(name, args.quick)
    sizes = {name: len(_stream(name, args.quick)[0]) for name in names}
    jobs = [(s, args.quick, m, None, not args.no_cache) for s in names for m in chosen]
    jobs += [(s, args.quick, m, model, False) for s in names for m, model in configs.items()]
    jobs.sort(key=lambda j: -_cost(j, sizes))
    results: dict[str, dict[str, dict]] = {s: {} for s in names}

    def done(k: int, name: str, method: str, result: dict, wall: float) -> None:
        results[name][method] = result
        pr = result.get("pr_auc", result.get("second_half_pr_auc"))
        f1 = result.get("f1", result.get("second_half_best_f1"))
        elapsed = time.perf_counter() - started
        print(
            f"[{k}/{len(jobs)}] {elapsed / 60:5.1f} min  {name:17s} {method:26s} {wall:7.1f} s  "
            f"PR AUC {_fmt(pr)}  F1 {_fmt(f1)}",
            flush=True,
        )

    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            futures = [pool.submit(_job, j) for j in jobs]
            for k, fut in enumerate(as_completed(futures), start=1):
                done(k, *fut.result())
    else:
        for k, j in enumerate(jobs, start=1):
            done(k, *_job(j))
    import sklearn

    order = [*RIVER_METHODS, *configs]
    doc = {
        "benchmark": "detection",
        **origin,
        "figures": {
            "python": platform.python_version(),
            "river": river.__version__,
            "sklearn": sklearn.__version__,
            "cpus": os.cpu_count(),
            "wall_s": time.perf_counter() - started,
            "configs": {k: v for k, v in configs.items() if k != DEFAULT_NAME},
            "streams": {},
        },
    }
    path = RESULTS / "detection.json"
    partial = bool(only or args.methods)
    if partial and path.exists() and not args.quick:  # a partial run updates the stored results
        old = json.loads(path.read_text(encoding="utf-8"))["figures"]
        doc["figures"]["streams"] = old.get("streams", {})
        doc["figures"]["configs"] = {**old.get("configs", {}), **doc["figures"]["configs"]}
    for name in names:
        stream, delay = _stream(name, args.quick)
        truth = truth_of(stream)
        entry = doc["figures"]["streams"].get(name, {}) if partial else {}
        got = results[name]
        methods = {**entry.get("methods", {}), **{m: got[m] for m in order if m in got}}
        entry.update(
            description=stream.description,
            n=len(stream),
            positives=int(truth.sum()),
            prevalence=float(truth.mean()),
            delay=delay,
            date=origin["date"],
            commit=origin["commit"],
            methods=methods,
        )
        if OFFLINE_NAME in got:
            entry["offline_bound"] = got[OFFLINE_NAME]
        doc["figures"]["streams"][name] = _json_safe(entry)
    text = render(doc)
    print(text)
    if args.quick or args.no_write:
        return 0
    write_figures("detection", origin, doc["figures"], RESULTS)
    (RESULTS / "detection.md").write_text(text, encoding="utf-8")
    print(f"wrote {path} and {RESULTS / 'detection.md'}")
    return 0


if __name__ == "__main__":
    PS._pin_hash_seed()
    raise SystemExit(main())
