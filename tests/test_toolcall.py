"""The tool_call checker (BFCL AST-checker rules) and the tool_call task type on the tiny model."""
import json

import pytest

from crossdistill.evaluation.toolcall import check_calls, ground_truth_of, parse_calls

WEATHER = {"name": "get_weather", "parameters": {"type": "object", "properties": {
    "city": {"type": "string"}, "unit": {"type": "string"}}, "required": ["city"]}}
GT = [{"get_weather": {"city": ["Paris", "Paris, France"], "unit": ["celsius", ""]}}]


@pytest.mark.parametrize("pred,reason", [
    ([{"name": "get_weather", "arguments": {"city": "paris"}}], "ok"),                       # optional unit left out
    ([{"name": "get_weather", "arguments": {"city": "Paris, France", "unit": "Celsius"}}], "ok"),
    ([{"name": "get.weather", "arguments": {"city": "Paris"}}], "ok"),                      # BFCL: . == _
    ([{"name": "get_time", "arguments": {"city": "Paris"}}], "wrong_name"),
    ([{"name": "get_weather", "arguments": {"unit": "celsius"}}], "missing_required"),
    ([{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}], "unexpected_argument"),
    ([{"name": "get_weather", "arguments": {"city": "Lyon"}}], "wrong_value"),
    ([{"name": "get_weather", "arguments": {"city": "Paris", "unit": ""}}], "wrong_value"),  # "" is not a value
    ([], "no_call"),
    ([{"name": "get_weather", "arguments": {"city": "Paris"}}] * 2, "wrong_count"),
])
def test_bfcl_rules(pred, reason):
    assert check_calls(pred, GT, [WEATHER]) == reason


def test_gold_argument_without_optional_marker_is_needed():
    gt = [{"f": {"a": [1], "b": [2]}}]
    assert check_calls([{"name": "f", "arguments": {"a": 1}}], gt) == "missing_argument"
    assert check_calls([{"name": "f", "arguments": {"a": "1.0", "b": 2}}], gt) == "ok"      # numbers numerically


def test_parallel_calls_in_any_order():
    gt = [{"f": {"x": [1]}}, {"f": {"x": [2]}}]
    text = '[{"name": "f", "arguments": {"x": 2}}, {"name": "f", "arguments": {"x": 1}}]'
    assert check_calls(parse_calls(text), gt) == "ok"
    two = 'first {"name": "f", "arguments": {"x": 1}} then {"name": "f", "arguments": {"x": 2}}'
    assert len(parse_calls(two)) == 2 and check_calls(parse_calls(two), gt) == "ok"
    assert check_calls(parse_calls(two.replace('"x": 2', '"x": 3')), gt) == "wrong_value"


def test_glaive_call_as_ground_truth():
    gt = ground_truth_of({"name": "f", "arguments": json.dumps({"a": "b"})})
    assert gt == [{"f": {"a": ["b"]}}]


def test_bfcl_files_as_a_custom_task_on_the_tiny_model(tiny, tmp_path):
    from crossdistill.config import EvalConfig
    from crossdistill.errors import UserError
    from crossdistill.evaluation import evaluate

    q = [{"id": "simple_0", "question": [[{"role": "user", "content": "Weather in Paris?"}]], "function": [WEATHER]},
         {"id": "simple_1", "question": [[{"role": "user", "content": "Weather in Rome?"}]], "function": [WEATHER]}]
    (tmp_path / "q.json").write_text("".join(json.dumps(x) + "\n" for x in q))
    (tmp_path / "a.json").write_text(json.dumps({"id": "simple_0", "ground_truth": GT}) + "\n" + json.dumps(
        {"id": "simple_1", "ground_truth": [{"get_weather": {"city": ["Rome"]}}]}) + "\n")
    spec = tmp_path / "bfcl.yaml"
    spec.write_text("name: bfcl\ntype: tool_call\ndata: q.json\nanswers: a.json\nmax_new_tokens: 8\n")
    res = evaluate(*tiny[:1], [str(spec)], tokenizer=tiny[1], out_dir=tmp_path / "o",
                   eval_cfg=EvalConfig(max_new_tokens=8, batch_size=4, bootstrap=50), progress=False)
    (sc,) = res["scores"]
    assert sc["metric"] == "call_acc" and sc["n"] == 2 and sc["value"] == 0.0   # a random model makes no call
    rows = [json.loads(x) for x in (tmp_path / "o" / "samples" / "bfcl.jsonl").read_text().splitlines()]
    assert {r["id"] for r in rows} == {"simple_0", "simple_1"} and rows[0]["reason"] == "no_call"
    assert rows[0]["gold"] in (GT, [{"get_weather": {"city": ["Rome"]}}])
    (tmp_path / "a.json").write_text(json.dumps({"id": "simple_0", "ground_truth": GT}) + "\n")
    with pytest.raises(UserError, match="simple_1") as e:
        evaluate(tiny[0], [str(spec)], tokenizer=tiny[1], progress=False)
    assert e.value.field == "ground_truth" and e.value.line == 2


