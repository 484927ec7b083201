"""The plan/caching logic and the report, with the stage functions replaced by fast fakes."""
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from crossdistill import runner, statistics
from crossdistill.config import load_config
from crossdistill.errors import UserError
from crossdistill.report import forgetting_matrix, write_report

RECIPE = """
model: tiny-random-llama
output_dir: {out}
domains:
  math: {{source: m.jsonl, eval: [gsm8k]}}
  code: {{source: c.jsonl, eval: [mbpp-heldout]}}
eval: {{tasks: [arc-easy]}}
methods: {{seed: null, sft: {{method: sft}}, cdsdft: {{method: cdsdft}}}}
"""


@pytest.fixture
def fake_stages(monkeypatch):
    calls = []

    def data(cfg):
        calls.append("data")
        (Path(cfg.output_dir) / "data" / "train-math.jsonl").write_text("")

    def distill(cfg):
        calls.append("distill")
        (Path(cfg.output_dir) / "distill" / "distilled.jsonl").write_text("")

    def train(cfg, method):
        calls.append(f"train/{method}")
        d = Path(cfg.output_dir) / "train" / method
        if (d / "adapter" / ".complete").exists():   # as training.py: a complete adapter is not trained again
            return
        (d / "adapter").mkdir(exist_ok=True)
        (d / "adapter" / "adapter_model.safetensors").write_bytes(b"w")
        (d / "adapter" / ".complete").write_text("ok\n")
        with open(d / "log.jsonl", "w") as f:
            for step in range(1, 4):
                f.write(json.dumps({"step": step, "loss": 2.0 / step, "ce": 1.5 / step, "div": 0.1 * step}) + "\n")

    def evaluate(cfg, method, adapter_of, tasks):
        calls.append(f"eval/{method}")
        bonus = {"seed": 0.0, "sft": -0.1, "cdsdft": 0.05}.get(method.split("__")[0], 0.0)
        scores = [{"task": t, "metric": "acc", "value": 0.5 + bonus, "ci_low": 0.4 + bonus, "ci_high": 0.6 + bonus, "n": 10}
                  for t in tasks]
        d = Path(cfg.output_dir) / "eval" / method
        (d / "results.json").write_text(json.dumps({"model": cfg.model, "adapter": adapter_of, "scores": scores,
                                                    "timing": {t: 1.0 for t in tasks}}))

    monkeypatch.setattr(runner, "run_data_step", data)
    monkeypatch.setattr(runner, "run_distill_step", distill)
    monkeypatch.setattr(runner, "run_train_step", train)
    monkeypatch.setattr(runner, "run_eval_step", evaluate)
    return calls


def make_cfg(tmp_path, *overrides):
    p = tmp_path / "r.yaml"
    p.write_text(RECIPE.format(out=tmp_path / "out"))
    return load_config(p, list(overrides))


def test_plan_order_and_dry_run(tmp_path, fake_stages, capsys):
    cfg = make_cfg(tmp_path)
    names = [s.name for s in runner.build_plan(cfg)]
    assert names == ["data", "distill", "eval/seed", "train/sft", "eval/sft", "train/cdsdft", "eval/cdsdft"]
    names = [s.name for s in runner.build_plan(make_cfg(tmp_path, "probe.enabled=true"))]
    assert names == ["data", "distill", "eval/seed", "probe/seed", "train/sft", "eval/sft", "probe/sft",
                     "train/cdsdft", "eval/cdsdft", "probe/cdsdft"]   # a method finishes before the next starts
    status = runner.run(cfg, dry_run=True)
    assert set(status.values()) == {"run"} and fake_stages == []
    assert "train/cdsdft" in capsys.readouterr().out


def test_rerun_skips_and_edit_reruns_only_what_changed(tmp_path, fake_stages):
    cfg = make_cfg(tmp_path)
    runner.run(cfg)
    assert len(fake_stages) == 7
    fake_stages.clear()
    runner.run(cfg)
    assert fake_stages == []  # everything cached
    cfg2 = make_cfg(tmp_path, "methods.cdsdft.beta=0.5")
    runner.run(cfg2)
    assert fake_stages == ["train/cdsdft", "eval/cdsdft"]
    fake_stages.clear()
    runner.run(make_cfg(tmp_path, "methods.cdsdft.beta=0.5", "eval.limit=5"))
    assert fake_stages == ["data", "eval/seed", "eval/sft", "eval/cdsdft"]  # no re-distill, no retraining


