"""Benchmark: what entity features (`schema.entities`) add, and what they cost.

1. **The demo's card simulator as a payment stream carries it**: `CardStream(seed=42)`, 100,000 transactions
   (fraud about 0.8%, in bursts on compromised cards), labels with the events, the default model, batches of
   500 through `Processor.process_many`. Side by side in one run: the raw fields only (amount, hour, country,
   category); the raw fields with `schema.entities: [card]`; and the three per-card fields the simulator's
   producer computes itself (`log_ratio_to_typical`, `foreign`, `minutes_since_last`) with the raw fields.
   Metrics: PR AUC of p(fraud), minority F1 of the alerts a user sees, second-half PR AUC; events per
   CPU-second of the Processor.
2. **The Fraud Detection Handbook's design** (`streamimb.simulate.handbook.HandbookStream`, 63 days, raw
   fields customer_id, terminal_id, amount, time; chargebacks 7 days late): online, the default model with
   `schema.entities: [customer_id, terminal_id]` against the raw fields alone (amount and hour of day, from
   the time, in both), every transaction scored before its label can have arrived, labels learned as event
   time reaches them. Scored on the Handbook's test week (days 56-62, the cards known compromised left out,
   `streamimb.evaluation.fraud`) with ROC AUC, average precision and Card Precision@100, next to the
   offline anchors of benchmarks/handbook_anchors.py (trained on days 42-48), and offline models trained on
   the training week's entity features as the stream computed them.
3. **Cost**: `EntityFeatures.transform` alone, microseconds per event, for 3 entity fields x 4 windows (the
   issue's sizing) and for 1 field, on 50,000 synthetic events with 2 numeric and 2 categorical fields.

    .venv/bin/python benchmarks/entities.py            # full run: writes benchmarks/results/entities.*
    .venv/bin/python benchmarks/entities.py --quick    # 20,000 transactions, prints only
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from readme_figures import provenance, write_figures

from streamimb.config import ModelConfig
from streamimb.entities import EntityFeatures
from streamimb.evaluation.fraud import fraud_metrics, handbook_split
from streamimb.evaluation.metrics import binary_metrics, pr_auc
from streamimb.events import Event
from streamimb.processor import Processor
from streamimb.simulate.cards import PRODUCER_FEATURES, CardStream
from streamimb.simulate.handbook import DAY, HandbookData, HandbookStream

RESULTS = Path(__file__).resolve().parent / "results"
BATCH = 500
RAW = ("amount", "hour", "country", "category")
HANDBOOK_DAYS, TRAIN_START = 63, 42  # the anchors' setup: train days 42-48, a week's gap, test days 56-62
ENTITIES = ["customer_id", "terminal_id"]
# A diagnostic, not the default: the boosting candidate keeps 50,000 rows per class, not 5,000.
WIDE_BOOSTING = {"kind": "windowed_boosting", "strategy": "none", "params": {"per_class": 50_000}}
WIDE_WINDOW = {
    "classifier": {
        "kind": "portfolio",
        "params": {
            "candidates": {
                "linear": {"kind": "numpy_logistic_regression", "strategy": "none"},
                "boosting": WIDE_BOOSTING,
            }
        },
    }
}
HANDBOOK_SHAPES = {  # name: (entity fields, model configuration)
    "raw fields": ([], {}),
    "raw fields + entities: [customer_id, terminal_id]": (ENTITIES, {}),
    "the same, boosting window 50,000 rows per class (not the default)": (ENTITIES, WIDE_WINDOW),
}
SHAPES = {
    "raw fields": (RAW, []),
    "raw fields + entities: [card]": (RAW, ["card"]),
    "raw + producer's per-card fields": ((*RAW, *PRODUCER_FEATURES), []),
}


def card_rows(n: int) -> list[tuple[dict, str]]:
    stream = iter(CardStream(seed=42))
    return [(tx, label["label"]) for tx, label in (next(stream) for _ in range(n))]


def run_card(rows: list[tuple[dict, str]], fields: tuple[str, ...], entities: list[str]) -> dict:
    processor = Processor(ModelConfig(), positive="1", classes=["0", "1"], entities=entities)
    keep = (*fields, *entities)
    scores, alerts = np.zeros(len(rows)), np.zeros(len(rows), dtype=bool)
    cpu = 0.0
    for start in range(0, len(rows), BATCH):
        batch = rows[start : start + BATCH]
        events = [
            Event(tx["id"], tx["time"], {k: tx[k] for k in keep}, y) for tx, y in batch
        ]  # fmt: skip
        t0 = time.process_time()
        verdicts, _ = processor.process_many(events)
        cpu += time.process_time() - t0
        for i, v in enumerate(verdicts, start=start):
            scores[i], alerts[i] = v.proba.get("1", 0.0), v.alert
    truth = np.array([y == "1" for _, y in rows])
    half = len(rows) // 2
    return {
        "pr_auc": pr_auc(truth, scores),
        "f1": binary_metrics(truth.tolist(), alerts.tolist())["f1"],
        "second_half_pr_auc": pr_auc(truth[half:], scores[half:]),
        "events_per_cpu_s": len(rows) / cpu,
    }


def run_handbook(
    data: HandbookData, entities: list[str], model: dict, keep_rows: np.ndarray | None = None
) -> tuple[np.ndarray, float, dict[int, dict[str, float]]]:
    """p(fraud) of every transaction, online with labels 7 days late; the Processor's CPU-seconds; the
    features each of ``keep_rows`` was scored with."""
    config = ModelConfig.model_validate(model)
    processor = Processor(config, positive="1", classes=["0", "1"], entities=entities)
    times, label_times = data.time.tolist(), data.label_time.tolist()
    labels = ["1" if f else "0" for f in data.fraud.tolist()]
    rows = [
        {"customer_id": f"c-{c}", "terminal_id": f"t-{t}", "amount": a, "hour": (s % DAY) / 3600.0}
        for c, t, a, s in zip(
            data.customer.tolist(), data.terminal.tolist(), data.amount.tolist(), times, strict=True
        )
    ]
    keep = ("amount", "hour", *entities)
    n = len(rows)
    scores, verdicts = np.zeros(n), [None] * n
    kept = set() if keep_rows is None else set(np.flatnonzero(keep_rows).tolist())
    features: dict[int, dict[str, float]] = {}
    learned, cpu = 0, 0.0  # the labels of transactions [0, learned) were learned
    for start in range(0, n, BATCH):
        end = min(n, start + BATCH)
        events = [Event(str(i), float(times[i]), {k: rows[i][k] for k in keep}) for i in range(start, end)]
        t0 = time.process_time()
        got, _ = processor.process_many(events)
        for i, v in enumerate(got, start=start):
            scores[i], verdicts[i] = v.proba.get("1", 0.0), v
            if i in kept:
                features[i] = v.x
        due = learned
        while due < end and label_times[due] <= times[end - 1]:
            due += 1
        if due > learned:
            processor.learn_many([(verdicts[j], labels[j]) for j in range(learned, due)])
            verdicts[learned:due] = [None] * (due - learned)
            learned = due
        cpu += time.process_time() - t0
    return scores, cpu, features


def offline_on(features: dict[int, dict[str, float]], train: np.ndarray, test: np.ndarray, fraud: np.ndarray):
    """Offline models trained on the training week's features as the stream computed them, scored on the
    test week: whether a gap to the offline anchors lies in the features or in the online model."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    names = sorted({k for x in features.values() for k in x})
    rows_train, rows_test = np.flatnonzero(train), np.flatnonzero(test)

    def matrix(rows: np.ndarray) -> np.ndarray:
        return np.array([[features[i].get(k, np.nan) for k in names] for i in rows])

    x_train, x_test = matrix(rows_train), matrix(rows_test)
    seen = ~np.isnan(x_train).all(axis=0)  # a feature the training week never had (no labels yet) goes
    x_train, x_test = x_train[:, seen], x_test[:, seen]
    models = {
        "logistic regression": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
        "HistGradientBoosting": HistGradientBoostingClassifier(random_state=0),
    }
    scores = {}
    for name, model in models.items():
        a, b = (x_train, x_test) if "Boosting" in name else (np.nan_to_num(x_train), np.nan_to_num(x_test))
        scores[name] = model.fit(a, fraud[rows_train]).predict_proba(b)[:, 1]
    return scores


