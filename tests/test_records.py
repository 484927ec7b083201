import json

import pytest

from crossdistill.errors import UserError
from crossdistill.io import JsonlAppender, atomic_open, read_complete_rows
from crossdistill.records import Record, read_records, record_from_dict, write_records


def good(**kw):
    d = {"id": "m/1", "domain": "math", "prompt": "1+1?", "response": "1 + 1 = 2\n#### 2", "answer": "2"}
    d.update(kw)
    return d


def write_lines(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_roundtrip(tmp_path):
    recs = [Record(**good()), Record(id="c/1", domain="code", prompt=[{"role": "user", "content": "f"}],
                                     response="def f(): return 1", tests=["assert f() == 1"])]
    p = tmp_path / "r.jsonl"
    write_records(p, recs)
    back = read_records(p)
    assert back == recs
    assert back[1].prompt_messages()[0]["content"] == "f"


def test_malformed_json_names_line(tmp_path):
    p = write_lines(tmp_path / "bad.jsonl", [good(id="a"), good(id="b"), '{"id": "c", "domain": ', good(id="d")])
    with pytest.raises(UserError) as e:
        read_records(p)
    assert "line 3" in str(e.value) and "bad.jsonl" in str(e.value) and "malformed JSON" in str(e.value)


@pytest.mark.parametrize("row,field", [
    ({"domain": "math", "prompt": "x"}, "id"),
    (good(prompt=""), "prompt"),
    (good(prompt=5), "prompt"),
    (good(tests="assert x"), "tests"),
    (good(gold=True), "gold"),
    (good(respnse="x"), "respnse"),
    (good(prompt=[{"role": "user"}]), "prompt[0]"),
])
def test_bad_field_names_field_and_line(tmp_path, row, field):
    row = {k: v for k, v in row.items() if v is not None}
    p = write_lines(tmp_path / "f.jsonl", [good(id="ok"), row])
    with pytest.raises(UserError) as e:
        read_records(p)
    assert f"field '{field}'" in str(e.value) and "line 2" in str(e.value)


def test_duplicate_ids_rejected(tmp_path):
    p = write_lines(tmp_path / "d.jsonl", [good(), good()])
    with pytest.raises(UserError, match="duplicate id"):
        read_records(p)


def test_training_requires_response():
    with pytest.raises(UserError, match="response"):
        record_from_dict({"id": "t", "domain": "text", "prompt": "hi", "response": ""}, require_response=True)


def test_gold_out_of_range():
    with pytest.raises(UserError, match="gold"):
        record_from_dict({"id": "q", "domain": "choice", "prompt": "?", "choices": ["a", "b"], "gold": 2})


def test_atomic_open_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_open(target) as f:
            f.write("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_appender_resume_drops_torn_line(tmp_path):
    app = JsonlAppender(tmp_path / "g.jsonl")
    app.append({"id": 1})
    app.append({"id": 2})
    app.close()
    with open(app.partial_path, "a") as f:
        f.write('{"id": 3, "tex')  # a kill mid-write
    again = JsonlAppender(tmp_path / "g.jsonl")
    assert [r["id"] for r in again.existing()] == [1, 2]
    again.append({"id": 3})
    again.finish()
    assert [r["id"] for r in read_complete_rows(tmp_path / "g.jsonl")] == [1, 2, 3]
    assert not app.partial_path.exists()
