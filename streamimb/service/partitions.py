"""Partition ownership: the state of every events partition this member holds, and where it comes from.

Each events partition has its own state (a :class:`PartitionState`: a Processor, a LabelJoiner of the
predictions that wait for their label, and the offsets both cover); the state moves with its partition when
the consumer group rebalances. On assignment the partition's checkpoint is loaded (unless this process holds
the newest copy) and the consumer seeks to its offsets, which win over the group's committed ones. A state
whose checkpoint was overwritten by a newer owner is fenced: dropped, never written again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from streamimb.config import EventSchema
from streamimb.errors import CheckpointError
from streamimb.events import Verdict
from streamimb.io.interfaces import EventSource, Partition
from streamimb.io.settings import KafkaConfig
from streamimb.labels import LabelJoiner
from streamimb.pipeline import Pipeline
from streamimb.processor import Processor
from streamimb.service.state import CheckpointRefused, FileCheckpointStore

log = logging.getLogger(__name__)


@dataclass
class PartitionState:
    """Everything one events partition owns: its pipeline (Processor), joiner, and the offsets they cover.

    ``offsets`` maps a topic to the next offset the state has *not* seen (events topic, and the labels topic
    when co-partitioned). ``checkpoint_id`` is the checkpoint the state descends from (fencing lineage),
    ``generation`` the consumer-group generation that acquired the partition.
    """

    partition: int
    pipeline: Pipeline
    joiner: LabelJoiner[Verdict]
    newest_event_time: float | None = None
    offsets: dict[str, int] = field(default_factory=dict)
    checkpoint_id: str | None = None
    generation: int = -1
    schema: EventSchema | None = None  # None: the service's, still being inferred
    learned_at_start: int = 0
    learned_checkpointed: int = 0
    dirty: int = 0
    owned: bool = True
    careful_until: int | None = None

    @property
    def processor(self) -> Processor:
        return self.pipeline.processor

    def snapshot(self) -> dict[str, Any]:
        """The picklable part of the state (the decoder is rebuilt from the config)."""
        return {
            "processor": self.pipeline.processor,
            "joiner": self.joiner,
            "newest_event_time": self.newest_event_time,
            "schema": self.schema,
        }


NewState = Callable[[int, "dict[str, Any] | None"], PartitionState]
"""Builds a partition's state: fresh (``None``) or from a checkpoint's snapshot."""


class PartitionOwnership:
    """The partition states held now (``states``, guarded by ``lock``) and how they are acquired and let go.

    ``new_state`` builds a state, fresh or from a snapshot; ``store`` (None: no checkpoints) holds the
    partitions' checkpoints; ``on_invalid`` says what a refused checkpoint does ("fail" or "fresh").
    """

    def __init__(
        self,
        kafka: KafkaConfig,
        store: FileCheckpointStore | None,
        new_state: NewState,
        on_invalid: str = "fail",
        telemetry: Any = None,
    ) -> None:
        self.kafka = kafka
        self.store = store
        self.telemetry = telemetry
        self._new_state = new_state
        self._on_invalid = on_invalid
        self.states: dict[int, PartitionState] = {}
        self.lock = threading.RLock()
        self.fenced: set[int] = set()  # partitions whose checkpoint a newer owner wrote: not ours to process
        self.rebalancing = False
        self.restored: dict[int, int] = {}  # partition -> events its restored checkpoint had learned
        self.learned_dropped: Counter[int] = Counter()  # learned by states this process no longer holds

    def state(self, partition: int) -> PartitionState:
        """The partition's state, a fresh one if none is held."""
        state = self.states.get(partition)
        if state is None:
            state = self.states[partition] = self._new_state(partition, None)
        return state

    def owned(self) -> list[PartitionState]:
        """The states of the partitions this member owns now."""
        return [s for s in self.states.values() if s.owned]

    # -- assignment ----------------------------------------------------------------------------------
    def assign(self, partitions: list[Partition], source: EventSource | None) -> None:
        """A new assignment: drop the states of partitions gone, acquire the others and seek ``source`` to the
        offsets their states cover."""
        generation = source.generation() if source is not None else -1
        events = {p for t, p in partitions if t == self.kafka.events_topic}
        labels = {p for t, p in partitions if t == self.kafka.labels_topic}
        self.rebalancing = False
        with self.lock:
            self.fenced.clear()
            for p in [p for p in self.states if p not in events]:
                self.drop(p)
            for p in sorted(events):
                state = self.acquire(p, generation)
                state.generation, state.owned = generation, True
                if source is None:
                    continue
                for topic, offset in state.offsets.items():
                    if topic == self.kafka.events_topic or (topic == self.kafka.labels_topic and p in labels):
                        source.seek(topic, p, offset)
        log.info(
            "assigned %s (generation %d): %s",
            sorted(partitions),
            generation,
            {p: self.states[p].processor.n_learned for p in sorted(events)},
        )

    def acquire(self, partition: int, generation: int) -> PartitionState:
        """A newly assigned partition's state: the one in memory if still current, else its checkpoint's."""
        held = self.states.get(partition)
        if self.store is None:
            return held if held is not None else self.state(partition)
        topic = self.kafka.events_topic
        try:
            header = self.store.read_header(topic, partition)
            current = header.checkpoint_id if header is not None else None
        except CheckpointRefused:
            current = "refused"  # load() below raises the full reason
        if held is not None and current == held.checkpoint_id:
            return held  # nobody wrote since this process's last checkpoint of it: keep the live state
        if held is not None:
            self.drop(partition)
        ckpt = self._load(partition)
        if ckpt is None:
            state = self.states[partition] = self._new_state(partition, None)
            log.info("%s[%d]: no checkpoint, fresh model from the group's committed offset", topic, partition)
            return state
        state = self._new_state(partition, ckpt.state)
        state.offsets = dict(ckpt.header.offsets)
        state.checkpoint_id = ckpt.header.checkpoint_id
        self.states[partition] = state
        self.restored[partition] = ckpt.header.learned
        if self.telemetry is not None:
            self.telemetry.set_checkpoint(partition, ckpt.header.created)
        log.info(
            "%s[%d]: restored checkpoint of generation %d (%d learned events, offsets %s)",
            topic,
            partition,
            ckpt.header.generation,
            ckpt.header.learned,
            ckpt.header.offsets,
        )
        return state

    def _load(self, partition: int) -> Any:
        """The partition's checkpoint, None if there is none; a refused one fails or is moved aside."""
        assert self.store is not None
        topic = self.kafka.events_topic
        try:
            return self.store.load(topic, partition)
        except CheckpointRefused as exc:
            path = self.store.path(topic, partition)
            if self._on_invalid == "fail":
                raise CheckpointError(
                    f"checkpoint {path} refused ({exc}); it was not loaded. Move it away, or set "
                    "checkpoint.on_invalid=fresh to start that partition with a fresh model"
                ) from None
            aside = path.with_name(f"{path.name}.refused-{int(time.time())}")
            try:
                path.replace(aside)
            except OSError as err:
                raise CheckpointError(
                    f"checkpoint {path} refused ({exc}) and cannot be moved aside: {err.strerror or err}"
                ) from None
            log.error("checkpoint %s refused (%s); moved to %s, starting a fresh model", path, exc, aside)
            return None

    # -- letting go ----------------------------------------------------------------------------------
    def disown(self, partitions: set[int]) -> None:
        """Mark revoked or lost partitions' states as no longer owned (kept until the next assignment)."""
        for p in partitions:
            if p in self.states:
                self.states[p].owned = False

    def drop(self, partition: int, discard: bool = False) -> None:
        """Forget a partition's state; ``discard``: its work since the last checkpoint is thrown away."""
        state = self.states.pop(partition, None)
        if state is None:
            return
        kept = state.learned_checkpointed if discard else state.processor.n_learned
        self.learned_dropped[partition] += kept - state.learned_at_start
        if self.telemetry is not None:
            self.telemetry.remove_partition(partition)

    def fence(self, partition: int) -> None:
        """A newer owner wrote the partition's checkpoint: drop this copy and skip its records."""
        self.drop(partition, discard=True)
        self.fenced.add(partition)

    def rewind(self, state: PartitionState, until: int, source: EventSource, topics: list[str]) -> None:
        """Reload the partition from its checkpoint and seek ``topics`` back to the offsets it covers (the
        group's committed ones without a checkpoint); records up to offset ``until`` are then processed one
        at a time."""
        p = state.partition
        self.drop(p, discard=True)
        fresh = self.acquire(p, state.generation)
        fresh.generation, fresh.careful_until = state.generation, until
        owned = set(source.assignment())
        for topic in topics:
            if (topic, p) not in owned:
                continue
            offset = fresh.offsets.get(topic)
            if offset is None:  # no checkpoint yet: back to the group's committed offset
                offset = source.committed([(topic, p)]).get((topic, p)) or 0
            source.seek(topic, p, offset)
        log.error(
            "partition %d rewound to its checkpoint; replaying up to offset %d one record at a time", p, until
        )

    def learned(self) -> dict[int, int]:
        """Events learned by this process per partition, by the states held now and those dropped."""
        learned = Counter(self.learned_dropped)
        for p, s in list(self.states.items()):
            learned[p] += s.processor.n_learned - s.learned_at_start
        return {p: n for p, n in sorted(learned.items())}
