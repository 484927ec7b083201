"""The distill stage: fallback on the tiny random model, the accepted path with a fake generator, resume after a
kill, shards, the disabled switch, caching; and one slow run of the real default model."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from crossdistill import generation
from crossdistill.config import Config, DistillConfig, DomainConfig
from crossdistill.distill import distill, merge_shards
from crossdistill.domains.code import PREFILL as CODE_PREFILL
from crossdistill.domains.math import PREFILL as MATH_PREFILL
from crossdistill.domains.tools import PREFILL as TOOLS_PREFILL
from crossdistill.io import read_complete_rows
from crossdistill.records import Record


def make_records() -> dict[str, list[Record]]:
    math = [Record(id=f"m{i}", domain="math",
                   prompt=f"Tom has {i + 2} bags with 3 apples each. How many apples does he have?",
                   response=f"Tom has {i + 2} * 3 = {(i + 2) * 3} apples.\n#### {(i + 2) * 3}", answer=str((i + 2) * 3))
            for i in range(3)]
    code = [Record(id=f"c{i}", domain="code", prompt=f"Write a function add{i}(a, b) that returns a + b + {i}.",
                   response=f"def add{i}(a, b):\n    return a + b + {i}\n",
                   tests=[f"assert add{i}(1, 2) == {3 + i}", f"assert add{i}(0, 0) == {i}"], entry_point=f"add{i}")
            for i in range(2)]
    text = [Record(id=f"x{i}", domain="text", prompt=f"Name a colour number {i}.", response=f"Blue is colour {i}.")
            for i in range(2)]
    tools = [Record(id=f"t{i}", domain="tools", prompt=f"Set a timer for {i + 1} minutes.",
                    response=json.dumps({"name": "set_timer", "arguments": {"minutes": i + 1}}),
                    tools=[{"name": "set_timer", "parameters": {"type": "object",
                                                                "properties": {"minutes": {"type": "integer"}}}}],
                    expected_call={"name": "set_timer", "arguments": {"minutes": i + 1}})
             for i in range(2)]
    return {"math": math, "code": code, "text": text, "tools": tools}


def make_cfg(out: Path, **distill_kw) -> Config:
    kw = {"max_new_tokens": 12, "batch_size": 16, **distill_kw}
    return Config(model="tiny-random-llama", output_dir=str(out),
                  domains={d: DomainConfig() for d in ("math", "code", "text", "tools")},
                  distill=DistillConfig(**kw))


ALL_IDS = ["m0", "m1", "m2", "c0", "c1", "x0", "x1", "t0", "t1"]


def rows_of(out: Path, sub: str = "") -> list[dict]:
    return read_complete_rows(out / "distill" / sub / "distilled.jsonl")


# --- a fake generator: good rewrites for some records, garbage for the rest -----------------------

def good_rewrite(prompt: str) -> str | None:
    """The continuation (after the domain's prefill) that a capable seed would write, keyed on the prompt."""
    if "Tom has 2 bags" in prompt:
        return "There are 2 bags and each holds 3 apples, so 2 * 3 = 6 apples.\n#### 6"
    if "Tom has 3 bags" in prompt:                    # a verbatim copy of the reference
        return "Tom has 3 * 3 = 9 apples.\n#### 9"
    if "Tom has 4 bags" in prompt:                    # right number, wrong stated arithmetic
        return "Each bag has 3 apples, so 4 * 3 = 11 apples.\n#### 12"
    if "add0(a, b)" in prompt:
        return "def add0(x, y):\n    total = x + y\n    return total\n```\nIt adds."
    if "add1(a, b)" in prompt:
        return "def add1(x, y):\n    return x - y\n```"
    if "colour number 0" in prompt:
        return "A nice colour is blue, which is colour 0."
    if "for 1 minutes" in prompt:
        return '1}}'
    if "for 2 minutes" in prompt:
        return '5}}'
    return None


def fake_generate_text(prompt: str) -> "generation.Generation":
    text = good_rewrite(prompt)
    if text is None:
        return generation.Generation(text="zq zq qz", n_tokens=12, finished=False)
    return generation.Generation(text=text, n_tokens=len(text.split()), finished=True)


class FakeGenerator:
    """Stands in for generation.generate / generate_iter; records which prompts it saw; can fail after N rows."""

    def __init__(self, fail_after: int | None = None):
        self.fail_after = fail_after
        self.seen: list[str] = []

    def _one(self, p):
        if self.fail_after is not None and len(self.seen) >= self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        self.seen.append(p)
        return fake_generate_text(p)

    def generate(self, model, tokenizer, prompts, cfg, *, progress=None, backend="hf"):
        return [self._one(p) for p in prompts]

    def generate_iter(self, model, tokenizer, prompts, cfg, *, progress=None, backend="hf"):
        for i, p in enumerate(prompts):
            yield i, self._one(p)


@pytest.fixture(params=["iter", "chunks"])
def fake(request, monkeypatch):
    """Install a FakeGenerator; with 'chunks' the stage sees no generate_iter and checkpoints per chunk."""

    def install(fail_after=None):
        g = FakeGenerator(fail_after)
        monkeypatch.setattr(generation, "generate", g.generate)
        if request.param == "iter":
            monkeypatch.setattr(generation, "generate_iter", g.generate_iter, raising=False)
        else:
            monkeypatch.delattr(generation, "generate_iter", raising=False)
        return g

    install.mode = request.param
    return install


@pytest.fixture(scope="module")
def tiny_tok():
    from crossdistill.models import build_tiny_tokenizer

    return build_tiny_tokenizer()


# --- tests ---------------------------------------------------------------------------------------

def test_tiny_model_falls_back_to_every_original(tmp_path, tiny):
    model, tok = tiny
    cfg = make_cfg(tmp_path)
    stats = distill(cfg, records_by_domain=make_records(), model=model, tokenizer=tok, progress=False)
    rows = rows_of(tmp_path)
    assert [r["id"] for r in rows] == ALL_IDS
    assert [r["domain"] for r in rows] == ["math"] * 3 + ["code"] * 2 + ["text"] * 2 + ["tools"] * 2
    for r in rows:
        assert r["accepted"] is False and r["copied"] is False
        assert r["response"] == r["original_response"]
        assert r["reason"] not in ("", "ok")
        assert r["n_tokens"] > 0 and isinstance(r["generated"], str)
    by_id = {r["id"]: r for r in rows}
    assert by_id["m0"]["answer"] == "6" and by_id["c0"]["tests"] and by_id["t0"]["expected_call"]
    assert by_id["m0"]["generated"].startswith(MATH_PREFILL)
    assert stats["totals"]["records"] == 9 and stats["totals"]["accepted"] == 0
    assert sum(stats["totals"]["reasons"].values()) == 9
    assert set(stats["domains"]) == {"math", "code", "text", "tools"}
    assert stats["totals"]["tokens_generated"] == sum(r["n_tokens"] for r in rows)
    on_disk = json.loads((tmp_path / "distill" / "stats.json").read_text())
    assert on_disk["inputs_hash"] == stats["inputs_hash"] and on_disk["model"] == "tiny-random-llama"
    assert not (tmp_path / "distill" / "generations.jsonl.partial").exists()
    assert len(read_complete_rows(tmp_path / "distill" / "generations.jsonl")) == 9


def test_fake_seed_accepted_path_and_stats(tmp_path, fake, tiny_tok):
    gen = fake()
    stats = distill(make_cfg(tmp_path), records_by_domain=make_records(), model=object(), tokenizer=tiny_tok,
                    progress=False)
    assert len(gen.seen) == 9
    by_id = {r["id"]: r for r in rows_of(tmp_path)}
    assert [r for r in by_id] == ALL_IDS

    m0 = by_id["m0"]
    assert m0["accepted"] and not m0["copied"] and m0["reason"] == "ok"
    assert m0["response"] == MATH_PREFILL + "There are 2 bags and each holds 3 apples, so 2 * 3 = 6 apples.\n#### 6"
    assert by_id["m1"]["accepted"] and by_id["m1"]["copied"]
    assert by_id["m2"]["reason"] == "arithmetic_error" and by_id["m2"]["response"] == by_id["m2"]["original_response"]

    c0 = by_id["c0"]
    assert c0["accepted"] and c0["response"] == "```python\ndef add0(x, y):\n    total = x + y\n    return total\n```"
    assert c0["generated"].startswith(CODE_PREFILL)
    assert by_id["c1"]["reason"] == "tests_failed"

    assert by_id["x0"]["accepted"] and by_id["x0"]["response"] == "A nice colour is blue, which is colour 0."
    assert by_id["x1"]["reason"] == "truncated"

    t0 = by_id["t0"]
    assert t0["accepted"] and t0["copied"] and json.loads(t0["response"]) == {"name": "set_timer", "arguments": {"minutes": 1}}
    assert t0["generated"].startswith(TOOLS_PREFILL)
    assert by_id["t1"]["reason"] == "wrong_value"

    d = stats["domains"]
    assert (d["math"]["accepted"], d["math"]["copied"], d["math"]["accepted_not_copied"]) == (2, 1, 1)
    assert d["math"]["acceptance_rate"] == round(2 / 3, 4) and d["math"]["self_distilled_rate"] == round(1 / 3, 4)
    assert d["math"]["reasons"] == {"arithmetic_error": 1}
    assert d["code"]["reasons"] == {"tests_failed": 1} and d["code"]["accepted"] == 1
    assert d["tools"]["copied"] == 1 and d["tools"]["self_distilled_rate"] == 0.0
    tot = stats["totals"]
    assert (tot["records"], tot["accepted"], tot["copied"]) == (9, 5, 2)
    assert tot["tokens_generated"] == sum(r["n_tokens"] for r in by_id.values())
    for k in ("tokens_per_s", "wall_s", "generation_s", "verify_s"):
        assert k in d["code"]


def test_second_run_returns_cached_and_settings_change_reverifies_without_regenerating(tmp_path, fake, tiny_tok):
    recs = make_records()
    fake()
    first = distill(make_cfg(tmp_path), records_by_domain=recs, model=object(), tokenizer=tiny_tok, progress=False)
    gen = fake(fail_after=0)    # any generation now would raise
    again = distill(make_cfg(tmp_path), records_by_domain=recs, model=object(), tokenizer=tiny_tok, progress=False)
    assert again == first and gen.seen == []
    # a verifier-only setting: same generations, new verdicts (every acceptance now counts as a copy)
    strict = distill(make_cfg(tmp_path, copy_threshold=0.01), records_by_domain=recs, model=object(),
                     tokenizer=tiny_tok, progress=False)
    assert gen.seen == [] and strict["inputs_hash"] != first["inputs_hash"]
    assert strict["totals"]["copied"] == strict["totals"]["accepted"] == first["totals"]["accepted"]
    # a changed record regenerates only that record
    recs["text"][1] = Record(id="x1", domain="text", prompt="Name a colour number 0.", response="Red.")
    gen = fake()
    distill(make_cfg(tmp_path), records_by_domain=recs, model=object(), tokenizer=tiny_tok, progress=False)
    assert len(gen.seen) == 1 and "Name a colour number 0." in gen.seen[0]


def test_resume_after_interruption_equals_uninterrupted_run(tmp_path, fake, tiny_tok):
    recs = make_records()
    fake()
    distill(make_cfg(tmp_path / "whole"), records_by_domain=recs, model=object(), tokenizer=tiny_tok, progress=False)
    whole = rows_of(tmp_path / "whole")

    out = tmp_path / "killed"
    cfg = make_cfg(out, batch_size=1)     # chunks of 4 rows without generate_iter
    fake(fail_after=5)
    with pytest.raises(KeyboardInterrupt):
        distill(cfg, records_by_domain=recs, model=object(), tokenizer=tiny_tok, progress=False)
    partial = read_complete_rows(out / "distill" / "generations.jsonl.partial")
    # every generated row is on disk: with generate_iter each one, with chunks each finished chunk of 4
    assert len(partial) == (5 if fake.mode == "iter" else 4)
    assert not (out / "distill" / "distilled.jsonl").exists()

    gen = fake()
    distill(cfg, records_by_domain=recs, model=object(), tokenizer=tiny_tok, progress=False)
    assert len(gen.seen) == 9 - len(partial)              # only the missing rows were generated
    resumed = rows_of(out)
    assert [r["id"] for r in resumed] == ALL_IDS
    assert resumed == whole
    assert not (out / "distill" / "generations.jsonl.partial").exists()


def test_resume_after_sigkill_of_a_real_run(tmp_path, tiny):
    """A subprocess distills on the tiny model and is SIGKILLed mid-way; the rerun finishes what is missing."""
    out = tmp_path / "run"
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_distill import make_records, make_cfg
        from crossdistill import generation
        from crossdistill.distill import distill
        from crossdistill.models import build_tiny_model
        from pathlib import Path
        real = generation.generate_iter
        def slow(*a, **k):             # rows reach the partial file one by one, 0.3 s apart
            for item in real(*a, **k):
                yield item
                time.sleep(0.3)
        generation.generate_iter = slow
        model, tok = build_tiny_model()
        distill(make_cfg(Path({str(out)!r}), max_new_tokens=8), records_by_domain=make_records(),
                model=model, tokenizer=tok, progress=False)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent.parent / "src"),
                                                         os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE)
    partial = out / "distill" / "generations.jsonl.partial"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and len(read_complete_rows(partial)) < 3:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n_before = len(read_complete_rows(partial))
    assert 3 <= n_before < 9
    assert not (out / "distill" / "distilled.jsonl").exists()

    model, tok = tiny
    stats = distill(make_cfg(out, max_new_tokens=8), records_by_domain=make_records(), model=model, tokenizer=tok,
                    progress=False)
    assert stats["reused_generations"] == n_before and stats["generated_now"] == 9 - n_before
    resumed = rows_of(out)
    assert [r["id"] for r in resumed] == ALL_IDS
    distill(make_cfg(tmp_path / "whole", max_new_tokens=8), records_by_domain=make_records(),
            model=model, tokenizer=tok, progress=False)
    assert resumed == rows_of(tmp_path / "whole")


