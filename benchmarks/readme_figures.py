"""The README's measured figures, generated from the benchmarks' results files.

Each benchmark writes, next to its ``benchmarks/results/<name>.md``, the key figures it measured to
``benchmarks/results/<name>.json``, with the date (UTC), the git commit it ran on and the command that
reproduces it (``write_figures``). The README quotes measurements only inside generated blocks::

    <!-- figures:throughput -->
    ...text rendered from benchmarks/results/throughput.json...
    <!-- /figures:throughput -->

``make bench`` (``benchmarks/run_all.py``) rewrites every block through the render functions below, so a
figure in the README is always the one in the results file, with that file's date and commit.

    .venv/bin/python benchmarks/readme_figures.py           # rewrite the README's blocks from the results
    .venv/bin/python benchmarks/readme_figures.py --check   # exit 1 if a block is not what the results say
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
README = ROOT / "README.md"
#: Files that `make bench` itself rewrites: a change there does not make the measured code "dirty".
OUTPUTS = ("benchmarks/results/", "benchmarks/RESULTS.md", "README.md")
BLOCK = re.compile(r"<!-- figures:(?P<name>[\w-]+) -->\n.*?<!-- /figures:(?P=name) -->", re.S)


# ------------------------------------------------------------------------------------------ writing
def git_commit(root: Path = ROOT) -> str:
    """``git rev-parse --short HEAD``, plus ``+dirty`` when tracked files other than outputs changed."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    changed = [line[3:] for line in status.splitlines() if line.strip()]
    return head + ("+dirty" if any(not path.startswith(OUTPUTS) for path in changed) else "")


def provenance(command: str) -> dict[str, str]:
    """Call when the benchmark starts: the date (UTC), the commit measured and the command."""
    now = datetime.datetime.now(datetime.UTC)
    return {"date": f"{now:%Y-%m-%d %H:%M} UTC", "commit": git_commit(), "command": command}


def write_figures(name: str, origin: dict[str, str], figures: dict[str, Any], folder: Path = RESULTS) -> Path:
    """Write ``<folder>/<name>.json``: ``origin`` (from ``provenance``) and the measured ``figures``."""
    path = folder / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": name, **origin, "figures": figures}
    path.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    return path


def load(folder: Path = RESULTS) -> dict[str, dict[str, Any]]:
    """Every ``<name>.json`` in ``folder``, by name."""
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))}


# ----------------------------------------------------------------------------------------- formatting
def num(x: float, sig: int = 3) -> str:
    """``x`` rounded to ``sig`` significant digits, with thousands separators: 27707 -> '27,700'."""
    if x == 0:
        return "0"
    digits = sig - len(str(int(abs(x)))) if abs(x) >= 1 else sig
    rounded = round(x, digits)
    return f"{rounded:,.{max(digits, 0)}f}"


def times(x: float) -> str:
    """A ratio: '1.27x' below 10, '19.9x' below 100, '58x' above."""
    return f"{x:.2f}x" if x < 10 else f"{x:.1f}x" if x < 100 else f"{x:.0f}x"


def span(values: list[float], fmt: Callable[[float], str]) -> str:
    """'a-b' over the values, or one value when they round alike."""
    lo, hi = fmt(min(values)), fmt(max(values))
    return lo if lo == hi else f"{lo.rstrip('x')}-{hi}"


def cite(result: dict[str, Any]) -> str:
    """Where a figure comes from: the results file, its date and its commit."""
    return f"`benchmarks/results/{result['benchmark']}.md`, {result['date'][:10]}, commit {result['commit']}"


def wrap(text: str, width: int = 110) -> str:
    """Markdown paragraphs and list items wrapped like the rest of the README (table rows left whole)."""
    out = []
    for line in text.split("\n"):
        indent = "  " if line.startswith("- ") else ""
        if line.startswith("|"):  # a table row stays one line
            out.append(line)
            continue
        out.append(
            textwrap.fill(
                line, width, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False
            )
            if line
            else ""
        )
    return "\n".join(out)


def ordinal(n: int) -> str:
    return {1: "first", 2: "second", 3: "third", 4: "fourth"}.get(n, f"{n}th")


# ------------------------------------------------------------------------------------------- blocks
# Each renderer takes every results file (by benchmark name) and returns the block's Markdown.


