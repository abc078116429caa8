"""Monthly customer activity with churn outcomes that arrive weeks later (in event time), and a churn rate
that falls after a retention campaign.

Every month each active customer sends one activity record: hours of use, the change of use against the
customer's own typical month, support calls, days of payment delay, tenure and plan. Whether the customer
leaves at the end of that month is the label; it is known a few weeks later (``label_delay_days`` after
the record: 2 to 5 weeks by default). A customer who leaves is replaced by a new one, so each month has
exactly ``n_customers`` records.

Churn follows a prior shift: each customer's risk (plan, tenure, a personal factor) is rescaled every month
so that the expected share of leavers is ``rate_before`` until ``campaign_month`` and ``rate_after`` from
then on, while leavers look the same before and after (less use, more support calls, late payments).

>>> stream = ChurnStream(n_customers=50, seed=1)
>>> record, label = next(iter(stream))
>>> sorted(record)[:4], label["label"] in ("0", "1"), label["time"] > record["time"]
(['customer', 'id', 'monthly_charge', 'payment_delay_days'], True, True)
>>> rows = list(itertools.islice(ChurnStream(n_customers=200, seed=2, campaign_month=6), 200 * 12))
>>> before = sum(lab["label"] == "1" for _, lab in rows[: 200 * 6]) / (200 * 6)
>>> after = sum(lab["label"] == "1" for _, lab in rows[200 * 6 :]) / (200 * 6)
>>> 0.06 < before < 0.10, 0.015 < after < 0.045
(True, True)
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["MONTH_SECONDS", "PLANS", "ChurnStream"]

MONTH_SECONDS = 30 * 86400.0
DAY_SECONDS = 86400.0

# plan -> (monthly charge, churn risk factor, typical hours of use)
PLANS: dict[str, tuple[float, float, float]] = {
    "basic": (15.0, 1.4, 18.0),
    "standard": (30.0, 1.0, 35.0),
    "premium": (55.0, 0.7, 60.0),
}
_PLAN_WEIGHTS = (0.45, 0.4, 0.15)


@dataclass
class _Customer:
    name: str
    plan: str
    tenure: int
    typical_hours: float
    risk: float


def _poisson(rng: random.Random, lam: float) -> int:
    """Knuth's method (small means only)."""
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _tenure_risk(tenure: int) -> float:
    """New customers leave more often than loyal ones."""
    return 1.6 if tenure < 6 else 0.6 if tenure >= 24 else 1.0


@dataclass
class ChurnStream:
    """An iterator of ``(record, label)`` dicts in event-time order; labels carry the time they arrive.

    Parameters
    ----------
    n_customers
        Active customers (and records per month).
    seed
        Random seed: the same seed gives the same stream.
    rate_before, rate_after
        Expected monthly churn rate before and from ``campaign_month`` on.
    campaign_month
        The month (0-based) the retention campaign starts.
    label_delay_days
        Range of the delay between a record and its churn outcome.
    months
        Months to generate (None: endless).
    start
        Event time (epoch seconds) of month 0.
    """

    n_customers: int = 1000
    seed: int = 42
    rate_before: float = 0.08
    rate_after: float = 0.03
    campaign_month: int = 12
    label_delay_days: tuple[float, float] = (14.0, 35.0)
    months: int | None = None
    start: float = 1_672_531_200.0  # 2023-01-01T00:00:00Z

    def churn_rate(self, month: int) -> float:
        """The expected share of customers who leave at the end of ``month``."""
        return self.rate_before if month < self.campaign_month else self.rate_after

    def first_index_of_month(self, month: int) -> int:
        """Stream index of the first record of ``month`` (every month has ``n_customers`` records)."""
        return month * self.n_customers

    def __iter__(self) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        rng = random.Random(self.seed)
        serial = itertools.count()
        customers = [
            self._new_customer(rng, next(serial), tenure=rng.randint(0, 60)) for _ in range(self.n_customers)
        ]
        months = itertools.count() if self.months is None else range(self.months)
        for month in months:
            month_start = self.start + month * MONTH_SECONDS
            risks = [c.risk * _tenure_risk(c.tenure) for c in customers]
            scale = self.churn_rate(month) * len(customers) / sum(risks)
            rows = []
            for i, customer in enumerate(customers):
                leaves = rng.random() < min(0.95, scale * risks[i])
                t = month_start + rng.random() * MONTH_SECONDS
                record = self._record(rng, customer, month, t, leaves)
                delay = rng.uniform(*self.label_delay_days) * DAY_SECONDS
                label = {"id": record["id"], "label": "1" if leaves else "0", "time": round(t + delay, 3)}
                rows.append((record, label))
                customers[i] = self._new_customer(rng, next(serial), 0) if leaves else customer
                customer.tenure += 1
            rows.sort(key=lambda row: row[0]["time"])
            yield from rows

    def _new_customer(self, rng: random.Random, serial: int, tenure: int) -> _Customer:
        plan = rng.choices(list(PLANS), weights=_PLAN_WEIGHTS)[0]
        return _Customer(
            name=f"cust-{serial:06d}",
            plan=plan,
            tenure=tenure,
            typical_hours=PLANS[plan][2] * math.exp(rng.gauss(0.0, 0.35)),
            risk=PLANS[plan][1] * math.exp(rng.gauss(0.0, 0.5)),
        )

    @staticmethod
    def _record(rng: random.Random, c: _Customer, month: int, t: float, leaves: bool) -> dict[str, Any]:
        hours = c.typical_hours * math.exp(rng.gauss(0.0, 0.25))
        if leaves:  # leavers use the service less in their last month
            hours *= math.exp(rng.gauss(-0.6, 0.3))
        calls = _poisson(
            rng, 0.3 + 0.2 * min(c.risk * _tenure_risk(c.tenure), 3.0) + (1.4 if leaves else 0.0)
        )
        late = rng.random() < (0.4 if leaves else 0.07)
        delay = round(rng.expovariate(1.0 / (12.0 if leaves else 4.0)), 1) if late else 0.0
        return {
            "id": f"{c.name}-m{month:03d}",
            "time": round(t, 3),
            "customer": c.name,
            "plan": c.plan,
            "tenure_months": c.tenure,
            "monthly_charge": round(PLANS[c.plan][0] * math.exp(rng.gauss(0.0, 0.08)), 2),
            "usage_hours": round(hours, 2),
            "usage_change": round(math.log(hours / c.typical_hours), 4),
            "support_calls": calls,
            "payment_delay_days": delay,
        }