def test_shards_merge_to_the_unsharded_run(tmp_path, fake, tiny_tok):
    recs = make_records()
    fake()
    whole = distill(make_cfg(tmp_path / "whole"), records_by_domain=recs, model=object(), tokenizer=tiny_tok,
                    progress=False)
    out = tmp_path / "sharded"
    for i in range(3):
        distill(make_cfg(out), records_by_domain=recs, model=object(), tokenizer=tiny_tok, shard=f"{i}/3",
                progress=False)
        assert [r["id"] for r in rows_of(out, f"shards/{i}-of-3")] == ALL_IDS[i::3]
    merged = merge_shards(make_cfg(out))
    assert rows_of(out) == rows_of(tmp_path / "whole")
    for key in ("records", "accepted", "copied", "reasons", "tokens_generated", "acceptance_rate"):
        assert merged["totals"][key] == whole["totals"][key]
        for d in whole["domains"]:
            assert merged["domains"][d][key] == whole["domains"][d][key]
    # the merged output counts as the finished unsharded stage
    gen = fake(fail_after=0)
    assert distill(make_cfg(out), records_by_domain=recs, model=object(), tokenizer=tiny_tok,
                   progress=False)["inputs_hash"] == merged["inputs_hash"]
    assert gen.seen == []


def test_merge_refuses_missing_shards_and_bad_specs(tmp_path, fake, tiny_tok):
    from crossdistill.errors import UserError

    fake()
    distill(make_cfg(tmp_path), records_by_domain=make_records(), model=object(), tokenizer=tiny_tok, shard="0/2",
            progress=False)
    with pytest.raises(UserError, match="1/2"):
        merge_shards(make_cfg(tmp_path))
    with pytest.raises(UserError, match="shard"):
        distill(make_cfg(tmp_path), records_by_domain=make_records(), shard="2/2", progress=False)


