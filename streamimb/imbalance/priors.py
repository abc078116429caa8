"""Time-decayed class-prior tracking with prevalence-change detection.

`PriorTracker` keeps exponentially decayed class counts, so `priors()` follows the class prevalence as it
moves. The half-life is counted in labelled events (default) or in event time (`time_based=True`). In
event-time mode every label is weighted by its own event time, so the estimate does not depend on the
order in which labels arrive: a label that arrives late counts exactly as much as it would have on time.

`PrevalenceChangeDetector` runs, for each class, two Bernoulli CUSUM tests (odds of the class up or down
by `factor` against the tracker's current estimate). When one fires, the tracker restarts its counts from
the events since the estimated change point, so its memory becomes "everything since the change" and
grows back to the full half-life as the new prevalence settles.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Any

import numpy as np
from river import base

from streamimb.jit import jit

__all__ = ["PrevalenceChange", "PrevalenceChangeDetector", "PriorTracker"]


class PrevalenceChange(dict):
    """A detected prevalence change: a plain dict (picklable, JSON-friendly) with fixed keys.

    Keys: `label`, `direction` ("up" or "down"), `before`, `after` (estimated prevalences),
    `n_labelled` (labelled events seen when it fired), `since` (labelled events since the estimated
    change point) and `t` (event time of the triggering label, or None).
    """


class _Cusum:
    """One-sided Bernoulli log-likelihood-ratio CUSUM with the change-point window it implies."""

    __slots__ = ("hits", "n", "s")

    def __init__(self) -> None:
        self.s = 0.0
        self.n = 0
        self.hits = 0

    def step(self, inc: float, hit: bool) -> None:
        self.s += inc
        if self.s <= 0.0:
            self.s, self.n, self.hits = 0.0, 0, 0
        else:
            self.n += 1
            self.hits += hit

    def __getstate__(self) -> tuple[float, int, int]:
        return (self.s, self.n, self.hits)

    def __setstate__(self, state: tuple[float, int, int]) -> None:
        self.s, self.n, self.hits = state


@jit
def _shift_odds(p: float, factor: float) -> float:
    """The probability whose odds are `factor` times the odds of `p`."""
    return factor * p / (1.0 - p + factor * p)


class PrevalenceChangeDetector(base.Base):
    """Detect that a class's prevalence moved by at least `factor` (in odds), up or down.

    For each class two CUSUMs accumulate the log-likelihood ratio of "prevalence is `p1`" against
    "prevalence is `p0`", where `p0` is the reference estimate passed to `update` and `p1` has `factor`
    times (up) or 1/`factor` times (down) the odds of `p0`. A test fires when its sum exceeds `threshold`.
    With two classes only the rarer one is tested (the other mirrors it).

    Parameters
    ----------
    factor
        Smallest odds ratio the tests are tuned to. Larger changes are found faster.
    threshold
        CUSUM decision threshold (log-likelihood units): higher means fewer false alarms, later detection.
    min_events
        Labelled events after a (re)start before any test may fire.

    Examples
    --------
    >>> import random
    >>> det = PrevalenceChangeDetector(factor=3.0, threshold=8.0)
    >>> rng = random.Random(1)
    >>> fired = []
    >>> for i in range(6000):
    ...     p = 0.01 if i < 3000 else 0.05
    ...     y = "fraud" if rng.random() < p else "ok"
    ...     for change in det.update(y, {"fraud": 0.01, "ok": 0.99}):
    ...         fired.append((i, change["label"], change["direction"]))
    ...         det.reset()
    >>> fired[0][1:], 3000 < fired[0][0] < 3600
    (('fraud', 'up'), True)
    """

    def __init__(self, factor: float = 3.0, threshold: float = 12.0, min_events: int = 100) -> None:
        if factor <= 1.0:
            raise ValueError("factor must be > 1")
        self.factor = factor
        self.threshold = threshold
        self.min_events = min_events
        self._up: dict[Hashable, _Cusum] = {}
        self._down: dict[Hashable, _Cusum] = {}
        self._n = 0

    def reset(self) -> None:
        """Forget all evidence (called after the reference estimate was restarted)."""
        self._up.clear()
        self._down.clear()
        self._n = 0

    def update(
        self, y: Hashable, priors: dict[Hashable, float], floor: float = 1e-4
    ) -> list[PrevalenceChange]:
        """Feed one label with the reference prevalences; return the changes detected now.

        Each returned change carries `label`, `direction`, `before` (the reference), `after` (the
        prevalence over the estimated change window) and `since` (length of that window).
        """
        self._n += 1
        if len(priors) < 2:
            return []
        labels: list[Hashable] = list(priors)
        if len(labels) == 2:
            labels = [min(labels, key=lambda c: (priors[c], str(c)))]
        changes: list[PrevalenceChange] = []
        ceiling = 1.0 - floor
        for c in labels:
            changes += self._test(c, min(max(priors[c], floor), ceiling), y == c)
        return changes

    def _test(self, c: Hashable, p0: float, hit: bool) -> list[PrevalenceChange]:
        """Step both tests of class ``c`` (reference prevalence ``p0``); the changes they detect."""
        changes = []
        for direction, table, f in (("up", self._up, self.factor), ("down", self._down, 1.0 / self.factor)):
            p1 = _shift_odds(p0, f)
            inc = math.log(p1 / p0) if hit else math.log((1.0 - p1) / (1.0 - p0))
            cusum = table.get(c)
            if cusum is None:
                cusum = table[c] = _Cusum()
            cusum.step(inc, hit)
            if cusum.s > self.threshold and self._n >= self.min_events:
                after = (cusum.hits + 0.5) / (cusum.n + 1.0)
                changes.append(
                    PrevalenceChange(label=c, direction=direction, before=p0, after=after, since=cusum.n)
                )
        return changes


class PriorTracker(base.Base):
    """Exponentially decayed class frequencies for any number of classes.

    Parameters
    ----------
    half_life
        Half-life of a label's weight, in labelled events (default) or in event-time units
        (`time_based=True`, e.g. seconds). Use thousands of events at fraud-like prevalences: a short
        memory collapses the estimate of a 1% class to zero between its rare occurrences.
    time_based
        Decay by event time `t` (passed to `update`) instead of by the count of labels. A late label is
        then weighted by its own age, so the estimate is independent of label arrival order.
    detect_changes
        Run a `PrevalenceChangeDetector` and restart the counts from the estimated change point when it
        fires (a fast estimate that grows back to the full half-life).
    change_factor, change_threshold, change_min_events
        Parameters of the detector (odds ratio, CUSUM threshold, cool-down after a restart).
    prior_counts
        Optional pseudo-counts to start from (e.g. `{"fraud": 2, "ok": 998}`); empty by default.

    Examples
    --------
    >>> tracker = PriorTracker(half_life=1000)
    >>> for i in range(5000):
    ...     _ = tracker.update("fraud" if i % 50 == 0 else "ok")
    >>> round(tracker.priors()["fraud"], 3)
    0.02
    >>> sorted(tracker.classes)
    ['fraud', 'ok']

    Event-time decay, with a label that arrives late (time 5 arrives after time 10):

    >>> a = PriorTracker(half_life=10.0, time_based=True, detect_changes=False)
    >>> b = PriorTracker(half_life=10.0, time_based=True, detect_changes=False)
    >>> for y, t in [("x", 0.0), ("y", 5.0), ("x", 10.0)]:
    ...     _ = a.update(y, t)
    >>> for y, t in [("x", 0.0), ("x", 10.0), ("y", 5.0)]:
    ...     _ = b.update(y, t)
    >>> a.priors() == b.priors()
    True
    """

    def __init__(
        self,
        half_life: float = 2000.0,
        time_based: bool = False,
        detect_changes: bool = True,
        change_factor: float = 3.0,
        change_threshold: float = 12.0,
        change_min_events: int = 100,
        prior_counts: dict[Hashable, float] | None = None,
    ) -> None:
        if half_life <= 0:
            raise ValueError("half_life must be > 0")
        self.half_life = half_life
        self.time_based = time_based
        self.detect_changes = detect_changes
        self.change_factor = change_factor
        self.change_threshold = change_threshold
        self.change_min_events = change_min_events
        self.prior_counts = prior_counts
        self._decay = 2.0 ** (-1.0 / half_life)
        self._counts: dict[Hashable, float] = dict(prior_counts or {})
        self._now: float | None = None
        self._n = 0
        self._since_restart = 0
        self._detector = PrevalenceChangeDetector(change_factor, change_threshold, change_min_events)
        self._changes: list[PrevalenceChange] = []
        self._last_change: PrevalenceChange | None = None

    # -- reading -------------------------------------------------------------------------------------
    @property
    def classes(self) -> list[Hashable]:
        """Classes seen so far, in order of first appearance."""
        return list(self._counts)

    @property
    def n_labelled(self) -> int:
        """Number of labels fed to `update`."""
        return self._n

    @property
    def mass(self) -> float:
        """Total decayed weight: the effective number of labels behind the estimate."""
        return sum(self._counts.values())

    @property
    def settling(self) -> bool:
        """True while the estimate runs fast after a detected change (memory shorter than the half-life)."""
        return self._last_change is not None and self._since_restart < self.half_life

    @property
    def last_change(self) -> PrevalenceChange | None:
        """The most recent detected prevalence change, or None."""
        return self._last_change

    @property
    def changes(self) -> list[PrevalenceChange]:
        """All detected prevalence changes, oldest first."""
        return list(self._changes)

    def priors(self) -> dict[Hashable, float]:
        """Current class-prevalence estimates (sum to 1; empty before the first label).

        The same dict is returned until the next update: read it, do not change it.
        """
        cached = self.__dict__.get("_cached_priors")
        if cached is None:
            total = sum(self._counts.values())
            cached = {c: v / total for c, v in self._counts.items()} if total > 0.0 else {}
            self._cached_priors = cached
        return cached

    def state(self) -> dict[str, Any]:
        """A JSON-friendly summary for reports and telemetry."""
        return {
            "priors": {str(c): p for c, p in self.priors().items()},
            "n_labelled": self._n,
            "mass": self.mass,
            "settling": self.settling,
            "n_changes": len(self._changes),
            "last_change": None
            if self._last_change is None
            else {k: v for k, v in self._last_change.items()},
        }

    # -- learning ------------------------------------------------------------------------------------
    def _advance(self, t: float | None) -> float:
        """Move the clock and decay counts; return the weight of the incoming label."""
        if not self.time_based:
            d = self._decay
            for c in self._counts:
                self._counts[c] *= d
            return 1.0
        if t is None:
            if self._now is None:
                raise ValueError("time_based tracker needs event time t on the first update")
            t = self._now
        if self._now is None:
            self._now = float(t)
            return 1.0
        if t > self._now:
            d = 2.0 ** (-(t - self._now) / self.half_life)
            for c in self._counts:
                self._counts[c] *= d
            self._now = float(t)
            return 1.0
        return 2.0 ** (-(self._now - t) / self.half_life)

    def update(self, y: Hashable, t: float | None = None) -> list[Hashable]:
        """Count one label (with its event time `t` in time-based mode).

        Returns the classes whose prevalence change was detected on this update (usually empty); the
        details are in `last_change`.
        """
        reference = self.priors()
        self._cached_priors = None
        weight = self._advance(t)
        self._counts[y] = self._counts.get(y, 0.0) + weight
        self._n += 1
        self._since_restart += 1
        if not self.detect_changes or y not in reference:
            return []
        floor = 0.5 / max(sum(self._counts.values()), 1.0)
        return self._record_changes(self._detector.update(y, reference, floor=floor), t)

    def _record_changes(self, changes: list[PrevalenceChange], t: float | None) -> list[Hashable]:
        """Restart on the largest of the changes detected on one update; the classes they concern."""
        if not changes:
            return []
        best = max(changes, key=lambda ch: abs(math.log(ch["after"] / ch["before"])))
        self._restart(best)
        for ch in changes:
            ch["n_labelled"] = self._n
            ch["t"] = t
            self._changes.append(ch)
        self._last_change = best
        return [ch["label"] for ch in changes]

    def update_many(
        self, ys: list[Hashable], ts: list[float | None] | None = None
    ) -> list[tuple[int, list[Hashable]]]:
        """``update`` for each label in order; returns ``(position in ys, classes)`` for every change.

        >>> a, b = PriorTracker(half_life=50), PriorTracker(half_life=50)
        >>> ys = ["x"] * 300 + ["y"] * 100
        >>> changes = a.update_many(ys)
        >>> changes == [(i, c) for i, y in enumerate(ys) if (c := b.update(y))] and a.priors() == b.priors()
        True
        """
        counts = self._counts
        if self.time_based or len(counts) != 2 or not counts.keys() >= set(ys) or sum(counts.values()) <= 0:
            out = []
            for i, y in enumerate(ys):
                if changed := self.update(y, None if ts is None else ts[i]):
                    out.append((i, changed))
            return out
        return self._update_two_classes(ys, ts)

    def _update_two_classes(
        self, ys: list[Hashable], ts: list[float | None] | None
    ) -> list[tuple[int, list[Hashable]]]:
        """``update_many`` with two classes seen and no new one: the same arithmetic as ``update``, in
        the same order (so the same floats), compiled (`_two_class_run`) between the labels on which a
        test fires; those are handed to ``_record_changes`` as ``update`` does."""
        out = []
        detector = self._detector
        first, second = self._counts
        classes = (first, second)
        hit_first = np.fromiter((y == first for y in ys), dtype=np.bool_, count=len(ys))
        cusum = np.zeros((2, 2, 3))  # class, direction (up, down), (sum, events, hits)
        touched = np.zeros(2, dtype=np.bool_)
        for r, c in enumerate(classes):
            for d, table in enumerate((detector._up, detector._down)):
                if c in table:
                    cusum[r, d] = table[c].__getstate__()
                    touched[r] = True
        counts = np.array([self._counts[first], self._counts[second]])
        fired = np.zeros(2, dtype=np.bool_)
        rare = np.zeros(2)  # the tested class and its reference prevalence when a test fired
        self._cached_priors = None
        i = 0
        while i < len(ys):
            done = _two_class_run(
                hit_first[i:], counts, self._decay, self.detect_changes, str(first) <= str(second),
                detector.factor, detector.threshold, detector.min_events, detector._n, cusum, touched,
                fired, rare,
            )  # fmt: skip
            self._n += done
            self._since_restart += done
            if self.detect_changes:
                detector._n += done
            self._counts = {first: float(counts[0]), second: float(counts[1])}
            self._store_cusums(classes, cusum, touched)
            i += done
            if not fired.any():
                break
            r, p0 = int(rare[0]), float(rare[1])
            changes = [
                PrevalenceChange(
                    label=classes[r],
                    direction=direction,
                    before=p0,
                    after=(cusum[r, d, 2] + 0.5) / (cusum[r, d, 1] + 1.0),
                    since=int(cusum[r, d, 1]),
                )
                for d, direction in enumerate(("up", "down"))
                if fired[d]
            ]
            out.append((i - 1, self._record_changes(changes, None if ts is None else ts[i - 1])))
            counts[:] = self._counts[first], self._counts[second]
            cusum[:] = 0.0  # the restart reset the detector
            touched[:] = False
        return out

    def _store_cusums(
        self, classes: tuple[Hashable, Hashable], cusum: np.ndarray, touched: np.ndarray
    ) -> None:
        """Write `_two_class_run`'s test states back to the detector's tables."""
        for r, c in enumerate(classes):
            if not touched[r]:
                continue
            for d, table in enumerate((self._detector._up, self._detector._down)):
                test = table.get(c)
                if test is None:
                    test = table[c] = _Cusum()
                test.s, test.n, test.hits = float(cusum[r, d, 0]), int(cusum[r, d, 1]), int(cusum[r, d, 2])

    def _restart(self, change: PrevalenceChange) -> None:
        """Restart counts from the change window: the changed class at its new level, others rescaled."""
        window = max(float(change["since"]), float(self.change_min_events))
        label, after = change["label"], change["after"]
        total = sum(self._counts.values())
        rest = total - self._counts[label]
        scale = (1.0 - after) / rest if rest > 0 else 0.0
        new = {c: v * scale for c, v in self._counts.items()}
        new[label] = after
        self._counts = {c: v * window for c, v in new.items()}
        self._cached_priors = None
        self._since_restart = 0
        self._detector.reset()


@jit
def _two_class_run(
    hit_first: np.ndarray,
    counts: np.ndarray,
    decay: float,
    detect: bool,
    first_name_first: bool,
    factor: float,
    threshold: float,
    min_events: int,
    n_tested: int,
    cusum: np.ndarray,
    touched: np.ndarray,
    fired: np.ndarray,
    rare: np.ndarray,
) -> int:
    """`PriorTracker.update` over two classes (``hit_first``: the label is the first class), in place on
    ``counts`` and the CUSUM states; stops after the first label on which a test fires (``fired`` per
    direction, ``rare`` the class tested and its reference prevalence). Returns the labels consumed."""
    a, b = counts[0], counts[1]
    for i in range(len(hit_first)):
        total = a + b
        pa, pb = a / total, b / total  # the reference: priors() before this label
        a *= decay
        b *= decay
        if hit_first[i]:
            a += 1.0
        else:
            b += 1.0
        if not detect:
            continue
        floor = 0.5 / max(a + b, 1.0)
        n_tested += 1
        r, p = (0, pa) if pa < pb or (pa == pb and first_name_first) else (1, pb)
        hit = hit_first[i] == (r == 0)
        p0 = min(max(p, floor), 1.0 - floor)
        touched[r] = True
        for d in range(2):
            f = factor if d == 0 else 1.0 / factor
            p1 = _shift_odds(p0, f)
            inc = math.log(p1 / p0) if hit else math.log((1.0 - p1) / (1.0 - p0))
            s = cusum[r, d, 0] + inc
            if s <= 0.0:
                cusum[r, d, 0], cusum[r, d, 1], cusum[r, d, 2] = 0.0, 0.0, 0.0
            else:
                cusum[r, d, 0] = s
                cusum[r, d, 1] += 1.0
                cusum[r, d, 2] += 1.0 if hit else 0.0
            fired[d] = cusum[r, d, 0] > threshold and n_tested >= min_events
        if fired[0] or fired[1]:
            counts[0], counts[1] = a, b
            rare[0], rare[1] = r, p0
            return i + 1
    counts[0], counts[1] = a, b
    return len(hit_first)
