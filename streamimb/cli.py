"""The `streamimb` command line: replay | validate-config | run | broker | demo."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, get_args

from streamimb import __version__
from streamimb.config import ServiceConfig, dump_config, load_config
from streamimb.errors import StreamimbError
from streamimb.io.settings import ConsumerClient


def _load(args: argparse.Namespace, overrides: dict[str, Any] | None = None) -> ServiceConfig:
    return load_config(getattr(args, "config", None), overrides=overrides)


def cmd_validate_config(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    sys.stdout.write(dump_config(config))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from streamimb.logs import setup_logging
    from streamimb.replay import format_summary, replay

    config = _load(args)
    setup_logging(config.logging.format, "WARNING" if args.quiet else config.logging.level)
    with _replay_metrics(args.metrics_address, config) as telemetry:
        report = replay(
            args.input,
            config,
            label=args.label,
            alerts_path=args.alerts,
            progress=not args.quiet,
            telemetry=telemetry,
        )
        print(format_summary(report))
        if args.report:
            Path(args.report).write_text(
                json.dumps(report, indent=2, default=_json_default), encoding="utf-8"
            )
            print(f"\nreport written to {args.report}")
        if telemetry is not None and args.hold:
            _hold(f"replay done; metrics stay at http://{args.metrics_address}/metrics until Ctrl-C")
    return 0


@contextmanager
def _replay_metrics(address: str | None, config: ServiceConfig) -> Iterator[Any]:
    """The service's instruments, served at ``address`` while the replay runs (None: no server)."""
    if address is None:
        yield None
        return
    from streamimb.service.telemetry import MetricsServer, stream_telemetry

    telemetry = stream_telemetry(config.event_schema.classes or ())
    with MetricsServer(address, telemetry) as server:
        print(f"metrics on http://{server.address}/metrics", file=sys.stderr)
        yield telemetry


def _hold(message: str) -> None:
    """Block until SIGINT or SIGTERM."""
    import signal
    import threading

    print(message, file=sys.stderr, flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _s, _f: stop.set())
    stop.wait()


def cmd_demo(args: argparse.Namespace) -> int:
    from streamimb.demo import run_demo
    from streamimb.logs import setup_logging
    from streamimb.service.broker import resolve_binary

    resolve_binary()  # the embedded broker is an optional extra: say how to get it before anything starts
    setup_logging("text", "WARNING")
    logging.getLogger("kafka").setLevel(logging.ERROR)  # the client's event-loop timing notes
    run_demo(duration=args.duration, rate=args.rate, metrics_port=args.metrics_port)
    return 0