def test_a_done_step_whose_weights_are_gone_is_rebuilt_only_when_read(tmp_path, fake_stages, capsys):
    """A step cache carried without the finished methods' adapters (scripts/stash.py): nothing reruns while every
    step that reads them is done; a new eval of one method retrains that method first, under the same key."""
    cfg = make_cfg(tmp_path)
    runner.run(cfg)
    out = Path(cfg.output_dir)
    for m in ("sft", "cdsdft"):   # as scripts/stash.py leaves them: the adapter folder without its weights
        (out / "train" / m / "adapter" / "adapter_model.safetensors").unlink()
    (out / "distill" / "distilled.jsonl").unlink()
    fake_stages.clear()
    summary = runner.run(cfg)
    assert fake_stages == [] and summary["train/sft"] == {"status": "cached"}
    (out / "eval" / "sft" / ".done").unlink()   # e.g. an eval to redo
    summary = runner.run(cfg)
    # the rebuilt train reads the distilled records, so those come back first; cdsdft's adapter stays missing
    assert fake_stages == ["distill", "train/sft", "eval/sft"]
    assert summary["distill"]["status"] == summary["train/sft"]["status"] == "rebuilt"
    assert "train/sft: done, but adapter/*.safetensors is gone; rebuilding it for eval/sft" in capsys.readouterr().out
    assert (out / "train" / "sft" / "adapter" / "adapter_model.safetensors").exists()
    assert not (out / "train" / "cdsdft" / "adapter" / "adapter_model.safetensors").exists()
    assert all(s.status() == "cached" for s in runner.build_plan(cfg))


def test_interrupted_step_resumes_not_restarts(tmp_path, fake_stages):
    cfg = make_cfg(tmp_path)
    runner.run(cfg)
    step = next(s for s in runner.build_plan(cfg) if s.name == "train/sft")
    (step.out / ".done").unlink()           # as if killed before finishing
    (step.out / "checkpoint-marker").write_text("keep me")
    assert step.status() == "resume"
    fake_stages.clear()
    runner.run(cfg)
    assert fake_stages == ["train/sft"]
    assert (step.out / "checkpoint-marker").exists()  # resumed in place, not wiped
    # each start of the step records where it ran: a resumed step lists both machines
    runs = json.loads((step.out / "env.json").read_text())["runs"]
    assert len(runs) == 2
    import torch
    assert runs[-1]["torch"] == torch.__version__
    assert runs[-1]["auto_dtype"] in ("float32", "bfloat16", "float16") and runs[-1]["threads"] >= 1
    assert json.loads((Path(cfg.output_dir) / "data" / "env.json").read_text())["runs"][0]["cpu_bf16"] in (True, False)


def test_results_and_report(tmp_path, fake_stages):
    cfg = make_cfg(tmp_path, "lodo=true")
    runner.run(cfg)
    out = Path(cfg.output_dir)
    res = json.loads((out / "results.json").read_text())
    main = [s for s in res["scores"] if not s.get("left_out_domain")]
    assert {s["method"] for s in main} == {"seed", "sft", "cdsdft"}
    assert {s["task"] for s in main} == {"gsm8k", "mbpp-heldout", "arc-easy"}
    lodo = [s for s in res["scores"] if s.get("left_out_domain")]
    assert {(s["method"], s["left_out_domain"]) for s in lodo} == {(m, d) for m in ("sft", "cdsdft") for d in ("math", "code")}
    assert {s["task"] for s in lodo if s["left_out_domain"] == "math"} == {"gsm8k"}
    methods, tasks, delta = forgetting_matrix(res["scores"])
    assert delta[("sft", "gsm8k")] == pytest.approx(-0.1)
    assert delta[("cdsdft", "arc-easy")] == pytest.approx(0.05)
    md = (out / "report.md").read_text()
    assert "Forgetting matrix" in md and "-0.100" in md and "Leave-one-domain-out" in md
    assert res["missing"] == [] and "Interim" not in md
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2  # deltas + training curves, embedded
    assert (out / "plots" / "deltas.png").stat().st_size > 1000


