"""The domain registry: a new domain is one file. A `sql` plug-in is written into a temporary package, registered by
an entry point (or a registration call), and runs data -> distill -> train -> eval on the tiny model; and the
record kinds (plug-ins and eval-only kinds) are what records, sources and the eval tasks check against."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from crossdistill.domains import DOMAINS, get_domain
from crossdistill.errors import UserError

# The whole plug-in: one file, nothing else in the project changes.
SQL_PLUGIN = '''
"""SQL over a small table: `meta.setup` creates it, `response` is a query, `answer` the number it returns."""
import sqlite3

from crossdistill.domains import Domain, VerifyResult


def first_value(setup, query):
    con = sqlite3.connect(":memory:")
    try:
        con.executescript(setup)
        row = con.execute(query).fetchone()
        return None if row is None else str(row[0])
    except sqlite3.Error:
        return None
    finally:
        con.close()


class SqlDomain(Domain):
    name = "sql"
    required = ("response", "answer")
    task_types = ("generate_match",)
    stop = (";",)

    def rewrite_messages(self, record):
        user = f"{record.prompt_text()}\\n\\nReference query:\\n{record.response}\\n\\nWrite your own query."
        return [{"role": "system", "content": "You write SQLite queries."}, {"role": "user", "content": user}], "SELECT"

    def check(self, record, text, ctx):
        query = text.strip().rstrip(";")
        if first_value(record.meta["setup"], query) != record.answer:
            return VerifyResult(False, "wrong_result")
        return VerifyResult(True, "ok", target=query + ";")
'''

SETUP = "CREATE TABLE t(x INTEGER); INSERT INTO t VALUES " + ", ".join(f"({i})" for i in range(1, 11)) + ";"


def sql_rows(n: int, start: int = 0) -> list[dict]:
    return [{"id": f"s{i}", "domain": "sql", "prompt": f"Table t(x) holds 1..10. Count the rows with x > {i % 10}.",
             "response": f"SELECT COUNT(*) FROM t WHERE x > {i % 10};", "answer": str(10 - i % 10),
             "meta": {"setup": SETUP}} for i in range(start, start + n)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_plugin(root: Path) -> None:
    """The plug-in as `cdx_ext/sql.py` (a namespace package: no __init__.py) under `root`."""
    (root / "cdx_ext").mkdir(parents=True)
    (root / "cdx_ext" / "sql.py").write_text(SQL_PLUGIN, encoding="utf-8")


def write_entry_point(root: Path) -> None:
    """What `pip install` of a distribution declaring the entry point leaves on sys.path."""
    dist = root / "cdx_sql-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: cdx-sql\nVersion: 0.1\n", encoding="utf-8")
    (dist / "entry_points.txt").write_text("[crossdistill.domains]\nsql = cdx_ext.sql:SqlDomain\n", encoding="utf-8")


@pytest.fixture
def registry(monkeypatch):
    """The registry module; registrations and plug-ins loaded by a test do not outlive it."""
    reg = sys.modules[get_domain.__module__]
    monkeypatch.setattr(reg, "_REGISTERED", dict(getattr(reg, "_REGISTERED", {})), raising=False)
    monkeypatch.setattr(reg, "_CACHE", {k: v for k, v in reg._CACHE.items() if k in DOMAINS})
    return reg


def test_a_new_domain_from_an_entry_point_runs_every_stage(tmp_path, monkeypatch, registry):
    from crossdistill.config import load_config
    from crossdistill.runner import run

    ext = tmp_path / "site"
    write_plugin(ext)
    write_entry_point(ext)
    monkeypatch.syspath_prepend(str(ext))
    write_jsonl(tmp_path / "sql.jsonl", sql_rows(8))
    write_jsonl(tmp_path / "sql-eval.jsonl", [{k: v for k, v in r.items() if k != "response"}
                                              for r in sql_rows(4, start=20)])
    (tmp_path / "sql-eval.yaml").write_text("name: sql-count\ntype: generate_match\ndata: sql-eval.jsonl\n"
                                            "max_new_tokens: 8\nanswer_extraction: last_number\n", encoding="utf-8")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"""\
