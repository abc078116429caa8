"""Checkpoints that cannot be written: a clear error at start, and at run time no commit past the last good
checkpoint while the service keeps consuming."""

from __future__ import annotations

import errno
import json

import pytest
import yaml
from test_hostile_input import FakeSource

from streamimb.cli import main
from streamimb.config import ServiceConfig
from streamimb.errors import CheckpointError
from streamimb.io.kafka import RawRecord
from streamimb.service import checkpoints as checkpoints_module
from streamimb.service.runner import ServiceRunner
from streamimb.service.state import FileCheckpointStore

KEY = "k" * 16


class CommitRecorder(FakeSource):
    def __init__(self) -> None:
        super().__init__()
        self.commits: list[dict] = []

    def commit(self, offsets):
        self.commits.append(dict(offsets))


def config_with(directory) -> ServiceConfig:
    return ServiceConfig.model_validate(
        {
            "schema": {"numeric": ["amount"]},
            "checkpoint": {"directory": str(directory), "key": KEY},
            "model": {"calibration": {"warmup": 5}},
        }
    )


def records(start: int, n: int) -> list[RawRecord]:
    return [
        RawRecord(
            "events", 0, i, None, json.dumps({"id": f"e{i}", "amount": i % 5, "label": "0"}).encode(), 0
        )
        for i in range(start, start + n)
    ]


def test_an_unwritable_checkpoint_directory_is_one_error_line_at_start(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(CheckpointError, match="not writable"):
        FileCheckpointStore(blocker / "checkpoints", codec=None, group="g")  # type: ignore[arg-type]
    config = tmp_path / "service.yaml"
    config.write_text(yaml.safe_dump({"checkpoint": {"directory": str(blocker / "checkpoints"), "key": KEY}}))
    assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: checkpoint directory") and "not writable" in err[0]


def test_a_failing_checkpoint_write_commits_nothing_past_the_last_good_one(tmp_path, monkeypatch):
    runner = ServiceRunner(config_with(tmp_path))
    runner.source = source = CommitRecorder()
    runner.process_batch(records(0, 10))
    assert runner.checkpoint() == 1
    assert source.commits == [{("events", 0): 10}]

    good_save = runner.store.save

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runner.store, "save", disk_full)
    monkeypatch.setattr(checkpoints_module, "CHECKPOINT_GRACE_S", 0.0)
    outcome = runner.process_batch(records(10, 10))
    assert outcome.processed == 10  # consuming goes on
    assert runner.checkpoint() == 0
    assert source.commits == [{("events", 0): 10}]  # nothing past the last good checkpoint
    assert runner.checkpoint_failures == 1 and runner.checkpoints.failing()
    assert runner.summary()["checkpoint_failures"] == 1

    monkeypatch.setattr(runner.store, "save", good_save)  # the disk has room again
    runner.process_batch(records(20, 5))
    assert runner.checkpoint() == 1
    assert source.commits[-1] == {("events", 0): 25}
    assert not runner.checkpoints.failing()
    assert runner.summary()["learned_total"] == {0: 25}