PUBLISHED = {  # the Handbook's anchors, AUC / AP / CP@100 (one week of training, 7-day delay)
    "logistic regression": (0.871, 0.606, 0.291),
    "random forest": (0.867, 0.658, 0.287),
    "XGBoost": (0.869, 0.687, 0.303),
}


def offline_anchors() -> dict:
    """The offline anchors on the same setup, from benchmarks/handbook_anchors.py's results (if run)."""
    path = RESULTS / "handbook_anchors.json"
    if not path.exists():
        return {}
    setups = json.loads(path.read_text(encoding="utf-8"))["figures"]["setups"]
    return setups.get("steady state", {}).get("results", {}).get("Handbook features", {})


def handbook(n_days: int, train_start: int) -> dict:
    """Both shapes on the Handbook-style stream, scored on its test week, with the offline anchors."""
    data = HandbookStream(n_days=n_days).generate()
    day, card, fraud = data.day, data.customer, data.fraud
    train, test = handbook_split(day, card, fraud, train_start=train_start)
    out: dict = {
        "n": len(data),
        "days": n_days,
        "frauds": int(fraud.sum()),
        "test_transactions": int(test.sum()),
        "online": {},
    }
    for name, (entities, model) in HANDBOOK_SHAPES.items():
        keep = (train | test) if entities and not model else None
        scores, cpu, features = run_handbook(data, entities, model, keep)
        metrics = fraud_metrics(day[test], card[test], fraud[test], scores[test], k=100)
        out["online"][name] = {**metrics, "events_per_cpu_s": len(data) / cpu}
        print(name, {k: round(v, 3) for k, v in out["online"][name].items()}, flush=True)
        if features:
            out["streamed_features_offline"] = {
                model: fraud_metrics(day[test], card[test], fraud[test], s, k=100)
                for model, s in offline_on(features, train, test, fraud).items()
            }
    out["offline"] = offline_anchors() if n_days == HANDBOOK_DAYS and train_start == TRAIN_START else {}
    return out


