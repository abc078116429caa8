"""The consistency point with checkpoints on: outputs acknowledged, changed partition states written, then
the offsets they cover committed.

With ``checkpoint.directory`` set (see :mod:`streamimb.service.state`), every ``checkpoint.every_events``
records or ``checkpoint.every_seconds``, on partition revoke and at shutdown, each changed partition's state
is written as one signed file together with the next offsets it covers, and only then are those offsets
committed, so after a crash at any moment every event is learned exactly once. A write that fails (disk
full) commits nothing past the last good checkpoint; the service keeps consuming and reports itself not
ready once writes have failed for ``CHECKPOINT_GRACE_S``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from streamimb.config import CheckpointConfig, ServiceConfig
from streamimb.errors import CheckpointError
from streamimb.io.interfaces import Partition
from streamimb.service.delivery import OffsetCommits, Outputs
from streamimb.service.partitions import PartitionOwnership
from streamimb.service.state import (
    CheckpointFenced,
    FileCheckpointStore,
    SnapshotCodec,
    config_hash,
    load_key,
)

log = logging.getLogger(__name__)

#: Checkpoint writes may fail this long before the service reports itself not ready (/readyz 503).
CHECKPOINT_GRACE_S = 60.0


def build_store(config: ServiceConfig) -> FileCheckpointStore | None:
    """The checkpoint store the configuration asks for; None when checkpoints are off."""
    cp = config.checkpoint
    if cp.directory is None:
        return None
    key = load_key(cp.key, cp.key_file)
    codec = SnapshotCodec(
        key,
        schema=config_hash(config.model, config.event_schema),
        max_bytes=cp.max_bytes,
        chunk_bytes=cp.chunk_bytes,
        compression_level=cp.compression_level,
    )
    return FileCheckpointStore(Path(cp.directory), codec, group=config.kafka.group_id)


class Checkpoints:
    """When and how the partition states are written, and what that lets the member commit.

    ``allowed`` is False while a batch's outputs are not delivered yet (no checkpoint may cover them);
    ``since`` counts the records read since the last full checkpoint.
    """

    def __init__(
        self,
        config: CheckpointConfig,
        events_topic: str,
        store: FileCheckpointStore | None,
        partitions: PartitionOwnership,
        outputs: Outputs,
        commits: OffsetCommits,
        telemetry: Any = None,
    ) -> None:
        self.config = config
        self.events_topic = events_topic
        self.store = store
        self.telemetry = telemetry
        self._partitions = partitions
        self._outputs = outputs
        self._commits = commits
        self.allowed = True
        self.since = 0
        self.last = time.monotonic()
        self.loose_label_offsets: dict[Partition, int] = {}  # labels matched outside their own partition
        self.written = 0
        self.failures = 0
        self.failing_since: float | None = None
        self.seconds = 0.0
        self.bytes: dict[int, int] = {}

    def owe_label(self, key: Partition, offset: int) -> None:
        """A label record learned by a partition other than its own: its offset waits for every model's
        checkpoint."""
        self.loose_label_offsets[key] = max(self.loose_label_offsets.get(key, 0), offset)

    def maybe(self) -> None:
        """Checkpoint when ``every_events`` records or ``every_seconds`` have passed since the last one."""
        if self.store is None or not self.allowed:
            return
        due = self.since >= self.config.every_events
        if not due and time.monotonic() - self.last >= self.config.every_seconds:
            due = any(s.dirty for s in self._partitions.states.values()) or bool(self.loose_label_offsets)
            if not due:
                self.last = time.monotonic()
        if due:
            self.write("interval")

    def write(
        self, reason: str = "manual", partitions: Iterable[int] | None = None, commit: bool = True
    ) -> int:
        """Write the changed states (all, or ``partitions``), then commit the offsets they cover.

        Call only between batches, after the sinks were flushed. Returns the number of files written.
        """
        if self.store is None:
            return 0
        self._outputs.confirm()  # no checkpoint covers an output that is not delivered
        held = self._partitions.states
        wanted = set(held) if partitions is None else set(partitions)
        offsets: dict[Partition, int] = {}
        written = 0
        started = time.perf_counter()
        with self._partitions.lock:
            for p in sorted(wanted):
                state = held.get(p)
                if state is None or not state.owned or not state.dirty:
                    continue
                try:
                    header = self.store.save(
                        self.events_topic,
                        p,
                        state.snapshot(),
                        offsets=state.offsets,
                        learned=state.processor.n_learned,
                        generation=state.generation,
                        parent_id=state.checkpoint_id,
                        extra={"events": state.processor.n_events, "pending_labels": len(state.joiner)},
                    )
                except CheckpointFenced as exc:
                    log.warning("%s; dropping this process's copy of partition %d", exc, p)
                    self._partitions.fence(p)
                    continue
                except (OSError, CheckpointError) as exc:
                    self._failed(p, exc)
                    continue  # still dirty: its offsets are not committed past the last good checkpoint
                state.checkpoint_id, state.dirty = header.checkpoint_id, 0
                state.learned_checkpointed = header.learned
                written += 1
                self.bytes[p] = header.payload_bytes
                for topic, offset in state.offsets.items():
                    offsets[(topic, p)] = offset
                if self.telemetry is not None:
                    self.telemetry.set_checkpoint(p, header.created)
            if not any(s.dirty for s in self._partitions.owned()):
                # labels matched outside their own partition: safe to commit once every model is on disk
                offsets.update(self.loose_label_offsets)
                self.loose_label_offsets = {}
            if partitions is None:
                self.since = 0
                self.last = time.monotonic()
        elapsed = time.perf_counter() - started
        if written and not any(s.dirty for s in self._partitions.owned()):
            self.failing_since = None
        self.written += written
        self.seconds += elapsed
        if written:
            log.debug("checkpoint (%s): %d partition(s) in %.3fs", reason, written, elapsed)
        if commit and offsets:
            self._commits.commit(offsets)
        return written

    def _failed(self, partition: int, exc: BaseException) -> None:
        """A checkpoint write failed (disk full, permissions): keep consuming, commit nothing past the last
        good checkpoint, count it, and report not ready once it has failed for ``CHECKPOINT_GRACE_S``."""
        self.failures += 1
        if self.failing_since is None:
            self.failing_since = time.monotonic()
        log.error(
            "checkpoint of partition %d failed (%s); offsets stay at the last good checkpoint", partition, exc
        )

    def failing(self) -> bool:
        """Whether checkpoint writes have failed for longer than ``CHECKPOINT_GRACE_S``."""
        since = self.failing_since
        return since is not None and time.monotonic() - since >= CHECKPOINT_GRACE_S
