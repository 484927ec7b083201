"""The domain-invariance probe (probe.py), its runner step, CLI and report section, and the invariance wiring of
training (queues, the chosen layer, the held-out probe batch in the log), on fixed tensors and the tiny model."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from crossdistill import runner
from crossdistill.config import load_config
from crossdistill.probe import (pairwise_mmd_table, pooled_features, probe_accuracy, probe_examples, probe_records,
                                run_probe, stratified_folds)
from crossdistill.report import Report, Text, invariance_section, render_html, render_markdown


def _gauss(n, d=8, shift=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    x[:, 0] += shift
    return x


def test_probe_accuracy_separable_vs_identical():
    y = torch.cat([torch.zeros(100), torch.ones(100)]).long()
    sep = probe_accuracy(torch.cat([_gauss(100, shift=-2, seed=1), _gauss(100, shift=2, seed=2)]), y)
    same = probe_accuracy(torch.cat([_gauss(100, seed=1), _gauss(100, seed=2)]), y)
    assert sep["acc"] > 0.95 and sep["n"] == 200 and sep["ci_low"] <= sep["acc"] <= sep["ci_high"]
    assert abs(same["acc"] - 0.5) < 0.12 and sep["ci_low"] > same["ci_high"]
    # no signal: out-of-fold accuracy averages to chance over independent draws
    # (8 draws: the mean's standard error is ~0.0125, so 0.05 is 4 SE)
    nulls = [probe_accuracy(torch.cat([_gauss(100, seed=1000 + s), _gauss(100, seed=2000 + s)]), y)["acc"]
             for s in range(8)]
    assert abs(sum(nulls) / 8 - 0.5) < 0.05
    # three domains: chance 1/3, each fold holds every class
    y3 = torch.arange(3).repeat_interleave(30)
    folds = stratified_folds(y3, 5)
    assert all(set(y3[folds == f].tolist()) == {0, 1, 2} for f in range(5))


def test_pairwise_mmd_table_zero_for_one_law_grows_with_shift():
    y = torch.cat([torch.zeros(100), torch.ones(100), 2 * torch.ones(100)]).long()
    x = torch.cat([_gauss(100, seed=1), _gauss(100, seed=2), _gauss(100, shift=3, seed=3)])
    t = pairwise_mmd_table(x, y, ["a", "b", "c"])
    assert set(t) == {"a|b", "a|c", "b|c"}
    assert abs(t["a|b"]) < 0.01 and t["a|c"] > 0.1 and t["b|c"] > 0.1


# --- the probe set and features on the tiny model --------------------------------------------------------------------

def _write_sources(tmp_path, n=30):
    for name, word in (("a", "colour"), ("b", "number")):
        with open(tmp_path / f"{name}.jsonl", "w") as f:
            for i in range(n):
                f.write(json.dumps({"id": f"{name}-{i}", "domain": "text",
                                    "prompt": f"Tell me about {word} {i} please.",
                                    "response": f"The {word} {i} is " + " ".join([word] * (3 + i % 4)) + "."}) + "\n")


RECIPE = """
model: tiny-random-llama
output_dir: {out}
domains:
  a: {{source: {d}/a.jsonl, plugin: text, size: 10}}
  b: {{source: {d}/b.jsonl, plugin: text, size: 10}}
