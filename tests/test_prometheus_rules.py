"""The shipped Prometheus rules, Prometheus and Alertmanager configs, and Grafana dashboard."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from promstack import (
    ALERTMANAGER_YML,
    DASHBOARD,
    PROMETHEUS_YML,
    RULES,
    RULES_TEST,
    dashboard_exprs,
    metric_names,
    recording_rule_names,
    require,
    rule_groups,
)

from streamimb.service.telemetry import ROLLING_METRICS, ProcessorStats, Telemetry

ALERTS = {
    "StreamimbDriftDetected",
    "StreamimbPrevalenceShift",
    "StreamimbMinorityRecallDrop",
    "StreamimbConsumerLagHigh",
    "StreamimbDeadLettersRising",
    "StreamimbDown",
}
PROMETHEUS_OWN = {"up", "ALERTS", "ALERTS_FOR_STATE"}


def telemetry_metric_names() -> set[str]:
    """Every family and sample name Telemetry exports, with every state family populated."""
    t = Telemetry(CollectorRegistry(), classes=["1"], detectors=["hst"], drift_signals=["score"])
    t.record_batch(1, 1, [1e-4], {"bad": 1}, {("hst", "1"): 1}, {"score": 1}, {"joined": 1})
    t.set_lag(0, 1, 1.0)
    t.set_checkpoint(0, 0.0)
    rolling = {m: {"1": 0.5} for m in ROLLING_METRICS}
    t.add_state_source(lambda: {0: ProcessorStats(1, {"1": 0.1}, {"1": 0.1}, {"hst": 0.5}, rolling)})
    names = set()
    for fam in text_string_to_metric_families(generate_latest(t.registry).decode()):
        names.add(fam.name)
        names.update(s.name for s in fam.samples)
    return names


def run(*cmd: str, cwd=None) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=cwd)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    return out


def test_promtool_check_rules():
    tools = require("promtool")
    out = run(tools["promtool"], "check", "rules", str(RULES))
    assert "SUCCESS" in out


def test_promtool_test_rules():
    tools = require("promtool")
    out = run(tools["promtool"], "test", "rules", RULES_TEST.name, cwd=RULES_TEST.parent)
    assert "SUCCESS" in out and "FAILED" not in out


def test_every_alert_rule_has_a_test():
    tested = {
        t["alertname"]
        for case in yaml.safe_load(RULES_TEST.read_text())["tests"]
        for t in case["alert_rule_test"]
    }
    assert tested >= ALERTS


def test_shipped_alerts_exist_with_severity_and_summary():
    alerts = {r["alert"]: r for g in rule_groups() for r in g["rules"] if "alert" in r}
    assert set(alerts) == ALERTS
    for rule in alerts.values():
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_rules_name_only_exported_metrics():
    known = telemetry_metric_names() | recording_rule_names() | PROMETHEUS_OWN
    for group in rule_groups():
        for rule in group["rules"]:
            unknown = metric_names(rule["expr"]) - known
            assert not unknown, (rule.get("record") or rule.get("alert"), unknown)
    assert all(name.startswith("streamimb:") for name in recording_rule_names())


def test_prometheus_config_is_valid():
    tools = require("promtool")
    out = run(tools["promtool"], "check", "config", str(PROMETHEUS_YML))
    assert "SUCCESS" in out
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    assert any(job["job_name"] == "streamimb" for job in config["scrape_configs"])


def test_alertmanager_config_is_valid():
    tools = require("amtool")
    out = run(tools["amtool"], "check-config", str(ALERTMANAGER_YML))
    assert "SUCCESS" in out
    config = yaml.safe_load(ALERTMANAGER_YML.read_text())
    hooks = [h for r in config["receivers"] for h in r.get("webhook_configs", [])]
    assert hooks and all(h["send_resolved"] for h in hooks)


def test_dashboard_parses_and_names_only_exported_metrics():
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = dashboard_exprs(dashboard)
    assert len(exprs) >= 20
    known = telemetry_metric_names() | recording_rule_names() | PROMETHEUS_OWN
    for expr in exprs:
        unknown = metric_names(expr) - known
        assert not unknown, (expr, unknown)
    used = set().union(*(metric_names(e) for e in exprs))
    for needed in (
        "streamimb_events_processed_total",
        "streamimb_consumer_lag_seconds",
        "streamimb_alerts_total",
        "streamimb_prevalence_estimate",
        "streamimb_observed_prevalence",
        "streamimb_rolling_recall",
        "streamimb_rolling_precision",
    ):
        assert needed in used, needed


def test_dashboard_structure():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"
            assert panel["targets"] and all(t["expr"] for t in panel["targets"])
    drift = [a for a in dashboard["annotations"]["list"] if "streamimb_drifts_total" in a.get("expr", "")]
    assert drift and drift[0]["enable"]
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "job", "instance"} <= variables


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('rate(streamimb_alerts_total{detector="a:b"}[5m])', {"streamimb_alerts_total"}),
        ("streamimb:events_processed:rate1m * 60", {"streamimb:events_processed:rate1m"}),
        ("avg_over_time((x >= 0)[6h:5m] offset 30m) and on (job, class) y < 0.2", {"x", "y"}),
        ('count(ALERTS{alertname=~"S.+"}) or vector(0)', {"ALERTS"}),
        ("histogram_quantile(0.99, sum by (le) (rate(h_bucket[$__rate_interval])))", {"h_bucket"}),
    ],
)
def test_metric_name_extraction(expr, names):
    assert metric_names(expr) == names
