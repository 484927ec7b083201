"""scripts/results_md.py reads verdicts from the Holm-adjusted tests, never from a CI alone."""
import json
from pathlib import Path

from scripts_loader import load_script


def _load():
    return load_script("results_md")


def test_verdicts_are_the_adjusted_ones(tmp_path):
    scores = [{"method": m, "task": "arc-easy", "metric": "acc", "value": v, "ci_low": 0, "ci_high": 1, "n": 20}
              for m, v in (("seed", 0.5), ("sft", 0.3), ("sdft", 0.5))]
    deltas = [
        # the bootstrap CI excludes 0, the exact McNemar test after Holm does not: not a "worse"
        {"method": "sft", "vs": "seed", "task": "arc-easy", "metric": "acc", "delta": -0.2, "ci_low": -0.4,
         "ci_high": -0.05, "n": 20, "test": "mcnemar_exact", "p": 0.125, "p_holm": 0.25, "mde": 0.3,
         "family": "forgetting", "verdict": "not detectable at n"},
        {"method": "sdft", "vs": "sft", "task": "arc-easy", "metric": "acc", "delta": 0.2, "ci_low": 0.05,
         "ci_high": 0.4, "n": 20},   # written before the tests existed
    ]
    d = tmp_path / "results" / "m" / "seed0"
    d.mkdir(parents=True)
    (d / "results.json").write_text(json.dumps({"model": "m", "seed": 0, "methods": ["seed", "sft", "sdft"],
                                                "scores": scores, "deltas": deltas}))
    out = tmp_path / "R.md"
    _load().main(["--results", str(tmp_path / "results"), "--out", str(out), "--preamble", "none",
                  "--conclusions", "none"])
    md = out.read_text()
    row = next(line for line in md.splitlines() if line.startswith("| sft − seed | arc-easy"))
    assert row.endswith("| not detectable at n |") and "| 0.25 |" in row and "mcnemar_exact" in row
    old = next(line for line in md.splitlines() if line.startswith("| sdft − sft | arc-easy"))
    assert old.endswith("| untested |")            # its CI excludes 0, but no test was stored