train: {{max_steps: 2, batch_size: 4, max_length: 96, lora: {{r: 4, alpha: 8}}}}
probe: {{enabled: true, size: 15, folds: 3, batch_size: 8}}
methods: {{seed: null, cdsdft: {{method: cdsdft}}}}
"""


def _cfg(tmp_path, *over):
    _write_sources(tmp_path)
    p = tmp_path / "r.yaml"
    p.write_text(RECIPE.format(out=tmp_path / "out", d=tmp_path))
    return load_config(p, list(over))


def test_probe_records_are_held_out_and_checked(tmp_path):
    from crossdistill.data import prepare_domain_data

    cfg = _cfg(tmp_path)
    held, overlap = probe_records(cfg)
    train = prepare_domain_data(cfg)
    assert {d: len(v) for d, v in held.items()} == {"a": 15, "b": 15}
    train_ids = {r.id for v in train.values() for r in v}
    assert not train_ids & {r.id for v in held.values() for r in v}
    assert all(o["exact_duplicates"] == 0 and o["eval_records"] == 15 for o in overlap.values())
    # the probe set does not move when the training size changes (it is the other end of the shuffle)
    held2, _ = probe_records(load_config(tmp_path / "r.yaml", ["domains.a.size=12"]))
    assert [r.id for r in held2["a"]] == [r.id for r in held["a"]]
    # only 30 - 25 = 5 held out of domain a: fewer records, still disjoint
    held3, _ = probe_records(load_config(tmp_path / "r.yaml", ["domains.a.size=25"]))
    assert len(held3["a"]) == 5


def test_probe_records_need_two_domains_with_held_out_data(tmp_path):
    from crossdistill.errors import UserError

    cfg = _cfg(tmp_path, "domains.a.size=null")   # domain a trains on its whole source
    with pytest.raises(UserError, match="at least 2 domains"):
        probe_records(cfg)


def test_pooled_features_layers_order_and_pooling(tmp_path, tiny):
    model, tok = tiny
    cfg = _cfg(tmp_path)
    held, _ = probe_records(cfg, size=4)
    ex = probe_examples(held, tok, 96, ["a", "b"])
    f1, y1 = pooled_features(model, ex, None, batch_size=1)
    f4, y4 = pooled_features(model, ex, None, batch_size=3)
    n_layers = model.config.num_hidden_layers
    assert sorted(f1) == list(range(n_layers + 1)) and torch.equal(y1, y4)
    assert y1.tolist() == [e["domain_id"] for e in ex]
    for li in f1:
        assert f1[li].shape == (len(ex), model.config.hidden_size)
        assert torch.allclose(f1[li], f4[li], atol=1e-4)
    # the last layer is the final normed state, mean-pooled over the positions predicting response tokens
    e = ex[0]
    ids = torch.tensor([e["input_ids"]])
    with torch.no_grad():
        h = model.model(input_ids=ids).last_hidden_state[0, :-1]
    sel = torch.tensor(e["labels"][1:]) != -100
    assert torch.allclose(f1[n_layers][0], h[sel].mean(0), atol=1e-5)


def test_run_probe_writes_results_and_the_report_shows_them(tmp_path, tiny):
    model, tok = tiny
    cfg = _cfg(tmp_path)
    out = Path(cfg.output_dir)
    res = run_probe(cfg, "seed", None, out / "probe" / "seed", model=model, tokenizer=tok)
    saved = json.loads((out / "probe" / "seed" / "probe.json").read_text())
    assert saved["layers"] == json.loads(json.dumps(res["layers"]))
    assert saved["chance"] == 0.5 and saved["n_per_domain"] == {"a": 15, "b": 15}
    assert saved["chosen_layer"] == model.config.num_hidden_layers // 2     # default: the middle layer
    chosen = next(r for r in saved["layers"] if r["layer"] == saved["chosen_layer"])
    assert len(saved["chosen_items"]) == 30 and sum(saved["chosen_items"].values()) == chosen["correct"]
    import numpy as np
    with np.load(out / "probe" / "seed" / "features.npz") as z:   # the chosen layer's features, for the MMD test
        assert z["x"].shape == (30, model.config.hidden_size) and z["x"].dtype == np.float16
        assert list(z["ids"]) == list(saved["chosen_items"]) and sorted(set(z["y"].tolist())) == [0, 1]
    for row in saved["layers"]:
        assert 0 <= row["ci_low"] <= row["acc"] <= row["ci_high"] <= 1 and row["n"] == 30
        assert set(row["mmd"]) == {"a|b"}
    page = Report("t", Text(""), [invariance_section(out)])
    text = render_markdown(page)
    assert "## Domain invariance" in text and "| seed | 1 |" in text and "![Domain probe by layer](plots/probe.png)" in text
    assert "<img alt='Domain probe by layer' src='data:image/png;base64," in render_html(page)
    assert invariance_section(tmp_path / "nothing") is None


def test_runner_plans_probe_steps_only_when_enabled(tmp_path):
    cfg = _cfg(tmp_path)
    names = [s.name for s in runner.build_plan(cfg)]
    assert names[names.index("eval/seed") + 1] == "probe/seed" and names[-1] == "probe/cdsdft"
    steps = {s.name: s for s in runner.build_plan(cfg)}
    assert steps["probe/cdsdft"].deps == ["train/cdsdft"]
    # a new training setting reruns the trained method's probe, not the seed's
    steps2 = {s.name: s for s in runner.build_plan(_cfg(tmp_path, "train.lr=0.5"))}
    assert steps2["probe/seed"].key == steps["probe/seed"].key
    assert steps2["probe/cdsdft"].key != steps["probe/cdsdft"].key
    off = [s.name for s in runner.build_plan(_cfg(tmp_path, "probe.enabled=false"))]
    assert not [n for n in off if n.startswith("probe/")]


def test_cli_probe_of_an_untrained_method_is_one_clear_error(tmp_path, capsys):
    from crossdistill.cli import main

    _cfg(tmp_path)
    rc = main(["probe", str(tmp_path / "r.yaml"), "train.method=cdsdft"])
    err = capsys.readouterr().err
    assert rc == 2 and "no trained adapter" in err and "train.method=cdsdft" in err
    assert not (tmp_path / "out" / "probe").exists()


# --- training: queues, the chosen layer, the probe batch in the log -------------------------------------------------

def test_training_logs_queue_term_and_probe_mmd(tmp_path, tiny):
    import copy

    from crossdistill.training import train

    model, tok = tiny
    cfg = _cfg(tmp_path, "train.max_steps=4", "train.inv_probe_every=2", "train.inv_queue_size=6",
               "train.inv_probe_batch=3", "train.lr=0.05")
    rows = []
    for name in ("a", "b"):
        for i in range(10):
            rows.append({"id": f"{name}-t{i}", "domain": name, "prompt": f"Tell me about {name} {i}.",
                         "original_response": f"It is {name} {i}.", "response": f"It is {name} {i} indeed.",
                         "accepted": True})
    distilled = tmp_path / "distilled.jsonl"
    distilled.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "train"
    train(cfg, "cdsdft", str(distilled), str(out), model=copy.deepcopy(model), tokenizer=tok)
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert all(r["inv"] > 0 for r in log)                   # queue + batch: never the single-point constant
    assert [r["step"] for r in log if "inv_probe_mmd" in r] == [1, 2, 4]
    assert all(r["inv_queue"] <= 2 * 6 for r in log) and log[-1]["inv_queue"] == 12
    assert len({round(r["inv"], 8) for r in log}) > 1


def test_probe_examples_cut_long_records_instead_of_dropping_them(tmp_path, tiny):
    _, tok = tiny
    from crossdistill.records import Record

    long_prompt = Record(id="x", domain="text", prompt="word " * 300, response="answer " * 100)
    short = Record(id="y", domain="text", prompt="hi", response="ok then")
    ex = probe_examples({"a": [long_prompt], "b": [short]}, tok, 160, ["a", "b"])
    assert [e["domain_id"] for e in ex] == [0, 1]
    cut, kept = ex
    assert len(cut["input_ids"]) == 160 and sum(1 for x in cut["labels"] if x != -100) == 80
    full = tok(("answer " * 100), add_special_tokens=False)["input_ids"]
    assert [x for x in cut["labels"] if x != -100] == full[:80]          # the response's first tokens
    from crossdistill.training import _chat_prompt_ids

    assert cut["input_ids"][:80] == _chat_prompt_ids(tok, long_prompt.prompt_messages())[-80:]   # the prompt's end
    assert kept["labels"][-1] == tok.eos_token_id and len(kept["input_ids"]) < 160


def test_probe_comparisons_pair_records_and_link_invariance_with_drift(tmp_path):
    """Issue 17's question 4 from probe.json files: paired McNemar between methods at the invariance layer (Holm,
    'lower' = more invariant), and the Spearman correlation of probe accuracy with seed-kl over the trained methods."""
    from crossdistill.statistics import probe_comparisons

    def probe(m, correct):
        d = tmp_path / m
        d.mkdir()
        acc = sum(correct) / len(correct)
        (d / "probe.json").write_text(json.dumps({"chosen_layer": 3, "layers": [
            {"layer": 3, "acc": acc, "ci_low": acc - 0.05, "ci_high": acc + 0.05, "n": len(correct), "mmd_mean": 0.1}],
            "chosen_items": {f"r{i}": int(c) for i, c in enumerate(correct)}}))

    probe("seed", [1] * 40)
    probe("sft", [1] * 38 + [0] * 2)
    probe("cdsdft", [1] * 25 + [0] * 15)
    probe("other", [1] * 30 + [0] * 10)
    scores = [{"method": m, "task": "seed-kl", "metric": "kl", "value": v}
              for m, v in (("seed", 0.0), ("sft", 0.03), ("cdsdft", 0.01), ("other", 0.02))]
    out = probe_comparisons(tmp_path, ["seed", "sft", "cdsdft", "other", "missing"], scores)
    rows = {(r["method"], r["vs"]): r for r in out["probe_deltas"]}
    assert len(rows) == 6 and all(r["family"] == "invariance" for r in rows.values())
    r = rows[("cdsdft", "seed")]
    assert r["test"] == "mcnemar_exact" and r["delta"] == pytest.approx(-15 / 40) and r["verdict"] == "lower"
    assert rows[("sft", "seed")]["verdict"] != "lower"            # 2 discordant records: p = 0.5
    assert out["probe"]["cdsdft"]["acc"] == pytest.approx(25 / 40)
    link = out["probe_vs_forgetting"]
    # accuracies sft 0.95 > other 0.75 > cdsdft 0.625 and seed-kl 0.03 > 0.02 > 0.01: rho = +1, exact p = 2/6
    assert link["methods"] == ["sft", "cdsdft", "other"] and link["rho"] == pytest.approx(1.0)
    assert link["p"] == pytest.approx(1 / 3)


def test_spearman_permutation_by_hand():
    from crossdistill.statistics import spearman_permutation

    assert spearman_permutation([1, 2, 3, 4], [4, 3, 2, 1]) == (pytest.approx(-1.0), pytest.approx(2 / 24))
    rho, p = spearman_permutation([1, 2, 2, 3], [1, 3, 2, 4])          # a tie shares its mean rank
    assert rho == pytest.approx(0.9486833, abs=1e-6) and 0 < p <= 1
    assert spearman_permutation([1, 2], [2, 1]) == (None, None)
    assert spearman_permutation([1, 1, 1], [1, 2, 3]) == (None, None)


def test_probe_comparisons_pool_runs_as_a_stratified_mcnemar(tmp_path):
    """Over several runs (training seeds), a pair is tested on every run's records stacked, each paired within its
    own run: the discordant counts add up (exact stratified McNemar); the accuracy is the mean over the runs."""
    import math

    from crossdistill.statistics import mcnemar_exact, probe_comparisons

    def probe(root, m, correct):
        d = root / m
        d.mkdir(parents=True)
        acc = sum(correct) / len(correct)
        (d / "probe.json").write_text(json.dumps({"chosen_layer": 2, "layers": [
            {"layer": 2, "acc": acc, "ci_low": acc - 0.1, "ci_high": acc + 0.1, "n": len(correct), "mmd_mean": 0.2}],
            "chosen_items": {f"r{i}": int(c) for i, c in enumerate(correct)}}))

    r0, r1 = tmp_path / "s0", tmp_path / "s1"
    probe(r0, "sft", [1] * 20)
    probe(r0, "cdsdft", [1] * 16 + [0] * 4)        # 4 discordant records, all "lower": alone p = 2/16
    probe(r1, "sft", [1] * 20)
    probe(r1, "cdsdft", [1] * 15 + [0] * 5)        # 5 more: stacked 9 of 9 lower, p = 2/2^9
    probe(r1, "only-here", [1] * 20)               # not in every run: not pooled
    alone = probe_comparisons(r0, ["sft", "cdsdft"], [])["probe_deltas"][0]
    assert alone["p"] == pytest.approx(2 / 16) and alone["n"] == 20
    out = probe_comparisons([r0, r1], ["sft", "cdsdft", "only-here"], [])
    assert set(out["probe"]) == {"sft", "cdsdft"}
    (row,) = out["probe_deltas"]
    assert row["n"] == 40 and row["delta"] == pytest.approx(-9 / 40)
    assert row["p"] == pytest.approx(2 / 2 ** 9) == pytest.approx(mcnemar_exact([1] * 9, [0] * 9))
    assert row["verdict"] == "lower" and not math.isclose(row["p"], alone["p"])
    s = out["probe"]["cdsdft"]
    assert s["acc"] == pytest.approx((0.8 + 0.75) / 2) and s["runs"] == 2 and s["n"] == 40
    assert s["per_run"] == [0.8, 0.75] and s["ci_low"] < s["acc"] < s["ci_high"]
    assert out["probe_vs_forgetting"]["runs"] == 2


def test_pool_runs_carries_the_pooled_probe(tmp_path):
    """`crossdistill pool` (statistics.pool_runs) writes the pooled probe rows beside the pooled deltas."""
    from crossdistill.statistics import pool_runs

    for seed, wrong in ((0, 3), (1, 4)):
        run = tmp_path / f"run{seed}"
        for m, correct in (("seed", [1] * 12), ("cdsdft", [1] * (12 - wrong) + [0] * wrong)):
            d = run / "probe" / m
            d.mkdir(parents=True)
            acc = sum(correct) / 12
            (d / "probe.json").write_text(json.dumps({"chosen_layer": 1, "layers": [
                {"layer": 1, "acc": acc, "ci_low": 0.0, "ci_high": 1.0, "n": 12}],
                "chosen_items": {f"r{i}": c for i, c in enumerate(correct)}}))
        (run / "results.json").write_text(json.dumps({"model": "m", "seed": seed, "methods": ["seed", "cdsdft"],
                                                      "scores": [], "deltas": []}))
    pooled = pool_runs([tmp_path / "run0", tmp_path / "run1"])
    (row,) = pooled["probe_deltas"]
    assert (row["method"], row["vs"], row["n"]) == ("cdsdft", "seed", 24)
    assert row["delta"] == pytest.approx(-7 / 24) and row["p"] == pytest.approx(2 / 2 ** 7)


def _features(root, m, x, y, ids=None):
    """probe/<m>/{probe.json, features.npz} as run_probe writes them (mmd_mean from the stored float16 features)."""
    import numpy as np

    from crossdistill.statistics import _sq_dists_np, mmd_mean_from_dists

    d = root / m
    d.mkdir(parents=True)
    x16 = np.asarray(x, dtype=np.float16)
    mmd = mmd_mean_from_dists(_sq_dists_np(x16.astype(np.float64), x16.astype(np.float64)), np.asarray(y))
    (d / "probe.json").write_text(json.dumps({"chosen_layer": 1, "layers": [
        {"layer": 1, "acc": 1.0, "ci_low": 1.0, "ci_high": 1.0, "n": len(y), "mmd_mean": mmd, "mmd": {"a|b": mmd}}],
        "chosen_items": {f"r{i}": 1 for i in range(len(y))}, "folds": 5, "chance": 0.5, "ci": "bootstrap",
        "n_per_domain": {"a": int((np.asarray(y) == 0).sum()), "b": int((np.asarray(y) == 1).sum())}}))
    np.savez_compressed(d / "features.npz", ids=np.array(ids or [f"r{i}" for i in range(len(y))]),
                        y=np.asarray(y, dtype=np.int16), x=x16)


def test_mmd_from_distances_is_the_probe_table_mean():
    """statistics.mmd_mean_from_dists (numpy, what the paired test recomputes under each permutation) gives the
    value probe.pairwise_mmd_table's mean gives on the same features (torch: lower median, unbiased MMD^2)."""
    import numpy as np

    from crossdistill.statistics import _sq_dists_np, mmd_mean_from_dists

    x = torch.cat([_gauss(20, shift=0.0, seed=1), _gauss(21, shift=1.5, seed=2), _gauss(22, shift=-1.0, seed=3)])
    y = torch.tensor([0] * 20 + [1] * 21 + [2] * 22)
    table = pairwise_mmd_table(x, y, ["a", "b", "c"])
    xn = x.double().numpy()
    assert mmd_mean_from_dists(_sq_dists_np(xn, xn), y.numpy()) == pytest.approx(
        sum(table.values()) / 3, rel=1e-5, abs=1e-7)