def test_bfcl_simple_builtin_from_a_fake_wheel(tmp_path, monkeypatch):
    """The bfcl-simple builder joins BFCL's question file with its possible-answer file by id; a question without
    an answer is an error naming the member file, its line and the field."""
    import hashlib
    import zipfile

    from crossdistill.errors import UserError
    from crossdistill.evaluation.toolcall import check_calls
    from crossdistill.sources import packages
    from crossdistill.sources.fetch import Archive

    monkeypatch.setenv("CROSSDISTILL_CACHE", str(tmp_path / "cache"))
    dl = tmp_path / "cache" / "downloads"
    dl.mkdir(parents=True)
    q = [{"id": "simple_python_0", "question": [[{"role": "user", "content": "Weather in Paris?"}]],
          "function": [WEATHER]},
         {"id": "simple_python_1", "question": [[{"role": "user", "content": "Weather in Rome, in C?"}]],
          "function": [WEATHER]}]
    a = [{"id": "simple_python_1", "ground_truth": [{"get_weather": {"city": ["Rome", "Rome, Italy"]}}]},
         {"id": "simple_python_0", "ground_truth": GT}]

    def wheel(answers):
        whl = dl / "bfcl_eval-0-py3-none-any.whl"
        with zipfile.ZipFile(whl, "w") as z:
            z.writestr(packages.BFCL_SIMPLE, "".join(json.dumps(x) + "\n" for x in q))
            z.writestr(packages.BFCL_SIMPLE_ANSWERS, "".join(json.dumps(x) + "\n" for x in answers))
        import shutil
        shutil.rmtree(tmp_path / "cache" / "data", ignore_errors=True)
        return Archive("bfcl-eval", "0", whl.name, hashlib.sha256(whl.read_bytes()).hexdigest())

    monkeypatch.setattr(packages, "BFCL", wheel(a))
    recs = packages.build_bfcl_simple()
    assert [r.id for r in recs] == ["bfcl-simple/simple_python_0", "bfcl-simple/simple_python_1"]
    r1 = recs[1]
    assert r1.domain == "tools" and r1.source == "bfcl-simple" and r1.tools == [WEATHER]
    assert r1.meta["ground_truth"] == a[0]["ground_truth"]          # joined by id, not by position
    assert r1.expected_call == {"name": "get_weather", "arguments": {"city": "Rome"}}
    assert r1.prompt[0]["role"] == "system" and "get_weather" in r1.prompt[0]["content"]
    assert r1.prompt[1] == {"role": "user", "content": "Weather in Rome, in C?"}
    # every acceptable value passes the checker; another city does not
    gt = r1.meta["ground_truth"]
    assert check_calls([{"name": "get_weather", "arguments": {"city": "Rome, Italy"}}], gt, r1.tools) == "ok"
    assert check_calls([{"name": "get_weather", "arguments": {"city": "Milan"}}], gt, r1.tools) == "wrong_value"
    monkeypatch.setattr(packages, "BFCL", wheel(a[:1]))
    with pytest.raises(UserError, match="simple_python_0") as e:
        packages.build_bfcl_simple()
    assert e.value.field == "ground_truth" and e.value.line == 1 and e.value.file == packages.BFCL_SIMPLE


def test_a_python_literal_that_is_not_json_is_no_call():
    """The parser accepts Python-literal calls (single quotes), but only with JSON values: a set argument made the
    eval crash when its samples were written (seen in the issue-17 run)."""
    from crossdistill.domains.tools import find_call

    assert parse_calls("{'name': 'f', 'arguments': {'x': [1, 2]}}") == [{"name": "f", "arguments": {"x": [1, 2]}}]
    assert find_call("{'name': 'f', 'arguments': {'x': {1, 2}}}") is None
    assert parse_calls("{'name': 'f', 'arguments': {'x': {1, 2}}}") == []
    json.dumps(parse_calls("{'name': 'g', 'arguments': {'y': b'z'}} {'name': 'f', 'arguments': {}}"))