def test_report_without_results_is_a_user_error(tmp_path):
    from crossdistill.errors import UserError

    with pytest.raises(UserError, match="results.json"):
        write_report(str(tmp_path))


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="chromium not installed (.ci/run installs it)")
def test_report_renders_in_headless_chromium_with_every_image(tmp_path, fake_stages):
    """Looked at as a person would: every <img> in report.html decodes in a real browser."""
    cfg = make_cfg(tmp_path)
    runner.run(cfg)
    page = Path(cfg.output_dir) / "report.html"
    # A tiny script injected at the end reports how many images loaded, into the DOM we dump.
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace(
        "</body>", "<script>window.onload=()=>{const i=[...document.images];document.title="
                   "'IMAGES '+i.filter(x=>x.complete&&x.naturalWidth>0).length+'/'+i.length;}</script></body>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    dom = subprocess.run([_chromium(), *flags, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    assert "<title>IMAGES 2/2</title>" in dom.stdout, dom.stdout[:500] + dom.stderr[-1000:]
    shot = tmp_path / "report.png"
    subprocess.run([_chromium(), *flags, f"--screenshot={shot}", "--window-size=1280,2000", page.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 10_000


def _eval_dir(d: Path, task: str, correct: list[bool], value: float | None = None) -> Path:
    (d / "samples").mkdir(parents=True)
    with open(d / "samples" / f"{task}.jsonl", "w") as f:
        for i, c in enumerate(correct):
            f.write(json.dumps({"id": f"{task}/{i}", "correct": c}) + "\n")
    v = sum(correct) / len(correct) if value is None else value
    (d / "results.json").write_text(json.dumps({"scores": [
        {"task": task, "metric": "acc", "value": v, "ci_low": 0, "ci_high": 1, "n": len(correct)}]}))
    return d


def test_paired_deltas_from_samples(tmp_path):
    seed = _eval_dir(tmp_path / "seed", "arc-easy", [True, False, False, True])
    better = _eval_dir(tmp_path / "sft", "arc-easy", [True, True, False, True])
    (row,) = statistics.paired_deltas(seed, better, method="sft")
    assert row["delta"] == pytest.approx(0.25) and row["n"] == 4 and row["paired"]
    assert row["ci_low"] <= 0.25 <= row["ci_high"]
    assert row["test"] == "mcnemar_exact" and row["p"] == 1.0      # one discordant item
    # a reported value that is not the mean of the samples' field: no paired delta rather than a wrong one
    odd = _eval_dir(tmp_path / "odd", "arc-easy", [True, True, False, True], value=0.6)
    assert statistics.paired_deltas(seed, odd, method="odd") == []


def test_eval_seed_fixes_the_eval_items_across_training_seeds(tmp_path):
    def key(*o):
        return {s.name: s.key for s in runner.build_plan(make_cfg(tmp_path, *o))}

    assert key("seed=0")["eval/seed"] != key("seed=1")["eval/seed"]       # by default the recipe seed picks them
    a, b = key("seed=0", "eval.seed=7"), key("seed=1", "eval.seed=7")
    assert a["eval/seed"] == b["eval/seed"]                                # same items: the seed's scores are reused
    assert a["train/sft"] != b["train/sft"] and a["distill"] != b["distill"]
    assert make_cfg(tmp_path, "seed=1", "eval.seed=7").eval_seed() == 7
    assert make_cfg(tmp_path, "seed=1").eval_seed() == 1


def test_only_selects_whole_step_names(tmp_path, fake_stages):
    p = tmp_path / "r.yaml"
    p.write_text(RECIPE.format(out=tmp_path / "out").replace("sft: {method: sft}", "sft: {method: sft}, sft-paper: {method: sft}"))
    cfg = load_config(p, [])
    runner.run(cfg, only=["data", "train/sft", "eval/seed"])
    assert fake_stages == ["data", "eval/seed", "train/sft"]          # not train/sft-paper
    assert runner._selected("train/sft__lodo-math", "train/sft") and runner._selected("train/cdsdft", "train")
    # "*/sft": every stage's step of one method (and its LODO runs), nothing else
    assert [n for n in ("train/sft", "eval/sft", "probe/sft", "train/sft__lodo-math", "train/sft-paper", "eval/seed",
                        "data", "sft") if runner._selected(n, "*/sft")] == \
        ["train/sft", "eval/sft", "probe/sft", "train/sft__lodo-math"]
    # a typo selects nothing: an error naming --only, before anything runs (it would otherwise look done)
    fake_stages.clear()
    with pytest.raises(UserError, match="'trian/sft' selects no step") as e:
        runner.run(cfg, only=["data", "trian/sft"])
    assert e.value.field == "--only" and fake_stages == []
    plan = runner.describe_plan(cfg, ["*/sft-paper"]).splitlines()
    assert [line.split("]")[0].strip(" [") for line in plan[1:-1]] == \
        ["run" if "sft-paper" in line else "skip" for line in plan[1:-1]]


def test_lodo_for_named_methods_only(tmp_path, fake_stages):
    names = [s.name for s in runner.build_plan(make_cfg(tmp_path, "lodo=[cdsdft]"))]
    lodo = [n for n in names if "__lodo-" in n]
    assert lodo == ["train/cdsdft__lodo-math", "eval/cdsdft__lodo-math",
                    "train/cdsdft__lodo-code", "eval/cdsdft__lodo-code"]
    assert not [n for n in runner.build_plan(make_cfg(tmp_path)) if "__lodo-" in n.name]
    from crossdistill.errors import UserError

    for bad in ("lodo=[seed]", "lodo=[cdsdtf]"):   # the untrained seed model; a typo
        with pytest.raises(UserError, match="not a trained method") as e:
            make_cfg(tmp_path, bad)
        assert e.value.field == "lodo"


def test_lodo_deltas_against_full_method_and_seed(tmp_path):
    cfg = make_cfg(tmp_path, "lodo=[sft]")
    ev = Path(cfg.output_dir) / "eval"
    _eval_dir(ev / "seed", "gsm8k", [True, False, True, False])
    _eval_dir(ev / "sft", "gsm8k", [True, True, True, False])
    _eval_dir(ev / "sft__lodo-math", "gsm8k", [False, False, True, False])
    res = runner.collect_results(cfg)
    rows = {d["vs"]: d for d in res["deltas"] if d.get("left_out_domain") == "math"}
    assert set(rows) == {"sft", "seed"}
    assert rows["sft"]["delta"] == pytest.approx(-0.5) and rows["seed"]["delta"] == pytest.approx(-0.25)
    assert all(r["method"] == "sft" for r in rows.values())
    assert res["lodo_domains"] == ["math"]


def test_lodo_runs_of_two_methods_are_compared_on_the_left_out_domain(tmp_path):
    """Issue 17's question 3: trained without math, does cdsdft do better on math's tasks than sft? A row with
    method cdsdft, vs sft, left_out_domain math, in the lodo family."""
    cfg = make_cfg(tmp_path, "lodo=[sft, cdsdft]")
    ev = Path(cfg.output_dir) / "eval"
    for name, vals in (("seed", [True, False, True, False]), ("sft", [True, True, True, False]),
                       ("cdsdft", [True, True, True, True]), ("sft__lodo-math", [False, False, True, False]),
                       ("cdsdft__lodo-math", [True, False, True, True])):
        _eval_dir(ev / name, "gsm8k", vals)
    res = runner.collect_results(cfg)
    (row,) = [d for d in res["deltas"] if d.get("left_out_domain") == "math" and d["method"] == "cdsdft"
              and d["vs"] == "sft"]
    assert row["delta"] == pytest.approx(0.5) and row["family"] == "lodo" and row["n"] == 4
    from crossdistill.report import write_report

    write_report(cfg.output_dir)
    md = (Path(cfg.output_dir) / "report.md").read_text()
    assert "Two methods both trained without the domain" in md and "| cdsdft | sft | math | gsm8k |" in md


def test_planned_pairs_are_their_own_family_in_results_and_in_the_pool(tmp_path):
    """Recipe `compare`: the rows of a named pair of trained methods are Holm-adjusted among themselves ("planned"),
    every other pair of trained methods stays "ablations"; results.json records the pairs and pooling reuses them."""
    def run(name, seed, sft_vals):
        (tmp_path / name).mkdir()
        cfg = make_cfg(tmp_path / name, f"seed={seed}", "methods.sdft={method: sdft}", "compare=[[sft, cdsdft]]")
        ev = Path(cfg.output_dir) / "eval"
        for m, vals in (("seed", [True, False, True, False]), ("sft", sft_vals), ("sdft", [True, True, False, False]),
                        ("cdsdft", [True, True, True, True])):
            _eval_dir(ev / m, "gsm8k", vals)
        return cfg, runner.collect_results(cfg)

    cfg, res = run("s0", 0, [True, True, True, False])
    assert res["planned"] == [["sft", "cdsdft"]]
    fam = {(d["method"], d["vs"]): d["family"] for d in res["deltas"]}
    assert fam[("cdsdft", "sft")] == "planned"
    assert fam[("sdft", "sft")] == fam[("sdft", "cdsdft")] == "ablations" and fam[("sft", "seed")] == "in-domain gain"
    cfg1, _ = run("s1", 1, [False, True, True, True])
    pooled = statistics.pool_runs([cfg.output_dir, cfg1.output_dir])
    assert pooled["planned"] == [["sft", "cdsdft"]]
    assert {d["family"] for d in pooled["deltas"] if {d["method"], d["vs"]} == {"sft", "cdsdft"}} == {"planned"}


def test_a_new_eval_task_keeps_the_finished_ones(tmp_path, fake_stages):
    """An eval step's folder survives a key change (each task's samples carry their own hash); a train step's not."""
    cfg = make_cfg(tmp_path)
    runner.run(cfg)
    out = Path(cfg.output_dir)
    (out / "eval" / "sft" / "samples").mkdir()
    finished = json.dumps({"id": "arc-easy/0", "correct": True}) + "\n"
    (out / "eval" / "sft" / "samples" / "arc-easy.jsonl").write_text(finished)
    (out / "train" / "sft" / "stale").write_text("from another config")
    fake_stages.clear()
    runner.run(make_cfg(tmp_path, "eval.tasks=[arc-easy,boolq]", "methods.sft.lr=0.5"))
    assert "eval/sft" in fake_stages and "train/sft" in fake_stages and "distill" not in fake_stages
    assert (out / "eval" / "sft" / "samples" / "arc-easy.jsonl").read_text() == finished
    assert not (out / "train" / "sft" / "stale").exists()


def test_a_domains_eval_tasks_do_not_key_its_training(tmp_path):
    def keys(*o):
        return {s.name: s.key for s in runner.build_plan(make_cfg(tmp_path, *o))}

    a, b = keys(), keys("domains.math.eval=[gsm8k,math500]")
    assert a["distill"] == b["distill"] and a["train/sft"] == b["train/sft"]
    assert a["data"] != b["data"] and a["eval/sft"] != b["eval/sft"]     # math500's items are loaded and scored
    assert keys("domains.math.size=3")["distill"] != a["distill"]


def _seed_run(d: Path, seed: int, per_method: dict[str, list[bool]], model="m") -> Path:
    scores = []
    for m, correct in per_method.items():
        _eval_dir(d / "eval" / m, "gsm8k", correct)
        scores.append({"method": m, "task": "gsm8k", "metric": "acc", "value": sum(correct) / len(correct),
                       "ci_low": 0, "ci_high": 1, "n": len(correct)})
    (d / "results.json").write_text(json.dumps({"model": model, "seed": seed, "methods": list(per_method),
                                                "scores": scores}))
    return d


def test_pool_runs_averages_items_over_seeds(tmp_path):
    T, F = True, False
    a = _seed_run(tmp_path / "s0", 0, {"seed": [T, F, F, T], "sft": [T, T, F, T]})
    b = _seed_run(tmp_path / "s1", 1, {"seed": [T, F, F, T], "sft": [F, T, T, T]})
    pooled = statistics.pool_runs([a, b], tmp_path / "pooled" / "results.json")
    assert json.loads((tmp_path / "pooled" / "results.json").read_text()) == json.loads(json.dumps(pooled))
    sft = next(s for s in pooled["scores"] if s["method"] == "sft")
    assert sft["value"] == pytest.approx(0.75) and sft["per_run"] == [0.75, 0.75] and sft["runs"] == 2
    (d,) = pooled["deltas"]
    assert (d["method"], d["vs"]) == ("sft", "seed") and d["delta"] == pytest.approx(0.25)
    assert d["per_run"] == [pytest.approx(0.25), pytest.approx(0.25)] and d["n"] == 4
    assert d["ci_low"] <= 0.25 <= d["ci_high"]
    assert d["hier_ci_low"] <= 0.25 <= d["hier_ci_high"]
    assert d["test"] == "sign_flip_exact" and d["family"] == "forgetting" and d["p_holm"] == d["p"]
    assert d["verdict"] in ("n.s. (Holm)", "not detectable at n")
    assert pooled["seeds"] == [0, 1]


def test_pool_runs_pools_gain_retention(tmp_path):
    """Runs that asked for retention against sft: the pooled rows test the per-item means over the seeds and carry
    a seeds+items CI of the retained fraction; runs that did not ask get none."""
    T, F = True, False
    runs = []
    for k, cd in enumerate(([T] * 30 + [F] * 10, [T] * 29 + [F] * 11)):
        d = _seed_run(tmp_path / f"s{k}", k, {"seed": [F] * 40, "sft": [T] * 30 + [F] * 10, "cdsdft": cd})
        res = json.loads((d / "results.json").read_text())
        res.update(in_domain_tasks=["gsm8k"], retention=[{"method": "cdsdft", "reference": "sft", "share": 0.9,
                                                          "task": "gsm8k"}])
        (d / "results.json").write_text(json.dumps(res))
        runs.append(d)
    pooled = statistics.pool_runs(runs)
    (r,) = pooled["retention"]
    assert (r["method"], r["reference"], r["runs"]) == ("cdsdft", "sft", 2)
    assert r["retained"] == pytest.approx(59 / 60) and r["hier_ci_low"] <= 59 / 60 <= r["hier_ci_high"]
    assert r["family"] == "retention" and r["verdict"] in ("keeps >= 90%", "not detectable at n")
    a = _seed_run(tmp_path / "t0", 0, {"seed": [T, F], "sft": [T, T]})
    b = _seed_run(tmp_path / "t1", 1, {"seed": [T, F], "sft": [T, T]})
    assert statistics.pool_runs([a, b])["retention"] == []


def test_pool_runs_refuses_runs_of_different_models(tmp_path):
    from crossdistill.errors import UserError

    a = _seed_run(tmp_path / "s0", 0, {"seed": [True, False]})
    b = _seed_run(tmp_path / "s1", 1, {"seed": [True, False]}, model="other")
    with pytest.raises(UserError) as e:
        statistics.pool_runs([a, b])
    assert e.value.field == "model" and str(b / "results.json") in str(e.value)
    with pytest.raises(UserError, match="at least two"):
        statistics.pool_runs([a])
    with pytest.raises(UserError, match="no results.json"):
        statistics.pool_runs([a, tmp_path / "missing"])


def test_forgetting_cell_coloured_only_when_holm_significant(tmp_path):
    """4 of 20 items flipped one way: the percentile bootstrap CI excludes 0, the exact McNemar p = 0.125 does not
    reject: no star, no colour. 14 of 40 flipped: significant after Holm, red."""
    from crossdistill.report import write_report

    cfg = make_cfg(tmp_path)
    ev = Path(cfg.output_dir) / "eval"
    _eval_dir(ev / "seed", "arc-easy", [True] * 20 + [True] * 20)
    _eval_dir(ev / "sft", "arc-easy", [False] * 4 + [True] * 36)
    _eval_dir(ev / "cdsdft", "arc-easy", [False] * 14 + [True] * 26)
    res = runner.collect_results(cfg)
    rows = {d["method"]: d for d in res["deltas"] if d["vs"] == "seed"}
    assert rows["sft"]["ci_high"] < 0 and rows["sft"]["p"] == pytest.approx(0.125)
    assert rows["sft"]["verdict"] != "worse" and rows["cdsdft"]["verdict"] == "worse"
    assert rows["cdsdft"]["family"] == "forgetting" and rows["cdsdft"]["p_holm"] == pytest.approx(2 * rows["cdsdft"]["p"])
    write_report(cfg.output_dir)
    page = (Path(cfg.output_dir) / "report.html").read_text()
    cells = re.findall(r"<td style='background:([^']*)'>([^<]*)</td>", page)
    by_delta = {txt.split()[0]: bg for bg, txt in cells}
    assert by_delta["-0.100"] == "transparent" and by_delta["-0.350"].startswith("rgba(215,58,73")
    md = (Path(cfg.output_dir) / "report.md").read_text()
    assert "## Tasks" in md and "MDE" in md


def test_full_finetune_trains_then_evaluates_and_probes_as_its_own_model(tmp_path, monkeypatch):
    """`full_finetune: true` saves the whole model in train/<m>/adapter: the eval and probe steps load that folder
    as the model (not as a PEFT adapter), and seed-kl compares it with the recipe's model. The real stages on the
    tiny model, distill reading the data step's files."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_crash_resume import write_tiny_project

    monkeypatch.setenv("CROSSDISTILL_CACHE", str(tmp_path / "cache"))
    recipe = write_tiny_project(tmp_path / "p")
    recipe.write_text(recipe.read_text().replace("cdsdft: {method: cdsdft}", "full: {method: sft, full_finetune: true}"))
    cfg = load_config(recipe, ["distill.enabled=false", "train.max_steps=2", "domains.math.size=6",
                               "domains.code.size=6", "probe.enabled=true", "probe.size=4", "probe.max_length=48",
                               "eval.limit=4",
                               f"eval.tasks=[{tmp_path / 'p' / 'mc.yaml'}, seed-kl@3]", "eval.max_new_tokens=8"])
    summary = runner.run(cfg)
    assert summary["eval/full"]["status"] == "run" and summary["probe/full"]["status"] == "run"
    out = Path(cfg.output_dir)
    folder = out / "train" / "full" / "adapter"
    assert (folder / "config.json").exists() and not (folder / "adapter_config.json").exists()
    res = json.loads((out / "eval" / "full" / "results.json").read_text())
    assert res["model"] == str(folder) and res["adapter"] is None
    kl = {s["task"]: s["value"] for s in res["scores"] if s["metric"] == "kl"}
    seed_kl = {s["task"]: s["value"] for s in json.loads((out / "eval" / "seed" / "results.json").read_text())["scores"]
               if s["metric"] == "kl"}
    assert kl["seed-kl"] > 1e-6 and abs(seed_kl["seed-kl"]) < 1e-6   # the trained model is not compared with itself
    assert json.loads((out / "probe" / "full" / "probe.json").read_text())["layers"]
    # the distill stage read the data step's records
    rows = [json.loads(x) for x in (out / "distill" / "distilled.jsonl").read_text().splitlines()]
    data_ids = [json.loads(x)["id"] for d in ("math", "code")
                for x in (out / "data" / f"train-{d}.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == data_ids
    # per-item scores keyed by metric name: every unweighted metric gets paired deltas vs the seed
    full_vs_seed = {(d["task"], d["metric"]) for d in json.loads((out / "results.json").read_text())["deltas"]
                    if d["method"] == "full" and d["vs"] == "seed"}
    assert {("tiny-mc", "acc"), ("tiny-mc", "acc_norm"), ("tiny-mc", "margin"), ("seed-kl", "kl")} <= full_vs_seed


def test_distill_step_makes_the_data_it_reads_first(tmp_path, monkeypatch):
    """`--only distill` on a fresh or edited recipe: the data step runs first, never a stale data/ folder read."""
    import crossdistill.distill as D

    calls = []
    monkeypatch.setattr(runner, "run_data_step", lambda cfg: calls.append("data"))
    monkeypatch.setattr(D, "distill", lambda cfg: calls.append("distill"))
    cfg = make_cfg(tmp_path)
    runner.run(cfg, only=["distill"])
    assert calls == ["data", "distill"]
    runner.run(make_cfg(tmp_path, "seed=3"), only=["distill"])   # new data key: data again, then distill
    assert calls == ["data", "distill", "data", "distill"]


def test_gain_retention_rows_and_report_section(tmp_path):
    """`retention: {reference: sft}`: the in-domain task gets a row per other trained method, Holm-adjusted, and the
    report a "Gain retention" section; without a reference there are no rows. A reference that is not a trained
    method is an error naming the field."""
    from crossdistill.errors import UserError
    from crossdistill.report import write_report

    cfg = make_cfg(tmp_path, "retention.reference=sft")
    ev = Path(cfg.output_dir) / "eval"
    _eval_dir(ev / "seed", "gsm8k", [False] * 40)
    _eval_dir(ev / "sft", "gsm8k", [True] * 20 + [False] * 20)          # gains 0.5
    _eval_dir(ev / "cdsdft", "gsm8k", [True] * 20 + [False] * 20)       # keeps all of it
    res = runner.collect_results(cfg)
    (row,) = res["retention"]
    assert row["method"] == "cdsdft" and row["reference"] == "sft" and row["task"] == "gsm8k"
    assert row["retained"] == pytest.approx(1.0) and row["verdict"] == "keeps >= 90%"
    write_report(cfg.output_dir)
    assert "## Gain retention" in (Path(cfg.output_dir) / "report.md").read_text()
    assert runner.collect_results(make_cfg(tmp_path))["retention"] == []
    with pytest.raises(UserError, match="retention.reference"):
        make_cfg(tmp_path, "retention.reference=seed")


def test_only_report_builds_an_interim_report_from_the_finished_evals(tmp_path, fake_stages):
    cfg = make_cfg(tmp_path, "lodo=[sft]")
    runner.run(cfg, only=["data", "distill", "*/seed", "*/sft"])     # cdsdft and sft's code LODO run not yet
    out = Path(cfg.output_dir)
    shutil.rmtree(out / "eval" / "sft__lodo-code")
    fake_stages.clear()
    runner.run(cfg, only=["report"])                                  # runs no step, rebuilds the report
    assert fake_stages == []
    res = json.loads((out / "results.json").read_text())
    assert res["methods"] == ["seed", "sft"] and res["missing"] == ["cdsdft", "sft__lodo-code"]
    assert {s["method"] for s in res["scores"]} == {"seed", "sft"}
    md = (out / "report.md").read_text()
    assert "Interim: no eval results yet for cdsdft, sft__lodo-code" in md and "2 finished methods only" in md
    assert "Interim: no eval results yet" in (out / "report.html").read_text()


def test_inv_grad_keys_only_the_methods_with_an_invariance_term(tmp_path):
    """train.inv_grad changes what cdsdft trains, so its key; sft has no L_inv, and its key (and cached run) stay."""
    def key(*o):
        return {s.name: s.key for s in runner.build_plan(make_cfg(tmp_path, *o))}

    a, b = key(), key("train.inv_grad=batch")
    assert a["train/sft"] == b["train/sft"] and a["eval/sft"] == b["eval/sft"]
    assert a["train/cdsdft"] != b["train/cdsdft"]
    with pytest.raises(UserError, match="must be one of") as e:
        make_cfg(tmp_path, "train.inv_grad=rows")
    assert e.value.field == "train.inv_grad"


def test_tradeoff_points_put_gain_up_and_drift_right():
    """The gain-vs-drift plot's data on fixed rows: y is the in-domain change signed so that up is better (a bpb
    that falls is a gain), its CI flipped with it; x is the drift row's delta; 'decided' only from the verdict; a
    method without a drift row, the seed, LODO rows and non-primary metrics stay out."""
    from crossdistill.report import plot_tradeoff, tradeoff_points

    def row(method, task, metric, delta, lo, hi, verdict, vs="seed", **kw):
        return {"method": method, "vs": vs, "task": task, "metric": metric, "delta": delta, "ci_low": lo,
                "ci_high": hi, "n": 100, "verdict": verdict, **kw}

    scores = [{"method": m, "task": t, "metric": k, "value": 0.5, "n": 100}
              for m in ("seed", "sft", "cdsdft", "sdft") for t, k in (("gsm8k-nll", "bpb"), ("gsm8k", "exact_match"),
                                                                      ("seed-kl", "kl"))]
    res = {"methods": ["seed", "sft", "cdsdft", "sdft"], "scores": scores, "in_domain_tasks": ["gsm8k-nll", "gsm8k"],
           "deltas": [row("sft", "gsm8k-nll", "bpb", -0.13, -0.14, -0.12, "better"),
                      row("sft", "seed-kl", "kl", 0.08, 0.07, 0.09, "worse"),
                      row("cdsdft", "gsm8k-nll", "bpb", 0.10, 0.09, 0.11, "worse"),
                      row("cdsdft", "seed-kl", "kl", 0.38, 0.36, 0.40, "worse"),
                      row("cdsdft", "gsm8k", "exact_match", -0.01, -0.03, 0.02, "not detectable at n"),
                      row("cdsdft", "gsm8k-nll", "bpb", 9.0, 8.0, 10.0, "worse", left_out_domain="math"),
                      row("cdsdft", "gsm8k-nll", "bpb", 7.0, 6.0, 8.0, "worse", vs="sft"),
                      row("sdft", "gsm8k-nll", "bpb", -0.1, -0.11, -0.09, "better")]}   # no seed-kl row
    pts = tradeoff_points(res)
    assert list(pts) == ["gsm8k-nll (bpb)", "gsm8k (exact_match)"]
    by = {p["method"]: p for p in pts["gsm8k-nll (bpb)"]}
    assert set(by) == {"sft", "cdsdft"}
    assert by["sft"]["y"] == pytest.approx(0.13) and (by["sft"]["y_lo"], by["sft"]["y_hi"]) == pytest.approx((0.12, 0.14))
    assert by["sft"]["x"] == 0.08 and by["sft"]["decided"]
    assert by["cdsdft"]["y"] == pytest.approx(-0.10) and by["cdsdft"]["x"] == 0.38
    assert [p["decided"] for p in pts["gsm8k (exact_match)"]] == [False]
    png = plot_tradeoff(pts)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert tradeoff_points({**res, "deltas": [d for d in res["deltas"] if d["task"] != "seed-kl"]}) == {}
    assert plot_tradeoff({}) is None
