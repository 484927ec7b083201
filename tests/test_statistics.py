"""statistics.py against hand-computed values (scipy is not installed here): exact McNemar, the sign-flip
permutation test, Holm on Wikipedia's textbook example, the MDE formula, the hierarchical bootstrap, families."""
import math

import numpy as np
import pytest

from crossdistill import statistics as S


def _pairs(n01, n10, n11=0, n00=0):
    a = [0] * n01 + [1] * n10 + [1] * n11 + [0] * n00
    b = [1] * n01 + [0] * n10 + [1] * n11 + [0] * n00
    return a, b


@pytest.mark.parametrize("n01,n10,expected", [
    (4, 0, 0.125),                       # the case: 4 of 20 items differ, all one way
    (5, 1, 2 * (1 + 6) / 64),            # 0.21875
    (10, 2, 2 * (1 + 12 + 66) / 4096),   # 0.03857...
    (3, 3, 1.0), (0, 0, 1.0), (1, 0, 1.0),
])
def test_mcnemar_exact_hand_computed(n01, n10, expected):
    a, b = _pairs(n01, n10, n11=7, n00=9)    # concordant pairs do not enter the test
    assert S.mcnemar_exact(a, b) == pytest.approx(expected, abs=1e-15)
    assert S.mcnemar_exact(b, a) == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize("d,expected", [
    ([1, 2, 3], 0.25),                   # |±1±2±3| in {6,4,2,0,0,2,4,6}: 2 of 8 reach 6
    ([1, 2, 3, 4], 0.125),               # only the two all-same sign vectors reach 10
    ([3, -1], 1.0),                      # |sum| = 2 is the smallest possible
    ([0, 0, 1, 2, 3], 0.25),             # zero differences carry no sign
    ([0, 0], 1.0),
])
def test_sign_flip_exact_hand_computed(d, expected):
    p, exact = S.sign_flip_test(d)
    assert exact and p == pytest.approx(expected)


def test_sign_flip_on_0_1_differences_equals_mcnemar():
    for n01, n10 in [(4, 0), (5, 1), (10, 2), (7, 3), (6, 6)]:
        a, b = _pairs(n01, n10, n11=3)
        p, exact = S.sign_flip_test(np.subtract(b, a))
        assert exact and p == pytest.approx(S.mcnemar_exact(a, b))


def test_sign_flip_monte_carlo_is_seeded_and_near_the_exact_value():
    rng = np.random.default_rng(1)
    d = rng.normal(0.3, 1.0, size=17)
    p_mc, exact = S.sign_flip_test(d, exact_max=16)
    assert not exact and p_mc == S.sign_flip_test(d, exact_max=16)[0]     # fixed seed: same p
    p_exact, _ = S.sign_flip_test(d, exact_max=17)
    assert abs(p_mc - p_exact) < 0.02                                     # 10,000 flips: MC error ~0.005
    assert S.sign_flip_test([1.0] * 40)[0] == pytest.approx(2 * math.exp(-20))  # no flip as extreme: Hoeffding


def test_sign_flip_below_the_monte_carlo_floor_is_hoeffdings_bound_of_the_exact_tail():
    # 20 equal differences: the exact two-sided p is 2 / 2^20 (only the two constant sign vectors reach |T| = 10)
    d = [0.5] * 20
    exact_p, exact = S.sign_flip_test(d, exact_max=20)
    assert exact and exact_p == pytest.approx(2 / 2 ** 20)
    p, exact = S.sign_flip_test(d)                       # Monte Carlo: no flip in 10,000 reaches 10
    assert not exact and p == pytest.approx(2 * math.exp(-10 ** 2 / (2 * 20 * 0.25)))   # 2 e^-10
    assert exact_p <= p < 1 / 10_001                     # an upper bound of the exact p, below the MC floor
    one, _ = S.sign_flip_test(d, alternative="greater")
    assert one == pytest.approx(math.exp(-10))
    assert S.sign_flip_test([-0.5] * 20, alternative="greater")[0] == pytest.approx(1.0)   # wrong side: no bound
    # a weak effect keeps the Monte Carlo estimate (the bound is only used when no flip reaches |T|)
    rng = np.random.default_rng(3)
    w = rng.normal(0.05, 1.0, size=400)
    p_w, _ = S.sign_flip_test(w)
    assert p_w > 1 / 10_001 and p_w == pytest.approx(round(p_w * 10_001) / 10_001)