def test_the_experiments_questions_come_from_the_adjusted_rows():
    """Issue 17: each question's lines quote the stored verdicts, effects and CIs; a row below its MDE reads "not
    detectable at n"; a pair stored the other way round is negated; at-chance and in-domain tasks stay out of the
    forgetting question."""
    mod = _load()

    def row(method, vs, task, metric, delta, verdict, p_holm, mde=0.001, left=None):
        r = {"method": method, "vs": vs, "task": task, "metric": metric, "delta": delta, "ci_low": delta - 0.001,
             "ci_high": delta + 0.001, "n": 294, "test": "sign_flip_mc", "p": p_holm / 2, "p_holm": p_holm,
             "mde": mde, "verdict": verdict}
        return {**r, "left_out_domain": left} if left else r

    methods = ["seed", "sft", "sdft", "cdsdft", "+kl"]
    scores = [{"method": m, "task": t, "metric": k, "value": 0.5, "ci_low": 0, "ci_high": 1, "n": 294}
              for m in methods for t, k in (("seed-kl", "kl"), ("wiki-nll", "bpb"), ("gsm8k", "exact_match"),
                                            ("mmlu", "acc"))]
    res = {"methods": methods, "scores": scores, "in_domain_tasks": ["gsm8k"], "at_chance": {"mmlu": "seed at chance"},
           "deltas": [row("cdsdft", "sft", "seed-kl", "kl", -0.004, "better", 0.003),
                      row("cdsdft", "sft", "wiki-nll", "bpb", 0.0002, "not detectable at n", 0.6, mde=0.003),
                      row("cdsdft", "sft", "mmlu", "acc", -0.1, "worse", 0.001),
                      row("+kl", "cdsdft", "gsm8k", "exact_match", -0.05, "worse", 0.01),   # stored the other way
                      row("cdsdft", "sft", "gsm8k", "exact_match", 0.02, "n.s. (Holm)", 0.2, left="math")],
           "retention": [{"method": "cdsdft", "reference": "sft", "task": "gsm8k", "metric": "exact_match", "n": 200,
                          "share": 0.9, "gain_method": 0.04, "gain_reference": 0.05, "retained": 0.8,
                          "retained_ci_low": 0.5, "retained_ci_high": 1.1, "p": 0.3, "p_holm": 0.6,
                          "verdict": "not detectable at n"}]}
    res["probe_deltas"] = [{"method": "cdsdft", "vs": "seed", "delta": -0.2, "ci_low": -0.3, "ci_high": -0.1, "n": 400,
                            "p": 0.001, "p_holm": 0.004, "mde": 0.05, "verdict": "lower"}]
    res["probe_deltas"].append({"method": "cdsdft", "vs": "sft", "task": "probe", "metric": "probe_mmd",
                                "delta": -0.09, "ci_low": None, "ci_high": None, "n": 300, "p": 0.0005,
                                "p_holm": 0.001, "mde": None, "verdict": "lower"})
    res["probe_deltas"].append({"method": "sdft", "vs": "cdsdft", "task": "probe", "metric": "probe_mmd",
                                "delta": 0.095, "ci_low": None, "ci_high": None, "n": 300, "p": 0.0005,
                                "p_holm": 0.001, "mde": None, "verdict": "higher"})   # stored in plan order
    res["probe"] = {"seed": {"acc": 0.99, "ci_low": 0.977, "ci_high": 1.0, "mmd_mean": 0.2713, "chance": 1 / 3},
                    "cdsdft": {"acc": 0.99, "ci_low": 0.977, "ci_high": 1.0, "mmd_mean": 0.1801, "chance": 1 / 3}}
    res["probe_vs_forgetting"] = {"forgetting_task": "seed-kl", "n": 9, "rho": 0.7, "p": 0.04}
    res["probe_mmd_vs_forgetting"] = {"forgetting_task": "seed-kl", "n": 2, "rho": None, "p": None}
    md = "\n".join(mod.questions_section(res))
    assert ("probe accuracy (95% CI) and MMD² per method: seed 0.990 [0.977, 1.000], MMD² 0.2713; cdsdft 0.990 "
            "[0.977, 1.000], MMD² 0.1801 (chance 0.333)") in md
    assert "cdsdft − sft, MMD²: **lower**: -0.0900, n = 300, p_Holm 0.001" in md     # a set statistic: no CI
    assert "cdsdft − sdft, MMD²: **lower**: -0.0950, n = 300, p_Holm 0.001" in md    # read negated
    assert "rho(MMD², seed-kl): not computed (2 trained methods; it needs 3 with distinct values)" in md
    assert "cdsdft − seed, probe accuracy: **lower**: -0.2000 [-0.3000, -0.1000], n = 400, p_Holm 0.004" in md
    assert "across 9 trained methods, Spearman rho(probe accuracy, seed-kl) = +0.700, permutation p = 0.04" in md
    assert "cdsdft − sft, seed-kl (kl): **better**: -0.0040 [-0.0050, -0.0030], n = 294, p_Holm 0.003" in md
    assert "cdsdft − sft, wiki-nll (bpb): not detectable at n = 294 (MDE 0.0030;" in md
    same = {**row("cdsdft", "sft", "refusal", "refusal_rate", 0.0, "not detectable at n", 1.0, mde=0.0),
            "ci_low": 0.0, "ci_high": 0.0}
    assert mod._says(same) == "no item differs (n = 294: both score the same on every item)"
    assert "mmlu" not in md.split("3. **")[0].split("2. **")[1]          # at chance: not a forgetting claim
    assert "cdsdft vs sft, gsm8k (exact_match): retained 0.80 [0.50, 1.10]" in md and "**not detectable at n**" in md
    assert "without math: cdsdft − sft, gsm8k (exact_match): n.s. (Holm)" in md
    assert "cdsdft − +kl, gsm8k (exact_match): **better**: +0.0500 [+0.0490, +0.0510]" in md
    assert mod.questions_section({"methods": ["seed", "sft"], "scores": scores}) == []
    # the beta arm: question 4 reads its forgetting rows (beta 0 -> 1 -> 5) and names the planned family
    res["methods"].append("cdsdft-b1")
    res["deltas"].append(row("cdsdft-b1", "+kl", "seed-kl", "kl", 0.03, "worse", 0.002))
    res["planned"] = [["+kl", "cdsdft-b1"], ["cdsdft-b1", "cdsdft"]]
    md = "\n".join(mod.questions_section(res))
    q4 = md.split("4. **")[1].split("5. **")[0]
    assert "cdsdft-b1 − +kl, seed-kl (kl): **worse**: +0.0300 [+0.0290, +0.0310], n = 294, p_Holm 0.002" in q4
    assert "recipe's 2 planned comparisons (`compare`: cdsdft-b1 − +kl, cdsdft − cdsdft-b1)" in md


