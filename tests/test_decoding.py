import json
import math
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamimb.config import EventSchema
from streamimb.decoding import REASONS, EventDecoder, infer_schema, parse_number, parse_time
from streamimb.errors import DecodeError


def reason_of(fn, *args):
    with pytest.raises(DecodeError) as info:
        fn(*args)
    assert info.value.reason in REASONS
    return info.value.reason


def test_parse_number_accepts_numbers_and_missing():
    assert parse_number("a", "1.5") == 1.5
    assert parse_number("a", 3) == 3.0
    assert parse_number("a", "") is None
    assert parse_number("a", None) is None
    assert parse_number("a", True) == 1.0


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("abc", "bad_number"),
        ("NaN", "non_finite"),
        ("inf", "non_finite"),
        (math.nan, "non_finite"),
        (float("-inf"), "non_finite"),
        ([1], "bad_type"),
        ({"a": 1}, "bad_type"),
        (1e400, "non_finite"),
    ],
)
def test_parse_number_rejects_with_reason(value, reason):
    assert reason_of(parse_number, "a", value) == reason


def test_parse_time():
    assert parse_time(12) == 12.0
    assert parse_time("2020-01-01T00:00:00Z") == 1577836800.0
    assert reason_of(parse_time, "yesterday") == "bad_time"
    assert parse_time(" 12.5") == 12.5
    assert [reason_of(parse_time, v) for v in ("nan", "inf", "-Infinity", math.inf)] == ["bad_time"] * 4


def test_decoder_maps_id_time_key_label_and_label_map():
    schema = EventSchema(
        id="tx",
        time="ts",
        key="card",
        label="y",
        label_map={"yes": "1", "no": "0"},
        classes=["0", "1"],
        categorical=["country"],
    )
    d = EventDecoder(schema, require_label=True)
    e = d.decode({"tx": "t1", "ts": "5", "card": 42, "y": "yes", "amount": "9.5", "country": "FR"}, row=3)
    assert (e.id, e.time, e.key, e.label) == ("t1", 5.0, "42", "1")
    assert e.features == {"amount": 9.5, "country": "FR"}
    assert reason_of(d.decode, {"tx": "t", "ts": 1, "y": "maybe", "amount": 1}) == "unknown_label"
    assert reason_of(d.decode, {"tx": "t", "ts": 1, "y": "", "amount": 1}) == "missing_label"


def test_float_labels_are_normalised():
    d = EventDecoder(EventSchema(label="Class"))
    assert d.decode({"Class": 1.0, "x": 1}).label == "1"


def test_decode_json_errors():
    d = EventDecoder(EventSchema())
    assert reason_of(d.decode_json, b"{not json") == "malformed_json"
    assert reason_of(d.decode_json, b"[1, 2]") == "not_an_object"
    assert reason_of(d.decode_json, b"\xff\xfe") == "malformed_json"
    deep = b"[" * 100_000 + b"]" * 100_000
    assert reason_of(d.decode_json, deep) in ("malformed_json", "not_an_object")
    assert reason_of(d.decode_json, b'{"a": {"b": 1}}') == "bad_type"
    assert reason_of(d.decode_json, b'{"a": ' + b"9" * 5000 + b"}") == "malformed_json"
    assert reason_of(d.decode, {"a": 10**400}) == "non_finite"


def test_unlabelled_events_are_fine_when_label_not_required():
    d = EventDecoder(EventSchema(label="label"))
    assert d.decode({"x": 1.0}).label is None


def test_infer_schema_on_bank_like_rows():
    rows = [{"age": "30", "job": "admin.", "duration": "100", "y": "no"} for _ in range(20)]
    rows.append({"age": "40", "job": "services", "duration": "50", "y": "yes"})
    s = infer_schema(rows, EventSchema(drop=["duration"]))
    assert s.label == "y"
    assert s.numeric == ["age"]
    assert s.categorical == ["job"]
    assert s.positive_class == "yes"


# -- the typed fast path against the general one ------------------------------------------------------------
FAST_SCHEMA = EventSchema(
    id="id", time="time", label="label", key="card", numeric=["amount", "hour"], categorical=["country"]
)
json_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", " ", "NA", "nan", "inf", "1.5", " 2 ", "1e999", "FR", "0", "1", "1.0", "x" * 50]),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)
records = st.dictionaries(
    st.sampled_from(["id", "time", "label", "card", "amount", "hour", "country", "other", "Amount"]),
    json_values,
)


def outcome(decoder: EventDecoder, raw: bytes):
    try:
        return decoder.decode_json(raw, row=7)
    except DecodeError as exc:
        return (exc.reason, exc.detail)


@settings(max_examples=400, deadline=None)
@given(records, st.booleans())
def test_the_fast_path_decodes_exactly_as_the_general_one(record, compact):
    raw = json.dumps(record, separators=(",", ":") if compact else None).encode()
    for max_abs in (None, 1e20):  # with a range limit, as the service decodes
        fast = EventDecoder(FAST_SCHEMA, max_abs=max_abs)
        general = EventDecoder(FAST_SCHEMA, max_abs=max_abs)
        general._fast = None  # the json.loads path alone
        assert fast._fast is not None
        assert outcome(fast, raw) == outcome(general, raw)


@pytest.mark.parametrize(
    "raw",
    [b"{broken", b"[1, 2]", b'"text"', b"\xff\xfe{}", b'{"amount": NaN}', b'{"amount": 1e999}', b"",
     b'{"amount": 1, "amount": "x"}', b'{"id": "a", "amount": 3}  ', '{"amount": 2.5}'.encode("utf-16")],
)  # fmt: skip
def test_records_the_fast_path_refuses_get_the_general_reason(raw):
    fast, general = EventDecoder(FAST_SCHEMA), EventDecoder(FAST_SCHEMA)
    general._fast = None
    assert outcome(fast, raw) == outcome(general, raw)


def test_a_decoder_survives_pickling_with_its_fast_path():
    decoder = pickle.loads(pickle.dumps(EventDecoder(FAST_SCHEMA)))
    assert decoder._fast is not None
    assert decoder.decode_json(b'{"id": 1, "amount": 2, "country": "FR", "label": 1.0}').label == "1"


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(records, st.sampled_from([0, 1, 1.0, "1", " 0 ", "yes", "", None, 2.5])), max_size=30)
)
def test_one_fast_decoder_over_a_stream_decodes_as_the_general_one(stream):
    """The fast path keeps state across records (a cache of label values): a whole stream through one
    decoder, with a label map and known classes, gives what the general path gives record by record."""
    schema = FAST_SCHEMA.model_copy(update={"label_map": {"yes": "1"}, "classes": ["0", "1"]})
    for require_label in (False, True):
        fast = EventDecoder(schema, require_label=require_label)
        general = EventDecoder(schema, require_label=require_label)
        general._fast = None
        for record, label in stream:
            raw = json.dumps({**record, "label": label}).encode()
            assert outcome(fast, raw) == outcome(general, raw)