def render_modes(res: dict[str, dict]) -> str:
    """Architecture: what `model.batch: false` costs and buys."""
    tp, ps = res["throughput"], res["prevalence_shift"]
    e2e = tp["figures"]["e2e"]
    rank = ps["figures"]["per_event"]["rank"]
    slower = e2e["batch"] / e2e["per_event"]
    return (
        "`model.batch: false` runs every event one at a time; with `classifier.kind: numpy_hoeffding_tree` "
        "it runs river's models (river's half-space trees and Hoeffding adaptive trees). That ensemble "
        f"ranked {ordinal(rank)} of {ps['figures']['strategies']} "
        f"strategies on the prevalence-shift benchmark's combined score ({cite(ps)}), and runs "
        f"{times(slower)} slower end to end through the broker "
        f"({num(e2e['per_event'])} against {num(e2e['batch'])} events/s; {cite(tp)})."
    )


def render_confluent(res: dict[str, dict]) -> str:
    """Use: why the confluent client is faster, and by how much."""
    tp = res["throughput"]
    f = tp["figures"]
    parse_us = 1e6 / f["e2e"]["floor_consume"]
    share = parse_us / f["replay"]["batch"]["us_per_event"]
    return (
        "kafka-python does it in Python, which costs "
        f"{parse_us:.1f} us an event, {share:.0%} of what processing the event costs in replay: the "
        f"confluent consumer gave {times(f['client_ratio'])} the end-to-end throughput ({cite(tp)})."
    )


def render_strategy(res: dict[str, dict]) -> str:
    """Choosing a strategy: the two base learners of `oob`, measured."""
    ps = res["prevalence_shift"]
    f = ps["figures"]
    b, e = f["batch_default"], f["per_event"]
    river = f["agrawal_best_river"]
    gap = [e["pr_auc"][s] - b["pr_auc"][s] for s in b["pr_auc"]]
    worst = max(b["pr_auc"], key=lambda s: e["pr_auc"][s] - b["pr_auc"][s])
    single = f["best_single_model"]
    ranking = dict(f["ranking"])
    replacing = ranking.get(f"{b['name']} (replacing members)")
    kept = (
        ""
        if replacing is None
        else " (members are kept: replacing one whose own errors rise, `replace_drifted: true`, scored "
        f"{'lower' if replacing < b['score'] else 'higher'}, {replacing:.3f} against {b['score']:.3f})"
    )
    return "\n".join(
        [
            f"Measured in {cite(ps)}:",
            "",
            "- `batch: true`: 10 numpy Hoeffding trees (`numpy_hoeffding_tree`), each batch scored "
            "and learned as arrays (in smaller slices while the model is young), a tree's stale subtrees "
            f"pruned when their class-conditional error rises{kept}. "
            f"{span(list(b['eps'].values()), num)} events per CPU-second for the model alone; on the Agrawal "
            f"stream G-mean {b['gmean']['agrawal']:.2f} and PR AUC {b['pr_auc']['agrawal']:.2f} (the best "
            f"river baselines: {river['gmean']:.2f} and {river['pr_auc']:.2f}).",
            "- `batch: false`: 10 river Hoeffding adaptive trees, one event at a time: G-mean "
            f"{e['gmean']['agrawal']:.2f} and PR AUC {e['pr_auc']['agrawal']:.2f} on the Agrawal stream, at "
            f"{span(list(e['eps'].values()), num)} events per CPU-second (model alone).",
            "",
            f"On the benchmark's combined score the batch ensemble ranks {ordinal(b['rank'])} "
            f"({b['score']:.2f}) and the per-event ensemble {ordinal(e['rank'])} ({e['score']:.2f}), of "
            f"{f['strategies']} strategies; the batch ensemble's PR AUC is {span(gap, lambda x: f'{x:.2f}')} "
            f"lower on the four streams (most on {worst.replace('_', ' ')}). The best single model, "
            f"`{single['name']}`, scores {single['score']:.2f} on it. Choose `batch: false` when about "
            f"{num(min(e['eps'].values()), 2)} events per CPU-second per partition are enough.",
        ]
    )