def test_mmd_permutation_test_detects_collapsed_domains_and_not_noise():
    """Paired swap permutation test of mmd_mean(B) - mmd_mean(A) on fixed features: B with the domains pulled
    together is 'lower' with a small p; a second draw of A's law is not; identical features give delta 0, p 1."""
    import numpy as np

    from crossdistill.statistics import mmd_permutation_test

    y = np.array([0] * 30 + [1] * 30)
    xa = torch.cat([_gauss(30, shift=0.0, seed=4), _gauss(30, shift=2.0, seed=5)]).numpy()
    collapsed = xa.copy()
    collapsed[30:, 0] -= 1.6                       # the second domain moved most of the way onto the first
    same_law = torch.cat([_gauss(30, shift=0.0, seed=6), _gauss(30, shift=2.0, seed=7)]).numpy()
    r = mmd_permutation_test([(xa, collapsed, y)], permutations=400)
    assert r["delta"] < 0 and r["p"] <= 0.01 and r["test"] == "mmd_swap_permutation" and r["n"] == 60
    assert mmd_permutation_test([(xa, same_law, y)], permutations=400)["p"] > 0.05
    ident = mmd_permutation_test([(xa, xa, y)], permutations=50)
    assert ident["delta"] == 0 and ident["p"] == 1.0
    # two runs: the statistic is the mean of the per-run differences
    two = mmd_permutation_test([(xa, collapsed, y), (xa, xa, y)], permutations=50)
    assert two["delta"] == pytest.approx(r["delta"] / 2) and two["runs"] == 2 and two["n"] == 120


