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
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Annotated, Any

import msgspec

from streamimb.config import EventSchema
from streamimb.errors import DecodeError
from streamimb.events import Event, FeatureValue

LABEL_CANDIDATES = ("label", "y", "class", "Class", "target", "Churn")
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

    With ``schema.numeric`` unset every column that is not the id, time, label, key, a categorical or dropped
    is read as numeric; ``infer_schema`` fills these lists from a sample of records instead.
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
        self._numeric = [c for c in schema.numeric or () if c not in reserved]
        self._categorical = [c for c in schema.categorical or () if c not in reserved]
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

    def decode_json(self, raw: bytes | str, row: int = -1) -> Event:
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

    def _decode_typed(self, values: tuple, row: int) -> Event:
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

    def decode(self, record: Mapping[str, Any], row: int = -1) -> Event:
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


def infer_schema(
    records: Iterable[Mapping[str, Any]], base: EventSchema | None = None, max_categories: int = 64
) -> EventSchema:
    """Fill in what a schema leaves open from a sample of records.

    The label is the first column named like a label (``label``, ``y``, ``class``, ``Class``, ``target``,
    ``Churn``); columns whose non-missing values are at least 95% numbers are numeric; other columns with at
    most ``max_categories`` distinct values are categorical; the rest (free text, ids) are dropped. The
    positive class is the rarer label value.

    >>> rows = [{"amount": "1.5", "kind": "a", "Class": "0"}, {"amount": "2", "kind": "b", "Class": "1"},
    ...         {"amount": "3", "kind": "a", "Class": "0"}]
    >>> s = infer_schema(rows)
    >>> s.label, s.numeric, s.categorical, s.positive_class
    ('Class', ['amount'], ['kind'], '1')
    """
    base = base or EventSchema()
    rows = list(records)
    columns: list[str] = []
    for r in rows:
        for c in r:
            if c not in columns:
                columns.append(c)
    label = base.label or next((c for c in LABEL_CANDIDATES if c in columns), None)
    reserved = {base.id, base.time, label, base.key, *base.drop} - {None}
    numeric, categorical = [], []
    for column in columns:
        if column in reserved:
            continue
        values = [r.get(column) for r in rows]
        present = [v for v in values if v not in (None, "") and not (isinstance(v, str) and not v.strip())]
        if not present:
            continue
        n_numeric = sum(1 for v in present if _is_number(v))
        if n_numeric >= 0.95 * len(present):
            numeric.append(column)
        elif len({str(v) for v in present}) <= max_categories:
            categorical.append(column)
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
    return base.model_copy(
        update={
            "label": label,
            "numeric": base.numeric if base.numeric is not None else numeric,
            "categorical": base.categorical if base.categorical is not None else categorical,
            "positive_class": positive,
        }
    )


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
