import json

from streamimb.config import EventSchema
from streamimb.decoding import EventDecoder, GuardedDecoder
from streamimb.errors import DecodeError
from streamimb.io.files import FileRecord, JsonlSink, read_records


def test_csv_semicolon_bom_and_bad_rows(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes('\ufeff"a";"b";"y"\n1;"x";"no"\n2;"z"\n3;"w";"yes"\n'.encode())
    rows = list(read_records(path))
    assert [r.row for r in rows] == [0, 1, 2]
    assert rows[0].record == {"a": "1", "b": "x", "y": "no"}
    assert rows[1].record is None and rows[1].error.reason == "malformed_row"
    assert rows[2].record["y"] == "yes"


def reasons(rows: list[FileRecord]) -> list[str | None]:
    """Each row's dead-letter reason as the replay's decoder gives it (None: decoded)."""
    decoder = GuardedDecoder(
        EventDecoder(EventSchema(id="id", numeric=["a", "amount"], categorical=["account"]))
    )
    out = []
    for r in rows:
        try:
            if r.error is not None:
                raise r.error
            decoder.decode_json(r.raw) if r.record is None else decoder.decode(r.record)
            out.append(None)
        except DecodeError as exc:
            out.append(exc.reason)
    return out


def test_jsonl_lines_come_raw_and_decode_as_the_service_decodes_them(tmp_path):
    path = tmp_path / "d.jsonl"
    lines = ['{"a": 1}', "{broken", "[1]", json.dumps({"a": "x" * 500}), ""]
    path.write_text("\n".join(lines))
    rows = list(read_records(path, max_record_bytes=200))
    assert [r.row for r in rows] == [0, 1, 2, 3]
    assert reasons(rows) == [None, "malformed_json", "not_an_object", "oversized"]


def test_invalid_utf8_is_a_dead_letter_not_an_exception(tmp_path):
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_bytes(b'{"id":"a","amount":1.0}\n{"id":"b","amount":1.0,"account":"x\xff"}\n{"id":"c"}\n')
    rows = list(read_records(jsonl))
    assert reasons(rows) == [None, "malformed_json", None]
    assert rows[1].raw == b'{"id":"b","amount":1.0,"account":"x\xff"}'  # the bytes as they were
    csv = tmp_path / "d.csv"
    csv.write_bytes(b"id,amount,account\na,1.0,x\nb,1.0,x\xff\nc,2.0,y\n")
    rows = list(read_records(csv))
    assert reasons(rows) == [None, "malformed_row", None]
    assert rows[1].raw == b"b,1.0,x\xff" and "UTF-8" in rows[1].error.detail
    assert rows[2].record == {"id": "c", "amount": "2.0", "account": "y"}


def test_jsonl_sink_appends(tmp_path):
    sink = JsonlSink(tmp_path / "out" / "alerts.jsonl")
    sink.send('{"a":1}')
    sink.flush()
    sink.send('{"a":2}')
    sink.close()
    assert (tmp_path / "out" / "alerts.jsonl").read_text().splitlines() == ['{"a":1}', '{"a":2}']
