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

__all__ = ["DATA", "Stream", "agrawal", "bank_marketing", "creditcard_schedule", "three_class"]


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
    return Stream(
        name=f"agrawal_{seed}",
        events=events,
        positive=True,
        classes=[False, True],
        segments=segments,
        true_prevalence=true_p,
        description=(
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
    return Stream(
        name="bank_marketing",
        events=events,
        positive=True,
        classes=[False, True],
        segments=segments,
        true_prevalence=true_p,
        description=(
            f"UCI bank marketing, {size:,} calls in time order (May 2008 - Nov 2010), y=yes, no `duration`"
        ),
        nominal=[k for k in events[0][0] if k not in BANK_NUMERIC],
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
    return Stream(
        name="creditcard",
        events=events,
        positive=True,
        classes=[False, True],
        segments=segments,
        true_prevalence=true_p,
        description=(
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
