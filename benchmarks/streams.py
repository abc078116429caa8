"""Benchmark streams with a rare class whose prevalence shifts (see benchmarks/prevalence_shift.py).

Each generator returns a `Stream`: the events as a list of (features, label), the positive (rare) class,
the segments (name, start, end) and the true prevalence of the rare class at each event. Everything is
deterministic given the seed. Real data is read from ../shared/data (never copied into the project).
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from river.datasets import synth

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

__all__ = [
    "DATA", "Stream", "agrawal", "bank_marketing", "card_simulator", "churn_telco", "creditcard_schedule",
    "elec2", "forest_cover", "three_class",
]  # fmt: skip


@dataclass
class Stream:
    """A benchmark stream: events in order plus what the report needs to know about them."""

    name: str
    events: list[tuple[dict, object]]
    positive: object
    classes: list
    segments: list[tuple[str, int, int]]
    true_prevalence: np.ndarray
    description: str
    nominal: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)  # each event's entity key (the card), where it has one

    def __len__(self) -> int:
        return len(self.events)

    def shifts(self, min_ratio: float = 1.5) -> list[tuple[str, int, float, float]]:
        """Segment boundaries where the rare-class prevalence moves by at least `min_ratio` (either way).

        Returns (label, index, prevalence before, prevalence after).
        """
        out = []
        for (a, s0, e0), (b, s1, e1) in zip(self.segments, self.segments[1:], strict=False):
            before = float(np.mean(self.true_prevalence[s0:e0]))
            after = float(np.mean(self.true_prevalence[s1:e1]))
            if before > 0 and after > 0 and max(after / before, before / after) >= min_ratio:
                out.append((f"{a}->{b}", s1, before, after))
        return out


def _binary(
    name: str,
    events: list[tuple[dict, object]],
    segments: list[tuple[str, int, int]],
    true_prevalence: np.ndarray,
    description: str,
    nominal: list[str] | None = None,
) -> Stream:
    """A stream whose rare class is `True` (river's binary models take booleans)."""
    return Stream(name, events, True, [False, True], segments, true_prevalence, description, nominal or [])


def agrawal(seed: int = 42, n: int = 80_000) -> Stream:
    """BENCHMARKS.md section 1: river Agrawal made rare-positive by rejection sampling.

    For each event z ~ Bernoulli(p(t)) (drawn from `random.Random(seed + 10_000)`), then events are drawn
    from `synth.Agrawal(classification_function=2, seed=seed)` until the label equals z. At 70k the
    generator switches to classification function 6 (sudden concept drift). Segments: S1 0-20k 1%,
    S2 20k-40k 5%, S3 40k-60k 0.3%, S4a 60k-70k 2%, S4b 70k-80k 2% (function 6). `n` < 80k scales all
    boundaries proportionally (quick runs).
    """
    scale = n / 80_000
    bounds = [int(b * scale) for b in (0, 20_000, 40_000, 60_000, 70_000, 80_000)]
    prevalence = [0.01, 0.05, 0.003, 0.02, 0.02]
    names = ["S1", "S2", "S3", "S4a", "S4b"]
    gen = synth.Agrawal(classification_function=2, seed=seed)
    it = iter(gen)
    rng = random.Random(seed + 10_000)
    events: list[tuple[dict, object]] = []
    true_p = np.empty(n)
    for k, name in enumerate(names):
        start, end = bounds[k], bounds[k + 1]
        if name == "S4b":
            gen.classification_function = 6
        for i in range(start, end):
            z = rng.random() < prevalence[k]
            while True:
                x, y = next(it)
                if bool(y) == z:
                    break
            events.append((x, z))
            true_p[i] = prevalence[k]
    segments = [(names[k], bounds[k], bounds[k + 1]) for k in range(5)]
    return _binary(
        f"agrawal_{seed}",
        events,
        segments,
        true_p,
        (
            f"river Agrawal (function 2, then 6 from 70k), seed {seed}, rejection-sampled to 1% / 5% / 0.3% "
            "/ "
            f"2% / 2% over {n:,} events"
        ),
        nominal=[],  # integer-coded, but nominal multiway splits hurt the Hoeffding tree here
    )


def _read_bank() -> list[dict]:
    path = DATA / "bank_marketing" / "bank-additional-full.csv"
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh, delimiter=";"))


BANK_NUMERIC = [
    "age", "campaign", "pdays", "previous", "emp.var.rate", "cons.price.idx", "cons.conf.idx", "euribor3m",
    "nr.employed",
]  # fmt: skip