def render_throughput(res: dict[str, dict]) -> str:
    """Benchmarks: speed in replay and through the broker."""
    tp = res["throughput"]
    f = tp["figures"]
    rp, e2e = f["replay"], f["e2e"]
    lines = [
        f"Speed, from {cite(tp)} ({f['cpus']} shared cores, pipelines taking turns 1,000 events each so "
        "that the machine's changing speed falls on all of them alike): the batch pipeline of that run "
        "(half-space trees, `oob` over 10 numpy Hoeffding trees, `max_f1`, drift monitors, metrics) replays "
        f"card transactions at {span(f['ratio_river_rounds'], times)} the same models written in plain river "
        f"one event at a time (median {times(f['ratio_river'])}) and {times(f['ratio_per_event'])} the "
        f"per-event mode; {num(rp['batch']['eps'])} events per CPU-second ({rp['batch']['us_per_event']:.0f} "
        f"us an event; plain river ran at {num(rp['river']['eps'], 2)} events per CPU-second in that run), "
        f"{'above' if rp['batch']['eps'] >= 50_000 else 'below'} the 50,000 goal. "
        f"{f['kernel_us']:.1f} us of an event is spent inside the compiled kernels, the rest in Python "
        "and numpy calls around them.",
    ]
    if e2e:
        share = e2e["batch"] / e2e["floor"]
        budgets = {k: 0.25 * 1e6 / e2e[floor] for k, floor in (("kp", "floor"), ("cf", "confluent"))}
        lines += [
            "",
            f"Through the embedded broker about {num(e2e['batch'])} events/s with kafka-python, {share:.0%} "
            "of what kafka-python alone consumes, decodes and commits (goal 80%: "
            f"{'met' if share >= 0.8 else 'not met'}). The confluent-kafka consumer (`kafka.client: "
            f"confluent`) gives {times(f['client_ratio'])} that throughput (median of "
            f"{len(f['client_ratio_rounds'])} back-to-back rounds, {span(f['client_ratio_rounds'], times)}): "
            f"kafka-python spends {1e6 / e2e['floor_consume']:.1f} us an event parsing records, librdkafka "
            f"{1e6 / e2e['confluent_consume']:.1f} us. Reaching 80% of a floor leaves a quarter of the "
            f"floor's time for processing, {budgets['kp']:.1f} us an event with kafka-python and "
            f"{budgets['cf']:.1f} with confluent: "
            + (
                "less than the default models' compiled kernels alone take."
                if f["kernel_us"] > max(budgets.values())
                else "more than the default models' compiled kernels take."
            ),
        ]
    return "\n".join(lines)


def render_detection(res: dict[str, dict]) -> str:
    """How well the default finds rare events: against river's baselines and the offline bound, held out."""
    det, choice = res["detection"], res["default_choice"]
    streams = det["figures"]["streams"]
    loso = choice["figures"]["loso"]
    previous = "streamimb previous default: oob(10 numpy HT)"
    rows = [
        "| stream | events (rare) | default PR AUC / F1 | best river PR AUC / F1 | previous default | "
        "2nd-half PR AUC: default / offline bound |",
        "|---|---|---|---|---|---|",
    ]
    wins = {"pr_auc": 0, "f1": 0}
    for name, st in streams.items():
        methods = st["methods"]
        ours = methods["streamimb default"]
        river = {m: r for m, r in methods.items() if m.startswith("river")}
        best = {k: max(river.items(), key=lambda kv: kv[1][k] or 0.0) for k in wins}
        for k in wins:
            wins[k] += (ours[k] or 0.0) >= (best[k][1][k] or 0.0)
        bound = st["offline_bound"]["second_half_pr_auc"]
        share = f"{ours['second_half_pr_auc']:.3f} / {bound:.3f}" if bound else "-"
        prev = methods.get(previous)
        rows.append(
            f"| {name} | {st['n']:,} ({st['positives']:,}) | {ours['pr_auc']:.3f} / {ours['f1']:.3f} | "
            f"{best['pr_auc'][1]['pr_auc']:.3f} / {best['f1'][1]['f1']:.3f} | "
            + (f"{prev['pr_auc']:.3f} / {prev['f1']:.3f}" if prev else "-")
            + f" | {share} |"
        )
    n = len(streams)
    held = loso["held_out"]
    agree = sum(h["chosen"] == loso["chosen_on_all"] for h in held.values())
    return "\n".join(
        [
            f"Measured in {cite(det)}, every method on the same events in one run (river's baselines HT, "
            "HT+RUS, HT+ROS, LR, LR+RUS, ARF(10) and ARF(10)+RUS decide by argmax; the default's F1 is over "
            "the alerts a user sees). The default's PR AUC is at least the best river baseline's on "
            f"{wins['pr_auc']} of {n} streams, its minority F1 on {wins['f1']} of {n}:",
            "",
            *rows,
            "",
            f"The default was chosen by leave-one-stream-out in {cite(choice)}: left out of the choice, each "
            f"stream would have got the same model in {agree} of {n} cases (the held-out numbers stand there "
            "next to the in-sample ones). The offline bound is gradient boosting trained on the first half "
            "and scored on the second; it is no bound where the concept changes in the second half "
            "(Agrawal, Elec2).",
        ]
    )