def test_hoeffding_p_lets_a_large_effect_survive_holm_over_many_rows():
    rng = np.random.default_rng(0)
    strong = rng.normal(0.2, 0.1, size=500)              # a bits-per-byte gap like CD-SDFT vs SFT on gsm8k-nll
    p, _ = S.sign_flip_test(strong)
    assert p < 1e-50
    adjusted = S.holm([p] + [0.5] * 935)                 # one row among 936 (13 methods' pairs x 12 tasks)
    assert adjusted[0] < 0.05


def test_paired_test_picks_the_test_by_the_data():
    assert S.paired_test([0, 1, 1], [1, 1, 0])[0] == "mcnemar_exact"
    assert S.paired_test([0.5, 1.2, 0.3], [0.4, 1.0, 0.1]) == ("sign_flip_exact", pytest.approx(0.25))


def test_holm_textbook_example():
    # Wikipedia, Holm-Bonferroni method: p = 0.01, 0.04, 0.03, 0.005 at alpha 0.05 rejects H1 and H4 only.
    adj = S.holm([0.01, 0.04, 0.03, 0.005])
    assert adj == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert [p < 0.05 for p in adj] == [True, False, False, True]
    assert S.holm([0.2, None, 0.9]) == [pytest.approx(0.4), None, pytest.approx(0.9)]
    assert S.holm([0.6, 0.7]) == [1.0, 1.0]                                # capped at 1


def test_mde_formula():
    z = 1.959963984540054 + 0.8416212335729143
    assert S.mde(1.0, 100) == pytest.approx(z / 10)
    assert S.mde(0.5, 400) == pytest.approx(z * 0.5 / 20)
    assert S.mde(1.0, 1) is None
    x = [0, 1] * 50
    assert S.task_mde(x) == pytest.approx(z * np.std(x, ddof=1) * math.sqrt(2) / 10)


def test_hierarchical_ci_carries_seed_to_seed_variance():
    # Three seeds whose per-item deltas are constant within a seed (+0.40, 0.00, +0.15): an items-only bootstrap of
    # the per-item means sees no noise at all; resampling the seeds too does.
    d = np.array([[0.40] * 40, [0.0] * 40, [0.15] * 40])
    from crossdistill.evaluation.metrics import paired_delta_ci

    _, lo_items, hi_items = paired_delta_ci([0] * 40, d.mean(axis=0))
    assert hi_items - lo_items < 1e-9
    lo, hi = S.hierarchical_ci(d)
    assert lo <= 0.05 and hi >= 0.3 and lo <= d.mean() <= hi
    assert (lo, hi) == S.hierarchical_ci(d)