def bank_marketing(n: int | None = None) -> Stream:
    """UCI bank marketing in its original (time) order; label y == "yes"; `duration` dropped (it leaks).

    Segments are tenths of the stream; the rare-class prevalence moves from 2.8% to 45.9%.
    """
    rows = _read_bank()
    if n is not None:
        rows = rows[:n]
    events = []
    for r in rows:
        y = r.pop("y") == "yes"
        r.pop("duration")
        x = {k: (float(v) if k in BANK_NUMERIC else v) for k, v in r.items()}
        events.append((x, y))
    labels = np.array([y for _, y in events], dtype=float)
    size = len(events)
    bounds = [round(size * k / 10) for k in range(11)]
    segments = [(f"T{k + 1}", bounds[k], bounds[k + 1]) for k in range(10)]
    true_p = np.empty(size)
    for _, s, e in segments:
        true_p[s:e] = labels[s:e].mean()
    return _binary(
        "bank_marketing",
        events,
        segments,
        true_p,
        f"UCI bank marketing, {size:,} calls in time order (May 2008 - Nov 2010), y=yes, no `duration`",
        [k for k in events[0][0] if k not in BANK_NUMERIC],
    )


def creditcard_schedule(seed: int = 7, scale: float = 1.0) -> Stream:
    """The ULB card-fraud sample replayed at 0.2% -> 2% -> 0.5% fraud (segments of 25k, 15k, 28k events).

    Each of the 490 fraud slots is filled with the next fraud in time order (all 492 frauds but two); each
    normal slot with a normal drawn (with replacement) from a +-5% window of the time-ordered normals
    around the stream's progress, so features keep their time order. Fraud positions within a segment
    are uniform at random. Normals repeat about 14 times each. `scale` shrinks segment lengths (quick).
    """
    path = DATA / "creditcard_ulb_sample" / "creditcard_sample_by_time.csv"
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    feats = [f"V{i}" for i in range(1, 29)] + ["Amount"]
    frauds = [({k: float(r[k]) for k in feats}, True) for r in rows if r["Class"] == "1"]
    normals = [({k: float(r[k]) for k in feats}, False) for r in rows if r["Class"] == "0"]
    plan = [
        ("F1", int(25_000 * scale), 0.002),
        ("F2", int(15_000 * scale), 0.02),
        ("F3", int(28_000 * scale), 0.005),
    ]
    rng = random.Random(seed)
    total = sum(n for _, n, _ in plan)
    events: list[tuple[dict, object]] = []
    true_p = np.empty(total)
    segments = []
    next_fraud = 0
    start = 0
    for name, n, p in plan:
        k = round(n * p)
        spots = set(rng.sample(range(n), k))
        for i in range(n):
            pos = start + i
            if i in spots and next_fraud < len(frauds):
                events.append(frauds[next_fraud])
                next_fraud += 1
            else:
                centre = pos / total * len(normals)
                half = 0.05 * len(normals)
                j = int(min(max(rng.uniform(centre - half, centre + half), 0), len(normals) - 1))
                events.append(normals[j])
            true_p[pos] = p
        segments.append((name, start, start + n))
        start += n
    return _binary(
        "creditcard",
        events,
        segments,
        true_p,
        (
            "ULB card-fraud sample (492 frauds, 4,920 normals) replayed at 0.2% / 2% / 0.5% fraud over "
            f"{total:,} "
            f"events ({next_fraud} frauds used once each; normals resampled), seed {seed}"
        ),
    )


def three_class(seed: int = 5, n: int = 60_000) -> Stream:
    """A three-class stream with a rare class whose prevalence shifts.

    river `synth.RandomRBF(seed_model=seed, seed_sample=seed, n_classes=3, n_features=8, n_centroids=30)`,
    rejection-sampled to class shares 70/25/5 (0-20k), 74/25/1 (20k-40k), 65/25/10 (40k-60k); "c2" is rare.
    """
    scale = n / 60_000
    plan = [
        ("M1", 20_000, (0.70, 0.25, 0.05)),
        ("M2", 20_000, (0.74, 0.25, 0.01)),
        ("M3", 20_000, (0.65, 0.25, 0.10)),
    ]
    gen = iter(synth.RandomRBF(seed_model=seed, seed_sample=seed, n_classes=3, n_features=8, n_centroids=30))
    rng = random.Random(seed + 10_000)
    events: list[tuple[dict, object]] = []
    segments = []
    sizes = [int(m * scale) for _, m, _ in plan]
    true_p = np.empty(sum(sizes))
    start = 0
    for (name, _, dist), size in zip(plan, sizes, strict=True):
        for i in range(size):
            r = rng.random()
            want = 0 if r < dist[0] else (1 if r < dist[0] + dist[1] else 2)
            while True:
                x, y = next(gen)
                if y == want:
                    break
            events.append((x, f"c{want}"))
            true_p[start + i] = dist[2]
        segments.append((name, start, start + size))
        start += size
    return Stream(
        name="three_class",
        events=events,
        positive="c2",
        classes=["c0", "c1", "c2"],
        segments=segments,
        true_prevalence=true_p,
        description=(
            f"river RandomRBF (3 classes, 8 features, 30 centroids, seed {seed}) rejection-sampled to "
            "70/25/5, "
            f"74/25/1, 65/25/10 over {len(events):,} events; rare class c2"
        ),
    )


