"""Realistic card transactions: fraud bursts on compromised cards, a fraud rate that shifts over time, and
chargeback labels that arrive days later (in event time).

Each card has a home country, a typical amount and favourite merchant categories. A compromised card makes
a short burst of frauds: larger amounts, foreign countries, risky categories, at night, in quick
succession. The share of fraud follows ``schedule``: a list of ``(until_event, fraud_rate)`` phases.

A transaction carries its raw fields (id, time, card, amount, hour, country, category) and, unless
``producer_features`` is off, three fields a producer would compute from the card's history
(``log_ratio_to_typical``, ``foreign``, ``minutes_since_last``); a real payment stream carries only the raw
fields, from which ``schema.entities: [card]`` computes such features itself.

>>> stream = CardStream(seed=1)
>>> tx, label = next(iter(stream))
>>> sorted(tx)[:4], label["label"] in ("0", "1")
(['amount', 'card', 'category', 'country'], True)
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

CATEGORIES = ["grocery", "fuel", "restaurant", "online_retail", "travel", "electronics", "pharmacy", "gaming"]
RISKY = ["electronics", "gaming", "online_retail", "travel"]
COUNTRIES = ["FR", "DE", "ES", "IT", "NL", "BE", "PT", "PL"]
FOREIGN = ["US", "BR", "NG", "RU", "CN", "TH"]

PRODUCER_FEATURES = ("log_ratio_to_typical", "foreign", "minutes_since_last")
DEFAULT_SCHEDULE = [(20_000, 0.005), (40_000, 0.02), (60_000, 0.003), (10**12, 0.01)]


@dataclass
class _Card:
    home: str
    typical: float
    favourites: list[str]
    last_time: float = 0.0
    burst_left: int = 0


@dataclass
class CardStream:
    """An endless stream of ``(transaction, label)`` dicts; labels carry their chargeback time."""

    n_cards: int = 5000
    seed: int = 42
    schedule: list[tuple[int, float]] = field(default_factory=lambda: list(DEFAULT_SCHEDULE))
    mean_gap_seconds: float = 2.0
    chargeback_days: tuple[float, float] = (1.0, 10.0)
    legit_label_days: float = 3.0
    producer_features: bool = True

    def fraud_rate(self, index: int) -> float:
        for until, rate in self.schedule:
            if index < until:
                return rate
        return self.schedule[-1][1]

    def __iter__(self) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        rng = random.Random(self.seed)
        cards = [
            _Card(rng.choice(COUNTRIES), math.exp(rng.gauss(3.3, 0.6)), rng.sample(CATEGORIES[:5], 2))
            for _ in range(self.n_cards)
        ]
        now = 1_700_000_000.0
        index = 0
        bursting: list[int] = []
        while True:
            now += rng.expovariate(1.0 / self.mean_gap_seconds)
            rate = self.fraud_rate(index)
            # Most frauds come in bursts: start a burst on a new card at a rate that yields `rate` overall.
            if rng.random() < rate / 3.5:  # a burst holds 3.5 frauds on average
                victim = rng.randrange(self.n_cards)
                cards[victim].burst_left = rng.randint(2, 5)
                bursting.append(victim)
            bursting = [c for c in bursting if cards[c].burst_left > 0]
            if bursting and rng.random() < 0.75:
                card_id = rng.choice(bursting)
                fraud = True
                cards[card_id].burst_left -= 1
            else:
                card_id = rng.randrange(self.n_cards)
                fraud = False
            tx = self._transaction(rng, index, card_id, cards[card_id], now, fraud)
            if not self.producer_features:
                for name in PRODUCER_FEATURES:
                    del tx[name]
            cards[card_id].last_time = now
            delay_days = rng.uniform(*self.chargeback_days) if fraud else self.legit_label_days
            label = {"id": tx["id"], "label": "1" if fraud else "0", "time": now + delay_days * 86400.0}
            yield tx, label
            index += 1

    @staticmethod
    def _transaction(
        rng: random.Random, index: int, card_id: int, card: _Card, now: float, fraud: bool
    ) -> dict:
        hour = (now / 3600.0) % 24
        if fraud:
            amount = card.typical * math.exp(rng.gauss(1.2, 0.8))
            country = rng.choice(FOREIGN) if rng.random() < 0.6 else card.home
            category = rng.choice(RISKY) if rng.random() < 0.7 else rng.choice(CATEGORIES)
            hour = rng.choice([0, 1, 2, 3, 4, 23]) + rng.random() if rng.random() < 0.5 else hour
        else:
            amount = card.typical * math.exp(rng.gauss(0.0, 0.5))
            country = card.home if rng.random() < 0.97 else rng.choice(COUNTRIES + FOREIGN)
            category = rng.choice(card.favourites) if rng.random() < 0.7 else rng.choice(CATEGORIES)
        since_last = now - card.last_time if card.last_time else 86400.0 * 30
        return {
            "id": f"tx-{index}",
            "time": round(now, 3),
            "card": f"card-{card_id}",
            "amount": round(amount, 2),
            "log_ratio_to_typical": round(math.log(amount / card.typical), 4),
            "hour": round(hour, 2),
            "foreign": 1.0 if country != card.home else 0.0,
            "minutes_since_last": round(min(since_last / 60.0, 43200.0), 2),
            "country": country,
            "category": category,
        }