def test_disabled_writes_originals_without_loading_a_model(tmp_path, monkeypatch):
    import crossdistill.models as models

    def boom(*a, **k):
        raise AssertionError("no model may be loaded when distill.enabled is false")

    monkeypatch.setattr(models, "load_model", boom)
    monkeypatch.setattr(models, "load_tokenizer", boom)
    stats = distill(make_cfg(tmp_path, enabled=False), records_by_domain=make_records(), progress=False)
    rows = rows_of(tmp_path)
    assert [r["id"] for r in rows] == ALL_IDS
    assert all(r["response"] == r["original_response"] and r["reason"] == "disabled" and not r["accepted"]
               for r in rows)
    assert stats["totals"]["reasons"] == {"disabled": 9}


def test_domain_plugin_and_order_follow_the_recipe(tmp_path, fake, tiny_tok):
    fake()
    recs = make_records()
    cfg = make_cfg(tmp_path)
    cfg.domains = {"tools": DomainConfig(), "arith": DomainConfig(plugin="math")}
    stats = distill(cfg, records_by_domain={"arith": recs["math"], "tools": recs["tools"]}, model=object(),
                    tokenizer=tiny_tok, progress=False)
    rows = rows_of(tmp_path)
    assert [r["domain"] for r in rows] == ["tools"] * 2 + ["arith"] * 3
    assert stats["domains"]["arith"]["accepted"] == 2