def _scheduled(
    positives: list[dict], negatives: list[dict], plan: list[tuple[str, int, float]], rng: random.Random
) -> tuple[list[tuple[dict, bool]], list[tuple[str, int, int]], np.ndarray]:
    """Lay out a stream by `plan` [(segment, length, prevalence)]: round(length * prevalence) positive slots
    at uniformly random places in each segment, filled with `positives` in order, the others with
    `negatives` in order (both lists must be long enough)."""
    events: list[tuple[dict, bool]] = []
    segments = []
    true_p = np.empty(sum(n for _, n, _ in plan))
    pi = ni = start = 0
    for name, n, p in plan:
        spots = set(rng.sample(range(n), round(n * p)))
        for i in range(n):
            if i in spots:
                events.append((positives[pi], True))
                pi += 1
            else:
                events.append((negatives[ni], False))
                ni += 1
        true_p[start : start + n] = p
        segments.append((name, start, start + n))
        start += n
    return events, segments, true_p


def _evenly(items: list, k: int) -> list:
    """`k` items spread evenly over `items`, in order."""
    return [items[int(j)] for j in np.linspace(0, len(items) - 1, k).round()]


CARD_NUMERIC = ["amount", "log_ratio_to_typical", "hour", "foreign", "minutes_since_last"]
CARD_NOMINAL = ["country", "category"]


def card_simulator(n: int = 100_000, seed: int = 42) -> Stream:
    """`streamimb.simulate.cards.CardStream(seed=seed)` with its default fraud schedule (0.5% to 20k, 2% to
    40k, 0.3% to 60k, 1% after; `n` < 100k scales the phase boundaries), the first `n` transactions.

    Features as examples/card_fraud/service.yaml's schema: numeric amount, log_ratio_to_typical, hour,
    foreign, minutes_since_last; categorical country, category (card id and time are not features). Label
    True for fraud (the simulator's "1"; river's binary models take bools). Most frauds come in bursts on
    one card.
    """
    from streamimb.simulate.cards import DEFAULT_SCHEDULE, CardStream

    scale = n / 100_000
    schedule = [(int(until * scale) if until < 10**12 else until, p) for until, p in DEFAULT_SCHEDULE]
    gen = iter(CardStream(seed=seed, schedule=schedule))
    events: list[tuple[dict, object]] = []
    cards: list[str] = []
    for _ in range(n):
        tx, label = next(gen)
        x = {k: float(tx[k]) for k in CARD_NUMERIC}
        x.update({k: tx[k] for k in CARD_NOMINAL})
        events.append((x, label["label"] == "1"))
        cards.append(tx["card"])
    bounds = [0] + [min(until, n) for until, _ in schedule]
    segments = [
        (f"P{k + 1}", bounds[k], bounds[k + 1]) for k in range(len(schedule)) if bounds[k] < bounds[k + 1]
    ]
    true_p = np.empty(n)
    for k, (_, s, e) in enumerate(segments):
        true_p[s:e] = schedule[k][1]
    stream = _binary(
        "card_sim",
        events,
        segments,
        true_p,
        (
            f"streamimb.simulate.cards.CardStream(seed={seed}), default schedule (fraud 0.5% / 2% / 0.3% / 1%"
            f", phases at {', '.join(f'{b:,}' for b in bounds[1:-1])}), {n:,} transactions, features of "
            "examples/card_fraud/service.yaml (5 numeric, country + category)"
        ),
        list(CARD_NOMINAL),
    )
    stream.keys = cards
    return stream


