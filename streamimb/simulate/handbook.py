"""Card transactions following the design of the Fraud Detection Handbook's simulator (Le Borgne et al.,
"Reproducible Machine Learning for Credit Card Fraud Detection - Practical Handbook", section 3.2).

Customers and terminals sit on a 100 x 100 grid. Each customer has a mean amount (uniform 5-100), an amount
standard deviation of half that, a mean number of transactions per day (uniform 0-4), and pays at the
terminals within ``radius`` of home. Each day a customer makes a Poisson number of transactions at a normal
time of day (mean noon, sd 20,000 s; times outside the day are dropped) with a normal amount (a negative draw
is replaced by a uniform one in [0, 2 x mean]) at a terminal drawn uniformly among its reachable ones.

Three fraud scenarios, applied in this order (a later one names the scenario of a transaction):

1. every transaction above ``threshold_amount`` (220) is a fraud;
2. each day ``terminals_per_day`` (2) terminals are compromised for ``terminal_days`` (28) days, from that
   day: every transaction made there is a fraud;
3. each day ``customers_per_day`` (3) customers are compromised for ``customer_days`` (14) days: a third of
   their transactions in that period get their amount multiplied by 5 and are frauds.

With the Handbook's sizes (5000 customers, 10000 terminals, radius 5) about 0.8% of the transactions are
frauds once the compromised terminals reach their steady state (after 28 days). The default keeps those sizes
over 40 days (about 390,000 transactions). Smaller populations can keep the fraud share by scaling the daily
compromise counts with them (non-integer counts spread over days: 1.5 a day compromises 1, 2, 1, 2, ...).

Transactions carry raw fields only: ``id``, ``time`` (epoch seconds from ``start``, 2018-04-01 00:00 UTC by
default, as in the Handbook), ``customer_id``, ``terminal_id`` and ``amount``. Labels arrive as chargebacks
``chargeback_days`` (7) after the transaction, and say which scenario made the fraud (0: genuine).

>>> stream = HandbookStream(n_customers=200, n_terminals=400, n_days=10, seed=1)
>>> tx, label = next(iter(stream))
>>> sorted(tx), sorted(label)
(['amount', 'customer_id', 'id', 'terminal_id', 'time'], ['id', 'label', 'scenario', 'time'])
>>> label["time"] - tx["time"] == 7 * 86400, label["label"] in ("0", "1")
(True, True)
>>> data = stream.generate()
>>> len(data) == sum(1 for _ in stream), data.fraud.dtype.name
(True, 'bool')
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DAY = 86_400
START = 1_522_540_800  # 2018-04-01 00:00:00 UTC, the Handbook's first day (a Sunday)
GENUINE, HIGH_AMOUNT, COMPROMISED_TERMINAL, COMPROMISED_CUSTOMER = 0, 1, 2, 3
SCENARIOS = {
    GENUINE: "genuine",
    HIGH_AMOUNT: "amount above threshold",
    COMPROMISED_TERMINAL: "compromised terminal",
    COMPROMISED_CUSTOMER: "compromised customer",
}


@dataclass
class HandbookData:
    """The whole simulated dataset as columns, in time order (row ``i`` is transaction ``tx-{i}``)."""

    time: np.ndarray  # int64 epoch seconds
    customer: np.ndarray  # int32 customer index
    terminal: np.ndarray  # int32 terminal index
    amount: np.ndarray  # float64, rounded to cents
    fraud: np.ndarray  # bool
    scenario: np.ndarray  # int8: 0 genuine, 1 / 2 / 3 the fraud scenario
    start: int = START
    chargeback_days: float = 7.0
    customer_xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    terminal_xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))

    def __len__(self) -> int:
        return len(self.time)

    @property
    def day(self) -> np.ndarray:
        """Day index of each transaction (0 = the first day)."""
        return (self.time - self.start) // DAY

    @property
    def seconds_of_day(self) -> np.ndarray:
        return (self.time - self.start) % DAY

    @property
    def label_time(self) -> np.ndarray:
        """When each label (chargeback or confirmation) arrives: ``chargeback_days`` after the transaction."""
        return self.time + round(self.chargeback_days * DAY)

    def summary(self) -> dict[str, Any]:
        """Counts: transactions, frauds (share, per scenario), days, active customers and terminals."""
        n = len(self)
        return {
            "transactions": n,
            "frauds": int(self.fraud.sum()),
            "fraud_share": float(self.fraud.mean()) if n else 0.0,
            "frauds_per_scenario": {
                SCENARIOS[s]: int((self.scenario == s).sum()) for s in SCENARIOS if s != GENUINE
            },
            "days": int(self.day.max()) + 1 if n else 0,
            "customers_active": int(np.unique(self.customer).size),
            "terminals_active": int(np.unique(self.terminal).size),
        }


@dataclass
class HandbookStream:
    """Transactions built like the Fraud Detection Handbook's simulated dataset; iterate for
    ``(transaction, label)`` dicts in time order, or call ``generate()`` for the columns."""

    n_customers: int = 5000
    n_terminals: int = 10000
    n_days: int = 40
    radius: float = 5.0
    seed: int = 0
    threshold_amount: float = 220.0
    terminals_per_day: float = 2.0
    terminal_days: int = 28
    customers_per_day: float = 3.0
    customer_days: int = 14
    chargeback_days: float = 7.0
    start: int = START

    def generate(self) -> HandbookData:
        """The whole dataset as numpy columns (deterministic for a given seed and parameters)."""
        rng = np.random.default_rng(self.seed)
        customer_xy = rng.uniform(0.0, 100.0, size=(self.n_customers, 2))
        mean_amount = rng.uniform(5.0, 100.0, size=self.n_customers)
        std_amount = mean_amount / 2.0
        tx_per_day = rng.uniform(0.0, 4.0, size=self.n_customers)
        terminal_xy = rng.uniform(0.0, 100.0, size=(self.n_terminals, 2))
        offsets, reachable = _reachable_terminals(customer_xy, terminal_xy, self.radius)
        n_reachable = np.diff(offsets)

        # Transactions: a Poisson count per (day, customer), in day-then-customer order.
        counts = rng.poisson(np.broadcast_to(tx_per_day, (self.n_days, self.n_customers)))
        counts[:, n_reachable == 0] = 0  # a customer with no terminal in reach pays nowhere
        flat = counts.ravel()
        day = np.repeat(np.arange(self.n_days).repeat(self.n_customers), flat)
        customer = np.repeat(np.tile(np.arange(self.n_customers), self.n_days), flat)
        n = customer.size
        seconds = np.rint(rng.normal(DAY / 2, 20_000.0, size=n)).astype(np.int64)
        amount = rng.normal(mean_amount[customer], std_amount[customer])
        negative = amount < 0
        amount[negative] = rng.uniform(0.0, 2.0 * mean_amount[customer[negative]])
        pick = np.floor(rng.uniform(size=n) * n_reachable[customer]).astype(np.int64)
        terminal = reachable[offsets[customer] + pick]
        keep = (seconds > 0) & (seconds < DAY)
        day, customer, seconds, amount, terminal = (
            a[keep] for a in (day, customer, seconds, amount, terminal)
        )
        time = self.start + day * DAY + seconds
        order = np.argsort(time, kind="stable")
        time, day, customer, terminal = time[order], day[order], customer[order], terminal[order]
        amount = np.round(amount[order], 2)

        scenario = np.zeros(time.size, dtype=np.int8)
        scenario[amount > self.threshold_amount] = HIGH_AMOUNT
        for victims, first in _daily_picks(rng, self.n_terminals, self.terminals_per_day, self.n_days):
            for t in victims:
                rows = _rows_of(terminal, t, day, first, first + self.terminal_days)
                scenario[rows] = COMPROMISED_TERMINAL
        for victims, first in _daily_picks(rng, self.n_customers, self.customers_per_day, self.n_days):
            for c in victims:
                rows = _rows_of(customer, c, day, first, first + self.customer_days)
                chosen = rng.choice(rows, size=rows.size // 3, replace=False)
                amount[chosen] = np.round(amount[chosen] * 5.0, 2)
                scenario[chosen] = COMPROMISED_CUSTOMER
        return HandbookData(
            time=time.astype(np.int64),
            customer=customer.astype(np.int32),
            terminal=terminal.astype(np.int32),
            amount=amount,
            fraud=scenario != GENUINE,
            scenario=scenario,
            start=self.start,
            chargeback_days=self.chargeback_days,
            customer_xy=customer_xy,
            terminal_xy=terminal_xy,
        )

    def __iter__(self) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        data = self.generate()
        delay = round(self.chargeback_days * DAY)
        for i, (t, c, term, amount, fraud, scenario) in enumerate(
            zip(
                data.time.tolist(),
                data.customer.tolist(),
                data.terminal.tolist(),
                data.amount.tolist(),
                data.fraud.tolist(),
                data.scenario.tolist(),
                strict=True,
            )
        ):
            tx = {
                "id": f"tx-{i}",
                "time": t,
                "customer_id": f"c-{c}",
                "terminal_id": f"t-{term}",
                "amount": amount,
            }
            yield (
                tx,
                {"id": tx["id"], "label": "1" if fraud else "0", "time": t + delay, "scenario": scenario},
            )


def _reachable_terminals(
    customer_xy: np.ndarray, terminal_xy: np.ndarray, radius: float, chunk: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """CSR lists of the terminals within ``radius`` of each customer: (offsets, terminal indices)."""
    lists = []
    r2 = radius * radius
    for lo in range(0, len(customer_xy), chunk):
        block = customer_xy[lo : lo + chunk]
        d2 = ((block[:, None, :] - terminal_xy[None, :, :]) ** 2).sum(axis=2)
        rows, cols = np.nonzero(d2 < r2)
        lists.append((rows + lo, cols))
    owners = np.concatenate([r for r, _ in lists]) if lists else np.zeros(0, dtype=np.int64)
    reachable = np.concatenate([c for _, c in lists]) if lists else np.zeros(0, dtype=np.int64)
    offsets = np.zeros(len(customer_xy) + 1, dtype=np.int64)
    np.cumsum(np.bincount(owners, minlength=len(customer_xy)), out=offsets[1:])
    return offsets, reachable


def _daily_picks(
    rng: np.random.Generator, population: int, per_day: float, n_days: int
) -> Iterator[tuple[np.ndarray, int]]:
    """For each day, the entities compromised that day (distinct within a day); a fractional ``per_day``
    is spread over days (floor of the running total)."""
    for d in range(n_days):
        k = min(population, int(np.floor((d + 1) * per_day)) - int(np.floor(d * per_day)))
        yield (rng.choice(population, size=k, replace=False) if k > 0 else np.zeros(0, dtype=np.int64)), d


def _rows_of(entity: np.ndarray, who: int, day: np.ndarray, first: int, end: int) -> np.ndarray:
    """Rows of entity ``who`` on days [first, end)."""
    return np.flatnonzero((entity == who) & (day >= first) & (day < end))


def handbook_features(
    data: HandbookData, windows: tuple[int, ...] = (1, 7, 30), delay_days: int = 7
) -> dict[str, np.ndarray]:
    """The Handbook's engineered features (section 3.3), one column per name, row-aligned with ``data``.

    - ``tx_during_weekend`` (Saturday or Sunday), ``tx_during_night`` (hour of day 0-6, as the Handbook);
    - per customer, over each window of ``w`` days ending at the transaction (itself included, later ones
      not): ``customer_nb_tx_{w}day`` and ``customer_avg_amount_{w}day``;
    - per terminal, over each window of ``w`` days ending ``delay_days`` before the transaction (labels known
      by then): ``terminal_nb_tx_{w}day`` and ``terminal_risk_{w}day`` (share of frauds; 0 without any).

    >>> data = HandbookStream(n_customers=50, n_terminals=100, n_days=3, seed=2).generate()
    >>> f = handbook_features(data)
    >>> bool((f["customer_nb_tx_1day"] >= 1).all()), float(f["terminal_risk_30day"][:5].max())
    (True, 0.0)
    """
    rel = data.time - data.start
    hour = (rel % DAY) // 3600
    weekday = (rel // DAY + _weekday(data.start)) % 7  # 0 = Monday
    out: dict[str, np.ndarray] = {
        "tx_during_weekend": (weekday >= 5).astype(float),
        "tx_during_night": (hour <= 6).astype(float),
    }
    for w in windows:
        count, total = _window_sums(data.customer, rel, data.amount, w * DAY, 0)
        out[f"customer_nb_tx_{w}day"] = count
        out[f"customer_avg_amount_{w}day"] = total / np.maximum(count, 1)
    for w in windows:
        count, frauds = _window_sums(data.terminal, rel, data.fraud.astype(float), w * DAY, delay_days * DAY)
        out[f"terminal_nb_tx_{w}day"] = count
        out[f"terminal_risk_{w}day"] = np.where(count > 0, frauds / np.maximum(count, 1), 0.0)
    return out


def _weekday(epoch: int) -> int:
    return int((epoch // DAY + 3) % 7)  # 1970-01-01 was a Thursday (weekday 3)


def _window_sums(
    entity: np.ndarray, rel_time: np.ndarray, values: np.ndarray, width: int, gap: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the count and the sum of ``values`` over the same entity's rows with time in
    (t - gap - width, t - gap]; with gap 0 the window ends at the row itself (rows after it, even at the
    same second, excluded)."""
    order = np.lexsort((np.arange(entity.size), rel_time, entity))  # entity, then time, then row
    span = np.int64(1) << 40
    key = entity[order].astype(np.int64) * span + rel_time[order]
    cum = np.concatenate(([0.0], np.cumsum(values[order])))
    hi = np.arange(1, entity.size + 1) if gap == 0 else np.searchsorted(key, key - gap, side="right")
    lo = np.searchsorted(key, key - gap - width, side="right")
    lo = np.minimum(lo, hi)
    count = np.empty(entity.size)
    total = np.empty(entity.size)
    count[order] = hi - lo
    total[order] = cum[hi] - cum[lo]
    return count, total