# --- best-of-n candidates ------------------------------------------------------------------------

class CandidateFake:
    """A seed whose greedy rewrite copies (m1), fails (x1, t1) or is fine (m0), and whose sampled candidates, told
    apart by the call's seed, are good only from the second sampled one on; it records every call's settings."""

    def __init__(self):
        self.calls: list[tuple] = []   # one per distinct setting within a run
        self.runs = 0                  # generation runs (the stage makes one per candidate round)

    def generate_iter(self, model, tokenizer, prompts, cfg, *, progress=None, backend="hf"):
        self.runs += 1
        for idx, c in generation._config_groups(list(prompts), cfg):
            self.calls.append((c.temperature, c.seed, c.max_new_tokens, tuple(c.stop), len(idx)))
        cfgs = generation._row_configs(list(prompts), cfg)
        seeds = list(dict.fromkeys(c[1] for c in self.calls if c[0] > 0))   # in the order the rounds came
        for i, p in enumerate(prompts):
            k = seeds.index(cfgs[i].seed) + 1 if cfgs[i].temperature > 0 else 0
            text = good_rewrite(p)
            if "Tom has 3 bags" in p and k >= 1:
                text = "Three bags of 3 apples make 3 * 3 = 9 apples in all.\n#### 9"
            if "colour number 1" in p:
                text = "Red is the colour I would name first." if k >= 2 else None
            if text is None or text == "5}}":
                yield i, generation.Generation(text="zq zq qz", n_tokens=12, finished=False)
            else:
                yield i, generation.Generation(text=text, n_tokens=len(text.split()), finished=True)


