"""`make bench`: run every benchmark, gather their results into benchmarks/RESULTS.md, update the README.

Each benchmark writes its own section to benchmarks/results/<name>.md (tables, the data used, the command that
reproduces it) and its key figures to benchmarks/results/<name>.json (with the date and commit it ran on).
The README's generated blocks (`<!-- figures:NAME -->`) are then rewritten from those files
(benchmarks/readme_figures.py). Pass --quick for a smoke run of each (it writes no results).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import readme_figures

HERE = Path(__file__).resolve().parent
BENCHMARKS = [
    "prevalence_shift.py",
    "detection.py",
    "choose_default.py",
    "partitions.py",
    "entities.py",
    "nab.py",
    "throughput.py",
    "soak.py",
    "handbook_anchors.py",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke-run each benchmark")
    parser.add_argument("--only", nargs="*", help="benchmark file names to run (default: all)")
    args = parser.parse_args()
    failed = []
    for name in args.only or BENCHMARKS:
        script = HERE / name
        if not script.exists():
            print(f"skip {name}: not present")
            continue
        cmd = [sys.executable, str(script), *(["--quick"] if args.quick else [])]
        print(f"== {' '.join(cmd)}", flush=True)
        started = time.monotonic()
        rc = subprocess.call(cmd, cwd=HERE.parent)
        print(f"== {name}: exit {rc} after {time.monotonic() - started:.0f}s", flush=True)
        if rc:
            failed.append(name)
    gather()
    readme_figures.main([])
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


def gather() -> None:
    parts = [
        "# Benchmark results\n",
        "Gathered by `make bench` (`python benchmarks/run_all.py`) from `benchmarks/results/*.md`. Each "
        "section names its data, its command and the machine it ran on; timings on shared 2-core machines "
        "are noisy, so compare the ratios measured side by side within one run.\n",
    ]
    for section in sorted((HERE / "results").glob("*.md")):
        parts.append(section.read_text(encoding="utf-8").strip() + "\n")
    (HERE / "RESULTS.md").write_text("\n".join(parts), encoding="utf-8")
    print(f"wrote {HERE / 'RESULTS.md'}")


if __name__ == "__main__":
    sys.exit(main())
