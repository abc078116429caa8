"""Checkpoint files: signed, versioned, compressed, chunked, capped, atomic and fenced (no broker needed)."""

from __future__ import annotations

import os
import pickle
import random
import time
from pathlib import Path

import pytest

from streamimb.config import ServiceConfig, dump_config
from streamimb.errors import CheckpointError, ConfigError
from streamimb.events import Event
from streamimb.processor import Processor
from streamimb.service.state import (
    CheckpointFenced,
    CheckpointRefused,
    FileCheckpointStore,
    SnapshotCodec,
    config_hash,
    load_key,
)

KEY = b"unit-test-checkpoint-key-0123456789"


def make_store(tmp_path: Path, key: bytes = KEY, **codec_kwargs) -> FileCheckpointStore:
    return FileCheckpointStore(tmp_path, SnapshotCodec(key, schema="s", **codec_kwargs), group="g")


class Marker:
    """Unpickling this creates a file: proof that a refused checkpoint was (or was not) unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path(self.path).touch, ())


def test_round_trip_carries_offsets_learned_count_and_versions(tmp_path):
    store = make_store(tmp_path)
    header = store.save("ev", 3, {"w": [1.5] * 10}, offsets={"ev": 120, "lab": 7}, learned=99, generation=4)
    ckpt = store.load("ev", 3)
    assert ckpt.state == {"w": [1.5] * 10}
    assert ckpt.header == header
    assert (header.offsets, header.learned, header.generation) == ({"ev": 120, "lab": 7}, 99, 4)
    assert header.streamimb and header.river and header.python and header.schema == "s"
    assert store.load("ev", 4) is None
    assert [p.name for p in store.directory.iterdir() if p.suffix == ".tmp"] == []


@pytest.mark.parametrize("where", ["magic", "header", "header_tag", "payload", "tail_tag"])
def test_tampered_checkpoint_is_refused_and_never_unpickled(tmp_path, where):
    marker = tmp_path / "unpickled"
    store = make_store(tmp_path / "store")
    store.save("ev", 0, [Marker(str(marker)), "x" * 5000], offsets={"ev": 1}, learned=1, generation=1)
    path = store.path("ev", 0)
    data = bytearray(path.read_bytes())
    header_len = int.from_bytes(data[9:13], "big")
    index = {
        "magic": 0,
        "header": 13 + header_len // 2,
        "header_tag": 13 + header_len + 5,
        "payload": len(data) - 200,
        "tail_tag": len(data) - 3,
    }[where]
    data[index] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointRefused) as info:
        store.load("ev", 0)
    assert info.value.reason in ("bad_signature", "unsigned")
    assert not marker.exists()


def test_checkpoint_signed_with_another_key_is_refused_before_unpickling(tmp_path):
    marker = tmp_path / "unpickled"
    make_store(tmp_path, key=b"attacker-key-attacker-key").save(
        "ev", 0, Marker(str(marker)), offsets={"ev": 1}, learned=0, generation=1
    )
    with pytest.raises(CheckpointRefused, match="bad_signature"):
        make_store(tmp_path).load("ev", 0)
    assert not marker.exists()
    # sanity: the same file does run its payload when loaded with the key that signed it
    make_store(tmp_path, key=b"attacker-key-attacker-key").load("ev", 0)
    assert marker.exists()


def test_unsigned_and_truncated_files_are_refused(tmp_path):
    marker = tmp_path / "unpickled"
    store = make_store(tmp_path / "store")
    path = store.path("ev", 0)
    path.write_bytes(pickle.dumps(Marker(str(marker))))
    with pytest.raises(CheckpointRefused, match="unsigned: a bare pickle"):
        store.load("ev", 0)
    store.save("ev", 0, list(range(1000)), offsets={"ev": 1}, learned=0, generation=1)
    full = path.read_bytes()
    for cut in (5, 40, len(full) - 32, len(full) - 1):
        path.write_bytes(full[:cut])
        with pytest.raises(CheckpointRefused):
            store.load("ev", 0)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ({"streamimb": "9.9.0"}, "foreign_version"),
        ({"river": "0.1.0"}, "foreign_version"),
        ({"group": "other"}, "foreign_group"),
        ({"partition": 5}, "foreign_partition"),
    ],
)
def test_foreign_checkpoints_are_refused(tmp_path, override, reason):
    codec = SnapshotCodec(KEY, schema="s")
    fields = {"topic": "ev", "partition": 0, "group": "g", "generation": 1, "offsets": {}, "learned": 0}
    _, frames = codec.encode({"a": 1}, checkpoint_id="x", **{**fields, **override})
    store = FileCheckpointStore(tmp_path, codec, group="g")
    store.path("ev", 0).write_bytes(b"".join(frames))
    with pytest.raises(CheckpointRefused, match=reason):
        store.load("ev", 0)


def test_checkpoint_of_another_config_is_refused(tmp_path):
    a = ServiceConfig.model_validate({"model": {"calibration": {"warmup": 100}}})
    b = ServiceConfig.model_validate({"model": {"calibration": {"warmup": 200}}})
    assert config_hash(a.model, a.event_schema) != config_hash(b.model, b.event_schema)
    FileCheckpointStore(tmp_path, SnapshotCodec(KEY, config_hash(a.model)), "g").save(
        "ev", 0, 1, offsets={}, learned=0, generation=1
    )
    with pytest.raises(CheckpointRefused, match="foreign_schema"):
        FileCheckpointStore(tmp_path, SnapshotCodec(KEY, config_hash(b.model)), "g").load("ev", 0)


def test_large_snapshots_are_chunked_and_capped(tmp_path):
    state = random.Random(0).randbytes(300_000)  # incompressible
    store = make_store(tmp_path, chunk_bytes=64 * 1024)
    header = store.save("ev", 0, state, offsets={}, learned=0, generation=1)
    assert header.chunks == 5 and header.payload_bytes > 256 * 1024
    assert store.load("ev", 0).state == state

    with pytest.raises(CheckpointError, match=r"over checkpoint.max_bytes=100,000"):
        make_store(tmp_path, max_bytes=100_000).save("ev", 1, state, offsets={}, learned=0, generation=1)
    assert not make_store(tmp_path).path("ev", 1).exists()
    with pytest.raises(CheckpointRefused, match="too_large"):
        make_store(tmp_path, max_bytes=100_000).load("ev", 0)


def test_decompression_bomb_is_refused(tmp_path):
    """A signed file whose header understates the size cannot inflate past the cap."""
    codec = SnapshotCodec(KEY, schema="s", max_bytes=50_000)
    big = SnapshotCodec(KEY, schema="s", max_bytes=10**9)
    fields = {"topic": "ev", "partition": 0, "group": "g", "generation": 1, "offsets": {}, "learned": 0}
    _, frames = big.encode(b"\0" * 10_000_000, checkpoint_id="x", **fields)
    store = FileCheckpointStore(tmp_path, codec, group="g")
    store.path("ev", 0).write_bytes(b"".join(frames))
    with pytest.raises(CheckpointRefused, match="too_large"):
        store.load("ev", 0)


def test_stale_owner_is_fenced_by_generation(tmp_path):
    store = make_store(tmp_path)
    first = store.save("ev", 0, "gen2-a", offsets={"ev": 10}, learned=10, generation=2)
    # the owner of generation 2 goes on from its own checkpoint
    second = store.save(
        "ev", 0, "gen2-b", offsets={"ev": 20}, learned=20, generation=2, parent_id=first.checkpoint_id
    )
    # a member of generation 1 that still believes it owns the partition cannot replace it
    with pytest.raises(CheckpointFenced, match="generation 2"):
        store.save(
            "ev", 0, "gen1", offsets={"ev": 15}, learned=15, generation=1, parent_id=first.checkpoint_id
        )
    assert store.load("ev", 0).state == "gen2-b"
    # a newer owner (restored from the file) may
    third = store.save(
        "ev", 0, "gen3", offsets={"ev": 30}, learned=30, generation=3, parent_id=second.checkpoint_id
    )
    assert store.read_header("ev", 0) == third
    # an owner whose state descends from the file on disk may write even if the generation counter was reset
    store.save("ev", 0, "reset", offsets={"ev": 40}, learned=40, generation=0, parent_id=third.checkpoint_id)
    assert store.load("ev", 0).state == "reset"


def test_a_crash_while_writing_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    store = make_store(tmp_path)
    store.save("ev", 0, "old", offsets={"ev": 1}, learned=1, generation=1)

    def crash(fd):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError):
        store.save("ev", 0, "new", offsets={"ev": 2}, learned=2, generation=1)
    monkeypatch.undo()
    assert store.load("ev", 0).state == "old"
    assert not [p for p in store.directory.iterdir() if p.name.endswith(".tmp")]


def test_keys_come_from_config_or_file_and_are_never_shown(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("  file-key-0123456789abcdef\n")
    assert load_key(key_file=key_file) == b"file-key-0123456789abcdef"
    with pytest.raises(CheckpointError, match="at least 16"):
        load_key("short")
    with pytest.raises(CheckpointError, match="not both"):
        load_key("x" * 20, key_file)
    with pytest.raises(ConfigError, match=r"checkpoint\.key or checkpoint\.key_file is required"):
        from streamimb.config import load_config

        cfg = tmp_path / "c.yaml"
        cfg.write_text(f"checkpoint:\n  directory: {tmp_path}\n")
        load_config(cfg)
    secret = "do-not-print-this-key-0123456789"
    config = ServiceConfig.model_validate({"checkpoint": {"directory": str(tmp_path), "key": secret}})
    for text in (dump_config(config), repr(config), str(config), repr(SnapshotCodec(secret.encode()))):
        assert secret not in text


def test_processor_checkpoint_restores_identical_behaviour(tmp_path):
    """A restored Processor scores and learns exactly as the original would have."""
    config = ServiceConfig.model_validate({"model": {"calibration": {"warmup": 50}}})
    rng = random.Random(7)

    def event(i: int) -> Event:
        positive = rng.random() < 0.05
        features = {"a": rng.gauss(3.0 if positive else 0.0, 1.0), "b": rng.random()}
        return Event(id=str(i), time=float(i), features=features, label="1" if positive else "0")

    original = Processor(config.model, positive="1", classes=["0", "1"])
    for i in range(2000):
        original.process_one(event(i))
    store = make_store(tmp_path)
    started = time.perf_counter()
    header = store.save("ev", 0, original, offsets={"ev": 2000}, learned=original.n_learned, generation=1)
    write_s = time.perf_counter() - started
    started = time.perf_counter()
    restored = store.load("ev", 0).state
    read_s = time.perf_counter() - started
    print(
        f"\ncheckpoint of the default Processor after 2000 events: {header.raw_bytes:,} B raw, "
        f"{header.payload_bytes:,} B compressed, write {write_s * 1e3:.0f} ms, read {read_s * 1e3:.0f} ms"
    )
    assert restored.n_learned == original.n_learned == 2000
    for i in range(2000, 2300):
        e = event(i)
        a, _ = original.process_one(e)
        b, _ = restored.process_one(e)
        assert (a.anomaly_score, a.proba, a.alert) == (b.anomaly_score, b.proba, b.alert)