def run_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Command-line flags of `streamimb run` as a config overlay (flags win over file and environment)."""
    kafka = {
        "bootstrap_servers": args.bootstrap_servers,
        "events_topic": args.events_topic,
        "labels_topic": args.labels_topic,
        "alerts_topic": args.alerts_topic,
        "dead_letter_topic": args.dead_letter_topic,
        "group_id": args.group_id,
        "client": args.kafka_client,
    }
    service = {"max_events": args.max_events, "idle_timeout": args.idle_timeout}
    overrides: dict[str, Any] = {}
    if any(v is not None for v in kafka.values()):
        overrides["kafka"] = {k: v for k, v in kafka.items() if v is not None}
    if any(v is not None for v in service.values()):
        overrides["service"] = {k: v for k, v in service.items() if v is not None}
    if args.metrics_address is not None:
        overrides["metrics"] = {"address": args.metrics_address}
    return overrides


def cmd_run(args: argparse.Namespace) -> int:
    from streamimb.logs import setup_logging
    from streamimb.service.app import run_service

    config = _load(args, run_overrides(args))
    setup_logging(config.logging.format, config.logging.level)
    summary = _run_watch(config) if config.source.kind == "prometheus" else run_service(config)
    print(json.dumps(summary))
    return 0


def _run_watch(config: ServiceConfig) -> dict[str, Any]:
    import signal
    import threading

    from streamimb.service.watch import run_watch

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _s, _f: stop.set())
    return run_watch(config, stop)


def cmd_broker(args: argparse.Namespace) -> int:
    from streamimb.service.broker import resolve_binary, serve

    resolve_binary()
    return serve(port=args.port, topics=args.topics or (), partitions=args.partitions)


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamimb",
        description="Online detection of rare classes and anomalies on streams whose prevalence shifts.",
    )
    parser.add_argument("--version", action="version", version=f"streamimb {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("replay", help="run a CSV or JSONL file through the detection pipeline")
    p.add_argument("input", help="CSV or JSONL file")
    p.add_argument("--config", help="YAML or TOML config file (defaults: numeric columns are features)")
    p.add_argument("--label", help="label column (default: label, y, class, Class, target or Churn)")
    p.add_argument("--report", help="write the JSON report here")
    p.add_argument("--alerts", help="append alerts as JSON lines here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--metrics-address",
        metavar="HOST:PORT",
        help="serve /metrics, /healthz, /readyz here while the replay runs (the service's instruments)",
    )
    p.add_argument(
        "--hold", action="store_true", help="with --metrics-address: keep serving after the end until Ctrl-C"
    )
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser(
        "run",
        help="consume events from Kafka, publish alerts, learn from labels",
        description="Consume an events topic as a consumer group, score every event, publish alerts and "
        "dead letters, learn from labels (in the event or on a labels topic), commit offsets after the "
        "batch's outputs are delivered. Flags override the config file and STREAMIMB_ variables. "
        "Without a config, JSON events with numeric fields and an optional 'label' field work. "
        "With source.kind: prometheus in the config it polls PromQL queries instead and scores each series.",
    )
    p.add_argument("--config", help="YAML or TOML config file")
    p.add_argument(
        "--bootstrap-servers", metavar="HOST:PORT", help="Kafka bootstrap servers, comma-separated"
    )
    p.add_argument("--events-topic", metavar="T", help="topic to consume events from (default: events)")
    p.add_argument("--labels-topic", metavar="T", help="topic of late labels {id, label} (default: none)")
    p.add_argument("--alerts-topic", metavar="T", help="topic alerts are published to (default: alerts)")
    p.add_argument("--dead-letter-topic", metavar="T", help="topic for bad records (default: dead-letters)")
    p.add_argument("--group-id", metavar="G", help="consumer group (default: streamimb)")
    p.add_argument(
        "--kafka-client",
        choices=get_args(ConsumerClient),
        help="consumer client (default: kafka-python; confluent needs the streamimb[confluent] extra)",
    )
    p.add_argument("--metrics-address", metavar="HOST:PORT", help="serve /metrics, /healthz, /readyz here")
    p.add_argument(
        "--max-events", type=int, metavar="N", help="stop after N event records (after committing)"
    )
    p.add_argument("--idle-timeout", type=float, metavar="SECONDS", help="stop after SECONDS without records")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("broker", help="run the embedded Kafka-protocol broker (for demos and tests)")
    p.add_argument("--port", type=int, default=9092, help="port on 127.0.0.1 (0: any free port)")
    p.add_argument("--topics", metavar="T1,T2,...", help="topics to create")
    p.add_argument("--partitions", type=int, default=1, help="partitions per created topic")
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser(
        "demo", help="embedded broker + card-transaction producer + the service, with live status"
    )
    p.add_argument("--duration", type=float, default=60.0, help="seconds to run (default 60; Ctrl-C stops)")
    p.add_argument("--rate", type=float, default=1500.0, help="transactions per second to produce")
    p.add_argument("--metrics-port", type=int, default=9108, help="port for /metrics (a free one if taken)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("validate-config", help="print the resolved config (secrets masked) or its errors")
    p.add_argument("file", help="YAML or TOML config file")
    p.set_defaults(func=cmd_validate_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except StreamimbError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
