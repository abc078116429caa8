"""Turn flat records (CSV rows, JSON objects) into Events, or into a DecodeError with a bounded reason.

>>> from streamimb.config import EventSchema
>>> decoder = EventDecoder(EventSchema(label="y", numeric=["age"], categorical=["job"]))
>>> e = decoder.decode({"age": "56", "job": "admin.", "y": "no"}, row=0)
>>> e.id, e.features, e.label
('0', {'age': 56.0, 'job': 'admin.'}, 'no')
>>> decoder.decode({"age": "old", "job": "x", "y": "no"}, row=1)
Traceback (most recent call last):
...
streamimb.errors.DecodeError: bad_number: field 'age': 'old' is not a number
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Annotated, Any

import msgspec

from streamimb.config import EventSchema
from streamimb.errors import DecodeError
from streamimb.events import Event, FeatureValue

LABEL_CANDIDATES = ("label", "y", "class", "Class", "target", "Churn")
SERVICE_SCHEMA_DEFAULTS = {"id": "id", "time": "time", "label": "label"}
ID_CANDIDATES = ("id", "event_id", "uuid", "transaction_id")
ID_NAMES = frozenset({"id", "uuid", "guid"})
TIME_NAMES = frozenset(
    {"time", "ts", "timestamp", "event_time", "eventtime", "datetime", "date", "created", "unix_time"}
)
TIME_SUFFIXES = ("_time", "_ts", "_at", "_date", "_timestamp", "_datetime")
MAX_FIELDS = 10_000
# A JSON object of fewer bytes than this cannot hold more than MAX_FIELDS fields (each takes >= 4 bytes).
_FAST_MAX_BYTES = 4 * MAX_FIELDS
# The types the fast path's typed decoder accepts per column role; any other value (a number as text, a
# bool, an empty category, a nested value, a number beyond the float range) takes the general path.
_Scalar = str | int | float | None
_Number = float | None  # msgspec also takes a JSON integer here, as float(value) does
_Category = Annotated[str, msgspec.Meta(min_length=1)] | None
_LABEL_CACHE_SIZE = 1024  # distinct raw label values remembered by the fast path

# The bounded set of dead-letter reasons (they become a metric label).
REASONS = (
    "malformed_json",
    "malformed_row",
    "not_an_object",
    "oversized",
    "too_many_fields",
    "bad_number",
    "non_finite",
    "bad_type",
    "missing_label",
    "unknown_label",
    "bad_time",
)

_UNCACHED = object()
_MISSING_STRINGS = frozenset({"", "NA", "N/A", "null", "None", "?"})
_NON_FINITE_STRINGS = frozenset({"nan", "inf", "-inf", "+inf", "infinity", "-infinity", "+infinity"})


def parse_number(name: str, value: Any) -> float | None:
    """A finite float, None for a missing value, or a DecodeError (text, NaN, infinities, nested values)."""
    if type(value) is float and value - value == 0.0:  # the common case: a finite float
        return value
    if value is None:
        return None
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # an int beyond the float range
            raise DecodeError(
                "non_finite", f"field {name!r}: an integer of {len(str(value))} digits"
            ) from None
    elif isinstance(value, str):
        text = value.strip()
        if text in _MISSING_STRINGS:
            return None
        if text.lower() in _NON_FINITE_STRINGS:
            raise DecodeError("non_finite", f"field {name!r}: {value!r}")
        try:
            number = float(text)
        except ValueError:
            raise DecodeError("bad_number", f"field {name!r}: {value[:100]!r} is not a number") from None
    else:
        raise DecodeError("bad_type", f"field {name!r}: {type(value).__name__} where a number was expected")
    if not math.isfinite(number):
        raise DecodeError("non_finite", f"field {name!r}: {value!r}")
    return number


def parse_time(value: Any) -> float | None:
    """Epoch seconds from a number or an ISO 8601 string; None when missing."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise DecodeError("bad_time", f"time {value!r} is not finite")
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            pass
        else:
            if not math.isfinite(number):
                raise DecodeError("bad_time", f"time {value[:100]!r} is not finite")
            return number
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise DecodeError("bad_time", f"time {value!r} is neither a number nor ISO 8601") from None
    raise DecodeError("bad_time", f"time of type {type(value).__name__}")


