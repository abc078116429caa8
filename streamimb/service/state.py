"""Checkpoints: versioned, signed, compressed snapshots of one partition's state and the offsets it covers.

A checkpoint is one file per ``(topic, partition)``, written to a temporary file, fsynced and renamed over the
previous one, so a reader sees either the old or the new checkpoint, never a mix. It holds, as one unit:

* a JSON header: format, streamimb / river / Python versions, a hash of the config sections the state was
  built from, the consumer group and the generation that wrote it, the next offset of every topic the state
  covers, the number of events its model learned, when it was written, its id and the id of its parent;
* the state itself: a pickle, zlib-compressed, split into chunks of at most ``chunk_bytes``;
* two HMAC-SHA256 tags (one over the header, one over the whole file) with the configured key.

Both tags and the header are checked *before* anything is unpickled: a tampered, unsigned, truncated or
foreign checkpoint (another key, streamimb or river version, config, group or partition) raises
:class:`CheckpointRefused` with the reason, and its payload is never unpickled. Snapshots larger than
``max_bytes`` (uncompressed) are refused on write and on read (so a decompression bomb cannot exhaust memory).

A writer that lost its partition cannot overwrite a newer owner's checkpoint: :meth:`FileCheckpointStore.save`
refuses (:class:`CheckpointFenced`) when the file on disk was written by a newer consumer-group generation and
is not the checkpoint the writer's state descends from.

>>> import tempfile
>>> codec = SnapshotCodec(b"0123456789abcdef-test-key", schema="s1")
>>> store = FileCheckpointStore(tempfile.mkdtemp(), codec, group="fraud")
>>> h = store.save("events", 0, {"model": [1, 2, 3]}, offsets={"events": 42}, learned=3, generation=1)
>>> ckpt = store.load("events", 0)
>>> ckpt.state, ckpt.header.offsets, ckpt.header.learned, ckpt.header.generation
({'model': [1, 2, 3]}, {'events': 42}, 3, 1)
>>> other = FileCheckpointStore(store.directory.parent, SnapshotCodec(b"another-key-0123456", schema="s1"),
...                             group="fraud")
>>> other.load("events", 0)
Traceback (most recent call last):
...
streamimb.service.state.CheckpointRefused: bad_signature: ...
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import pickle
import platform
import struct
import tempfile
import time
import uuid
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from streamimb import __version__
from streamimb.errors import CheckpointError

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "Checkpoint",
    "CheckpointFenced",
    "CheckpointHeader",
    "CheckpointRefused",
    "FileCheckpointStore",
    "SnapshotCodec",
    "config_hash",
    "load_key",
]

MAGIC = b"SIMBCKPT"
FORMAT_VERSION = 1
TAG_BYTES = 32
MIN_KEY_BYTES = 16
_U32 = struct.Struct(">I")
_PREFIX = len(MAGIC) + 1 + _U32.size  # magic, format byte, header length
_MAX_HEADER_BYTES = 64 * 1024


class CheckpointRefused(CheckpointError):
    """A checkpoint was refused before unpickling; ``reason`` is a short, bounded label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class CheckpointFenced(CheckpointError):
    """A stale owner tried to overwrite a checkpoint written by a newer consumer-group generation."""


def _river_version() -> str:
    try:
        from importlib.metadata import version

        return version("river")
    except Exception:  # pragma: no cover - river is a dependency
        return "unknown"


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def config_hash(*sections: Any) -> str:
    """A short, stable hash of config sections (pydantic models or plain data), for the header.

    >>> config_hash({"a": 1, "b": [2]}) == config_hash({"b": [2], "a": 1})
    True
    """
    parts = []
    for s in sections:
        data = s.model_dump(mode="json", by_alias=True) if hasattr(s, "model_dump") else s
        parts.append(data)
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_key(key: Any = None, key_file: str | os.PathLike[str] | None = None) -> bytes:
    """The HMAC key as bytes, from a ``SecretStr``/str/bytes or from a file (surrounding whitespace dropped).

    Raises ``CheckpointError`` when neither is given, both are, or the key is shorter than 16 bytes.
    The key itself never appears in the message.

    >>> load_key("x" * 16)
    b'xxxxxxxxxxxxxxxx'
    >>> load_key("short")
    Traceback (most recent call last):
    ...
    streamimb.errors.CheckpointError: checkpoint key is 5 bytes; at least 16 are required
    """
    if key is not None and key_file is not None:
        raise CheckpointError("give the checkpoint key or a key file, not both")
    if key_file is not None:
        try:
            raw = Path(key_file).read_bytes().strip()
        except OSError as exc:
            raise CheckpointError(f"cannot read checkpoint key file {key_file}: {exc.strerror}") from None
    elif key is not None:
        value = key.get_secret_value() if hasattr(key, "get_secret_value") else key
        raw = value.encode() if isinstance(value, str) else bytes(value)
    else:
        raise CheckpointError("a checkpoint key is required (checkpoint.key or checkpoint.key_file)")
    if len(raw) < MIN_KEY_BYTES:
        raise CheckpointError(f"checkpoint key is {len(raw)} bytes; at least {MIN_KEY_BYTES} are required")
    return raw