def test_families_holm_within_family_and_verdicts():
    prim = {"gsm8k": "exact_match", "arc": "acc", "kl": "kl"}
    rows = [
        {"method": "sft", "vs": "seed", "task": "gsm8k", "metric": "exact_match", "delta": 0.2, "p": 0.01, "mde": 0.1},
        {"method": "sft", "vs": "seed", "task": "arc", "metric": "acc", "delta": -0.2, "p": 0.01, "mde": 0.1},
        {"method": "sft", "vs": "seed", "task": "arc", "metric": "acc_norm", "delta": -0.2, "p": 0.04, "mde": 0.1},
        {"method": "sdft", "vs": "seed", "task": "arc", "metric": "acc", "delta": -0.01, "p": 0.03, "mde": 0.1},
        {"method": "sdft", "vs": "sft", "task": "kl", "metric": "kl", "delta": -0.02, "p": 0.001, "mde": 0.01},
        {"method": "sft", "vs": "sft", "task": "gsm8k", "metric": "exact_match", "delta": 0.0, "p": 0.5, "mde": 0.1,
         "left_out_domain": "math"},
    ]
    S.adjust(rows, in_domain={"gsm8k"}, primary=prim)
    assert [r["family"] for r in rows] == ["in-domain gain", "forgetting", "forgetting (secondary)", "forgetting",
                                           "ablations", "lodo"]
    assert rows[0]["p_holm"] == pytest.approx(0.01) and rows[0]["verdict"] == "better"
    assert rows[1]["p_holm"] == pytest.approx(0.02) and rows[1]["verdict"] == "worse"
    assert rows[3]["p_holm"] == pytest.approx(0.03) and rows[3]["verdict"] == "worse"
    assert rows[4]["verdict"] == "better"                      # lower KL is better
    assert rows[5]["verdict"] == "not detectable at n"
    rows[1].pop("family")
    S.adjust(rows, in_domain={"gsm8k"}, primary=prim, at_chance={"arc"})
    assert rows[1]["family"] == "forgetting (at chance)" and rows[1]["verdict"] == "at chance"


def test_planned_pairs_form_their_own_family():
    prim = {"kl": "kl"}
    rows = [{"method": m, "vs": v, "task": "kl", "metric": "kl", "delta": 0.1, "p": p, "mde": 0.01}
            for m, v, p in [("cdsdft", "sft", 0.01), ("sft", "cdsdft", 0.02), ("sdft", "sft", 0.001),
                            ("sft-r64", "sft", 0.004), ("cdsdft", "seed", 0.01)]]
    S.adjust(rows, in_domain=set(), primary=prim, planned=[["sft", "cdsdft"]])
    # either order of the pair is planned; other trained pairs are exploratory; vs the seed keeps its family
    assert [r["family"] for r in rows] == ["planned", "planned", "ablations", "ablations", "forgetting"]
    assert [r["p_holm"] for r in rows[:4]] == [pytest.approx(0.02), pytest.approx(0.02), pytest.approx(0.002),
                                               pytest.approx(0.004)]
    S.adjust(rows, in_domain=set(), primary=prim)            # no planned pairs: every trained pair is "ablations"
    assert [r["family"] for r in rows[:4]] == ["ablations"] * 4 and rows[2]["p_holm"] == pytest.approx(0.004)


def test_pooled_verdict_needs_the_hierarchical_ci():
    row = {"task": "t", "metric": "acc", "delta": 0.18, "p_holm": 0.001, "mde": 0.05,
           "hier_ci_low": -0.02, "hier_ci_high": 0.4}
    assert S.verdict(row) == "n.s. (Holm)"
    assert S.verdict({**row, "hier_ci_low": 0.01}) == "better"


def test_chance_flags():
    scores = [{"method": "seed", "task": "mmlu", "metric": "acc", "value": 0.26, "ci_low": 0.2, "ci_high": 0.32,
               "chance": 0.25},
              {"method": "seed", "task": "sciq", "metric": "acc", "value": 0.7, "ci_low": 0.64, "ci_high": 0.76,
               "chance": 0.25},
              {"method": "seed", "task": "obqa", "metric": "acc", "value": 0.175, "ci_low": 0.125, "ci_high": 0.225,
               "chance": 0.25},
              {"method": "seed", "task": "refusal", "metric": "refusal_rate", "value": 0.0, "ci_low": 0, "ci_high": 0},
              {"method": "sft", "task": "gsm8k", "metric": "exact_match", "value": 0.0, "ci_low": 0, "ci_high": 0}]
    flags = S.chance_flags(scores)
    assert set(flags) == {"mmlu", "obqa", "refusal"} and "below" in flags["obqa"]