def test_experiment_and_pilot_of_one_model_are_separate_groups(tmp_path):
    """results/<model>/experiment/... (issue 17) and results/<model>/seedN (the pilot) share a model name: each
    group gets its own section and its own pooled table, the experiment first."""
    def run(folder, seed, value, pooled=False):
        folder.mkdir(parents=True)
        scores = [{"method": m, "task": "arc-easy", "metric": "acc", "value": v, "ci_low": 0, "ci_high": 1, "n": 20}
                  for m, v in (("seed", 0.5), ("sft", value))]
        res = {"model": "m", "seed": seed, "methods": ["seed", "sft"], "scores": scores, "deltas": []}
        if pooled:
            res.update({"pooled_runs": ["a", "b"], "seeds": [0, 1]})
            for x in scores:
                x["per_run"] = [x["value"] - 0.005, x["value"] + 0.005]
        (folder / "results.json").write_text(json.dumps(res))

    root = tmp_path / "results"
    run(root / "m" / "seed0", 0, 0.11)
    run(root / "m" / "seed1", 1, 0.12)
    run(root / "m" / "experiment" / "seed0", 0, 0.21)
    run(root / "m" / "experiment" / "seed1", 1, 0.22)
    run(root / "m" / "experiment" / "pooled", None, 0.215, pooled=True)
    out = tmp_path / "R.md"
    _load().main(["--results", str(root), "--out", str(out), "--preamble", "none", "--conclusions", "none"])
    md = out.read_text()
    heads = [line for line in md.splitlines() if line.startswith("## ") and "Conclusions" not in line]
    assert heads == [f"## m — issue 17's experiment (`{root / 'm' / 'experiment'}`)",
                     f"## m — the CPU pilot (`{root / 'm'}`)"]
    exp, pilot = md.split(heads[1])
    assert "0.210" in exp and "0.110" not in exp and "0.110" in pilot and "0.210" not in pilot
    assert "Pooled over training seeds 0, 1" in exp and "Pooled" not in pilot
    assert "Across training seeds" in pilot                       # the pilot has no pooled file: per-seed table


