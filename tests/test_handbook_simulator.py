"""The Handbook-style transaction simulator, its offline features and the card-level fraud metrics."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from streamimb.evaluation.fraud import card_precision_at_k, fraud_metrics, handbook_split
from streamimb.simulate.handbook import (
    COMPROMISED_CUSTOMER,
    COMPROMISED_TERMINAL,
    DAY,
    HIGH_AMOUNT,
    HandbookStream,
    handbook_features,
)

# A scaled-down population (a tenth of the Handbook's, daily compromises scaled alike) keeps the fraud mix.
SMALL = {"n_customers": 500, "n_terminals": 1000, "terminals_per_day": 0.2, "customers_per_day": 0.3}


@pytest.fixture(scope="module")
def data():
    return HandbookStream(n_days=45, seed=3, **SMALL).generate()


def test_same_seed_same_stream_other_seed_other_stream() -> None:
    a = list(itertools.islice(HandbookStream(n_days=5, seed=7, **SMALL), 300))
    b = list(itertools.islice(HandbookStream(n_days=5, seed=7, **SMALL), 300))
    c = list(itertools.islice(HandbookStream(n_days=5, seed=8, **SMALL), 300))
    assert a == b
    assert a != c


def test_transactions_carry_raw_fields_only_and_labels_come_7_days_later() -> None:
    stream = HandbookStream(n_days=3, seed=1, **SMALL)
    previous = -1
    for i, (tx, label) in enumerate(stream):
        assert set(tx) == {"id", "time", "customer_id", "terminal_id", "amount"}
        assert tx["id"] == label["id"] == f"tx-{i}"
        assert isinstance(tx["amount"], float) and tx["amount"] >= 0
        assert isinstance(tx["customer_id"], str) and isinstance(tx["terminal_id"], str)
        assert tx["time"] >= previous  # in time order
        previous = tx["time"]
        assert label["time"] - tx["time"] == 7 * DAY
        assert label["label"] in ("0", "1")
        assert (label["label"] == "1") == (label["scenario"] != 0)


def test_fraud_share_is_about_the_handbooks_and_every_scenario_occurs(data) -> None:
    summary = data.summary()
    assert summary["days"] == 45
    assert 40_000 < summary["transactions"] < 50_000  # about 2 a day per customer
    steady = data.day >= 28  # compromised terminals at their steady share
    assert 0.004 < data.fraud[steady].mean() < 0.014  # the Handbook: about 0.8%
    assert 0.002 < data.fraud.mean() < 0.014
    for scenario in (HIGH_AMOUNT, COMPROMISED_TERMINAL, COMPROMISED_CUSTOMER):
        assert (data.scenario == scenario).sum() > 10, scenario
    assert (data.fraud == (data.scenario != 0)).all()


def test_each_scenario_follows_its_rule(data) -> None:
    high = data.scenario == HIGH_AMOUNT
    assert (data.amount[high] > 220).all()
    # Amounts above 220 are frauds (of scenario 1, or of a later scenario that claimed them).
    assert data.fraud[data.amount > 220].all()
    # A compromised terminal: every transaction there is a fraud, for at most 28 days from the first.
    for terminal in np.unique(data.terminal[data.scenario == COMPROMISED_TERMINAL]):
        rows = np.flatnonzero(data.terminal == terminal)
        hit = np.flatnonzero(data.scenario[rows] == COMPROMISED_TERMINAL)
        assert data.fraud[rows[hit[0] : hit[-1] + 1]].all()
        assert data.day[rows[hit[-1]]] - data.day[rows[hit[0]]] < 28
    # A compromised customer: frauds of scenario 3 have their amount x5 (most are well above the usual).
    customer = data.scenario == COMPROMISED_CUSTOMER
    assert np.median(data.amount[customer]) > 3 * np.median(data.amount[~data.fraud])


def test_the_default_stream_is_the_handbooks_population_sized_for_a_benchmark() -> None:
    stream = HandbookStream()
    assert (stream.n_customers, stream.n_terminals, stream.radius) == (5000, 10000, 5.0)
    assert 200_000 < stream.n_customers * 2 * stream.n_days < 450_000


def test_handbook_features_match_a_direct_computation(data) -> None:
    f = handbook_features(data)
    rel = data.time - data.start
    rng = np.random.default_rng(0)
    for i in rng.choice(len(data), size=40, replace=False):
        mine = np.flatnonzero(data.customer == data.customer[i])
        for w in (1, 7, 30):
            past = mine[(mine <= i) & (rel[mine] > rel[i] - w * DAY)]
            assert f[f"customer_nb_tx_{w}day"][i] == past.size
            assert f[f"customer_avg_amount_{w}day"][i] == pytest.approx(data.amount[past].mean())
        theirs = np.flatnonzero(data.terminal == data.terminal[i])
        for w in (1, 7, 30):
            end = rel[i] - 7 * DAY
            past = theirs[(rel[theirs] <= end) & (rel[theirs] > end - w * DAY)]
            assert f[f"terminal_nb_tx_{w}day"][i] == past.size
            risk = data.fraud[past].mean() if past.size else 0.0
            assert f[f"terminal_risk_{w}day"][i] == pytest.approx(risk)
    # 2018-04-01 was a Sunday.
    assert f["tx_during_weekend"][data.day == 0].all() and not f["tx_during_weekend"][data.day == 1].any()
    hours = (rel % DAY) // 3600
    assert (f["tx_during_night"] == (hours <= 6)).all()


def test_terminal_risk_ignores_labels_younger_than_the_delay(data) -> None:
    flipped = HandbookStream(n_days=45, seed=3, **SMALL).generate()
    recent = data.time >= data.time[-1] - 7 * DAY  # labels not yet known at the end of the stream
    flipped.fraud = np.where(recent, ~data.fraud, data.fraud)
    last = len(data) - 1
    a, b = handbook_features(data), handbook_features(flipped)
    for w in (1, 7, 30):
        assert a[f"terminal_risk_{w}day"][last] == b[f"terminal_risk_{w}day"][last]


def test_card_precision_at_k_on_a_hand_made_example() -> None:
    # day 0: card 1 (fraud, top score), card 2 (genuine), card 3 (fraud, low score)
    # day 1: card 1 (fraud again, top score), card 2 (genuine), card 3 (fraud)
    day = [0, 0, 0, 0, 1, 1, 1]
    card = [1, 1, 2, 3, 1, 2, 3]
    fraud = [0, 1, 0, 1, 1, 0, 1]
    score = [0.3, 0.9, 0.5, 0.1, 0.95, 0.4, 0.6]
    cp = card_precision_at_k(day, card, fraud, score, k=2)
    # day 0: top 2 = card 1 (max 0.9, fraud) and card 2 -> 1/2; card 1 detected, left out of day 1:
    # day 1: top 2 = card 3 (fraud), card 2 -> 1/2.
    assert cp.per_day == [0.5, 0.5] and cp.mean == 0.5
    assert cp.frauded_cards == [2, 1]
    assert cp.best_possible == pytest.approx((1.0 + 0.5) / 2)
    kept = card_precision_at_k(day, card, fraud, score, k=2, remove_detected=False)
    assert kept.per_day == [0.5, 1.0]  # day 1: cards 1 and 3, both frauds
    # k larger than the cards of the day: still divided by k; both frauded cards found on day 0 are left out
    assert card_precision_at_k(day, card, fraud, score, k=4).per_day == [0.5, 0.0]
    assert card_precision_at_k(day, card, fraud, score, k=4, remove_detected=False).per_day == [0.5, 0.5]


def test_handbook_split_leaves_known_compromised_cards_out_of_the_test_days() -> None:
    # days 0-1 train, 2-3 delay, 4-5 test (train_days=2, delay_days=2, test_days=2)
    day = [0, 1, 2, 3, 4, 4, 4, 5, 5, 5]
    card = [1, 2, 3, 4, 1, 3, 5, 3, 4, 5]
    fraud = [1, 0, 1, 1, 0, 0, 1, 0, 0, 1]
    train, test = handbook_split(day, card, fraud, 0, train_days=2, delay_days=2, test_days=2)
    assert train.tolist() == [True, True] + [False] * 8
    # test day 4 knows the training frauds (card 1); test day 5 also those of day 2 (card 3), not day 3's.
    assert np.flatnonzero(test).tolist() == [5, 6, 8, 9]
    m = fraud_metrics(
        np.asarray(day)[test], np.asarray(card)[test], np.asarray(fraud)[test], [0.1, 0.9, 0.2, 0.8]
    )
    assert m["roc_auc"] == 1.0 and m["pr_auc"] == 1.0 and m["transactions"] == 4