def render_partitions(res: dict[str, dict]) -> str:
    """Scaling out: per-partition models against one model shared by the partitions."""
    doc = res["partitions"]
    default = doc["figures"]["results"]["default"]
    most = max(default, key=int)
    one = default["1"]["shared model"]
    alone, shared = default[most]["per partition"], default[most]["shared model"]
    return (
        f"Measured in {cite(doc)} on the demo's card simulator ({doc['figures']['n']:,} transactions, fraud "
        f"about 0.8%), split by card over {most} partitions and run with the default model: a model per "
        f"partition catches fraud with minority F1 {alone['f1']:.3f} (PR AUC {alone['pr_auc']:.3f}); one "
        f"model shared by the {most} partitions {shared['f1']:.3f} ({shared['pr_auc']:.3f}), against "
        f"{one['f1']:.3f} ({one['pr_auc']:.3f}) with one partition."
    )


def render_entities(res: dict[str, dict]) -> str:
    """Entity features: detection with and without them on the raw card stream, and their cost."""
    doc = res["entities"]
    card, cost = doc["figures"]["card"], doc["figures"]["cost_us"]
    raw, ent = card["raw fields"], card["raw fields + entities: [card]"]
    producer = card["raw + producer's per-card fields"]
    return (
        f"Measured in {cite(doc)} on the demo's card simulator as a payment stream carries it "
        f"({doc['figures']['n']:,} transactions; amount, hour, country, category), labels with the events, "
        f"the default model: PR AUC {ent['pr_auc']:.3f} and minority F1 {ent['f1']:.3f} with "
        f"`schema.entities: [card]`, against {raw['pr_auc']:.3f} and {raw['f1']:.3f} on the raw fields "
        f"alone, and {producer['pr_auc']:.3f} and {producer['f1']:.3f} with the three per-card fields the "
        f"simulator's producer computes. The entity features take {cost['1 entity']:.0f} us per event for "
        f"one entity field and {cost['3 entities x 4 windows']:.0f} us for three (pure Python); the "
        f"Processor ran "
        f"{ent['events_per_cpu_s']:,.0f} events per CPU-second with them, {raw['events_per_cpu_s']:,.0f} "
        "without." + _handbook_sentence(doc["figures"].get("handbook"))
    )


def _handbook_sentence(book: dict | None) -> str:
    """The Handbook-style stream: online with entities against the raw fields and the offline anchors."""
    if not book:
        return ""
    online = book["online"]
    raw = online["raw fields"]
    ent = online["raw fields + entities: [customer_id, terminal_id]"]
    offline = book.get("offline", {})
    best = max(offline.items(), key=lambda kv: kv[1]["pr_auc"]) if offline else None
    anchor = (
        f"; offline with the Handbook's features, trained on one week, the best AP is "
        f"{best[1]['pr_auc']:.3f} ({best[0]}, CP@100 {best[1]['cp_at_100']:.3f})"
        if best
        else ""
    )
    return (
        f" On a stream built like the Fraud Detection Handbook's ({book['n']:,} transactions, raw fields "
        "customer_id, terminal_id, amount, time; chargebacks 7 days late), online with "
        f"`schema.entities: [customer_id, terminal_id]`: AP {ent['pr_auc']:.3f} and CP@100 "
        f"{ent['card_precision_at_k']:.3f} on the Handbook's test week, against {raw['pr_auc']:.3f} and "
        f"{raw['card_precision_at_k']:.3f} on the raw fields{anchor}." + _streamed_sentence(book)
    )