model: tiny-random-llama
output_dir: {tmp_path / 'out'}
seed: 0
domains:
  sql: {{source: {tmp_path / 'sql.jsonl'}, eval: [{tmp_path / 'sql-eval.yaml'}]}}
distill: {{max_new_tokens: 8, batch_size: 4}}
train: {{max_steps: 2, batch_size: 4, max_length: 128, lora: {{r: 4, alpha: 8}}}}
eval: {{tasks: [{tmp_path / 'sql-eval.yaml'}], limit: 4, max_new_tokens: 8, batch_size: 4, bootstrap: 20}}
methods: {{seed: null, sdft: {{method: sdft}}}}
""", encoding="utf-8")

    summary = run(load_config(recipe))

    out = tmp_path / "out"
    assert {"data", "distill"} <= set(summary) and any(k.startswith("train") for k in summary)
    train = [json.loads(x) for x in (out / "data" / "train-sql.jsonl").read_text().splitlines()]
    assert len(train) == 8 and {r["domain"] for r in train} == {"sql"}
    distilled = [json.loads(x) for x in (out / "distill" / "distilled.jsonl").read_text().splitlines()]
    assert len(distilled) == 8 and {r["domain"] for r in distilled} == {"sql"}
    assert {r["reason"] for r in distilled} <= {"ok", "empty", "truncated", "leak", "degenerate", "wrong_result"}
    results = json.loads((out / "results.json").read_text())
    scored = {(s["method"], s["task"]) for s in results["scores"]}
    assert {("seed", "sql-count"), ("sdft", "sql-count")} <= scored
    assert (out / "report.html").exists()


def test_a_registration_call_makes_the_domain_known_everywhere(tmp_path, monkeypatch, registry):
    from crossdistill.config import domain_plugins
    from crossdistill.sources import load_source

    write_plugin(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    data = write_jsonl(tmp_path / "sql.jsonl", sql_rows(3))
    with pytest.raises(UserError, match="unknown domain 'sql'"):
        load_source(str(data))
    registry.register_domain("sql", "cdx_ext.sql:SqlDomain")
    assert "sql" in domain_plugins() and "sql" in registry.record_kinds()
    assert [r.domain for r in load_source(str(data))] == ["sql"] * 3
    dom = get_domain("sql")
    rec = load_source(str(data))[0]
    assert dom.verify(rec, "SELECT COUNT(*) FROM t WHERE x > 0").accepted
    assert dom.verify(rec, "SELECT COUNT(*) FROM t WHERE x > 5").reason == "wrong_result"
    # the fields the plug-in declares are required of its records, with file, line and field in the error
    bad = write_jsonl(tmp_path / "bad.jsonl", [{k: v for k, v in sql_rows(1)[0].items() if k != "answer"}])
    with pytest.raises(UserError, match=r"line 1.*field 'answer'.*required for domain 'sql'"):
        load_source(str(bad))
    with pytest.raises(UserError, match="cannot be re-registered"):
        registry.register_domain("math", "cdx_ext.sql:SqlDomain")


def test_record_kinds_cover_plugins_and_eval_only_kinds(registry):
    assert registry.record_kinds()[:7] == ["math", "code", "text", "tools", "choice", "safety", "instruction"]
    assert registry.record_kind("math").required == ("response", "answer")
    assert registry.record_kind("choice").required == ("choices", "gold") and not registry.record_kind("choice").plugin
    assert "choice" not in registry.available_domains()          # eval-only: never a recipe domain
    assert registry.required_fields("no-such-kind") == ()        # eval task data may carry any label
    from crossdistill.evaluation.tasks import TASK_TYPES

    defaults = {t: registry.kind_for_task_type(t) for t in TASK_TYPES}   # a custom task's records default to these
    assert defaults == {"generate_match": "math", "generate_code": "code", "multiple_choice": "choice",
                        "refusal": "safety", "instruction": "instruction", "gold_nll": "text", "seed_kl": "text",
                        "tool_call": "tools"}
    with pytest.raises(UserError, match="unknown domain 'maths'.*did you mean 'math'"):
        registry.record_kind("maths", file="f.jsonl", line=3)