def cost(n: int = 50_000) -> dict[str, float]:
    """Microseconds per event of `EntityFeatures.transform` alone."""
    rng = random.Random(1)
    events = [
        {
            "card": f"c{rng.randrange(5000)}", "merchant": f"m{rng.randrange(800)}",
            "terminal": f"t{rng.randrange(2000)}", "amount": rng.random() * 100.0,
            "hour": rng.random() * 24.0, "country": rng.choice("ABCDE"), "category": rng.choice("wxyz"),
        }
        for _ in range(n)
    ]  # fmt: skip
    out = {}
    for name, keys in (("3 entities x 4 windows", ["card", "merchant", "terminal"]), ("1 entity", ["card"])):
        features = EntityFeatures(keys)
        t0 = time.process_time()
        for i, e in enumerate(events):
            features.transform(e, float(i))
        out[name] = (time.process_time() - t0) / n * 1e6
    return out


def render(doc: dict) -> str:
    figures = doc["figures"]
    lines = [
        "## Entity features\n",
        f"{doc['date']}, commit {doc['commit']}. Command: `{doc['command']}`.\n",
        f"The demo's card simulator, {figures['n']:,} transactions (fraud about 0.8%), labels with the "
        f"events, the default model, batches of {BATCH}:\n",
        "| fields | PR AUC | minority F1 | 2nd-half PR AUC | events / CPU-s |",
        "|---|---|---|---|---|",
    ]
    for name, r in figures["card"].items():
        lines.append(
            f"| {name} | {r['pr_auc']:.3f} | {r['f1']:.3f} | {r['second_half_pr_auc']:.3f} | "
            f"{r['events_per_cpu_s']:,.0f} |"
        )
    book = figures["handbook"]
    lines += [
        "",
        f"The Fraud Detection Handbook's design (`HandbookStream(n_days={HANDBOOK_DAYS})`, {book['n']:,} "
        f"transactions, {book['frauds']:,} frauds; chargebacks 7 days late), online with the default model, "
        f"scored on the test week (days {TRAIN_START + 14}-{TRAIN_START + 20}, {book['test_transactions']:,} "
        "transactions, the cards known compromised left out), next to the offline anchors "
        "(`benchmarks/results/handbook_anchors.md`: trained on days "
        f"{TRAIN_START}-{TRAIN_START + 6} with the Handbook's features) and the Handbook's published ones. "
        "'Offline, the streamed entity features': the same offline models trained on the training week's "
        "features as the stream computed them, which says whether a gap lies in the features or in the "
        "online model:\n",
        "| method | ROC AUC | AP | CP@100 (best possible) | events / CPU-s |",
        "|---|---|---|---|---|",
    ]
    for name, r in book["online"].items():
        lines.append(
            f"| online, {name} | {r['roc_auc']:.3f} | {r['pr_auc']:.3f} | {r['card_precision_at_k']:.3f} "
            f"({r['card_precision_at_k_best']:.3f}) | {r['events_per_cpu_s']:,.0f} |"
        )
    for name, r in book.get("streamed_features_offline", {}).items():
        lines.append(
            f"| offline, the streamed entity features, {name} | {r['roc_auc']:.3f} | {r['pr_auc']:.3f} | "
            f"{r['card_precision_at_k']:.3f} ({r['card_precision_at_k_best']:.3f}) | - |"
        )
    for name, r in book.get("offline", {}).items():
        lines.append(
            f"| offline, Handbook features, {name} | {r['roc_auc']:.3f} | {r['pr_auc']:.3f} | "
            f"{r['cp_at_100']:.3f} ({r['cp_at_100_best']:.3f}) | - |"
        )
    for name, (auc, ap, cp) in PUBLISHED.items():
        lines.append(f"| published (Handbook), {name} | {auc:.3f} | {ap:.3f} | {cp:.3f} | - |")
    lines += ["", "`EntityFeatures.transform` alone, microseconds per event (pure Python):", ""]
    lines += [f"- {name}: {us:.1f} us" for name, us in figures["cost_us"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="20,000 transactions; print, write nothing")
    args = parser.parse_args(argv)
    origin = provenance(".venv/bin/python benchmarks/entities.py" + (" --quick" if args.quick else ""))
    rows = card_rows(20_000 if args.quick else 100_000)
    card = {}
    for name, (fields, entities) in SHAPES.items():
        card[name] = run_card(rows, fields, entities)
        print(name, {k: round(v, 3) for k, v in card[name].items()}, flush=True)
    book = handbook(28, 7) if args.quick else handbook(HANDBOOK_DAYS, TRAIN_START)
    figures = {
        "n": len(rows),
        "card": card,
        "handbook": book,
        "cost_us": cost(10_000 if args.quick else 50_000),
    }
    print(json.dumps(figures["cost_us"]))
    if args.quick:
        return 0
    write_figures("entities", origin, figures)
    (RESULTS / "entities.md").write_text(render({**origin, "figures": figures}), encoding="utf-8")
    print(f"wrote {RESULTS / 'entities.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
