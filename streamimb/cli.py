"""The `streamimb` command line: replay | validate-config | run | broker | demo."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from streamimb import __version__
from streamimb.config import ServiceConfig, dump_config, load_config
from streamimb.errors import StreamimbError


def _load(args: argparse.Namespace, overrides: dict[str, Any] | None = None) -> ServiceConfig:
    return load_config(getattr(args, "config", None), overrides=overrides)


def cmd_validate_config(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    sys.stdout.write(dump_config(config))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from streamimb.replay import format_summary, replay

    config = _load(args)
    report = replay(args.input, config, label=args.label, alerts_path=args.alerts, progress=not args.quiet)
    print(format_summary(report))
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2, default=_json_default), encoding="utf-8")
        print(f"\nreport written to {args.report}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Replay river's Shuttle data (shipped with river: NASA shuttle sensors, 7% rare states)."""
    from itertools import islice

    from river import datasets

    from streamimb.io.memory import memory_records
    from streamimb.replay import format_summary, replay

    config = _load(args)
    stream = islice(datasets.Shuttle(), args.max_events)
    records = memory_records({**x, "label": y} for x, y in stream)
    report = replay(None, config, records=records, alerts_path=args.alerts, progress=True)
    print(format_summary(report))
    return 0


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
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("demo", help="replay a stream that ships with river, with alerts and a report")
    p.add_argument("--config", help="YAML or TOML config file")
    p.add_argument("--max-events", type=int, default=None, help="stop after this many events")
    p.add_argument("--alerts", default=None, help="append alerts as JSON lines here")
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
