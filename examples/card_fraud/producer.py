"""Produce simulated card transactions to Kafka, and their chargeback labels days later in event time.

Transactions come from :class:`streamimb.simulate.cards.CardStream` (fraud bursts on compromised cards, a
fraud rate that moves 0.5% -> 2% -> 0.3% -> 1% over the four quarters of the stream). Each transaction is
keyed by its card. Its label (``{"id", "label", "time"}``; ``"1"`` is fraud) goes to the labels topic once
the stream's event time has reached the label's time: chargebacks come 1 to 4 days after the fraud, and a
transaction without a chargeback after 2 days is labelled legitimate. Labels still in the future when the
stream ends are not sent. Every ``--bad-every`` transactions a malformed record is produced on purpose.

    python examples/card_fraud/producer.py --bootstrap 127.0.0.1:9092 --events 40000

Prints one JSON line at the end: what was produced (the service's summary can be checked against it).
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import sys
import time

from streamimb.io.kafka import KafkaConfig, KafkaSink
from streamimb.simulate.cards import CardStream

# One of each kind of bad input, produced in turn: each becomes exactly one dead letter.
MALFORMED = [
    b'{"id": "broken", "amount": 12.5',  # truncated JSON
    b'{"id": "nan-amount", "amount": "NaN", "card": "card-1"}',  # not a finite number
    b"[1, 2, 3]",  # not an object
    b'{"id": "text-amount", "amount": "lots", "card": "card-1"}',  # text in a numeric field
]
FRAUD_RATES = (0.005, 0.02, 0.003, 0.01)


def schedule(events: int) -> list[tuple[int, float]]:
    """The fraud rate per quarter of a stream of ``events`` transactions."""
    quarter = max(1, events // 4)
    return [(quarter * (i + 1), rate) for i, rate in enumerate(FRAUD_RATES[:-1])] + [
        (10**12, FRAUD_RATES[-1])
    ]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument(
        "--bootstrap", default="127.0.0.1:9092", metavar="HOST:PORT", help="Kafka bootstrap server"
    )
    p.add_argument("--events", type=int, default=40_000, metavar="N", help="transactions to produce")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--events-topic", default="transactions")
    p.add_argument("--labels-topic", default="chargebacks")
    p.add_argument("--cards", type=int, default=2000, help="cards in the portfolio")
    p.add_argument("--gap-seconds", type=float, default=60.0, help="mean event-time gap between transactions")
    p.add_argument("--chargeback-days", type=float, nargs=2, default=(1.0, 4.0), metavar=("MIN", "MAX"))
    p.add_argument("--legit-days", type=float, default=2.0, help="days until a clean transaction is labelled")
    p.add_argument(
        "--bad-every", type=int, default=5000, metavar="K", help="a malformed record every K (0: none)"
    )
    p.add_argument("--rate", type=float, default=0.0, help="transactions per second (0: as fast as possible)")
    return p.parse_args(argv)


def make_stream(args: argparse.Namespace) -> CardStream:
    """The simulated stream the arguments describe (the same seed gives the same transactions)."""
    return CardStream(
        n_cards=args.cards,
        seed=args.seed,
        schedule=schedule(args.events),
        mean_gap_seconds=args.gap_seconds,
        chargeback_days=tuple(args.chargeback_days),
        legit_label_days=args.legit_days,
        producer_features=False,  # raw transactions, as a payment stream carries them
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stream = make_stream(args)
    kafka = KafkaConfig(bootstrap_servers=args.bootstrap)
    events = KafkaSink(kafka, args.events_topic)
    labels = KafkaSink(kafka, args.labels_topic)
    pending: list[tuple[float, str, bytes, bytes]] = []  # labels not yet due, by due time
    counts = {"transactions": 0, "malformed": 0, "labels_sent": 0, "frauds": 0, "fraud_labels_sent": 0}
    first = last = None
    started = time.monotonic()
    try:
        for tx, label in itertools.islice(stream, args.events):
            key = tx["card"].encode()
            events.send(json.dumps(tx).encode(), key=key)
            counts["transactions"] += 1
            counts["frauds"] += label["label"] == "1"
            first = tx["time"] if first is None else first
            last = tx["time"]
            heapq.heappush(pending, (label["time"], label["id"], key, json.dumps(label).encode()))
            while pending and pending[0][0] <= tx["time"]:
                _, _, k, value = heapq.heappop(pending)
                labels.send(value, key=k)
                counts["labels_sent"] += 1
                counts["fraud_labels_sent"] += b'"label": "1"' in value
            if args.bad_every and counts["transactions"] % args.bad_every == 0:
                events.send(MALFORMED[counts["malformed"] % len(MALFORMED)], key=key)
                counts["malformed"] += 1
            if counts["transactions"] % 500 == 0:
                events.flush()
                labels.flush()
                if args.rate > 0:
                    time.sleep(max(0.0, counts["transactions"] / args.rate - (time.monotonic() - started)))
        events.flush()
        labels.flush()
    finally:
        events.close()
        labels.close()
    summary = {
        **counts,
        "event_records": counts["transactions"] + counts["malformed"],
        "labels_not_yet_due": len(pending),
        "event_time_days": round(((last or 0.0) - (first or 0.0)) / 86400.0, 2),
        "seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
