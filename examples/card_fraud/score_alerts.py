"""How good were the alerts? Read the alerts topic and score it against the simulator's ground truth.

The producer's stream is deterministic: the same ``--events``, ``--seed`` and stream options rebuild the
same transactions, so the frauds among the alerted transactions can be counted (a real deployment learns
this from chargebacks, as the service's rolling precision and recall do).

    python examples/card_fraud/score_alerts.py --bootstrap 127.0.0.1:9092 --events 40000

Pass the producer's options that you changed (``--events``, ``--seed``, ...); prints a small table, and
with ``--show N`` the last N alerts as they are on the topic.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import sys
import time
import uuid
from pathlib import Path
from types import ModuleType

from streamimb.io.kafka import KafkaConfig, KafkaSource


def load_producer() -> ModuleType:
    path = Path(__file__).with_name("producer.py")
    spec = importlib.util.spec_from_file_location("card_fraud_producer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_alerts(bootstrap: str, topic: str, idle_seconds: float = 3.0) -> list[dict]:
    """Every alert on the topic (a fresh consumer group reads it from the start)."""
    config = KafkaConfig(
        bootstrap_servers=bootstrap,
        group_id=f"score-alerts-{uuid.uuid4().hex[:8]}",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    alerts: list[dict] = []
    with KafkaSource(config, [topic]) as source:
        last = time.monotonic()
        while time.monotonic() - last < (idle_seconds if alerts else 30.0):
            records = source.poll()
            if records:
                alerts += [json.loads(r.value) for r in records]
                last = time.monotonic()
    return alerts


def main(argv: list[str] | None = None) -> int:
    producer = load_producer()
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--alerts-topic", default="fraud-alerts")
    parser.add_argument("--show", type=int, default=0, metavar="N", help="also print the last N alerts")
    ours, rest = parser.parse_known_args(argv)
    args = producer.parse_args(rest)
    rows = list(itertools.islice(producer.make_stream(args), args.events))
    fraud = {tx["id"] for tx, label in rows if label["label"] == "1"}
    quarter_of = {tx["id"]: 4 * i // len(rows) for i, (tx, _) in enumerate(rows)}
    alerts = read_alerts(args.bootstrap, ours.alerts_topic)
    print(f"{len(alerts)} alerts on {args.events} transactions, {len(fraud)} frauds")
    print(f"{'':<22}{'alerts':>8}{'frauds':>8}{'precision':>11}{'recall':>8}")
    groups: dict[str, list[dict]] = {}
    for alert in alerts:
        groups.setdefault(f"by {alert['rule']}", []).append(alert)
    for q in range(4):
        groups[f"quarter {q + 1}"] = [a for a in alerts if quarter_of.get(a["event_id"]) == q]
    groups["all"] = alerts
    for name, group in groups.items():
        hits = sum(a["event_id"] in fraud for a in group)
        if name.startswith("quarter"):
            q = int(name[-1]) - 1
            total = sum(1 for f in fraud if quarter_of[f] == q)
            name = f"{name} (fraud {producer.FRAUD_RATES[q]:.1%})"
        else:
            total = len(fraud) if name == "all" else None
        precision = f"{hits / len(group):.3f}" if group else "-"
        recall = f"{hits / total:.3f}" if total else "-"
        print(f"{name:<22}{len(group):>8}{hits:>8}{precision:>11}{recall:>8}")
    for alert in alerts[len(alerts) - ours.show :] if ours.show > 0 else ():
        print(json.dumps(alert, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