def test_best_of_n_keeps_the_first_verified_non_copy_and_counts_every_candidate(tmp_path, monkeypatch, tiny_tok):
    fake = CandidateFake()
    monkeypatch.setattr(generation, "generate_iter", fake.generate_iter, raising=False)
    cfg = make_cfg(tmp_path, num_candidates=4, temperature=0.7)
    cfg.domains["code"].max_new_tokens = 40
    stats = distill(cfg, records_by_domain=make_records(), model=object(), tokenizer=tiny_tok, progress=False)
    by_id = {r["id"]: r for r in rows_of(tmp_path)}
    # m0: the greedy rewrite is fine -> one candidate only
    assert by_id["m0"]["candidate"] == 0 and len(by_id["m0"]["candidates"]) == 1
    # m1: greedy copies the reference, the first sample does not -> candidate 1 is the target
    m1 = by_id["m1"]
    assert m1["accepted"] and not m1["copied"] and m1["candidate"] == 1
    assert m1["response"].startswith(MATH_PREFILL + "Three bags") and m1["candidates"][0]["copied"]
    # x1: only the second sampled candidate verifies
    assert by_id["x1"]["candidate"] == 2 and by_id["x1"]["response"] == "Red is the colour I would name first."
    assert [c["reason"] for c in by_id["x1"]["candidates"]] == ["truncated", "truncated", "ok"]
    # t1 never verifies: the original response, the greedy candidate's reason, all four candidates tried
    t1 = by_id["t1"]
    assert not t1["accepted"] and t1["response"] == t1["original_response"] and t1["candidate"] is None
    assert t1["reason"] == "truncated" and len(t1["candidates"]) == 4
    assert t1["n_tokens"] == sum(c["n_tokens"] for c in t1["candidates"])
    # t0: accepted greedy, but its text equals the reference -> a copy, sampled again, every sample a copy
    t0 = by_id["t0"]
    assert t0["accepted"] and t0["copied"] and t0["candidate"] == 0 and len(t0["candidates"]) == 4
    assert not t0["target_differs"] and by_id["m0"]["target_differs"]

    d = stats["domains"]
    assert d["text"]["candidates"] == 1 + 3 and d["text"]["accepted_not_copied"] == 2
    assert d["math"]["self_distilled_rate"] == round(2 / 3, 4)
    assert d["tools"]["candidate_reasons"] == {"copy": 4, "truncated": 4}
    assert stats["totals"]["candidates"] == sum(len(r["candidates"]) for r in by_id.values())
    # greedy first, then three sampled rounds with three different seeds; budgets and stops per domain
    greedy = [c for c in fake.calls if c[0] == 0]
    assert greedy and all(c[1] == cfg.seed for c in greedy)
    assert len({c[1] for c in fake.calls if c[0] > 0}) == 3
    assert {(c[2], c[3]) for c in fake.calls} >= {(40, ("```",)), (12, ())}
    assert fake.runs == 4   # one generation run per round, every domain's rows together


