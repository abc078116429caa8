"""Wires a configured ServiceRunner to telemetry, the metrics endpoint and process signals."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterable
from typing import Any

from streamimb.config import ServiceConfig
from streamimb.service.runner import BatchOutcome, ServiceRunner

log = logging.getLogger(__name__)


def run_service(
    config: ServiceConfig,
    on_batch: Callable[[ServiceRunner, BatchOutcome], None] | None = None,
    extra_sinks: Iterable[Any] = (),
    on_start: Callable[[ServiceRunner, str | None], None] | None = None,
) -> dict[str, Any]:
    """Run until SIGTERM/SIGINT (finish the batch, flush, commit), ``max_events`` or ``idle_timeout``."""
    from streamimb.service.telemetry import MetricsServer, stream_telemetry

    telemetry = stream_telemetry(config.event_schema.classes or ())
    sinks = list(extra_sinks)
    if config.alertmanager is not None:
        sinks.append(config.alertmanager.build())
    runner = ServiceRunner(config, telemetry=telemetry, on_batch=on_batch, extra_sinks=sinks)
    server = None
    if config.metrics.address:
        server = MetricsServer(config.metrics.address, telemetry).start()
        log.info("metrics on http://%s/metrics", server.address)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda _s, _f: runner.stop())
    try:
        if on_start is not None:
            on_start(runner, server.address if server else None)
        return runner.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if server is not None:
            server.stop()