def _streamed_sentence(book: dict) -> str:
    """Offline models on the streamed entity features: is the gap in the features or the online model?"""
    streamed = book.get("streamed_features_offline")
    if not streamed:
        return ""
    name, best = max(streamed.items(), key=lambda kv: kv[1]["pr_auc"])
    online = book["online"]["raw fields + entities: [customer_id, terminal_id]"]["pr_auc"]
    verdict = (
        "the features carry the signal, and the online default model is what falls short on this stream"
        if best["pr_auc"] > online + 0.05
        else "the online default model does about as well"
    )
    wide = next((r for n, r in book["online"].items() if "not the default" in n), None)
    diagnostic = (
        f" With the boosting candidate's window at 50,000 rows per class instead of 5,000 (not the default, "
        f"and not chosen on the other streams), the online model reaches AP {wide['pr_auc']:.3f} and CP@100 "
        f"{wide['card_precision_at_k']:.3f}: on this stream 5,000 negatives span about "
        f"{5_000 / (book['n'] / book['days']) * 24:.0f} hours."
        if wide
        else ""
    )
    return (
        f" Trained offline on the training week's entity features as the stream computed them, {name} "
        f"reaches AP {best['pr_auc']:.3f} and CP@100 {best['card_precision_at_k']:.3f}: {verdict}."
        + diagnostic
    )


def render_soak(res: dict[str, dict]) -> str:
    """Benchmarks: memory over a million events."""
    sk = res["soak"]
    v = sk["figures"]["variants"]
    d, river = v["default"], v.get("river tree (weighting)")
    text = (
        f"Memory, from {cite(sk)}: {num(d['events'], 2)} events with late labels through the service's "
        f"code path, resident memory {d['rss_half_min_mib']:.0f}-{d['rss_half_max_mib']:.0f} MiB over the "
        f"second half of the run ({d['rss_start_mib']:.0f} MiB at start) and {d['checkpoint_mib']:.1f} MiB "
        "of checkpoints."
    )
    if river:
        text += (
            f" With river's Hoeffding tree as the classifier they grow to {river['rss_max_mib']:.0f} MiB "
            f"and {river['checkpoint_mib']:.1f} MiB (river's size cap is not enforced under weighted "
            "learning)."
        )
    return text


def render_nab(res: dict[str, dict]) -> str:
    """Benchmarks: the NAB score of the series detector."""
    nab = res["nab"]
    f = nab["figures"]
    ours = f["streamimb"]
    best = max(f["anchors"].items(), key=lambda kv: kv[1]["standard"])
    return (
        f"NAB, from {cite(nab)}: the series detector scores {ours['standard']:.1f} on the standard profile "
        f"({ours['reward_low_FP']:.1f} reward_low_FP, {ours['reward_low_FN']:.1f} reward_low_FN) on the "
        f"{f['series']} series shipped with the project; the best published anchor there, {best[0]}, "
        f"scores {best[1]['standard']:.1f}. Its hyper-parameters were chosen on the same corpus."
    )


RENDERERS: dict[str, Callable[[dict[str, dict]], str]] = {
    "detection": render_detection,
    "partitions": render_partitions,
    "entities": render_entities,
    "modes": render_modes,
    "confluent": render_confluent,
    "strategy": render_strategy,
    "throughput": render_throughput,
    "soak": render_soak,
    "nab": render_nab,
}


def blocks(text: str) -> dict[str, str]:
    """The README's generated blocks, by name, as they stand (markers included)."""
    return {m["name"]: m[0] for m in BLOCK.finditer(text)}


def block(name: str, results: dict[str, dict]) -> str:
    """One block as it should read, markers included."""
    return f"<!-- figures:{name} -->\n{wrap(RENDERERS[name](results).strip())}\n<!-- /figures:{name} -->"


def update(text: str, results: dict[str, dict]) -> str:
    """``text`` with every generated block rewritten from ``results``."""
    for name in blocks(text):
        if name not in RENDERERS:
            raise KeyError(f"README block figures:{name} has no render function")
    return BLOCK.sub(lambda m: block(m["name"], results), text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if the README is not up to date")
    args = parser.parse_args(argv)
    text = README.read_text(encoding="utf-8")
    new = update(text, load())
    if args.check:
        print("README figures up to date" if new == text else "README figures are stale: run without --check")
        return 0 if new == text else 1
    if new != text:
        README.write_text(new, encoding="utf-8")
    print(f"README: {len(blocks(new))} generated blocks from {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
