"""A tiny Prometheus exporter of a web shop's metrics, with an anomaly injected on purpose.

It serves ``/metrics`` with three gauges per ``service`` label (``checkout`` and ``search``):
``shop_requests_per_second`` (a daily cycle plus noise), ``shop_latency_seconds`` (rises a little with the
load) and ``shop_queue_depth``. The "day" is compressed to ``--period`` seconds so that a demo sees whole
cycles. With ``--anomaly-at SECONDS`` the chosen series misbehaves from that many seconds after the start:
``shift`` multiplies its level by ``--factor`` from then on, ``spike`` does so for ``--spike-seconds`` only.

    python examples/ops_metrics/producer.py --port 8000 --period 40 --anomaly-at 180

Prints one line when it serves, one when it injects the anomaly (with the series it touched) and one when it
stops (Ctrl-C or ``--duration``).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import signal
import sys
import threading
import time

from prometheus_client import CollectorRegistry, Gauge, start_http_server

SERVICES = {"checkout": 120.0, "search": 400.0}  # mean requests per second
METRICS = {
    "requests": "shop_requests_per_second",
    "latency": "shop_latency_seconds",
    "queue": "shop_queue_depth",
}


class Shop:
    """The metric values as functions of the time since start (noise from a seeded generator)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.lock = threading.Lock()
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def anomalous(self, metric: str, service: str) -> bool:
        a = self.args
        if a.anomaly_at is None or (metric, service) != (a.anomaly_metric, a.anomaly_service):
            return False
        since = self.elapsed() - a.anomaly_at
        return since >= 0 and (a.anomaly_kind == "shift" or since < a.spike_seconds)

    def value(self, metric: str, service: str) -> float:
        with self.lock:
            noise = self.rng.gauss(0.0, 1.0)
        load = 1.0 + 0.4 * math.sin(2 * math.pi * self.elapsed() / self.args.period)  # the daily cycle
        mean = SERVICES[service]
        if metric == "requests":
            value = mean * load * (1.0 + 0.02 * noise)
        elif metric == "latency":
            value = (0.05 + 0.02 * load) * (1.0 + 0.02 * noise)
        else:
            value = max(0.0, 10.0 * load + 0.5 * noise)
        return value * self.args.factor if self.anomalous(metric, service) else value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="port of /metrics (0: any free port)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--period", type=float, default=40.0, help="seconds of one compressed 'day'")
    p.add_argument(
        "--anomaly-at", type=float, metavar="SECONDS", help="inject the anomaly this long after start"
    )
    p.add_argument("--anomaly-kind", choices=["shift", "spike"], default="shift")
    p.add_argument("--anomaly-metric", choices=sorted(METRICS), default="latency")
    p.add_argument("--anomaly-service", choices=sorted(SERVICES), default="checkout")
    p.add_argument("--factor", type=float, default=3.0, help="level multiplier while anomalous")
    p.add_argument("--spike-seconds", type=float, default=10.0, help="length of a spike")
    p.add_argument("--duration", type=float, help="stop after this many seconds (default: run until Ctrl-C)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    shop = Shop(args)
    registry = CollectorRegistry()
    for metric, name in METRICS.items():
        gauge = Gauge(name, f"Simulated {metric} of the shop.", ["service"], registry=registry)
        for service in SERVICES:
            gauge.labels(service).set_function(lambda m=metric, s=service: shop.value(m, s))
    server, _ = start_http_server(args.port, addr=args.host, registry=registry)
    port = server.server_address[1]
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _s, _f: stop.set())
    target = f'{METRICS[args.anomaly_metric]}{{service="{args.anomaly_service}"}}'
    print(
        json.dumps({"serving": f"http://{args.host}:{port}/metrics", "anomaly_at": args.anomaly_at}),
        flush=True,
    )
    injected = False
    while not stop.wait(0.1):
        elapsed = shop.elapsed()
        if not injected and args.anomaly_at is not None and elapsed >= args.anomaly_at:
            injected = True
            print(
                json.dumps(
                    {
                        "injected": args.anomaly_kind,
                        "series": target,
                        "factor": args.factor,
                        "at": time.time(),
                    }
                ),
                flush=True,
            )
        if args.duration is not None and elapsed >= args.duration:
            break
    server.shutdown()
    print(json.dumps({"stopped_after_seconds": round(shop.elapsed(), 1)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
