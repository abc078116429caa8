"""Real Prometheus and Alertmanager binaries on loopback for tests, a webhook receiver and a tiny exporter.

Everything binds 127.0.0.1 on a free port, keeps its data in a temp directory and is stopped by the test
(use the classes as context managers). Tests that need a binary call :func:`require`, which skips with the
reason when it is not on PATH (Debian ships Alertmanager as ``prometheus-alertmanager``).
"""

from __future__ import annotations

import json
import queue
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
RULES = DEPLOY / "prometheus" / "rules" / "streamimb.rules.yml"
RULES_TEST = DEPLOY / "prometheus" / "rules" / "streamimb.rules.test.yml"
PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"
ALERTMANAGER_YML = DEPLOY / "alertmanager" / "alertmanager.yml"
DASHBOARD = DEPLOY / "grafana" / "streamimb-dashboard.json"

_BINARIES = {
    "prometheus": ("prometheus",),
    "promtool": ("promtool",),
    "alertmanager": ("alertmanager", "prometheus-alertmanager"),
    "amtool": ("amtool",),
}

T = TypeVar("T")


def binary(name: str) -> str | None:
    """Path of a Prometheus-stack program, or None when it is not installed."""
    for candidate in _BINARIES[name]:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def require(*names: str) -> dict[str, str]:
    """Paths of the named programs; skips the test when one is missing."""
    paths = {n: binary(n) for n in names}
    missing = [n for n, p in paths.items() if p is None]
    if missing:
        pytest.skip(
            f"{', '.join(missing)} not on PATH (apt-get install prometheus prometheus-alertmanager)",
        )
    return {n: p for n, p in paths.items() if p is not None}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(fn: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Call ``fn`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while True:
        try:
            value = fn()
            if value:
                return value
        except Exception as exc:  # the server may not be up yet
            last_exc = exc
        if time.monotonic() > deadline:
            extra = f" (last error: {last_exc})" if last_exc else ""
            pytest.fail(f"timed out after {timeout}s waiting for {what}{extra}")
        time.sleep(interval)


def http(url: str, data: bytes | None = None, timeout: float = 5.0, headers: Mapping[str, str] | None = None):
    """(status, headers, body) of a GET (or a POST when ``data`` is given); HTTP errors are returned too."""
    req = urllib.request.Request(url, data=data, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def get_json(url: str, timeout: float = 5.0) -> Any:
    status, _, body = http(url, timeout=timeout)
    assert status == 200, f"GET {url}: HTTP {status}: {body[:300]!r}"
    return json.loads(body)


class _Program:
    """A server binary started on a free loopback port; stopped on exit."""

    name = ""

    def __init__(self, path: str, workdir: Path) -> None:
        self.path = path
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = self.workdir / f"{self.name}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def args(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 20.0) -> _Program:
        for _ in range(3):  # the free port may be taken between probing and binding
            self.port = free_port()
            with self._log.open("wb") as log:
                self._proc = subprocess.Popen(
                    [self.path, *self.args()], stdin=subprocess.DEVNULL, stdout=log, stderr=log
                )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    break
                try:
                    if http(f"{self.url}/-/ready", timeout=1.0)[0] == 200:
                        return self
                except OSError:
                    pass
                time.sleep(0.05)
            if self._proc.poll() is None:
                self.stop()
                raise RuntimeError(f"{self.name} not ready after {timeout}s:\n{self.log_tail()}")
            if "address already in use" not in self.log_tail():
                break
        raise RuntimeError(f"{self.name} exited with {self._proc.returncode}:\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self._log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class PrometheusServer(_Program):
    """Prometheus scraping ``targets`` (job -> ["host:port"]) every ``scrape_interval``, with rule files and
    an Alertmanager when given."""

    name = "prometheus"

    def __init__(
        self,
        workdir: Path,
        targets: Mapping[str, Iterable[str]],
        *,
        rule_files: Iterable[Path] = (),
        alertmanager: str | None = None,
        interval: str = "1s",
    ) -> None:
        super().__init__(require("prometheus")["prometheus"], workdir)
        config: dict[str, Any] = {
            "global": {
                "scrape_interval": interval,
                "evaluation_interval": interval,
                "scrape_timeout": interval,
            },
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": list(addrs)}]}
                for job, addrs in targets.items()
            ],
        }
        if alertmanager:
            host = urllib.parse.urlsplit(alertmanager).netloc
            config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [host]}]}]}
        self.config_path = self.workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config))

    def args(self) -> list[str]:
        return [
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--storage.tsdb.retention.time=1h",
            "--log.level=warn",
        ]

    def api(self, endpoint: str, **params: Any) -> Any:
        """``data`` of an HTTP API call; fails the test on an error status."""
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        doc = get_json(f"{self.url}/api/v1/{endpoint}?{query}")
        assert doc["status"] == "success", doc
        return doc["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.api("query", query=expr)["result"]

    def value(self, expr: str) -> float | None:
        """The value of a one-series instant query, None when it returns nothing."""
        result = self.query(expr)
        if not result:
            return None
        assert len(result) == 1, result
        return float(result[0]["value"][1])

    def wait_up(self, job: str, timeout: float = 15.0) -> None:
        wait_until(lambda: self.value(f'up{{job="{job}"}}') == 1.0, timeout, f"Prometheus to scrape {job}")


class AlertmanagerServer(_Program):
    """Alertmanager with a config dict, no clustering."""

    name = "alertmanager"

    def __init__(self, workdir: Path, config: Mapping[str, Any]) -> None:
        super().__init__(require("alertmanager")["alertmanager"], workdir)
        self.config_path = self.workdir / "alertmanager.yml"
        self.config_path.write_text(yaml.safe_dump(dict(config)))

    def args(self) -> list[str]:
        return [
            f"--config.file={self.config_path}",
            f"--storage.path={self.workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ]

    def alerts(self, **filters: str) -> list[dict[str, Any]]:
        """Active alerts from ``GET /api/v2/alerts``."""
        query = urllib.parse.urlencode(filters)
        return get_json(f"{self.url}/api/v2/alerts?{query}")


def fast_alertmanager_config(webhook_url: str, base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The shipped alertmanager.yml (or ``base``) with its webhook pointed at ``webhook_url`` and its timers
    shortened to a second."""
    config = json.loads(
        json.dumps(base if base is not None else yaml.safe_load(ALERTMANAGER_YML.read_text()))
    )

    def speed_up(route: dict[str, Any]) -> None:
        for key in ("group_wait", "group_interval"):
            if key in route:
                route[key] = "1s"
        if "repeat_interval" in route:
            route["repeat_interval"] = "1h"
        for child in route.get("routes", []):
            speed_up(child)

    config["route"]["group_wait"] = "1s"
    config["route"]["group_interval"] = "1s"
    speed_up(config["route"])
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = webhook_url
    return config


class WebhookReceiver:
    """Collects the JSON documents POSTed to it (Alertmanager's webhook notifications)."""

    def __init__(self) -> None:
        self.received: queue.Queue[dict[str, Any]] = queue.Queue()
        self.payloads: list[dict[str, Any]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.put(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float, what: str
    ) -> dict[str, Any]:
        """The first notification (received so far or later) that satisfies ``predicate``."""
        for payload in self.payloads:
            if predicate(payload):
                return payload
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"no webhook notification with {what} after {timeout}s; got {self.payloads}")
            try:
                payload = self.received.get(timeout=left)
            except queue.Empty:
                continue
            self.payloads.append(payload)
            if predicate(payload):
                return payload

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


# -- PromQL in the shipped files -----------------------------------------------------------------------------
_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
    "inf", "nan", "atan2",
}  # fmt: skip
_GRAFANA_VARS = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "$job": ".*",
    "$instance": ".*",
}


def substitute_grafana_variables(expr: str) -> str:
    """Replace the dashboard's template variables with values Prometheus accepts."""
    for name, value in sorted(_GRAFANA_VARS.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace("${" + name[1:] + "}", value).replace(name, value)
    return expr


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords and label names left out).

    >>> sorted(metric_names('sum by (le) (rate(a_bucket{job=~"x"}[5m])) / on (job) b offset 1h > 1e-3'))
    ['a_bucket', 'b']
    """
    expr = substitute_grafana_variables(expr)
    expr = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    found = set()
    for match in re.finditer(r"(?<![\w.:$])[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        word = match.group(0)
        rest = expr[match.end() :].lstrip()
        if rest.startswith("(") or word.lower() in _KEYWORDS:
            continue
        found.add(word)
    return found


def rule_groups() -> list[dict[str, Any]]:
    return yaml.safe_load(RULES.read_text())["groups"]


def recording_rule_names() -> set[str]:
    return {r["record"] for g in rule_groups() for r in g["rules"] if "record" in r}


def dashboard_exprs(dashboard: Mapping[str, Any]) -> list[str]:
    """Every PromQL expression of a Grafana dashboard: panel targets, annotations and query variables
    (``label_values(selector, label)`` contributes its selector)."""
    exprs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                exprs.append(node["expr"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(dashboard.get("panels", []))
    walk(dashboard.get("annotations", {}))
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", q)
        exprs.append(m.group(1) if m else q)
    return exprs