def test_an_interim_run_says_so_and_what_is_missing(tmp_path):
    """A run still going (`crossdistill run --only report`: results.json 'missing') is published with an Interim line
    naming what has no results, and its unfinished LODO runs are 'not finished yet', not 'not run'."""
    scores = [{"method": m, "task": "arc-easy", "metric": "acc", "value": 0.5, "ci_low": 0, "ci_high": 1, "n": 20}
              for m in ("seed", "sft")]
    d = tmp_path / "results" / "m" / "experiment" / "seed0"
    d.mkdir(parents=True)
    base = {"model": "m", "seed": 0, "methods": ["seed", "sft"], "scores": scores, "deltas": []}
    out = tmp_path / "R.md"
    args = ["--results", str(tmp_path / "results"), "--out", str(out), "--preamble", "none", "--conclusions", "none"]
    (d / "results.json").write_text(json.dumps({**base, "missing": ["cdsdft", "sft__lodo-math"]}))
    _load().main(args)
    md = out.read_text()
    assert "**Interim: no eval results yet for cdsdft, sft__lodo-math.** Every comparison and Holm's adjustment " \
           "below covers the 2 finished methods only." in md
    assert "Not finished yet in this run" in md and "Not run for this model" not in md
    assert "tradeoff.png" not in md
    (d / "results.json").write_text(json.dumps(base))   # finished, no LODO in the recipe
    (d / "plots").mkdir()
    (d / "plots" / "tradeoff.png").write_bytes(b"\x89PNG")   # the report drew the gain-vs-drift plot
    _load().main(args)
    md = out.read_text()
    assert "Interim" not in md and "Not run for this model" in md
    assert f"![In-domain gain vs drift from the seed]({d}/plots/tradeoff.png)" in md


def test_every_trained_domains_task_of_the_experiment_is_in_the_in_domain_table(tmp_path):
    tasks = ["gsm8k", "gsm8k-nll", "mbpp-heldout", "humaneval", "alpaca-heldout-nll", "ifbench", "glaive-heldout",
             "bfcl-simple"]   # the domains' eval tasks of recipes/experiment-smollm2.yaml
    scores = [{"method": m, "task": t, "metric": "acc", "value": 0.5, "ci_low": 0, "ci_high": 1, "n": 20}
              for m in ("seed", "sft") for t in tasks]
    deltas = [{"method": "sft", "vs": "seed", "task": t, "metric": "acc", "delta": 0.1, "ci_low": 0.0, "ci_high": 0.2,
               "n": 20, "test": "mcnemar_exact", "p": 0.5, "p_holm": 1.0, "mde": 0.3, "family": "in-domain gain",
               "verdict": "not detectable at n"} for t in tasks]
    d = tmp_path / "results" / "m" / "seed0"
    d.mkdir(parents=True)
    (d / "results.json").write_text(json.dumps({"model": "m", "seed": 0, "methods": ["seed", "sft"],
                                                "scores": scores, "deltas": deltas}))
    out = tmp_path / "R.md"
    _load().main(["--results", str(tmp_path / "results"), "--out", str(out), "--preamble", "none",
                  "--conclusions", "none"])
    table = out.read_text().split("### In-domain gain kept")[1].split("###")[0]
    assert {t for t in tasks if f"| sft − seed | {t} |" in table} == set(tasks)