class EventDecoder:
    """Maps a record onto an Event following an EventSchema.

    With ``schema.numeric`` unset every column that is not the id, time, label, key, a categorical, an entity
    or dropped is read as numeric; ``infer_schema`` fills these lists from a sample of records instead. Entity
    key columns (``schema.entities``) are read as strings.
    ``require_label`` makes a record without a label a dead letter (replay of a labelled file); with
    ``max_abs`` a number of larger magnitude is one too (``bad_number``).
    """

    def __init__(
        self, schema: EventSchema, require_label: bool = False, max_abs: float | None = None
    ) -> None:
        self.schema = schema
        self.require_label = require_label
        self.max_abs = max_abs
        reserved = {schema.id, schema.time, schema.label, schema.key, *schema.drop} - {None}
        self._reserved = reserved
        self._numeric = [c for c in schema.numeric or () if c not in reserved and c not in schema.entities]
        self._categorical = [c for c in schema.categorical or () if c not in reserved]
        # entity keys come as strings, the partitioning key too (the Processor takes them out of the features)
        named = {schema.id, schema.time, schema.label}
        self._categorical += [c for c in schema.entities if c not in named and c not in self._categorical]
        self._auto_numeric = schema.numeric is None
        self._known_classes = set(schema.classes) if schema.classes else None
        self._fast = None if self._auto_numeric else self._fast_decoder()

    def _fast_decoder(self) -> msgspec.json.Decoder:
        """A typed decoder of the schema's columns alone (see ``decode_json``): features first, in schema
        order (numbers as finite floats, categories as non-empty strings), then id, time, label and key."""
        schema = self.schema
        self._features_at = features = [*self._numeric, *self._categorical]
        roles = {"id": schema.id, "time": schema.time, "label": schema.label, "key": schema.key}
        extra = [c for c in dict.fromkeys(roles.values()) if c is not None and c not in features]
        self._columns = columns = [*features, *extra]
        # where the label, id, time and key are among the columns (None: not in the schema)
        self._roles = tuple(
            columns.index(c) if (c := roles[role]) is not None else None
            for role in ("label", "id", "time", "key")
        )
        self._label_cache: dict[Any, str | None] = {}
        numeric = set(self._numeric)
        number = _Number
        if self.max_abs is not None:  # a number out of range takes the general path, which names it
            number = Annotated[float, msgspec.Meta(ge=-self.max_abs, le=self.max_abs)] | None
        types = [number if c in numeric else _Category for c in features] + [_Scalar] * len(extra)
        fields = [(f"f{i}", t, None) for i, t in enumerate(types)]
        rename = {f"f{i}": name for i, name in enumerate(columns)}
        return msgspec.json.Decoder(msgspec.defstruct("Columns", fields, rename=rename))

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fast": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._fast = None if self._auto_numeric else self._fast_decoder()

    def decode_json(self, raw: bytes | str, row: int | str = -1) -> Event:
        """Decode one JSON object; the size limit is the caller's (sources know their record size).

        With explicit numeric columns the schema's columns are read by a typed msgspec decoder (other
        keys are skipped without being built); a record it refuses (a value that is not a JSON scalar,
        ``NaN``, bad UTF-8, not an object) is decoded again the general way, which gives the reason.
        Both ways hand the same values to the same field parsers, so they give the same events.
        """
        if self._fast is not None and len(raw) < _FAST_MAX_BYTES:
            try:
                values = msgspec.structs.astuple(self._fast.decode(raw))
            except msgspec.DecodeError:
                pass
            else:
                return self._decode_typed(values, row)
        try:
            record = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, ints over 4,300 digits
            raise DecodeError("malformed_json", str(exc)[:200]) from None
        if not isinstance(record, dict):
            raise DecodeError("not_an_object", f"a JSON {type(record).__name__}, not an object")
        return self.decode(record, row)

    def _decode_typed(self, values: tuple, row: int | str) -> Event:
        """``decode`` of the typed decoder's values, which are valid feature values as they are (an absent
        column is None, as ``record.get`` gives it); labels seen before come from a small cache."""
        features = dict(zip(self._features_at, values))  # noqa: B905 (up to the last feature; a keyword costs)
        label_at, id_at, time_at, key_at = self._roles
        label = None
        if label_at is not None:
            raw = values[label_at]
            label = self._label_cache.get(raw, _UNCACHED)
            if label is _UNCACHED:
                label = self._label({self.schema.label: raw})
                if raw is not None and len(self._label_cache) < _LABEL_CACHE_SIZE:
                    self._label_cache[raw] = label  # _label raised instead where the value is refused
        event_id = values[id_at] if id_at is not None else None
        time = values[time_at] if time_at is not None else None
        if not (type(time) is float and time - time == 0.0):
            time = parse_time(time)
        key = values[key_at] if key_at is not None else None
        return Event(
            str(event_id) if event_id is not None and event_id != "" else str(row),
            time,
            features,
            label,
            str(key) if key is not None else None,
        )

    def decode(self, record: Mapping[str, Any], row: int | str = -1) -> Event:
        if len(record) > MAX_FIELDS:
            raise DecodeError("too_many_fields", f"{len(record)} fields")
        schema = self.schema
        features: dict[str, FeatureValue] = {}
        if self._auto_numeric:
            categorical = set(self._categorical)
            for name, value in record.items():
                if name in self._reserved or name in categorical:
                    continue
                features[name] = parse_number(name, value)
        else:
            get = record.get
            for name in self._numeric:
                value = get(name)
                # parse_number's own first test, inlined: most values are finite floats
                features[name] = (
                    value if type(value) is float and value - value == 0.0 else parse_number(name, value)
                )
        for name in self._categorical:
            value = record.get(name)
            features[name] = value if type(value) is str and value else _category(name, value)
        label = self._label(record)
        event_id = record.get(schema.id) if schema.id else None
        event = Event(
            id=str(event_id) if event_id not in (None, "") else str(row),
            time=parse_time(record.get(schema.time)) if schema.time else None,
            features=features,
            label=label,
            key=str(record[schema.key]) if schema.key and record.get(schema.key) is not None else None,
        )
        if self.max_abs is not None:
            for name, value in features.items():
                if isinstance(value, float) and abs(value) > self.max_abs:
                    raise DecodeError(
                        "bad_number",
                        f"field {name[:100]!r}: {value!r} is out of range (|x| > {self.max_abs:g})",
                    )
        return event

    def _label(self, record: Mapping[str, Any]) -> str | None:
        schema = self.schema
        if schema.label is None:
            return None
        raw = record.get(schema.label)
        if raw is None or (isinstance(raw, str) and raw.strip() in _MISSING_STRINGS):
            if self.require_label:
                raise DecodeError("missing_label", f"no value in label field {schema.label!r}")
            return None
        if isinstance(raw, dict | list):
            raise DecodeError("bad_type", f"label field {schema.label!r} holds a {type(raw).__name__}")
        if isinstance(raw, float) and raw.is_integer():
            raw = int(raw)
        label = str(raw).strip()
        label = schema.label_map.get(label, label)
        if self._known_classes is not None and label not in self._known_classes:
            raise DecodeError("unknown_label", f"label {label!r} not in {sorted(self._known_classes)}")
        return label


