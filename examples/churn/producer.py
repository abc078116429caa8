"""Produce simulated monthly customer activity to Kafka, and churn outcomes a few weeks later in event time.

Records come from :class:`streamimb.simulate.churn.ChurnStream`: one per customer and month (use, change of
use, support calls, payment delays, tenure, plan), keyed by customer. The churn rate is about 8% a month
until the retention campaign starts (``--campaign-month``) and about 3% after. Each record's outcome
(``{"id", "label", "time"}``; ``"1"``: the customer left at the end of that month) goes to the labels topic
once the stream's event time has reached it, 2 to 5 weeks after the record. Outcomes still in the future
when the stream ends are not sent.

    python examples/churn/producer.py --bootstrap 127.0.0.1:9092 --events 36000

Prints one JSON line at the end: what was produced, with the churn rate before and after the campaign.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import sys
import time

from streamimb.io.kafka import KafkaConfig, KafkaSink
from streamimb.simulate.churn import ChurnStream


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument(
        "--bootstrap", default="127.0.0.1:9092", metavar="HOST:PORT", help="Kafka bootstrap server"
    )
    p.add_argument("--events", type=int, default=36_000, metavar="N", help="activity records to produce")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--events-topic", default="customer-activity")
    p.add_argument("--labels-topic", default="churn-outcomes")
    p.add_argument("--customers", type=int, default=1000, help="active customers (records per month)")
    p.add_argument("--campaign-month", type=int, default=24, help="month the retention campaign starts")
    p.add_argument("--churn-before", type=float, default=0.08, help="monthly churn rate before the campaign")
    p.add_argument("--churn-after", type=float, default=0.03, help="monthly churn rate from the campaign on")
    p.add_argument("--rate", type=float, default=0.0, help="records per second (0: as fast as possible)")
    p.add_argument(
        "--bad-every", type=int, default=0, metavar="K", help="a malformed record every K (0: none)"
    )
    return p.parse_args(argv)


def make_stream(args: argparse.Namespace) -> ChurnStream:
    """The simulated stream the arguments describe (the same seed gives the same records)."""
    return ChurnStream(
        n_customers=args.customers,
        seed=args.seed,
        rate_before=args.churn_before,
        rate_after=args.churn_after,
        campaign_month=args.campaign_month,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stream = make_stream(args)
    kafka = KafkaConfig(bootstrap_servers=args.bootstrap)
    events = KafkaSink(kafka, args.events_topic)
    labels = KafkaSink(kafka, args.labels_topic)
    pending: list[tuple[float, str, bytes, bytes]] = []  # outcomes not yet known, by due time
    campaign_index = stream.first_index_of_month(args.campaign_month)
    churned = {"before": 0, "after": 0}
    counts = {"records": 0, "malformed": 0, "labels_sent": 0}
    started = time.monotonic()
    try:
        for record, label in itertools.islice(stream, args.events):
            key = record["customer"].encode()
            events.send(json.dumps(record).encode(), key=key)
            if label["label"] == "1":
                churned["before" if counts["records"] < campaign_index else "after"] += 1
            counts["records"] += 1
            heapq.heappush(pending, (label["time"], label["id"], key, json.dumps(label).encode()))
            while pending and pending[0][0] <= record["time"]:
                _, _, k, value = heapq.heappop(pending)
                labels.send(value, key=k)
                counts["labels_sent"] += 1
            if args.bad_every and counts["records"] % args.bad_every == 0:
                events.send(b'{"id": "broken", "usage_hours": ', key=key)  # truncated JSON, on purpose
                counts["malformed"] += 1
            if counts["records"] % 500 == 0:
                events.flush()
                labels.flush()
                if args.rate > 0:
                    time.sleep(max(0.0, counts["records"] / args.rate - (time.monotonic() - started)))
        events.flush()
        labels.flush()
    finally:
        events.close()
        labels.close()
    before = min(counts["records"], campaign_index)
    after = counts["records"] - before
    summary = {
        **counts,
        "event_records": counts["records"] + counts["malformed"],
        "labels_not_yet_due": len(pending),
        "campaign_index": campaign_index,
        "churn_rate_before": round(churned["before"] / before, 4) if before else None,
        "churn_rate_after": round(churned["after"] / after, 4) if after else None,
        "seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
