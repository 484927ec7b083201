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
    heads = [line for line in md.splitlines() if line.startswith("## ")]
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
    (d / "results.json").write_text(json.dumps(base))   # finished, no LODO in the recipe
    _load().main(args)
    md = out.read_text()
    assert "Interim" not in md and "Not run for this model" in md


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