def _category(name: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, dict | list):
        raise DecodeError("bad_type", f"field {name!r}: {type(value).__name__} where a category was expected")
    return str(value)


#: Numbers beyond this magnitude are dead-lettered (``bad_number``): no measured quantity is that large, and
#: the models' arithmetic overflows on them (river's HalfSpaceTrees raises OverflowError near 1e200).
MAX_ABS_NUMBER = 1e100
#: Event ids and labels longer than this are dead-lettered (``bad_type``): they would bloat alerts and state.
MAX_ID_CHARS = 1024


class GuardedDecoder:
    """An EventDecoder whose every failure is a DecodeError, and which refuses numbers that break models.

    Turns stray exceptions on hostile input (integers too large for a float, JSON numbers with thousands
    of digits, deep nesting) into dead-letter reasons, and refuses magnitudes above :data:`MAX_ABS_NUMBER`
    and ids longer than :data:`MAX_ID_CHARS`.

    >>> d = GuardedDecoder(EventDecoder(EventSchema(id="id")))
    >>> d.decode_json(b'{"id": "a", "x": 1e300}')
    Traceback (most recent call last):
    ...
    streamimb.errors.DecodeError: bad_number: field 'x': 1e+300 is out of range (|x| > 1e+100)
    >>> d.decode_json(b'{"id": "a", "x": 1' + b'0' * 400 + b'}').features
    Traceback (most recent call last):
    ...
    streamimb.errors.DecodeError: non_finite: field 'x': an integer of 401 digits
    >>> d.decode_json(b'{"id": "a", "x": 1, "note": "\\xff"}'.decode("unicode_escape").encode("latin-1"))
    Traceback (most recent call last):
    ...
    streamimb.errors.DecodeError: malformed_json: not valid UTF-8 at byte 29
    """

    def __init__(self, inner: EventDecoder, max_abs: float = MAX_ABS_NUMBER) -> None:
        if inner.max_abs != max_abs:  # the decoder checks the range itself (its typed path at no cost)
            inner = EventDecoder(inner.schema, inner.require_label, max_abs)
        self.inner = inner
        self.max_abs = max_abs

    def decode_json(self, raw: bytes | str, row: int | str = -1) -> Event:
        if isinstance(raw, bytes) and not raw.isascii():  # the typed decoder skips unused fields unread
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DecodeError("malformed_json", f"not valid UTF-8 at byte {exc.start}") from None
        return self._guard(self.inner.decode_json, raw, row)

    def decode(self, record: Any, row: int | str = -1) -> Event:
        return self._guard(self.inner.decode, record, row)

    def _guard(self, fn: Callable[..., Event], arg: Any, row: int | str) -> Event:
        try:
            event = fn(arg, row=row)
        except DecodeError:
            raise
        except RecursionError:
            raise DecodeError("malformed_json", "nested too deeply") from None
        except OverflowError as exc:
            raise DecodeError("bad_number", str(exc)[:200]) from None
        except ValueError as exc:  # e.g. "Exceeds the limit (4300 digits) for integer string conversion"
            reason = "bad_number" if "digits" in str(exc) else "malformed_json"
            raise DecodeError(reason, str(exc)[:200]) from None
        except (TypeError, AttributeError, KeyError) as exc:
            raise DecodeError("bad_type", f"{type(exc).__name__}: {str(exc)[:200]}") from None
        if len(event.id) > MAX_ID_CHARS:
            raise DecodeError("bad_type", f"event id longer than {MAX_ID_CHARS} characters")
        if event.label is not None and len(event.label) > MAX_ID_CHARS:
            raise DecodeError("bad_type", f"label longer than {MAX_ID_CHARS} characters")
        return event