def forest_cover(n: int = 50_000, seed: int = 11) -> Stream:
    """ODDS forest cover (UCI Covertype class 2 normal vs class 4 rare, 10 numeric attributes) replayed at
    0.5% (first 30%), 3% (next 30%), 1% (last 40%) rare class over `n` events.

    The rare rows used are spread evenly over all 2,747 (in their original order); the normal rows are
    every ~5.7th of the 283,301 normals (in their original order, so the stream runs over the whole
    file); rare positions within a segment are uniform at random (`random.Random(seed)`).
    """
    data = np.load(DATA / "forestcover_odds" / "10_cover.npz")
    X, y = data["X"].astype(float), data["y"].astype(bool)
    names = [f"a{i}" for i in range(X.shape[1])]
    rows = [dict(zip(names, map(float, r), strict=True)) for r in X]
    rare = [r for r, t in zip(rows, y, strict=True) if t]
    normal = [r for r, t in zip(rows, y, strict=True) if not t]
    sizes = [int(n * 0.3), int(n * 0.3)]
    plan = [("C1", sizes[0], 0.005), ("C2", sizes[1], 0.03), ("C3", n - sum(sizes), 0.01)]
    k_pos = sum(round(m * p) for _, m, p in plan)
    positives, negatives = _evenly(rare, k_pos), _evenly(normal, n - k_pos)
    events, segments, true_p = _scheduled(positives, negatives, plan, random.Random(seed))
    return _binary(
        "forest_cover",
        events,
        segments,
        true_p,
        (
            f"ODDS forest cover (Covertype class 4 vs 2, 10 numeric), {k_pos} of the 2,747 rare rows and "
            f"{n - k_pos:,} of the 283,301 normals taken evenly in file order, replayed at 0.5% / 3% / 1% "
            f"over {n:,} events, seed {seed}"
        ),
    )


ELEC_FEATURES = ["date", "day", "period", "nswprice", "nswdemand", "vicprice", "vicdemand", "transfer"]


def elec2(n: int | None = None, seed: int = 3, window: int = 1000) -> Stream:
    """Elec2 in its time order with class UP thinned to a rare class: 2% / 8% / 1% in the first / second /
    last third of the file (segments E1-E3).

    Every DOWN row is kept; an UP row is kept with probability p (1 - u) / ((1 - p) u), u the share of UP
    in the +-`window` rows around it and p the segment's target (`random.Random(seed)`), so the stream stays
    in time order with no row repeated (about 27k events: the 26,075 DOWN rows and ~1,000 UP). `n`: keep
    the first `n` events (quick runs).
    """
    path = DATA / "elec2" / "electricity.csv"
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    up = np.array([r["class"] == "UP" for r in rows], dtype=float)
    total = len(rows)
    c = np.concatenate([[0.0], np.cumsum(up)])
    rng = random.Random(seed)
    targets = [("E1", 0.02), ("E2", 0.08), ("E3", 0.01)]
    events: list[tuple[dict, object]] = []
    true_p: list[float] = []
    segments = []
    for k, (name, p) in enumerate(targets):
        start = len(events)
        for j in range(total * k // 3, total * (k + 1) // 3):
            r = rows[j]
            if up[j]:
                lo, hi = max(0, j - window), min(total, j + window + 1)
                u = (c[hi] - c[lo]) / (hi - lo)
                if rng.random() >= min(1.0, p * (1 - u) / ((1 - p) * u)):
                    continue
            events.append(({f: float(r[f]) for f in ELEC_FEATURES}, bool(up[j])))
            true_p.append(p)
        segments.append((name, start, len(events)))
    if n is not None and n < len(events):
        events, true_p = events[:n], true_p[:n]
        segments = [(s, a, min(b, n)) for s, a, b in segments if a < n]
    return _binary(
        "elec2",
        events,
        segments,
        np.array(true_p),
        (
            f"Elec2 (NSW electricity, 45,312 half-hours in time order), class UP thinned to 2% / 8% / 1% by "
            f"thirds of the file (every DOWN row kept), {len(events):,} events, seed {seed}"
        ),
    )


CHURN_NUMERIC = ["SeniorCitizen", "tenure", "MonthlyCharges", "TotalCharges"]


def churn_telco(seed: int = 13) -> Stream:
    """IBM telco churn sample (fictional telco, 7,043 customers, Churn=Yes 26.5%) as it is, shuffled with
    `random.Random(seed)` (the file has no time order). `customerID` dropped; the 11 blank `TotalCharges`
    (customers with tenure 0) are 0.0."""
    path = DATA / "churn_telco_ibm" / "Telco-Customer-Churn.csv"
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    random.Random(seed).shuffle(rows)
    events: list[tuple[dict, object]] = []
    for r in rows:
        r.pop("customerID")
        y = r.pop("Churn") == "Yes"
        x = {k: (float(v.strip() or 0.0) if k in CHURN_NUMERIC else v) for k, v in r.items()}
        events.append((x, y))
    labels = np.array([y for _, y in events], dtype=float)
    return _binary(
        "churn_telco",
        events,
        [("all", 0, len(events))],
        np.full(len(events), labels.mean()),
        (
            f"IBM telco churn sample (fictional, {len(events):,} customers, Churn=Yes {labels.mean():.1%}), "
            f"shuffled with seed {seed}; customerID dropped"
        ),
        [k for k in events[0][0] if k not in CHURN_NUMERIC],
    )