def test_probe_comparisons_test_the_mmd_of_invariance_methods_only(tmp_path):
    """With features.npz beside probe.json, each invariance-trained method is tested against every other method on
    the between-domain MMD^2 (paired by record id, Holm over those pairs); pairs of two methods without the term are
    not; the MMD's link with drift is reported beside the accuracy's."""
    import numpy as np

    from crossdistill.statistics import probe_comparisons

    root = tmp_path / "probe"
    y = [0] * 25 + [1] * 25
    base = torch.cat([_gauss(25, shift=0.0, seed=8), _gauss(25, shift=2.5, seed=9)]).numpy()
    pulled = base.copy()
    pulled[25:, 0] -= 2.0
    _features(root, "seed", base, y)
    _features(root, "sft", base + 0.01, y)
    half = base.copy()
    half[25:, 0] -= 0.7
    _features(root, "sdft", half, y)
    # cdsdft's records stored in another order: they are paired by id, not by position
    order = np.arange(50)[::-1]
    _features(root, "cdsdft", pulled[order], [y[i] for i in order], ids=[f"r{i}" for i in order])
    scores = [{"method": m, "task": "seed-kl", "metric": "kl", "value": v}
              for m, v in (("sft", 0.02), ("sdft", 0.10), ("cdsdft", 0.30))]
    out = probe_comparisons(root, ["seed", "sft", "sdft", "cdsdft"], scores, mmd_methods=["cdsdft"])
    mmd = {(r["method"], r["vs"]): r for r in out["probe_deltas"] if r["metric"] == "probe_mmd"}
    assert set(mmd) == {("cdsdft", "seed"), ("cdsdft", "sft"), ("cdsdft", "sdft")}
    assert all(r["family"] == "invariance (MMD)" and r["verdict"] == "lower" and r["p_holm"] < 0.05
               for r in mmd.values())
    expected = out["probe"]["cdsdft"]["mmd_mean"] - out["probe"]["seed"]["mmd_mean"]
    assert mmd[("cdsdft", "seed")]["delta"] == pytest.approx(expected, rel=1e-6)
    assert len([r for r in out["probe_deltas"] if r["metric"] == "probe_acc"]) == 6   # McNemar rows unchanged
    link = out["probe_mmd_vs_forgetting"]
    assert link["probe_metric"] == "probe_mmd" and link["methods"] == ["sft", "sdft", "cdsdft"]
    # MMD^2 sft > sdft > cdsdft, seed-kl sft < sdft < cdsdft: rho = -1, exact p = 2 of 3! orderings
    assert link["rho"] == pytest.approx(-1.0) and link["p"] == pytest.approx(1 / 3)
    assert probe_comparisons(root, ["seed", "sft", "sdft"], scores, mmd_methods=["cdsdft"])[
        "probe_deltas"] == [r for r in probe_comparisons(root, ["seed", "sft", "sdft"], scores)["probe_deltas"]]
    # the report: accuracy rows and MMD rows in their own tables (the MMD has no CI), both links in words
    text = render_markdown(Report("t", Text(""), [invariance_section(tmp_path, results=out)]))
    assert "| cdsdft | seed | " in text and "Between-domain MMD² at the invariance layer" in text
    assert f"| cdsdft | seed | {mmd[('cdsdft', 'seed')]['delta']:+.4f} | 50 |" in text
    assert "Spearman's rho between MMD² and seed-kl is -1.000" in text