def test_paired_deltas_read_per_item_scores_by_metric_name(tmp_path):
    """The eval stage records each unweighted metric's per-item scores in samples/<task>.meta.json under its name:
    a metric no other module knows gets paired deltas; a metric without per-item scores gets none."""
    import json

    def eval_dir(name, vals):
        d = tmp_path / name
        (d / "samples").mkdir(parents=True)
        v = sum(vals) / len(vals)
        scores = [{"task": "t", "metric": "brand_new", "value": v}, {"task": "t", "metric": "weighted", "value": 0.5}]
        (d / "results.json").write_text(json.dumps({"scores": scores}))
        (d / "samples" / "t.jsonl").write_text("".join(json.dumps({"id": f"i{i}"}) + "\n" for i in range(len(vals))))
        (d / "samples" / "t.meta.json").write_text(json.dumps({"scores": scores, "per_item": {
            "brand_new": {f"i{i}": x for i, x in enumerate(vals)}}}))
        return d

    (row,) = S.paired_deltas(eval_dir("a", [0.1, 0.2, 0.3, 0.4]), eval_dir("b", [0.2, 0.4, 0.5, 0.4]), method="b")
    assert row["metric"] == "brand_new" and row["n"] == 4 and row["delta"] == pytest.approx(0.125)
    assert row["test"].startswith("sign_flip")


def test_score_entry_records_per_item_scores_only_for_plain_means():
    from crossdistill.evaluation.metrics import score_entry

    assert score_entry("t", "m", [1.0, 0.0], ids=["a", "b"])["per_item"] == {"a": 1.0, "b": 0.0}
    assert "per_item" not in score_entry("t", "m", [1.0, 0.0], ids=["a", "a"])           # an item scored twice
    assert "per_item" not in score_entry("t", "m", [1.0, 0.0], ids=["a", "b"], weights=[1, 3])
    assert "per_item" not in score_entry("t", "m", [1.0, 0.0])


# --- gain retention (issue 17, question 1) ------------------------------------------------------------------

def test_one_sided_sign_flip_by_hand():
    # d = [1, 1, 1]: of the 8 sign vectors, 1 has a sum >= 3 and 2 have |sum| >= 3
    assert S.sign_flip_test([1, 1, 1], alternative="greater") == (pytest.approx(1 / 8), True)
    assert S.sign_flip_test([1, 1, 1]) == (pytest.approx(2 / 8), True)
    assert S.sign_flip_test([-1, -1, -1], alternative="greater")[0] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        S.sign_flip_test([1], alternative="less")


def test_retention_on_fixed_items():
    n = 12
    seed, ref = [0.0] * n, [1.0] * n
    keeps = S.retention(seed, ref, [0.95] * n, share=0.9, lower_is_better=False)
    # every item: 0.95 - 0.9 * 1 = +0.05 > 0 -> two-sided exact p = 2 / 2^12 (all signs +, or all -)
    assert keeps["retained"] == pytest.approx(0.95) and keeps["p"] == pytest.approx(2 / 2 ** n)
    assert keeps["retained_ci_low"] == pytest.approx(0.95) and keeps["margin"] == pytest.approx(0.05)
    # every item 0.5 - 0.9 = -0.4: as significant the other way, and the margin says which way
    half = S.retention(seed, ref, [0.5] * n, share=0.9, lower_is_better=False)
    assert half["retained"] == pytest.approx(0.5) and half["p"] == pytest.approx(2 / 2 ** n)
    assert half["margin"] == pytest.approx(-0.4)
    # lower is better (bits per byte): the seed at 1.0, the reference gains 0.5, the method 0.45 = exactly 90%
    bpb = S.retention([1.0] * n, [0.5] * n, [0.55] * n, share=0.9, lower_is_better=True)
    assert bpb["gain_reference"] == pytest.approx(0.5) and bpb["retained"] == pytest.approx(0.9)
    assert bpb["p"] == 1.0          # d = 0 on every item: no evidence of keeping more than 90%
    # the reference did not gain: nothing to keep, no ratio
    assert S.retention(seed, [-0.1] * n, [0.2] * n, share=0.9, lower_is_better=False)["retained"] is None


