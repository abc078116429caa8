import csv
import json
from itertools import islice

import pytest
from shared_data import shared_file

from streamimb.cli import main
from streamimb.config import ServiceConfig, load_config
from streamimb.io.memory import memory_records
from streamimb.replay import replay

REPORT_KEYS = {
    "events",
    "labelled",
    "alerts",
    "dead_letters",
    "drifts",
    "throughput_eps",
    "metrics",
    "segments",
}
METRIC_KEYS = {
    "precision",
    "recall",
    "f1",
    "kappa",
    "gmean",
    "balanced_accuracy",
    "roc_auc",
    "pr_auc",
    "confusion_matrix",
}


def slice_csv(src, dst, n, delimiter=",", start=0):
    """The header and rows [start, start + n) of a CSV file."""
    with open(src, encoding="utf-8-sig", newline="") as fin, open(dst, "w", newline="") as fout:
        reader = csv.reader(fin, delimiter=delimiter)
        writer = csv.writer(fout, delimiter=delimiter)
        writer.writerow(next(reader))
        for row in islice(reader, start, start + n):
            writer.writerow(row)
    return dst


def test_replay_river_shuttle_with_defaults():
    from river import datasets

    records = ({**x, "label": y} for x, y in islice(datasets.Shuttle(), 6000))
    report = replay(None, ServiceConfig(), records=memory_records(records), progress=False)
    assert report.keys() >= REPORT_KEYS
    assert report["metrics"].keys() >= METRIC_KEYS
    assert report["events"] == 6000 and report["positive_class"] == "1"
    assert report["metrics"]["roc_auc"] > 0.9
    assert len(report["segments"]) == 10


def test_cli_replay_writes_report_and_alerts(tmp_path, capsys):
    src = tmp_path / "events.jsonl"
    lines = [
        json.dumps({"id": f"e{i}", "amount": float(i % 7), "label": "1" if i % 20 == 0 else "0"})
        for i in range(600)
    ]
    lines[10] = "{not json"
    lines[11] = json.dumps({"id": "e11", "amount": "NaN", "label": "0"})
    lines[12] = json.dumps({"id": "e12", "amount": "lots", "label": "0"})
    lines[13] = json.dumps({"id": "e13", "amount": 1.0})
    src.write_text("\n".join(lines))
    report_path, alerts_path = tmp_path / "r.json", tmp_path / "a.jsonl"
    rc = main(["replay", str(src), "--report", str(report_path), "--alerts", str(alerts_path), "--quiet"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "dead letters" in out and "precision" in out
    report = json.loads(report_path.read_text())
    assert report["events"] == 597 and report["dead_letters"] == 3
    assert report["labelled"] == 596  # the row without a label is scored, not learned, as in the service
    assert report["dead_letter_reasons"] == {"malformed_json": 1, "non_finite": 1, "bad_number": 1}
    assert [d["row"] for d in report["dead_letter_rows"]] == [10, 11, 12]
    alerts = [json.loads(line) for line in alerts_path.read_text().splitlines()]
    assert len(alerts) == report["alerts"]
    assert len({a["alert_id"] for a in alerts}) == len(alerts)


def test_bank_marketing_slice_with_example_config(tmp_path):
    src = shared_file("bank_marketing/bank-additional-full.csv")
    # The first months (May 2008) carry almost no signal for any model; take a later slice (~12% yes).
    sliced = slice_csv(src, tmp_path / "bank.csv", 4000, delimiter=";", start=28000)
    config = load_config("examples/bank_marketing/config.yaml")
    report = replay(sliced, config, progress=False)
    assert report["events"] == 4000 and report["dead_letters"] == 0
    assert report["positive_class"] == "yes"
    assert "duration" not in report["schema"]["numeric"]
    assert report["metrics"]["support"] > 50
    assert report["metrics"]["roc_auc"] > 0.55
    assert set(report["priors"]) == {"no", "yes"}


def test_creditcard_slice_without_config(tmp_path):
    src = shared_file("creditcard_ulb_sample/creditcard_sample_by_time.csv")
    sliced = slice_csv(src, tmp_path / "cc.csv", 3000)
    report = replay(sliced, ServiceConfig(), progress=False)
    assert report["schema"]["label"] == "Class" and report["positive_class"] == "1"
    assert report["metrics"]["support"] > 100
    assert report["metrics"]["roc_auc"] > 0.85
    # the alert guard withholds the young model's alerts while its measured skill is below chance
    assert report["metrics"]["f1"] > 0.55 and report["metrics"]["precision"] > 0.7
    assert report["metrics"]["recall"] > 0.4


@pytest.mark.parametrize(
    ("relative", "label", "positive"),
    [
        ("churn_iranian/customer_churn.csv", "Churn", "1"),
        ("churn_telco_ibm/Telco-Customer-Churn.csv", "Churn", "Yes"),
    ],
)
def test_churn_files_replay_with_inferred_schema(relative, label, positive):
    src = shared_file(relative)
    report = replay(src, ServiceConfig(), progress=False)
    assert report["schema"]["label"] == label and report["positive_class"] == positive
    assert report["dead_letters"] == 0
    assert report["metrics"]["roc_auc"] > 0.7


def test_churn_example_config():
    src = shared_file("churn_iranian/customer_churn.csv")
    report = replay(src, load_config("examples/churn/config.yaml"), progress=False)
    assert report["dead_letters"] == 0 and report["events"] == 3150
    assert set(report["schema"]["categorical"]) == {"Tariff Plan", "Status", "Age Group"}