@dataclass(frozen=True)
class CheckpointHeader:
    """What a checkpoint says about itself; readable (and verified) without unpickling the state."""

    topic: str
    partition: int
    group: str
    generation: int
    offsets: dict[str, int]
    learned: int
    schema: str
    checkpoint_id: str
    parent_id: str | None = None
    created: float = 0.0
    format: int = FORMAT_VERSION
    streamimb: str = __version__
    river: str = field(default_factory=_river_version)
    python: str = field(default_factory=platform.python_version)
    compression: str = "zlib"
    raw_bytes: int = 0
    payload_bytes: int = 0
    chunks: int = 0
    payload_sha256: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> CheckpointHeader:
        try:
            doc = json.loads(data)
            return cls(**doc)
        except (ValueError, TypeError) as exc:
            raise CheckpointRefused("corrupt", f"unreadable header: {exc}") from None


@dataclass
class Checkpoint:
    """A verified header and the unpickled state; ``size`` is the file's size in bytes."""

    header: CheckpointHeader
    state: Any
    size: int = 0


class SnapshotCodec:
    """Turns state into signed checkpoint bytes and back, refusing anything it did not sign.

    Parameters
    ----------
    key
        The HMAC-SHA256 key (at least 16 bytes).
    schema
        Hash of the config the state was built from (:func:`config_hash`); a checkpoint of another
        schema is refused as foreign.
    max_bytes
        Largest uncompressed snapshot written or read.
    chunk_bytes
        Compressed payload is framed in chunks of at most this size.
    compression_level
        zlib level (1 is fastest; the Processor's state compresses about 2x at any level).
    """

    def __init__(
        self,
        key: bytes,
        schema: str = "",
        *,
        max_bytes: int = 256 * 1024 * 1024,
        chunk_bytes: int = 4 * 1024 * 1024,
        compression_level: int = 1,
    ) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise CheckpointError(
                f"checkpoint key is {len(key)} bytes; at least {MIN_KEY_BYTES} are required"
            )
        if chunk_bytes < 1 or max_bytes < 1:
            raise ValueError("chunk_bytes and max_bytes must be positive")
        self._key = key
        self.schema = schema
        self.max_bytes = max_bytes
        self.chunk_bytes = chunk_bytes
        self.compression_level = compression_level

    def __repr__(self) -> str:  # never show the key
        return f"SnapshotCodec(schema={self.schema!r}, max_bytes={self.max_bytes})"

    def _tag(self, *parts: bytes) -> bytes:
        mac = hmac.new(self._key, digestmod=hashlib.sha256)
        for p in parts:
            mac.update(p)
        return mac.digest()

    # -- writing ---------------------------------------------------------------------------------------------
    def encode(self, state: Any, **header: Any) -> tuple[CheckpointHeader, list[bytes]]:
        """Pickle, compress, chunk and sign ``state``; returns the header and the file's byte frames."""
        raw = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
        if len(raw) > self.max_bytes:
            raise CheckpointError(
                f"snapshot of {header.get('topic')}[{header.get('partition')}] is {len(raw):,} bytes, over "
                f"checkpoint.max_bytes={self.max_bytes:,}; raise the cap or shrink the model state "
                "(e.g. fewer/smaller trees, smaller windows, labels.max_pending)"
            )
        payload = zlib.compress(raw, self.compression_level)
        chunks = [payload[i : i + self.chunk_bytes] for i in range(0, len(payload), self.chunk_bytes)] or [
            b""
        ]
        head = CheckpointHeader(
            schema=self.schema,
            raw_bytes=len(raw),
            payload_bytes=len(payload),
            chunks=len(chunks),
            payload_sha256=hashlib.sha256(payload).hexdigest(),
            **header,
        )
        head_bytes = head.to_json()
        prefix = MAGIC + bytes([FORMAT_VERSION]) + _U32.pack(len(head_bytes))
        frames = [prefix, head_bytes, self._tag(prefix, head_bytes), _U32.pack(len(chunks))]
        for chunk in chunks:
            frames += [_U32.pack(len(chunk)), chunk]
        full = hmac.new(self._key, digestmod=hashlib.sha256)
        for f in frames:
            full.update(f)
        frames.append(full.digest())
        return head, frames

    # -- reading ---------------------------------------------------------------------------------------------
    def read_header(self, data: bytes) -> tuple[CheckpointHeader, int]:
        """Verify the magic, format and header tag; return the header and where the payload starts.

        Only the header is authenticated here (enough to fence writers); :meth:`decode` checks the rest.
        """
        if len(data) < _PREFIX:
            raise CheckpointRefused("unsigned", f"{len(data)} bytes: too short to be a signed checkpoint")
        if data[: len(MAGIC)] != MAGIC:
            kind = "a bare pickle" if data[:1] == b"\x80" else "not a streamimb checkpoint"
            raise CheckpointRefused("unsigned", f"{kind} (no checkpoint magic); refusing to load it")
        fmt = data[len(MAGIC)]
        if fmt != FORMAT_VERSION:
            raise CheckpointRefused(
                "foreign_format", f"checkpoint format {fmt}, this build reads {FORMAT_VERSION}"
            )
        (n,) = _U32.unpack_from(data, len(MAGIC) + 1)
        if n > _MAX_HEADER_BYTES or len(data) < _PREFIX + n + TAG_BYTES:
            raise CheckpointRefused("unsigned", "truncated header or missing signature")
        head_bytes = data[_PREFIX : _PREFIX + n]
        tag = data[_PREFIX + n : _PREFIX + n + TAG_BYTES]
        if not hmac.compare_digest(tag, self._tag(data[:_PREFIX], head_bytes)):
            raise CheckpointRefused(
                "bad_signature", "header signature mismatch: tampered, or signed with another key"
            )
        return CheckpointHeader.from_json(head_bytes), _PREFIX + n + TAG_BYTES

    def decode(
        self, data: bytes, *, topic: str | None = None, partition: int | None = None, group: str | None = None
    ) -> Checkpoint:
        """Verify everything, then unpickle; on any doubt raise :class:`CheckpointRefused` instead."""
        header, pos = self.read_header(data)
        if len(data) < pos + _U32.size + TAG_BYTES:
            raise CheckpointRefused("unsigned", "truncated payload or missing signature")
        body, tag = data[:-TAG_BYTES], data[-TAG_BYTES:]
        if not hmac.compare_digest(tag, self._tag(body)):
            raise CheckpointRefused(
                "bad_signature", "signature mismatch: tampered or truncated, or signed with another key"
            )
        self.check_compatible(header, topic=topic, partition=partition, group=group)
        chunks = []
        (count,) = _U32.unpack_from(body, pos)
        pos += _U32.size
        for _ in range(count):
            (size,) = _U32.unpack_from(body, pos)
            pos += _U32.size
            chunks.append(body[pos : pos + size])
            pos += size
        payload = b"".join(chunks)
        if pos != len(body) or count != header.chunks or len(payload) != header.payload_bytes:
            raise CheckpointRefused("corrupt", "payload framing does not match the header")
        if hashlib.sha256(payload).hexdigest() != header.payload_sha256:
            raise CheckpointRefused("corrupt", "payload hash does not match the header")
        if header.raw_bytes > self.max_bytes:
            raise CheckpointRefused(
                "too_large",
                f"snapshot is {header.raw_bytes:,} bytes, over checkpoint.max_bytes={self.max_bytes:,}",
            )
        inflater = zlib.decompressobj()
        try:
            raw = inflater.decompress(payload, self.max_bytes + 1)
        except zlib.error as exc:
            raise CheckpointRefused("corrupt", f"cannot decompress: {exc}") from None
        if len(raw) > self.max_bytes or inflater.unconsumed_tail or len(raw) != header.raw_bytes:
            raise CheckpointRefused("too_large", "decompressed size does not match the header or the cap")
        return Checkpoint(header, pickle.loads(raw), len(data))

    def check_compatible(
        self,
        header: CheckpointHeader,
        *,
        topic: str | None = None,
        partition: int | None = None,
        group: str | None = None,
    ) -> None:
        """Refuse a checkpoint of another streamimb minor or river version, schema, group or partition."""
        if _minor(header.streamimb) != _minor(__version__):
            raise CheckpointRefused(
                "foreign_version", f"written by streamimb {header.streamimb}, this is {__version__}"
            )
        if header.river != _river_version():
            raise CheckpointRefused(
                "foreign_version", f"written with river {header.river}, this is river {_river_version()}"
            )
        if header.schema != self.schema:
            raise CheckpointRefused(
                "foreign_schema",
                f"written for config {header.schema}, this config is {self.schema} (model or schema changed)",
            )
        for what, want, got in (("topic", topic, header.topic), ("partition", partition, header.partition)):
            if want is not None and want != got:
                raise CheckpointRefused(
                    "foreign_partition", f"checkpoint of {what} {got!r}, expected {want!r}"
                )
        if group is not None and group != header.group:
            raise CheckpointRefused(
                "foreign_group", f"checkpoint of group {header.group!r}, expected {group!r}"
            )


