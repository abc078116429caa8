"""CSV and JSONL files as sources, JSONL files as sinks.

A file source yields ``FileRecord``s: the row number, the parsed record (or None) and the raw bytes, so that
a bad line becomes a dead letter with its row number instead of stopping the replay.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from streamimb.errors import DecodeError, SourceError

CSV_DELIMITERS = ",;\t|"


@dataclass(slots=True)
class FileRecord:
    row: int
    record: dict[str, Any] | None
    raw: bytes
    error: DecodeError | None = None


def detect_format(path: Path) -> str:
    """'jsonl' for .jsonl/.ndjson/.json files, 'csv' otherwise."""
    return "jsonl" if path.suffix.lower() in (".jsonl", ".ndjson", ".json") else "csv"


def sniff_delimiter(sample: str) -> str:
    """The CSV delimiter of a sample (comma when unsure).

    >>> sniff_delimiter('"age";"job"\\n56;"housemaid"\\n')
    ';'
    """
    try:
        return csv.Sniffer().sniff(sample, delimiters=CSV_DELIMITERS).delimiter
    except csv.Error:
        return ","


def read_records(
    path: str | Path, fmt: str = "auto", delimiter: str | None = None, max_record_bytes: int = 1_000_000
) -> Iterator[FileRecord]:
    """Yield every record of a CSV or JSONL file, bad ones with their error.

    JSONL lines come as raw bytes (``record`` None), decoded later exactly as the service decodes a Kafka
    record; CSV rows come parsed. A line that is not valid UTF-8 is a dead letter, never an exception.
    """
    path = Path(path)
    fmt = detect_format(path) if fmt == "auto" else fmt
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise SourceError(f"cannot open {path}: {exc.strerror}") from exc
    with handle:
        if fmt == "jsonl":
            yield from _read_jsonl(handle, max_record_bytes)
        else:
            text = io.TextIOWrapper(handle, encoding="utf-8-sig", errors="surrogateescape", newline="")
            yield from _read_csv(text, delimiter, max_record_bytes)


def parsed(record: FileRecord) -> dict[str, Any] | None:
    """The record as a dict: parsed already (CSV), or its raw JSON object; None when it is not one.

    >>> parsed(FileRecord(0, None, b'{"a": 1}')), parsed(FileRecord(1, None, b"[1]"))
    ({'a': 1}, None)
    """
    if record.record is not None or record.error is not None:
        return record.record
    try:
        value = json.loads(record.raw)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _read_jsonl(handle: IO[bytes], max_record_bytes: int) -> Iterator[FileRecord]:
    row = -1
    for number, line in enumerate(handle):
        raw = line.rstrip(b"\r\n")
        if number == 0 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        if not raw.strip():
            continue
        row += 1
        if len(raw) > max_record_bytes:
            yield FileRecord(row, None, raw[:1024], DecodeError("oversized", f"{len(raw)} bytes"))
            continue
        yield FileRecord(row, None, raw)


def _read_csv(handle: IO[str], delimiter: str | None, max_record_bytes: int) -> Iterator[FileRecord]:
    if delimiter is None:
        sample = handle.read(65536)
        handle.seek(0)
        delimiter = sniff_delimiter(sample)
    csv.field_size_limit(max_record_bytes)
    reader = csv.reader(handle, delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise SourceError(f"unreadable CSV header: {exc}") from exc
    width = len(header)
    row = -1
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            row += 1
            yield FileRecord(row, None, b"", DecodeError("malformed_row", str(exc)[:200]))
            continue
        if not values:
            continue
        row += 1
        raw = _csv_line(values, delimiter)
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:  # undecodable bytes, kept as they were read
            yield FileRecord(row, None, raw, DecodeError("malformed_row", f"not valid UTF-8: {exc}"[:200]))
            continue
        if len(values) != width:
            detail = f"{len(values)} fields where the header has {width}"
            yield FileRecord(row, None, raw, DecodeError("malformed_row", detail))
            continue
        yield FileRecord(row, dict(zip(header, values, strict=True)), raw)


def _csv_line(values: list[str], delimiter: str) -> bytes:
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator="").writerow(values)
    return out.getvalue().encode("utf-8", "surrogateescape")


class JsonlSink:
    """Appends one JSON document per line; ``flush`` makes the lines durable (fsync)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.path.open("a", encoding="utf-8")

    def send(self, document: str) -> None:
        self._handle.write(document)
        self._handle.write("\n")

    def flush(self) -> None:
        import os

        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.flush()
            self._handle.close()