def infer_schema(
    records: Iterable[Mapping[str, Any]], base: EventSchema | None = None, max_categories: int = 64
) -> EventSchema:
    """Fill in what a schema leaves open from a sample of records.

    - label: the first column named like a label (``label``, ``y``, ``class``, ``Class``, ``target``,
      ``Churn``); the positive class is its rarer value;
    - id: the first column named ``id``, ``event_id``, ``uuid`` or ``transaction_id``;
    - event time: the first column named like a time (``time``, ``ts``, ``timestamp``, ``event_time``,
      ``date``, ``*_at``, ``*_time``, ...) whose values parse as times, else the first column of date
      strings; an ever-growing number is never a feature, so other such columns are dropped;
    - features: columns whose non-missing values are at least 95% numbers are numeric; other columns with
      at most ``max_categories`` distinct values are categorical. Id-like columns (``*_id``) and the rest
      (free text, high-cardinality strings) are dropped and listed in ``drop``.

    >>> rows = [{"amount": "1.5", "kind": "a", "Class": "0", "ts": "1700000000"},
    ...         {"amount": "2", "kind": "b", "Class": "1", "ts": "1700000060"},
    ...         {"amount": "3", "kind": "a", "Class": "0", "ts": "1700000120"}]
    >>> s = infer_schema(rows)
    >>> s.label, s.time, s.numeric, s.categorical, s.positive_class
    ('Class', 'ts', ['amount'], ['kind'], '1')
    """
    base = base or EventSchema()
    rows = list(records)
    columns: list[str] = list(dict.fromkeys(c for r in rows for c in r))
    present = {c: [v for r in rows if _present(v := r.get(c))] for c in columns}
    label = base.label or next((c for c in LABEL_CANDIDATES if c in columns), None)
    event_id = base.id or next((c for c in ID_CANDIDATES if c in columns), None)
    time_like = [c for c in columns if _looks_like_time(c, present[c])]
    event_time = base.time or next(iter(time_like), None)
    reserved = {event_id, event_time, label, base.key, *base.drop, *base.entities} - {None}
    numeric, categorical, dropped = [], [], []
    for column in columns:
        values = present[column]
        if column in reserved or not values:
            continue
        if column in time_like or _looks_like_id(column):
            dropped.append(column)
        elif sum(1 for v in values if _is_number(v)) >= 0.95 * len(values):
            numeric.append(column)
        elif len({str(v) for v in values}) <= max_categories:
            categorical.append(column)
        else:
            dropped.append(column)
    positive = base.positive_class
    if positive is None and label is not None:
        counts: dict[str, int] = {}
        for r in rows:
            raw = r.get(label)
            if raw not in (None, ""):
                value = str(int(raw) if isinstance(raw, float) and raw.is_integer() else raw).strip()
                value = base.label_map.get(value, value)
                counts[value] = counts.get(value, 0) + 1
        if len(counts) >= 2:
            positive = min(counts, key=lambda c: (counts[c], c))
    declared = base.numeric is not None or base.categorical is not None
    return base.model_copy(
        update={
            "label": label,
            "id": event_id,
            "time": event_time,
            "numeric": base.numeric if base.numeric is not None else numeric,
            "categorical": base.categorical if base.categorical is not None else categorical,
            "drop": base.drop if declared else [*base.drop, *dropped],
            "positive_class": positive,
        }
    )