class FileCheckpointStore:
    """One checkpoint file per topic partition under ``directory/<group>/``; atomic, fenced writes.

    ``save`` writes a temporary file in the same directory, fsyncs it, then (under an exclusive lock on the
    partition's lock file) checks the fence and renames it over the previous checkpoint, and fsyncs the
    directory. Readers never see a partial file.
    """

    def __init__(self, directory: str | os.PathLike[str], codec: SnapshotCodec, group: str) -> None:
        self.codec = codec
        self.group = group
        self.directory = Path(directory) / quote(group, safe="") if group else Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.directory, prefix=".write-probe-"):
                pass
        except OSError as exc:
            raise CheckpointError(
                f"checkpoint directory {self.directory} is not writable: {exc.strerror or exc}"
            ) from None

    def path(self, topic: str, partition: int) -> Path:
        return self.directory / f"{quote(topic, safe='')}-{int(partition)}.ckpt"

    def _read(self, path: Path) -> bytes | None:
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return None
        limit = self.codec.max_bytes + 64 * 1024 * 1024  # compressed data never grows far past the raw cap
        if size > limit:
            raise CheckpointRefused("too_large", f"{path} is {size:,} bytes, over the cap")
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def read_header(self, topic: str, partition: int) -> CheckpointHeader | None:
        """The verified header of the current checkpoint (None when there is none); nothing is unpickled."""
        data = self._read(self.path(topic, partition))
        return None if data is None else self.codec.read_header(data)[0]

    def load(self, topic: str, partition: int) -> Checkpoint | None:
        """The verified, compatible checkpoint of ``topic[partition]``, or None when there is none."""
        data = self._read(self.path(topic, partition))
        if data is None:
            return None
        return self.codec.decode(data, topic=topic, partition=partition, group=self.group)

    def save(
        self,
        topic: str,
        partition: int,
        state: Any,
        *,
        offsets: Mapping[str, int],
        learned: int,
        generation: int,
        parent_id: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> CheckpointHeader:
        """Write a checkpoint atomically; raise :class:`CheckpointFenced` if a newer owner wrote one since.

        ``parent_id`` is the id of the checkpoint this state descends from (the one restored or last written).
        """
        header, frames = self.codec.encode(
            state,
            topic=topic,
            partition=int(partition),
            group=self.group,
            generation=int(generation),
            offsets={k: int(v) for k, v in offsets.items()},
            learned=int(learned),
            checkpoint_id=uuid.uuid4().hex,
            parent_id=parent_id,
            created=time.time(),
            extra=dict(extra or {}),
        )
        target = self.path(topic, partition)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as f:
                for frame in frames:
                    f.write(frame)
                f.flush()
                os.fsync(f.fileno())
            with self._locked(target):
                self._check_fence(target, topic, partition, generation, parent_id)
                os.replace(tmp, target)
            self._fsync_directory()
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return header

    def _check_fence(
        self, target: Path, topic: str, partition: int, generation: int, parent_id: str | None
    ) -> None:
        try:
            current = self.read_header(topic, partition)
        except CheckpointRefused:
            return  # an unreadable file is no one's newer state; the owner replaces it
        if current is None or current.checkpoint_id == parent_id:
            return
        if current.generation > generation:
            raise CheckpointFenced(
                f"{topic}[{partition}]: checkpoint {current.checkpoint_id[:8]} was written by generation "
                f"{current.generation}; this owner (generation {generation}) is stale and may not replace it"
            )

    @contextlib.contextmanager
    def _locked(self, target: Path) -> Iterator[None]:
        with open(target.with_suffix(".lock"), "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _fsync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def headers(self) -> dict[tuple[str, int], CheckpointHeader]:
        """Verified headers of every checkpoint in the store (unreadable ones are skipped)."""
        out = {}
        for path in sorted(self.directory.glob("*.ckpt")):
            data = self._read(path)
            if data is None:
                continue
            try:
                header = self.codec.read_header(data)[0]
            except CheckpointRefused:
                continue
            out[(header.topic, header.partition)] = header
        return out