def test_the_short_conclusions_count_the_adjusted_verdicts(tmp_path):
    """Issue 17's conclusions: one line per question and arm, its answer word from the adjusted verdicts only (a CI
    that excludes 0 without a Holm-significant test does not count), the pooled results first and the seed-0 run for
    what they lack (the chain), and a 'no results yet' line for a question nothing answers."""
    mod = _load()

    def row(method, vs, task, metric, delta, verdict, mde=0.01, n=300):
        return {"method": method, "vs": vs, "task": task, "metric": metric, "delta": delta, "ci_low": delta - 0.01,
                "ci_high": delta + 0.01, "n": n, "p": 0.001, "p_holm": 0.002 if verdict in ("better", "worse") else
                0.5, "mde": mde, "verdict": verdict}

    tasks = (("gsm8k-nll", "bpb"), ("seed-kl", "kl"), ("arc-easy", "acc"), ("mmlu", "acc"))
    scores = [{"method": m, "task": t, "metric": k, "value": 0.5, "ci_low": 0, "ci_high": 1, "n": 300}
              for m in ("seed", "sft", "sdft", "cdsdft", "+kl") for t, k in tasks]
    base = {"in_domain_tasks": ["gsm8k-nll"], "at_chance": {"mmlu": "seed at chance"}, "scores": scores}
    pooled = {**base, "pooled_runs": ["a", "b", "c"], "seeds": [0, 1, 2], "methods": ["seed", "sft", "sdft", "cdsdft"],
              "deltas": [row("cdsdft", "sft", "seed-kl", "kl", 0.3, "worse"),
                         # CI excludes 0 but the adjusted test does not decide: not a verdict
                         row("cdsdft", "sft", "arc-easy", "acc", -0.03, "not detectable at n", mde=0.045, n=500),
                         row("cdsdft", "sft", "mmlu", "acc", -0.2, "worse"),          # at chance: left out
                         row("sdft", "cdsdft", "seed-kl", "kl", -0.1, "better"),       # stored the other way round
                         row("sdft", "cdsdft", "arc-easy", "acc", 0.0, "not detectable at n", mde=0.0)],
              "retention": [{"method": "cdsdft", "reference": "sft", "task": "gsm8k-nll", "metric": "bpb", "n": 500,
                             "share": 0.9, "retained": -0.75, "retained_ci_low": -0.85, "retained_ci_high": -0.65,
                             "p_holm": 1e-9, "verdict": "keeps < 90%"},
                            {"method": "cdsdft", "reference": "sft", "task": "gsm8k", "metric": "exact_match",
                             "n": 200, "share": 0.9, "retained": None, "p_holm": 1.0,
                             "verdict": "reference did not gain"}]}
    seed0 = {**base, "seed": 0, "methods": ["seed", "sft", "sdft", "cdsdft", "+kl"], "missing": ["sft__lodo-math"],
             "deltas": [row("+kl", "cdsdft", "gsm8k-nll", "bpb", -0.19, "better"),
                        row("+kl", "cdsdft", "seed-kl", "kl", -0.34, "better"),
                        row("cdsdft", "sft", "seed-kl", "kl", 9.9, "worse")]}   # the pooled row wins over this
    # the probe: each arm from the first source that probed it; the link to forgetting where it was computed
    pooled["probe"] = {"seed": {"acc": 0.99, "mmd_mean": 0.27, "chance": 1 / 3},
                       "cdsdft": {"acc": 0.995, "mmd_mean": 0.18, "chance": 1 / 3}}
    pooled["probe_deltas"] = [{"method": "cdsdft", "vs": "seed", "metric": "probe_mmd", "delta": -0.09, "n": 600,
                               "p_holm": 0.001, "mde": None, "verdict": "lower"}]
    seed0["probe"] = {"seed": {"acc": 0.99, "ci_low": 0.97, "ci_high": 1.0, "mmd_mean": 0.27},
                      "cdsdft-onpolicy": {"acc": 0.98, "ci_low": 0.96, "ci_high": 0.99, "mmd_mean": 0.19}}
    seed0["probe_mmd_vs_forgetting"] = {"forgetting_task": "seed-kl", "n": 6, "rho": -0.43, "p": 0.42}
    lines = mod.conclusions_lines(pooled, seed0)
    text = "\n".join(lines)
    assert ("4. Invariance, cdsdft vs seed (pooled over training seeds 0, 1, 2): probe accuracy 0.990 → 0.995, MMD² "
            "0.270 → 0.180 (chance 0.33); MMD² lower (-0.090, n = 600, p_Holm 0.001)") in lines
    assert "4. Invariance, cdsdft-onpolicy vs seed (training seed 0): probe accuracy 0.990 → 0.980, MMD² 0.270 → " \
           "0.190" in lines
    assert ("4. Invariance and forgetting (training seed 0): across 6 trained methods, Spearman rho(MMD², seed-kl) "
            "= -0.43, permutation p = 0.42 (not detectable at 6 methods)") in lines
    assert ("1. In-domain, cdsdft vs rank-matched SFT (pooled over training seeds 0, 1, 2): **no** (fraction of "
            "SFT's gain retained): keeps < 90% on gsm8k-nll -0.75 [-0.85, -0.65]; the reference gained nothing "
            "detectable on gsm8k (nothing to keep)") in lines
    assert ("2. Forgetting, cdsdft − sft (pooled over training seeds 0, 1, 2): **more drift**: seed-kl +0.300 "
            "[+0.290, +0.310]; not detectable on arc-easy (n = 500, MDE 0.045)") in lines
    assert "mmlu" not in text and "9.9" not in text
    # a pair that differs on no item names the score both share, and says when it is the seed model's own (a floor)
    assert ("2. Forgetting, cdsdft − sdft (pooled over training seeds 0, 1, 2): **more drift**: seed-kl +0.100 "
            "[+0.090, +0.110]; no item differs on arc-easy (both 0.500, the seed model's score)") in lines
    off_seed = {**pooled, "scores": [{**s, "value": 0.25} if (s["method"], s["task"]) == ("seed", "arc-easy") else s
                                     for s in scores]}
    # the beta-1 CD-SDFT arm is asked question 2 as well
    b1 = {**pooled, "deltas": pooled["deltas"] + [row("cdsdft-b1", "sft", "seed-kl", "kl", -0.02, "better")]}
    assert ("2. Forgetting, cdsdft-b1 − sft (pooled over training seeds 0, 1, 2): **less drift**: seed-kl -0.020 "
            "[-0.030, -0.010]") in mod.conclusions_lines(b1, seed0)
    assert "no item differs on arc-easy (both 0.500)" in mod._pair_summary(
        off_seed, mod.primary(scores), "sdft", "cdsdft", ["seed-kl", "arc-easy"], "drift")
    assert ("5. Ingredient, cdsdft − +kl (training seed 0): **worse**: gsm8k-nll +0.190 [+0.180, +0.200], seed-kl "
            "+0.340 [+0.330, +0.350]") in lines
    assert "3. Leave-one-domain-out: no results yet (its methods have not finished)" in lines
    assert [line.split(".")[0] for line in lines] == sorted(line.split(".")[0] for line in lines)
    # both directions: 'mixed', each list named; nothing decided: 'not detectable at n'
    seed0["deltas"] = [row("cdsdft", "sdft", "gsm8k-nll", "bpb", -0.02, "better"),
                       row("cdsdft", "sdft", "arc-easy", "acc", -0.04, "worse")]
    assert mod._pair_summary(seed0, mod.primary(scores), "sdft", "cdsdft", ["gsm8k-nll", "arc-easy"], "score") == \
        "**mixed**: better on gsm8k-nll -0.020 [-0.030, -0.010]; worse on arc-easy -0.040 [-0.050, -0.030]"
    seed0["deltas"] = [row("cdsdft", "sdft", "arc-easy", "acc", -0.01, "not detectable at n", mde=0.04)]
    assert mod._pair_summary(seed0, mod.primary(scores), "sdft", "cdsdft", ["arc-easy"], "score") == \
        "**not detectable at n = 300**: not detectable on arc-easy (n = 300, MDE 0.040)"
    # in RESULTS.md: on top, the model without an experiment run named as not run
    d = tmp_path / "results" / "m" / "experiment" / "seed0"
    d.mkdir(parents=True)
    (d / "results.json").write_text(json.dumps({**seed0, "model": "m"}))
    p = tmp_path / "results" / "q" / "seed0"
    p.mkdir(parents=True)
    (p / "results.json").write_text(json.dumps({"model": "q", "seed": 0, "methods": ["seed"], "scores": scores[:4],
                                                "deltas": []}))
    out = tmp_path / "R.md"
    mod.main(["--results", str(tmp_path / "results"), "--out", str(out), "--preamble", "none", "--conclusions", "none"])
    md = out.read_text()
    head = md.split("## Conclusions of issue 17's experiment (generated)")[1].split("\n## ")[0]
    assert "Interim — no results yet for 1 planned runs (sft__lodo-math)" in head
    assert "**q**: not run yet" in head and "- 6. Targets" in head
