"""What one poll batch did, and the record-level conversions the service loop makes on its way."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from streamimb.errors import DecodeError
from streamimb.events import Alert, DeadLetter, DriftEvent, Verdict
from streamimb.io.interfaces import Partition, RawRecord
from streamimb.pipeline import InputRecord

#: Dead letters keep at most this share of ``max_message_bytes`` of the raw record (base64 grows it by 4/3).
_DEAD_LETTER_RAW_SHARE = 0.5


@dataclass
class BatchOutcome:
    """What one poll batch did (for telemetry, status lines and the demo's display)."""

    consumed: int = 0
    processed: int = 0
    alerts: list[Alert] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    drifts: list[DriftEvent] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    labels: Counter[str] = field(default_factory=Counter)
    label_records: int = 0
    event_dead_letters: int = 0
    label_dead_letters: int = 0
    # joined labels waiting for their partition's Processor, learned together at the end of the batch
    to_learn: dict[int, tuple[Any, list[tuple[Verdict, str]]]] = field(default_factory=dict)


def input_record(r: RawRecord, limit: int) -> InputRecord:
    """An events record as the pipeline takes it: empty and oversized records carry their decode error."""
    if r.value is None:
        return InputRecord(
            b"", None, DecodeError("malformed_json", "empty record"), r.topic, r.partition, r.offset
        )
    if len(r.value) > limit:
        error = DecodeError("oversized", f"{len(r.value)} bytes > max_message_bytes={limit}")
        return InputRecord(r.value[:1024], None, error, r.topic, r.partition, r.offset)
    # an event without an id is known by where it was read: offsets repeat across partitions
    return InputRecord(
        r.value, None, None, r.topic, r.partition, r.offset, r.key, f"{r.topic}-{r.partition}-{r.offset}"
    )


def dead_letter(record: RawRecord, exc: DecodeError) -> DeadLetter:
    """The dead letter of a record that could not be decoded (an oversized one keeps its first KiB)."""
    raw = (record.value or b"")[:1024] if exc.reason == "oversized" else (record.value or b"")
    return DeadLetter(exc.reason, exc.detail, raw, record.topic, record.partition, record.offset)


def bounded(letter: DeadLetter, max_message_bytes: int) -> DeadLetter:
    """Cut a dead letter's raw bytes so that its JSON (base64) fits the dead-letter record limit.

    >>> bounded(DeadLetter("oversized", "x", b"y" * 5000, "events", 0, 1), 2048).detail
    'x (raw cut to 1024 of 5000 bytes)'
    """
    cap = max(1024, int(max_message_bytes * _DEAD_LETTER_RAW_SHARE))
    if len(letter.raw) <= cap and len(letter.detail) <= 1000:
        return letter
    detail = letter.detail[:1000]
    if len(letter.raw) > cap:
        detail += f" (raw cut to {cap} of {len(letter.raw)} bytes)"
    return DeadLetter(
        letter.reason,
        detail,
        letter.raw[:cap],
        letter.source,
        letter.partition,
        letter.offset,
        letter.row,
    )


def next_offsets(records: list[RawRecord]) -> dict[Partition, int]:
    """The offset to commit per partition once ``records`` are processed.

    >>> next_offsets([RawRecord("events", 0, 4, None, b"", 0), RawRecord("events", 0, 5, None, b"", 0)])
    {('events', 0): 6}
    """
    out: dict[Partition, int] = {}
    for r in records:
        key = (r.topic, r.partition)
        out[key] = max(out.get(key, 0), r.offset + 1)
    return out
