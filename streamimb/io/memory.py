"""In-memory sinks and sources for tests and notebooks.

>>> sink = MemorySink()
>>> sink.send('{"a": 1}'); sink.flush()
>>> sink.documents
['{"a": 1}']
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from streamimb.io.files import FileRecord


class MemorySink:
    """Keeps what it is sent; ``flushed`` counts the documents made durable."""

    def __init__(self) -> None:
        self.documents: list[str] = []
        self.flushed = 0

    def send(self, document: str) -> None:
        self.documents.append(document)

    def flush(self) -> None:
        self.flushed = len(self.documents)

    def close(self) -> None:
        self.flush()

    def json(self) -> list[Any]:
        return [json.loads(d) for d in self.documents]


def memory_records(records: Iterable[dict[str, Any]]) -> Iterator[FileRecord]:
    """Wrap plain dicts as records, numbered from 0, as a file source would."""
    for row, record in enumerate(records):
        yield FileRecord(row, record, json.dumps(record, default=str).encode())
