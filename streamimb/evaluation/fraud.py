"""Fraud-detection metrics by day and by card, as the Fraud Detection Handbook defines them (Le Borgne et al.,
chapters 3.4 and 4.2), plus its train / delay / test split.

Card Precision@k (CP@k): each day, rank the cards by their highest fraud score of the day, take the top
``k``, and count the share of them that had a fraud that day (divided by ``k`` even on a day with fewer
cards). The mean over the days is CP@k. As in the Handbook, a card found fraudulent in a day's top ``k``
is left out of the following days (its owner was contacted; the card is blocked).

>>> day = [0, 0, 0, 0, 1, 1, 1]
>>> card = [1, 1, 2, 3, 1, 2, 3]
>>> fraud = [0, 1, 0, 0, 1, 0, 1]
>>> score = [0.2, 0.9, 0.8, 0.1, 0.9, 0.7, 0.8]
>>> card_precision_at_k(day, card, fraud, score, k=2).per_day  # day 1: card 1, detected on day 0, left out
[0.5, 0.5]
>>> card_precision_at_k(day, card, fraud, score, k=2, remove_detected=False).per_day
[0.5, 1.0]
>>> cp = card_precision_at_k(day, card, fraud, score, k=1)
>>> cp.mean, cp.frauded_cards, cp.best_possible
(1.0, [1, 1], 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from streamimb.evaluation.metrics import pr_auc, roc_auc

ArrayLike = Sequence[int] | Sequence[float] | Sequence[bool] | np.ndarray


@dataclass
class CardPrecision:
    """CP@k: the mean over days, the precision of each day, and how many defrauded cards each day had
    (after leaving out the cards detected on earlier days): the best a perfect ranking can do that day is
    ``min(k, frauded_cards) / k``."""

    k: int
    mean: float
    per_day: list[float]
    days: list[int]
    frauded_cards: list[int]

    @property
    def best_possible(self) -> float:
        """The CP@k of a perfect ranking on the same days (with the same cards left out)."""
        return float(np.mean([min(self.k, n) / self.k for n in self.frauded_cards])) if self.days else 0.0


def card_precision_at_k(
    day: ArrayLike,
    card: ArrayLike,
    fraud: ArrayLike,
    score: ArrayLike,
    k: int = 100,
    remove_detected: bool = True,
) -> CardPrecision:
    """Card Precision@k per day and its mean (see the module docstring). ``day`` is any integer day index,
    ``card`` any integer card (customer) key; ties in score keep the lower card key first."""
    d = np.asarray(day, dtype=np.int64)
    c = np.asarray(card, dtype=np.int64)
    y = np.asarray(fraud, dtype=bool)
    s = np.asarray(score, dtype=float)
    detected: set[int] = set()
    per_day: list[float] = []
    counts: list[int] = []
    days = sorted(np.unique(d).tolist())
    for today in days:
        rows = np.flatnonzero(d == today)
        if detected:
            rows = rows[~np.isin(c[rows], np.fromiter(detected, dtype=np.int64))]
        cards, inverse = np.unique(c[rows], return_inverse=True)
        best = np.full(cards.size, -np.inf)
        np.maximum.at(best, inverse, s[rows])
        frauded = np.zeros(cards.size, dtype=bool)
        np.logical_or.at(frauded, inverse, y[rows])
        top = np.argsort(-best, kind="stable")[:k]
        hits = cards[top][frauded[top]]
        per_day.append(float(hits.size / k))
        counts.append(int(frauded.sum()))
        if remove_detected:
            detected.update(hits.tolist())
    return CardPrecision(k, float(np.mean(per_day)) if per_day else float("nan"), per_day, days, counts)


def handbook_split(
    day: ArrayLike,
    card: ArrayLike,
    fraud: ArrayLike,
    train_start: int,
    train_days: int = 7,
    delay_days: int = 7,
    test_days: int = 7,
) -> tuple[np.ndarray, np.ndarray]:
    """The Handbook's split (its ``get_train_test_set``): boolean masks of the training rows (days
    ``train_start`` .. +``train_days``) and of the test rows (the ``test_days`` days after a gap of
    ``delay_days``), leaving out of each test day the cards known to be compromised by then: those with a
    fraud in the training period, or in the delay period up to the day before the matching delay day (the
    frauds known ``delay_days`` before the test day).

    >>> day = [0, 0, 1, 2, 2, 2]
    >>> card = [1, 2, 2, 1, 2, 3]
    >>> fraud = [1, 0, 1, 0, 0, 0]
    >>> train, test = handbook_split(day, card, fraud, train_start=0, train_days=1, delay_days=1, test_days=1)
    >>> train.tolist(), test.tolist()  # card 1 had a fraud in training: left out of the test day
    ([True, True, False, False, False, False], [False, False, False, False, True, True])
    """
    d = np.asarray(day, dtype=np.int64)
    c = np.asarray(card, dtype=np.int64)
    y = np.asarray(fraud, dtype=bool)
    train = (d >= train_start) & (d < train_start + train_days)
    known = set(np.unique(c[train & y]).tolist())
    test = np.zeros(d.size, dtype=bool)
    for i in range(test_days):
        revealed = d == train_start + train_days + i - 1  # frauds of that day are known by test day i
        known.update(np.unique(c[revealed & y]).tolist())
        today = d == train_start + train_days + delay_days + i
        if known:
            today &= ~np.isin(c, np.fromiter(known, dtype=np.int64))
        test |= today
    return train, test


def fraud_metrics(
    day: ArrayLike, card: ArrayLike, fraud: ArrayLike, score: ArrayLike, k: int = 100
) -> dict[str, float]:
    """ROC AUC, average precision (PR AUC) and CP@k of ``score`` on the given rows, with the share of frauds
    and the best CP@k possible on those days.

    >>> m = fraud_metrics([0, 0, 0, 0], [1, 2, 3, 4], [0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8], k=2)
    >>> m["roc_auc"], m["pr_auc"], m["card_precision_at_k"]
    (1.0, 1.0, 1.0)
    """
    cp = card_precision_at_k(day, card, fraud, score, k)
    y = np.asarray(fraud, dtype=bool)
    return {
        "roc_auc": roc_auc(y, score),
        "pr_auc": pr_auc(y, score),
        "card_precision_at_k": cp.mean,
        "card_precision_at_k_best": cp.best_possible,
        "k": k,
        "fraud_share": float(y.mean()) if y.size else float("nan"),
        "transactions": int(y.size),
    }