def test_retention_rows_read_eval_folders_and_adjust(tmp_path):
    import json

    def eval_dir(name, vals):
        d = tmp_path / name
        (d / "samples").mkdir(parents=True)
        scores = [{"task": "t", "metric": "bpb", "value": sum(vals) / len(vals)}]
        (d / "results.json").write_text(json.dumps({"scores": scores}))
        (d / "samples" / "t.meta.json").write_text(json.dumps({"scores": scores, "per_item": {
            "bpb": {f"i{i}": x for i, x in enumerate(vals)}}}))

    rng = np.random.default_rng(0)
    base = 1 + rng.normal(0, 0.05, 40)
    eval_dir("seed", list(base))
    eval_dir("sft", list(base - 0.20 + rng.normal(0, 0.01, 40)))
    eval_dir("good", list(base - 0.19 + rng.normal(0, 0.01, 40)))     # keeps 95%
    eval_dir("poor", list(base - 0.05 + rng.normal(0, 0.01, 40)))     # keeps 25%
    scores = [{"method": m, **json.loads((tmp_path / m / "results.json").read_text())["scores"][0]}
              for m in ("seed", "sft", "good", "poor")]
    rows = S.retention_rows(tmp_path, scores, reference="sft", methods=["good", "poor", "missing"], tasks=["t", "u"],
                            primary={"t": "bpb"}, share=0.9)
    by = {r["method"]: r for r in rows}
    assert set(by) == {"good", "poor"} and all(r["family"] == "retention" for r in rows)
    assert by["good"]["verdict"] == "keeps >= 90%"
    assert by["good"]["p_holm"] == pytest.approx(S.holm([by["good"]["p"], by["poor"]["p"]])[0])
    assert by["poor"]["verdict"] == "keeps < 90%" and by["poor"]["retained"] == pytest.approx(0.25, abs=0.05)
    assert by["good"]["retained_ci_low"] < 0.95 < by["good"]["retained_ci_high"]
    # with the adjusted deltas: where the reference's own gain over the seed was not detected, there is no question
    deltas = [{"method": "sft", "vs": "seed", "task": "t", "metric": "bpb", "verdict": "not detectable at n"}]
    rows = S.retention_rows(tmp_path, scores, reference="sft", methods=["good", "poor"], tasks=["t"],
                            primary={"t": "bpb"}, share=0.9, deltas=deltas)
    assert [r["verdict"] for r in rows] == ["reference gain not detectable"] * 2
    deltas[0]["verdict"] = "better"
    rows = S.retention_rows(tmp_path, scores, reference="sft", methods=["good", "poor"], tasks=["t"],
                            primary={"t": "bpb"}, share=0.9, deltas=deltas)
    assert [r["verdict"] for r in rows] == ["keeps >= 90%", "keeps < 90%"]


def test_retention_verdict_in_between_is_not_detectable():
    """A method that keeps about the share (noisy margin around 0) gets neither verdict."""
    rng = np.random.default_rng(1)
    seed = rng.normal(0, 1, 30)
    ref = seed + 1.0 + rng.normal(0, 0.3, 30)
    mine = seed + 0.9 + rng.normal(0, 0.3, 30)
    (row,) = S._adjust_retention([{"task": "t", "metric": "acc", **S.retention(seed, ref, mine, share=0.9,
                                                                                 lower_is_better=False)}], 0.9)
    assert row["p_holm"] > 0.05 and row["verdict"] == "not detectable at n"


def test_tiny_exact_p_values_are_not_stored_as_zero():
    """70 discordant pairs all one way: exact McNemar p = 2 * 2**-70, kept (12 significant digits), not rounded to 0."""
    from crossdistill.statistics import compare

    row = compare([0.0] * 70 + [1.0] * 30, [1.0] * 100)
    assert row["test"] == "mcnemar_exact" and row["p"] > 0
    assert row["p"] == pytest.approx(2 * 2.0 ** -70, rel=1e-9)
