import json

from streamimb.io.files import JsonlSink, read_records


def test_csv_semicolon_bom_and_bad_rows(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes('\ufeff"a";"b";"y"\n1;"x";"no"\n2;"z"\n3;"w";"yes"\n'.encode())
    rows = list(read_records(path))
    assert [r.row for r in rows] == [0, 1, 2]
    assert rows[0].record == {"a": "1", "b": "x", "y": "no"}
    assert rows[1].record is None and rows[1].error.reason == "malformed_row"
    assert rows[2].record["y"] == "yes"


def test_jsonl_bad_lines_and_oversized(tmp_path):
    path = tmp_path / "d.jsonl"
    lines = ['{"a": 1}', "{broken", "[1]", json.dumps({"a": "x" * 500}), ""]
    path.write_text("\n".join(lines))
    rows = list(read_records(path, max_record_bytes=200))
    assert [r.error.reason if r.error else None for r in rows] == [
        None,
        "malformed_json",
        "not_an_object",
        "oversized",
    ]


def test_jsonl_sink_appends(tmp_path):
    sink = JsonlSink(tmp_path / "out" / "alerts.jsonl")
    sink.send('{"a":1}')
    sink.flush()
    sink.send('{"a":2}')
    sink.close()
    assert (tmp_path / "out" / "alerts.jsonl").read_text().splitlines() == ['{"a":1}', '{"a":2}']