def test_a_domain_can_have_its_own_candidate_count(tmp_path, monkeypatch, tiny_tok):
    fake = CandidateFake()
    monkeypatch.setattr(generation, "generate_iter", fake.generate_iter, raising=False)
    cfg = make_cfg(tmp_path, num_candidates=4, temperature=0.7)
    cfg.domains["tools"].num_candidates = 1     # greedy only for tools; the others keep best-of-4
    stats = distill(cfg, records_by_domain=make_records(), model=object(), tokenizer=tiny_tok, progress=False)
    by_id = {r["id"]: r for r in rows_of(tmp_path)}
    assert len(by_id["t1"]["candidates"]) == 1 and len(by_id["t0"]["candidates"]) == 1
    assert by_id["x1"]["candidate"] == 2                                   # text still samples
    assert stats["domains"]["tools"]["candidates"] == 2
    # the per-domain setting is part of the stage's inputs: changing it does not reuse the finished stats
    all_hash = stats["all_inputs_hash"]
    cfg.domains["tools"].num_candidates = 2
    stats2 = distill(cfg, records_by_domain=make_records(), model=object(), tokenizer=tiny_tok, progress=False)
    assert stats2["all_inputs_hash"] != all_hash and stats2["domains"]["tools"]["candidates"] == 4


def test_a_domains_own_n_above_one_samples_after_the_greedy_candidate(tmp_path, monkeypatch, tiny_tok):
    from crossdistill.errors import UserError

    fake = CandidateFake()
    monkeypatch.setattr(generation, "generate_iter", fake.generate_iter, raising=False)
    cfg = make_cfg(tmp_path, num_candidates=1, temperature=0.7)
    cfg.domains["tools"].num_candidates = 3          # global n = 1: only tools gets best-of-3
    distill(cfg, records_by_domain=make_records(), model=object(), tokenizer=tiny_tok, progress=False)
    by_id = {r["id"]: r for r in rows_of(tmp_path)}
    assert len(by_id["t1"]["candidates"]) == 3 and len(by_id["m0"]["candidates"]) == 1
    tools = [c for c in fake.calls if c[3] == ("\n\n", "\nUser:")]
    assert tools[0][0] == 0.0                        # tools: greedy first, then two samples with their own seeds
    assert len({c[1] for c in tools[1:]}) == 2 and all(c[0] == 0.7 and c[1] != cfg.seed for c in tools[1:])
    with pytest.raises(UserError, match="temperature"):
        Config(model="tiny-random-llama", domains={"tools": DomainConfig(num_candidates=2)},
               distill=DistillConfig(temperature=0.0))