def service_schema(schema: EventSchema) -> EventSchema:
    """Default field names for JSON events when the config names none: ``id``, ``time``, ``label``."""
    update = {k: v for k, v in SERVICE_SCHEMA_DEFAULTS.items() if getattr(schema, k) is None}
    return schema.model_copy(update=update) if update else schema


def describe_schema(schema: EventSchema) -> str:
    """One line that says which columns play which part (logged by the service, printed by replay).

    >>> describe_schema(EventSchema(id="id", time="ts", label="y", numeric=["a", "b"], categorical=["c"],
    ...                             drop=["card_id"]))
    "label 'y', id 'id', event time 'ts'; 2 numeric ['a', 'b'], 1 categorical ['c']; left out ['card_id']"
    """
    numeric, categorical = schema.numeric or [], schema.categorical or []
    return (
        f"label {schema.label!r}, id {schema.id!r}, event time {schema.time!r}; "
        f"{len(numeric)} numeric {numeric}, {len(categorical)} categorical {categorical}; "
        f"left out {schema.drop}"
    )


def _present(value: Any) -> bool:
    return value not in (None, "") and not (isinstance(value, str) and not value.strip())


def _looks_like_time(column: str, values: list[Any]) -> bool:
    """A column named like a time whose values parse as times, or one of date strings (not numbers)."""
    if not values:
        return False
    name = column.lower()
    named = name in TIME_NAMES or name.endswith(TIME_SUFFIXES)
    if not named and not all(isinstance(v, str) and not _is_number(v) for v in values):
        return False
    return sum(map(_parses_as_time, values)) >= 0.95 * len(values)


def _parses_as_time(value: Any) -> bool:
    try:
        return parse_time(value) is not None
    except DecodeError:
        return False


def _looks_like_id(column: str) -> bool:
    """``uuid``, ``account_id``, ``accountId``: an identifier, never a measured quantity."""
    return column.lower() in ID_NAMES or column.lower().endswith("_id") or column.endswith("Id")


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return False
        return True
    return False
