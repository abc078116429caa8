"""The README's measured figures are generated from the committed benchmark results, never written by hand.

`make bench` rewrites the README's `<!-- figures:NAME -->` blocks from `benchmarks/results/*.json` through
`benchmarks/readme_figures.py`; these tests fail when the README and the results files disagree, or when a
measured figure appears outside a generated block (in the README or in the comments that used to quote them).
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "benchmarks" / "results"

_spec = importlib.util.spec_from_file_location("readme_figures", ROOT / "benchmarks" / "readme_figures.py")
assert _spec is not None and _spec.loader is not None
rf = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rf)

#: What a measured figure looks like: a ratio, a rate, a time per event, a memory size.
MEASURED = re.compile(
    r"\d(\.\d+)?x\b"  # 1.27x, 58x
    r"|\d[\d,.]*\s*(k\s*)?(events/s|events/CPU-s|events per (CPU-)?second|events per CPU)"
    r"|\d[\d,.]*\s*(us|ms)\s*(an|per|/)\s*event"
    r"|\d[\d,.]*\s*(MiB|KiB|GiB)"
    r"|\btimes (slower|faster)\b",
    re.I,
)


def readme() -> str:
    return README.read_text(encoding="utf-8")


def outside_blocks(text: str) -> str:
    return rf.BLOCK.sub("", text)


def test_readme_blocks_are_what_the_results_files_say() -> None:
    text, results = readme(), rf.load(RESULTS)
    found = rf.blocks(text)
    assert set(found) == set(rf.RENDERERS), "every render function has its block in README.md, and only those"
    for name, block in found.items():
        assert block == rf.block(name, results), (
            f"README block figures:{name} differs from benchmarks/results: run "
            "`.venv/bin/python benchmarks/readme_figures.py`"
        )
    assert rf.update(text, results) == text


def test_every_block_names_the_date_and_commit_of_its_results() -> None:
    for name, block in rf.blocks(readme()).items():
        assert re.search(r"\b20\d\d-\d\d-\d\d\b", block), f"figures:{name} has no date"
        assert re.search(r"\bcommit [0-9a-f]{7,}(\+dirty)?\b", block), f"figures:{name} has no commit"


@pytest.mark.parametrize("path", sorted(RESULTS.glob("*.json")), ids=lambda p: p.name)
def test_results_files_carry_their_provenance(path: Path) -> None:
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc["benchmark"] == path.stem
    assert re.match(r"20\d\d-\d\d-\d\d", doc["date"])
    assert re.fullmatch(r"[0-9a-f]{7,}(\+dirty)?", doc["commit"])
    assert doc["command"].startswith(".venv/bin/python benchmarks/")
    assert (RESULTS / f"{path.stem}.md").exists()
    assert doc["figures"]


def test_no_hand_written_measurement_outside_generated_blocks() -> None:
    stray = [m.group(0) for m in MEASURED.finditer(outside_blocks(readme()))]
    assert not stray, f"measured figures in README.md outside generated blocks: {stray}"


@pytest.mark.parametrize("path", ["deploy/streamimb.yaml", "streamimb/io/kafka.py"])
def test_no_hand_written_measurement_in_comments(path: str) -> None:
    text = (ROOT / path).read_text(encoding="utf-8")
    stray = [m.group(0) for m in MEASURED.finditer(text)]
    assert not stray, f"measured figures in {path}: {stray} (point at benchmarks/results instead)"


def test_the_pattern_catches_what_it_must() -> None:
    for figure in ("1.27x", "about 12 times slower", "27,700 events per CPU-second", "36 us an event"):
        assert MEASURED.search(figure), figure
    for figure in ("1,400 events/CPU-s", "455 MiB", "17,400 events/s", "0.8-1.6k events/CPU-s"):
        assert MEASURED.search(figure), figure
    for fine in ("port 9108", "`calibration.quantile: 0.995`", "(events/s, estimated fraud rate", "25x8"):
        assert not MEASURED.search(fine), fine


def test_render_helpers() -> None:
    assert rf.num(27707) == "27,700"
    assert rf.num(243, 2) == "240"
    assert rf.num(0.8123) == "0.812"
    assert rf.times(1.2712) == "1.27x" and rf.times(19.89) == "19.9x" and rf.times(157.9) == "158x"
    assert rf.span([19.4, 20.22], rf.times) == "19.4-20.2x"
    assert rf.span([1.0, 1.0], rf.times) == "1.00x"