def test_sampled_candidates_need_a_temperature():
    from crossdistill.errors import UserError

    with pytest.raises(UserError, match="distill.temperature"):
        DistillConfig(num_candidates=4)
    with pytest.raises(UserError, match="distill.num_candidates"):
        DistillConfig(num_candidates=0)
    with pytest.raises(UserError, match="max_new_tokens"):
        DomainConfig(max_new_tokens=0)


def test_rerun_of_best_of_n_on_the_tiny_model_is_byte_identical(tmp_path, tiny):
    """Two fresh runs (no shared cache) write the same bytes; a record's samples do not depend on the batch."""
    model, tok = tiny
    kw = dict(num_candidates=3, temperature=1.0, max_new_tokens=10)
    for name, bs in (("a", 16), ("b", 16), ("c", 2)):
        distill(make_cfg(tmp_path / name, batch_size=bs, **kw), records_by_domain=make_records(), model=model,
                tokenizer=tok, progress=False)
    a = (tmp_path / "a" / "distill" / "distilled.jsonl").read_bytes()
    assert a == (tmp_path / "b" / "distill" / "distilled.jsonl").read_bytes()
    rows = rows_of(tmp_path / "a")
    assert all(len(r["candidates"]) == 3 for r in rows)      # the tiny random model never verifies
    gens = {r["key"]: r["text"] for r in read_complete_rows(tmp_path / "a" / "distill" / "generations.jsonl")}
    small = {r["key"]: r["text"] for r in read_complete_rows(tmp_path / "c" / "distill" / "generations.jsonl")}
    assert gens == small and len(gens) == 27
    assert len({t for t in gens.values()}) > 9                # the sampled candidates differ from the greedy ones


# --- the real default model --------------------------------------------------------------------

@pytest.mark.slow
def test_real_default_model_distills_every_domain(tmp_path):
    from crossdistill.models import load_model, prepare_model

    prepare_model("smollm2-135m-instruct")
    model, tok = load_model("smollm2-135m-instruct")
    recs = {d: rs[:2] for d, rs in make_records().items()}
    recs["math"] = [Record(id="g0", domain="math",
                           prompt="Natalia sold clips to 48 of her friends in April, and then she sold half as many "
                                  "clips in May. How many clips did Natalia sell altogether in April and May?",
                           response="Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether "
                                    "in April and May.\n#### 72", answer="72"),
                    Record(id="g1", domain="math",
                           prompt="Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of "
                                  "babysitting. How much did she earn?",
                           response="Weng earns 12/60 = $0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = "
                                    "$10.\n#### 10", answer="10")]
    cfg = Config(model="smollm2-135m-instruct", output_dir=str(tmp_path),
                 domains={d: DomainConfig() for d in ("math", "code", "text", "tools")},
                 distill=DistillConfig(max_new_tokens=64, batch_size=8, num_candidates=2, temperature=0.8))
    stats = distill(cfg, records_by_domain=recs, model=model, tokenizer=tok, progress=False)
    rows = rows_of(tmp_path)
    # a fresh rerun (no shared generation cache) writes the very same bytes, sampled candidates included
    cfg2 = dataclasses.replace(cfg, output_dir=str(tmp_path / "again"))
    distill(cfg2, records_by_domain=recs, model=model, tokenizer=tok, progress=False)
    assert (tmp_path / "again" / "distill" / "distilled.jsonl").read_bytes() == \
        (tmp_path / "distill" / "distilled.jsonl").read_bytes()
    assert len(rows) == 8 and {r["domain"] for r in rows} == {"math", "code", "text", "tools"}
    assert (tmp_path / "distill" / "stats.json").exists()
    assert set(stats["domains"]) == {"math", "code", "text", "tools"}
    for r in rows:
        assert r["generated"] and r["n_tokens"] > 0
        assert r["response"] == (r["original_response"] if not r["accepted"] else r["response"])
        assert r["accepted"] or r["reason"] != "ok"
    assert stats["totals"]["tokens_per_s"] and stats["totals"]["tokens_per_s"] > 0
