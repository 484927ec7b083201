"""Write RESULTS.md from results/<model>/results.json: every number in it is read from one of those files.

    python scripts/results_md.py [--results results] [--out RESULTS.md]

Each claim is a table of paired differences (the later method minus the earlier, on the items both scored, with the
paired bootstrap 95% CI that `crossdistill run` stores under `deltas`) and the verdict stored beside it, which rests
on the Holm-adjusted p of the paired test only (`crossdistill.statistics`): "better" / "worse" when p_holm < 0.05,
"not detectable at n" when the difference is below the minimum detectable effect at that n, "n.s. (Holm)"
otherwise, "at chance" where the seed is at chance on the task. Rows of a results.json written before the paired
tests existed carry no test: their verdict is "untested" — never one read off the CI.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

IN_DOMAIN = ["gsm8k", "math500", "mbpp-heldout", "mbpp", "humaneval", "ifeval", "ifbench",   # ifbench: text domain
             "gsm8k-nll", "math500-nll", "mbpp-heldout-nll", "alpaca-heldout-nll", "glaive-heldout",
             "bfcl-simple"]   # bfcl-simple: tool calls, beside the held-out Glaive calls
GENERAL = ["arc-easy", "arc-challenge", "mmlu", "hellaswag", "boolq", "refusal", "piqa", "sciq", "openbookqa", "siqa",
           "csqa", "winogrande", "wiki-nll", "seed-kl"]
VERDICTS = ("better", "worse", "n.s. (Holm)", "not detectable at n", "at chance", "untested")
# (earlier, later): the comparisons each claim is made of
CLAIMS = [
    ("In-domain gain kept: CD-SDFT vs vanilla SFT on the trained domains' benchmarks", IN_DOMAIN,
     [("sft", "cdsdft"), ("sft-paper", "cdsdft"), ("seed", "cdsdft"), ("seed", "sft"), ("seed", "sft-paper"),
      ("seed", "sdft")]),
    ("Forgetting on the general benchmarks (delta vs seed)", GENERAL,
     [("seed", "sft-paper"), ("seed", "sft"), ("seed", "sdft"), ("seed", "cdsdft"), ("seed", "cdsdft-no-inv")]),
    ("Self-distillation vs SFT on the general benchmarks (forgetting relative to SFT)", GENERAL,
     [("sft", "sdft"), ("sft", "cdsdft")]),
    ("CD-SDFT vs SDFT (the cross-domain loss terms on top of self-distillation)", IN_DOMAIN + GENERAL,
     [("sdft", "cdsdft")]),
    ("Ablations", IN_DOMAIN + GENERAL,
     [("cdsdft", "cdsdft-no-inv"), ("cdsdft", "cdsdft-no-div"), ("cdsdft", "cdsdft-coral"),
      ("cdsdft", "cdsdft-dann"), ("cdsdft", "cdsdft-rkl"), ("sft-paper", "sft")]),
    ("SDFT per domain vs mixed: each specialist on its own domain's benchmarks, against the seed, SDFT (mixed) "
     "and CD-SDFT", [],
     [(base, f"sdft-{dom}", tasks) for dom, tasks in (("math", ["gsm8k", "math500"]),
                                                    ("code", ["mbpp-heldout", "humaneval"]), ("text", ["ifeval"]))
      for base in ("seed", "sdft", "cdsdft")]),
    ("SDFT per domain: what each specialist did to the general benchmarks", GENERAL,
     [("seed", "sdft-math"), ("seed", "sdft-code"), ("seed", "sdft-text")]),
]
# The claims that pool the training seeds (the methods every seed ran)
POOLED_CLAIMS = [
    ("Forgetting and in-domain change vs the seed model", IN_DOMAIN + GENERAL,
     [("seed", "sft"), ("seed", "sdft"), ("seed", "cdsdft")]),
    ("Self-distillation vs SFT", IN_DOMAIN + GENERAL, [("sft", "sdft"), ("sft", "cdsdft")]),
    ("CD-SDFT vs SDFT", IN_DOMAIN + GENERAL, [("sdft", "cdsdft")]),
]


def primary(scores: list[dict]) -> dict[str, str]:
    out: dict[str, str] = {}
    for s in scores:
        out.setdefault(s["task"], s["metric"])
    return out


def verdict(d: dict) -> str:
    """The stored verdict (Holm-adjusted test, statistics.verdict); "untested" for rows without a paired test."""
    return d.get("verdict") or "untested"


def _p(d: dict) -> str:
    return "—" if d.get("p_holm") is None else f"{d['p_holm']:.2g}"


def claim_tables(res: dict, prim: dict[str, str], claims: list, per_run: bool = False) -> list[str]:
    """One table per claim: the paired deltas of its method pairs on its tasks (primary metric), with verdicts."""
    md = []
    deltas = {(d["vs"], d["method"], d["task"]): d for d in res.get("deltas", [])
              if not d.get("left_out_domain") and d["metric"] == prim.get(d["task"])}
    for title, claim_tasks, pairs in claims:
        rows = []
        for base, other, *own in pairs:   # a third element: this pair's own task list
            for t in (own[0] if own else claim_tasks):
                d = deltas.get((base, other, t))
                if d is not None:
                    extra = f" {' / '.join(f'{v:+.3f}' for v in d['per_run'])} |" if per_run else ""
                    hier = (f" [{d['hier_ci_low']:+.3f}, {d['hier_ci_high']:+.3f}] |"
                            if per_run and d.get("hier_ci_low") is not None else (" — |" if per_run else ""))
                    mde = "—" if d.get("mde") is None else f"{d['mde']:.3f}"
                    rows.append(f"| {other} − {base} | {t} | {d['delta']:+.3f} | [{d['ci_low']:+.3f}, "
                                f"{d['ci_high']:+.3f}] |{hier} {d['n']} | {mde} | {d.get('test', '—')} | {_p(d)} |"
                                f"{extra} {verdict(d)} |")
        if not rows:
            continue
        counts = {v: sum(r.endswith(f"| {v} |") for r in rows) for v in VERDICTS}
        head = ("| comparison | task | delta | paired 95% CI |" + (" seeds+items 95% CI |" if per_run else "") +
                " n | MDE | test | p (Holm) |" + (" per seed |" if per_run else "") + " verdict |")
        md += ["", f"### {title}", "",
               f"{len(rows)} comparisons: " + ", ".join(f"{counts[v]} {v}" for v in VERDICTS if counts[v]) + ".", "",
               head, "|---" * head.count(" |") + "|", *rows]
    return md


# Issue 17's six questions: which rows of a results.json answer each (the pairs are (earlier, later) method names;
# a pair stored the other way round is read negated).
Q_FORGETTING_PAIRS = [("sft", "cdsdft"), ("sdft", "cdsdft"), ("sft", "cdsdft-onpolicy"),
                      ("sdft-onpolicy", "cdsdft-onpolicy"), ("sft", "cdsdft-b1"), ("sdft", "cdsdft-b1")]
Q_CHAIN = ["sdft", "+domain-ce", "+balanced", "+kl", "cdsdft"]
Q_TARGET_PAIRS = [("sdft", "sdft-onpolicy"), ("cdsdft", "cdsdft-onpolicy"), ("trl-sdft", "sdft-onpolicy")]
Q_BETA_PAIRS = [("+kl", "cdsdft-b1"), ("cdsdft-b1", "cdsdft")]   # the invariance weight: beta 0 -> 1 -> 5
FLIP = {"better": "worse", "worse": "better", "lower": "higher", "higher": "lower"}
CD_ARMS = ("cdsdft", "cdsdft-onpolicy", "cdsdft-b1")   # the CD-SDFT arms the questions are about


def _negated(d: dict) -> dict:
    """Row `d` (method − vs) read as vs − method: delta and CI negated (0.0 - x: never "-0.0"), verdict flipped."""
    ci = None if d.get("ci_low") is None else (0.0 - d["ci_high"], 0.0 - d["ci_low"])
    return {**d, "method": d["vs"], "vs": d["method"], "delta": 0.0 - d["delta"], "ci_low": ci and ci[0],
            "ci_high": ci and ci[1], "verdict": FLIP.get(d.get("verdict"), d.get("verdict"))}


def _find(res: dict, prim: dict[str, str], earlier: str, later: str, task: str, left_out: str | None = None):
    """The delta row later − earlier on `task`'s primary metric (negated when stored as earlier − later)."""
    for d in res.get("deltas", []):
        if d.get("left_out_domain") != left_out or d["task"] != task or d["metric"] != prim.get(task):
            continue
        if (d["vs"], d["method"]) == (earlier, later):
            return d
        if (d["vs"], d["method"]) == (later, earlier):
            return _negated(d)
    return None


def _says(d: dict, v: str | None = None) -> str:
    """One delta row in words: the adjusted verdict (`v`, else `verdict(d)`) with effect and CI, or 'not detectable
    at n (MDE ...)'."""
    eff = f"{d['delta']:+.4f}" + ("" if d.get("ci_low") is None else f" [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]")
    v = v or verdict(d)
    if v in ("better", "worse", "lower", "higher"):
        return f"**{v}**: {eff}, n = {d['n']}, p_Holm {_p(d)}"
    if v == "not detectable at n" and d.get("mde") == 0 and d["delta"] == 0 and d.get("ci_low") == d.get("ci_high"):
        return f"no item differs (n = {d['n']}: both score the same on every item)"
    if v == "not detectable at n":
        mde = "—" if d.get("mde") is None else f"{d['mde']:.4f}"
        return f"not detectable at n = {d['n']} (MDE {mde}; {eff})"
    return f"{v}: {eff}, n = {d['n']}, p_Holm {_p(d)}"


def _pair_lines(res, prim, pairs, tasks, left_out=None) -> list[str]:
    out = []
    for earlier, later in pairs:
        for t in tasks:
            d = _find(res, prim, earlier, later, t, left_out)
            if d is not None:
                out.append(f"  - {later} − {earlier}, {t} ({d['metric']}): {_says(d)}")
    return out


def questions_section(res: dict) -> list[str]:
    """Issue 17's questions answered from the stored rows of one results.json (or a pooled one); nothing when the
    run has none of the methods they are about."""
    methods = set(res.get("methods", []))
    # only runs of the current runner: it records the in-domain tasks and tests every row (the CPU pilot did not)
    if not methods & set(CD_ARMS) or "in_domain_tasks" not in res \
            or not any(d.get("p_holm") is not None for d in res.get("deltas", [])):
        return []
    prim = primary([s for s in res["scores"] if not s.get("left_out_domain")])
    in_domain = set(res.get("in_domain_tasks", []))
    at_chance = set(res.get("at_chance", {}))
    general = [t for t in prim if t not in in_domain and t not in at_chance]
    tasks = list(prim)
    none = "  - not in this run"
    md = ["### The questions of the experiment (generated from the stored Holm-adjusted rows)", "",
          "Each line: later − earlier method on the task's primary metric, with the paired 95% CI; a verdict only "
          "from the Holm-adjusted test, else \"not detectable at n\" with the minimum detectable effect."
          + (f" Pairs among the recipe's {len(res['planned'])} planned comparisons (`compare`: "
             + ", ".join(f"{b} − {a}" for a, b in res["planned"]) + ") are Holm-adjusted together as one family; "
             "any other pair of trained methods with every other such pair (\"ablations\")."
             if res.get("planned") else ""), ""]
    md.append("1. **In-domain: does CD-SDFT keep ≥ 90% of rank-matched SFT's gain?** (results.json `retention`)")
    lines = []
    for r in res.get("retention", []):
        if r["method"] not in CD_ARMS:
            continue
        kept = "—" if r.get("retained") is None else f"{r['retained']:.2f}" + (
            "" if r.get("retained_ci_low") is None else f" [{r['retained_ci_low']:.2f}, {r['retained_ci_high']:.2f}]")
        ph = "—" if r.get("p_holm") is None else f"{r['p_holm']:.2g}"
        hier = "" if r.get("hier_ci_low") is None else \
            f", seeds+items CI [{r['hier_ci_low']:.2f}, {r['hier_ci_high']:.2f}] over {r.get('runs')} seeds"
        lines.append(f"  - {r['method']} vs {r['reference']}, {r['task']} ({r['metric']}): retained {kept} of a "
                     f"reference gain of {r['gain_reference']:+.4f}{hier}, n = {r['n']}, one-sided p_Holm {ph}: "
                     f"**{r['verdict']}**")
    md += lines or [none]
    md.append("2. **Forgetting: does CD-SDFT drift less from the seed than SFT and than SDFT?** (tasks outside the "
              "trained domains where the seed is above chance: " + (", ".join(general) or "none") + ")")
    md += _pair_lines(res, prim, Q_FORGETTING_PAIRS, general) or [none]
    md.append("3. **Leave-one-domain-out: trained without domain D, does CD-SDFT do better on D's tasks than SFT?**")
    lines = []
    for d in res.get("deltas", []):
        if d.get("left_out_domain") and d["metric"] == prim.get(d["task"]) \
                and "sft" in (d["vs"], d["method"]) and {d["vs"], d["method"]} & set(CD_ARMS):
            r = _find(res, prim, "sft", d["method"] if d["vs"] == "sft" else d["vs"], d["task"], d["left_out_domain"])
            lines.append(f"  - without {d['left_out_domain']}: {r['method']} − sft, {d['task']} ({d['metric']}): "
                         f"{_says(r)}")
    md += lines or [none]
    md.append("4. **Invariance: do the probe accuracies fall under CD-SDFT, and does that go with less forgetting?** "
              "(probe accuracy at the invariance layer, paired by probe record, exact McNemar, Holm over the pairs; "
              "the between-domain MMD² of the same features, paired swap-permutation test, Holm over its pairs)")
    lines = []
    probe = res.get("probe") or {}
    if probe:
        chance = next((v.get("chance") for v in probe.values() if v.get("chance") is not None), None)
        lines.append("  - probe accuracy (95% CI) and MMD² per method: " + "; ".join(
            f"{m} {v['acc']:.3f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}]"
            + ("" if v.get("mmd_mean") is None else f", MMD² {v['mmd_mean']:.4f}") for m, v in probe.items())
            + ("" if chance is None else f" (chance {chance:.3f})"))
    others = ("seed", "sft", "sdft", "sdft-onpolicy", "+kl")
    for d in res.get("probe_deltas", []):
        if d["vs"] in CD_ARMS and d["method"] in others:   # stored the other way round (plan order): read negated
            d = _negated(d)
        if d["method"] in CD_ARMS and d["vs"] in others:
            what = "MMD²" if d.get("metric") == "probe_mmd" else "probe accuracy"
            lines.append(f"  - {d['method']} − {d['vs']}, {what}: {_says(d, d.get('verdict', '—'))}")
    for key, what in (("probe_vs_forgetting", "probe accuracy"), ("probe_mmd_vs_forgetting", "MMD²")):
        link = res.get(key) or {}
        if link.get("rho") is not None:
            lines.append(f"  - across {link['n']} trained methods, Spearman rho({what}, {link['forgetting_task']})"
                         f" = {link['rho']:+.3f}, permutation p = {link['p']:.3g}")
        elif link.get("n"):
            lines.append(f"  - rho({what}, {link['forgetting_task']}): not computed ({link['n']} trained methods; "
                         "it needs 3 with distinct values)")
    # the invariance weight on one seed: beta 0 (+kl) -> 1 (cdsdft-b1) -> 5 (cdsdft) on the forgetting tasks
    lines += _pair_lines(res, prim, Q_BETA_PAIRS, general)
    md += lines or [none]
    md.append("5. **Which ingredient carries the effect?** (each step of the chain against the one before)")
    md += _pair_lines(res, prim, list(zip(Q_CHAIN, Q_CHAIN[1:])), tasks) or [none]
    md.append("6. **On-policy vs rewrite targets, and crossdistill's on-policy arm vs TRL's SDFTTrainer**")
    md += _pair_lines(res, prim, Q_TARGET_PAIRS, tasks) or [none]
    return md + [""]


# --- the short conclusions: one line per question and arm, each a summary of the same adjusted rows -----------

WORDS = {"drift": ("less drift", "more drift"), "score": ("better", "worse")}   # per question: what better/worse mean


def _eff(d: dict) -> str:
    return f"{d['delta']:+.3f}" + ("" if d.get("ci_low") is None else f" [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]")


def _summary(rows: list[tuple[str, dict]], words: tuple[str, str], shared=lambda task: None) -> str | None:
    """(task, delta row) pairs in words: the answer, then the decided tasks with effect and CI, then the undecided ones
    ('not detectable at n' with each MDE, 'n.s. (Holm)', 'no item differs', each of the last followed by
    `shared(task)` where that is not None: the score both share); None when there are no rows."""
    if not rows:
        return None
    better = [(t, d) for t, d in rows if verdict(d) in ("better", "lower")]
    worse = [(t, d) for t, d in rows if verdict(d) in ("worse", "higher")]
    same = [t for t, d in rows if verdict(d) == "not detectable at n" and d.get("mde") == 0 and d["delta"] == 0]
    nd = [(t, d) for t, d in rows if verdict(d) == "not detectable at n" and t not in same]
    ns = [t for t, d in rows if verdict(d) == "n.s. (Holm)"]
    other = [f"{t} {verdict(d)}" for t, d in rows if verdict(d) in ("untested", "at chance")]
    n = sorted({d["n"] for _, d in rows})
    answer = {(True, False): words[0], (False, True): words[1], (True, True): "mixed"}.get(
        (bool(better), bool(worse))) or (f"not detectable at n = {'/'.join(map(str, n))}" if nd else
                                                         "n.s. (Holm)" if ns else "no item differs" if same else
                                                         "untested")
    both = better and worse   # name the direction only where the answer does not already say it
    parts = [(f"{words[0]} on " if both else "") + ", ".join(f"{t} {_eff(d)}" for t, d in better)] \
        if better else []
    parts += [(f"{words[1]} on " if both else "") + ", ".join(f"{t} {_eff(d)}" for t, d in worse)] \
        if worse else []
    parts += ["not detectable on " + ", ".join(
        f"{t} (n = {d['n']}, MDE {'—' if d.get('mde') is None else format(d['mde'], '.3f')})" for t, d in nd)] \
        if nd else []
    parts += [f"n.s. after Holm on {', '.join(ns)}"] if ns else []
    parts += ["no item differs on " + ", ".join(t + (f" ({s})" if (s := shared(t)) else "") for t in same)] \
        if same else []
    parts += other
    return f"**{answer}**: " + "; ".join(parts)


def _value(res: dict, prim: dict[str, str], method: str, task: str, left_out: str | None = None) -> float | None:
    """`method`'s score on `task`'s primary metric (trained without `left_out`), or None."""
    for s in res.get("scores", []):
        if (s["method"], s["task"], s.get("metric"), s.get("left_out_domain")) == (method, task, prim.get(task),
                                                                                   left_out):
            return s["value"]
    return None


def _shared_score(res, prim, later, task, left_out=None) -> str | None:
    """For a pair that differs on no item: the score both share, and whether it is the seed model's own, so that a
    floor (both at the seed's 0.0) is not read as a finding about the two methods."""
    v = _value(res, prim, later, task, left_out)
    if v is None:
        return None
    seed = _value(res, prim, "seed", task)
    return f"both {v:.3f}" + (", the seed model's score" if seed is not None and abs(seed - v) < 1e-12 and
                               later != "seed" else "")


def _pair_summary(res, prim, earlier, later, tasks, kind, left_out=None) -> str | None:
    rows = [(t, d) for t in tasks if (d := _find(res, prim, earlier, later, t, left_out)) is not None]
    return _summary(rows, WORDS[kind], lambda t: _shared_score(res, prim, later, t, left_out))


def _retention_summary(rows: list[dict]) -> str | None:
    if not rows:
        return None
    share = rows[0]["share"]
    kept = [r for r in rows if r["verdict"].startswith("keeps >=")]
    lost = [r for r in rows if r["verdict"].startswith("keeps <")]
    nd = [r for r in rows if r["verdict"] == "not detectable at n"]
    noq = [r["task"] for r in rows if r["verdict"] in ("reference did not gain", "reference gain not detectable")]

    def kept_str(r):
        ci = "" if r.get("retained_ci_low") is None else f" [{r['retained_ci_low']:.2f}, {r['retained_ci_high']:.2f}]"
        return f"{r['task']} {r['retained']:.2f}{ci}"

    answer = {(True, False): "yes", (False, True): "no", (True, True): "mixed"}.get(
        (bool(kept), bool(lost)), "not detectable at n" if nd else "no question at this n")
    parts = [f"keeps ≥ {share:.0%} on " + ", ".join(map(kept_str, kept))] if kept else []
    parts += [f"keeps < {share:.0%} on " + ", ".join(map(kept_str, lost))] if lost else []
    parts += ["not detectable on " + ", ".join(f"{r['task']} (n = {r['n']})" for r in nd)] if nd else []
    parts += [f"the reference gained nothing detectable on {', '.join(noq)} (nothing to keep)"] if noq else []
    return f"**{answer}** (fraction of SFT's gain retained): " + "; ".join(parts)


def conclusions_lines(res: dict, fallback: dict | None = None) -> list[str]:
    """Issue 17's six questions, one line per arm or pair: the answer word and the rows it rests on, from `res`
    (pooled over training seeds, or one run) and, for what `res` lacks (the chain, LODO, the probe: seed 0 only),
    from `fallback`. Every word is a count of adjusted verdicts: 'more drift' means at least one forgetting task
    worse after Holm and none better."""
    srcs = [(x, primary([s for s in x["scores"] if not s.get("left_out_domain")])) for x in (res, fallback) if x]
    if not any(x.get("in_domain_tasks") and any(d.get("p_holm") is not None for d in x.get("deltas", []))
               for x, _ in srcs):
        return []

    def scope(x):
        return f"pooled over training seeds {', '.join(map(str, x['seeds']))}" if "pooled_runs" in x \
            else f"training seed {x.get('seed')}"

    def first(fn):
        """(line, source) from the first source that answers."""
        for x, prim in srcs:
            out = fn(x, prim)
            if out:
                return out, x
        return None, None

    def drift(x, prim, earlier, later):
        """later − earlier on the forgetting tasks: outside the trained domains, seed above chance"""
        tasks = [t for t in prim if t not in set(x.get("in_domain_tasks", [])) and t not in set(x.get("at_chance", {}))]
        return _pair_summary(x, prim, earlier, later, tasks, "drift")

    out = []
    # 1. in-domain gain kept
    for arm in CD_ARMS:
        line, x = first(lambda x, prim: _retention_summary([r for r in x.get("retention", []) if r["method"] == arm]))
        if line:
            out.append(f"1. In-domain, {arm} vs rank-matched SFT ({scope(x)}): {line}")
    # 2. forgetting
    for earlier, later in Q_FORGETTING_PAIRS:
        line, x = first(lambda x, prim: drift(x, prim, earlier, later))
        if line:
            out.append(f"2. Forgetting, {later} − {earlier} ({scope(x)}): {line}")
    # 3. leave-one-domain-out: the CD-SDFT arm and SFT both trained without the domain
    for x, prim in srcs:
        lodo = sorted({(d["left_out_domain"], d["method"] if d["vs"] == "sft" else d["vs"]) for d in x.get("deltas", [])
                       if d.get("left_out_domain") and {d["vs"], d["method"]} & set(CD_ARMS) and "sft" in
                       (d["vs"], d["method"])})
        for left, arm in lodo:
            tasks = list(dict.fromkeys(d["task"] for d in x["deltas"] if d.get("left_out_domain") == left))
            line = _pair_summary(x, prim, "sft", arm, tasks, "score", left_out=left)
            if line:
                out.append(f"3. Without {left}, {arm} − sft on {left}'s tasks ({scope(x)}): {line}")
        if lodo:
            break
    # 4. invariance: probe accuracy and MMD² of each CD-SDFT arm against the seed (each from the first source that
    # probed it), and the link to forgetting across the trained methods
    def probe_line(x, arm):
        probe = x.get("probe") or {}
        if arm not in probe:
            return None
        cells = []
        for d in x.get("probe_deltas", []):
            if {d["method"], d["vs"]} == {arm, "seed"}:
                d = d if d["method"] == arm else _negated(d)
                what = "MMD²" if d.get("metric") == "probe_mmd" else "probe accuracy"
                v = verdict(d)
                mde = "" if d.get("mde") is None else f", MDE {d['mde']:.3f}"
                ph = f", p_Holm {_p(d)}" if v in ("lower", "higher") else ""
                cells.append(f"{what} {v} ({d['delta']:+.3f}, n = {d['n']}{mde}{ph})")
        acc = f"probe accuracy {probe['seed']['acc']:.3f} → {probe[arm]['acc']:.3f}" if "seed" in probe else ""
        mmd = f", MMD² {probe['seed']['mmd_mean']:.3f} → {probe[arm]['mmd_mean']:.3f}" \
            if probe.get("seed", {}).get("mmd_mean") is not None and probe[arm].get("mmd_mean") is not None else ""
        chance = probe[arm].get("chance")
        return f"{acc}{mmd}" + ("" if chance is None else f" (chance {chance:.2f})") + \
            ("; " + "; ".join(cells) if cells else "")

    for arm in CD_ARMS:
        line, x = first(lambda x, prim: probe_line(x, arm))
        if line:
            out.append(f"4. Invariance, {arm} vs seed ({scope(x)}): {line}")
    for key, what in (("probe_vs_forgetting", "probe accuracy"), ("probe_mmd_vs_forgetting", "MMD²")):
        link, x = first(lambda x, prim: x.get(key) if (x.get(key) or {}).get("rho") is not None else None)
        if link:
            sig = "p < 0.05" if link["p"] < 0.05 else f"not detectable at {link['n']} methods"
            out.append(f"4. Invariance and forgetting ({scope(x)}): across {link['n']} trained methods, "
                       f"Spearman rho({what}, {link['forgetting_task']}) = {link['rho']:+.2f}, permutation p = "
                       f"{link['p']:.2g} ({sig})")
    for earlier, later in Q_BETA_PAIRS:
        line, x = first(lambda x, prim: drift(x, prim, earlier, later))
        if line:
            out.append(f"4. Invariance weight, forgetting, {later} − {earlier} ({scope(x)}): {line}")
    # 5. the chain and 6. the targets, on every task
    for q, pairs in (("5. Ingredient", list(zip(Q_CHAIN, Q_CHAIN[1:]))), ("6. Targets", Q_TARGET_PAIRS)):
        for earlier, later in pairs:
            line, x = first(lambda x, prim: _pair_summary(x, prim, earlier, later, list(prim), "score"))
            if line:
                out.append(f"{q}, {later} − {earlier} ({scope(x)}): {line}")
    asked = {"1": "In-domain gain kept", "2": "Forgetting", "3": "Leave-one-domain-out", "4": "Invariance",
             "5": "Ingredient (the chain)", "6": "Targets (on-policy vs rewrite, ours vs TRL's SDFTTrainer)"}
    for q, what in asked.items():   # a question no finished method answers yet says so in its place
        if not any(line.startswith(q + ".") for line in out):
            at = next((i for i, line in enumerate(out) if line.split(".")[0] > q), len(out))
            out.insert(at, f"{q}. {what}: no results yet (its methods have not finished)")
    return out


def conclusions_section(groups: list[tuple[str, dict | None, dict | None]]) -> list[str]:
    """The short conclusions on top of RESULTS.md: per model, its pooled results (or its most complete run) and the
    run that has what the pooled one lacks; (model, None, None): the experiment has not run for that model."""
    md = ["## Conclusions of issue 17's experiment (generated)", "",
          "One line per question and arm, each the count of adjusted verdicts over that question's tasks: the answer "
          "word, then the tasks it rests on (effect, paired 95% CI), then the tasks where no difference is "
          "detectable at n, with each minimum detectable effect. Effects are later − earlier on the task's primary "
          "metric (lower is better for kl and bpb). The full rows are in each model's question section below.", ""]
    for model, res, fallback in groups:
        md.append(f"**{model}**" + ("" if res else ": not run yet (see the scope note above)."))
        if res:
            missing = (fallback or res).get("missing") or []
            if missing:
                md.append(f"Interim — no results yet for {len(missing)} planned runs ({', '.join(missing)}); "
                          "each line covers the methods finished so far.")
            md.append("")
            md += [f"- {line}" for line in conclusions_lines(res, fallback)] or ["- no tested rows yet"]
        md.append("")
    return md


def model_section(res_path: Path, title: str | None = None) -> list[str]:
    res = json.loads(res_path.read_text())
    scores = [s for s in res["scores"] if not s.get("left_out_domain")]
    prim = primary(scores)
    tasks = [t for t in prim]
    methods = res["methods"]
    cell = {(s["method"], s["task"]): s for s in scores if s["metric"] == prim[s["task"]]}
    rel = res_path.parent
    md = [f"## {title or res['model']}", "",
          f"Source: [`{rel}/results.json`]({rel}/results.json) · report: [`{rel}/report.md`]({rel}/report.md) · "
          f"seed {res.get('seed')}", ""]
    missing = res.get("missing") or []
    if missing:   # a run still going: its report was built from the evals finished so far (`--only report`)
        md += [f"**Interim: no eval results yet for {', '.join(missing)}.** Every comparison and Holm's adjustment "
               f"below covers the {len(methods)} finished methods only.", ""]
    md += ["### Scores (primary metric, 95% bootstrap CI, n items)", "",
          "| method | " + " | ".join(f"{t} ({prim[t]})" for t in tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    for m in methods:
        row = []
        for t in tasks:
            s = cell.get((m, t))
            row.append("—" if s is None else f"{s['value']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}] n={s['n']}")
        md.append(f"| {m} | " + " | ".join(row) + " |")
    if (rel / "plots" / "tradeoff.png").exists():   # written by the report of a run with seed-kl rows
        md += ["", f"![In-domain gain vs drift from the seed]({rel}/plots/tradeoff.png)", "",
               "*In-domain change vs the seed (up = better) against the drift from the seed (`seed-kl`, right = more), "
               "per trained method, with paired 95% CIs; hollow: the gain is not decided after Holm.*"]
    q = questions_section(res)
    md += [""] + q if q else []
    md += claim_tables(res, prim, CLAIMS)
    lodo = {}
    for d in res.get("deltas", []):
        if d.get("left_out_domain") and d["metric"] == prim.get(d["task"]) and d["vs"] in ("seed", d["method"]):
            lodo.setdefault((d["method"], d["left_out_domain"], d["task"]), {})["seed" if d["vs"] == "seed" else "all"] = d
    md += ["", "### Leave-one-domain-out", ""]
    if lodo:
        md += ["Each method trained again on every domain but one and scored on that domain's tasks. *vs trained on "
               "all*: what leaving the domain out costs (below 0: the domain's own data helped). *vs seed*: what "
               "training on the other domains alone did to it (above 0: transfer; below 0: forgetting).", "",
               "| method | left out | task | without the domain | vs trained on all [paired 95% CI] | verdict | "
               "vs seed [paired 95% CI] | verdict | n |", "|---|---|---|---|---|---|---|---|---|"]
        score = {(s["method"], s.get("left_out_domain"), s["task"]): s["value"] for s in res["scores"]
                 if s["metric"] == prim.get(s["task"])}

        def cell(d):
            return ("—", "—") if d is None else \
                (f"{d['delta']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]", verdict(d))

        for (m, left, t), pair in lodo.items():
            n = (pair.get("all") or pair.get("seed"))["n"]
            v = score.get((m, left, t))
            md.append(f"| {m} | {left} | {t} | {'—' if v is None else f'{v:.3f}'} | "
                      f"{' | '.join(cell(pair.get('all')))} | {' | '.join(cell(pair.get('seed')))} | {n} |")
    else:
        md.append("Not finished yet in this run (see the Interim line above)." if any("__lodo-" in m for m in missing)
                  else "Not run for this model (see the scope note at the top).")
    return md + [""]


def seeds_section(paths: list[Path]) -> list[str]:
    """Runs of one model that differ in the training seed: each method's primary score per seed, the mean, and the
    delta vs the seed model per run with its paired-CI verdict."""
    runs = [json.loads(p.read_text()) for p in paths]
    seeds = [r.get("seed") for r in runs]
    prim = primary([s for r in runs for s in r["scores"]])
    methods = [m for m in runs[0]["methods"] if all(m in r["methods"] for r in runs)]
    tasks = [t for t in prim if all(any(s["task"] == t for s in r["scores"]) for r in runs)]
    md = ["### Across training seeds " + ", ".join(str(s) for s in seeds), "",
          "Runs: " + ", ".join(f"[`{p.parent}`]({p.parent}/results.json) (seed {s})" for p, s in zip(paths, seeds)) + ".",
          "Every run scores the same eval items (`eval.seed` fixed); the training data subset, the LoRA init and the "
          "data order change with the seed. Cell: mean over seeds (per-seed values).", "",
          "| method | " + " | ".join(f"{t} ({prim[t]})" for t in tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    for m in methods:
        row = []
        for t in tasks:
            vals = [next((s["value"] for s in r["scores"] if s["method"] == m and s["task"] == t
                          and s["metric"] == prim[t] and not s.get("left_out_domain")), None) for r in runs]
            vals = [v for v in vals if v is not None]
            row.append(f"{sum(vals) / len(vals):.3f} ({', '.join(f'{v:.3f}' for v in vals)})" if vals else "—")
        md.append(f"| {m} | " + " | ".join(row) + " |")
    md += ["", f"Delta vs the seed model per run, seed {' / '.join(str(x) for x in seeds)} (* marks a difference "
           "significant after Holm adjustment):", "",
           "| method | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    sign = {"better": "*", "worse": "*"}
    for m in methods:
        if m == "seed":
            continue
        row = []
        for t in tasks:
            cells = []
            for r in runs:
                d = next((d for d in r.get("deltas", []) if d.get("vs") == "seed" and d["method"] == m
                          and d["task"] == t and d["metric"] == prim[t] and not d.get("left_out_domain")), None)
                cells.append("—" if d is None else f"{d['delta']:+.3f}{sign.get(verdict(d), '')}")
            row.append(" / ".join(cells))
        md.append(f"| {m} | " + " | ".join(row) + " |")
    return md + [""]


def pooled_section(path: Path, runs: list[Path]) -> list[str]:
    """`crossdistill pool` output: the core claims on the items every seed scored, per-item means over the seeds."""
    res = json.loads(path.read_text())
    prim = primary(res["scores"])
    md = [f"### Pooled over training seeds {', '.join(str(s) for s in res['seeds'])}", "",
          f"Source: [`{path}`]({path}), written by `crossdistill pool` from the runs of this model. Each item's score is "
          "averaged over the seeds first; the paired 95% CI resamples items only, the seeds+items CI resamples the "
          "training seeds and then the items (hierarchical bootstrap), so seed-to-seed variance is in it; a verdict "
          "needs both the Holm-adjusted test and the seeds+items CI. *per seed*: the spread between training runs.",
          "Per-seed runs: " + ", ".join(f"[`{p.parent}`]({p.parent}/results.json)" for p in runs) + "."]
    tasks = list(prim)
    cell = {(x["method"], x["task"]): x for x in res["scores"] if x["metric"] == prim[x["task"]]}
    md += ["", "Scores: mean over the seeds [95% CI over items] (per seed).", "",
           "| method | " + " | ".join(f"{t} ({prim[t]})" for t in tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    for m in res["methods"]:
        row = []
        for t in tasks:
            x = cell.get((m, t))
            row.append("—" if x is None else f"{x['value']:.3f} [{x['ci_low']:.3f}, {x['ci_high']:.3f}] "
                       f"({' / '.join(f'{v:.3f}' for v in x['per_run'])})")
        md.append(f"| {m} | " + " | ".join(row) + " |")
    q = questions_section(res)
    return md + ([""] + q if q else []) + claim_tables(res, prim, POOLED_CLAIMS, per_run=True) + [""]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", default="results")
    ap.add_argument("--out", default="RESULTS.md")
    ap.add_argument("--preamble", default="results/PREAMBLE.md", help="hand-written scope note put on top")
    ap.add_argument("--conclusions", default="results/CONCLUSIONS.md",
                    help="hand-written reading of the tables, put at the end (its numbers are quoted from them)")
    a = ap.parse_args(argv)
    files = sorted(Path(a.results).glob("**/results.json"))
    if not files:
        raise SystemExit(f"no results.json under {a.results}/")
    pre = Path(a.preamble)
    md = [pre.read_text().rstrip(), ""] if pre.exists() else ["# Results", ""]
    md += ["<!-- generated by scripts/results_md.py from the results.json files below; do not edit by hand -->", ""]
    # One group per experiment folder (results/<model>/[<experiment>/]<run>/results.json, the pooled run beside
    # the seeds' runs): issue 17's experiment (a folder named `experiment`) first, then the CPU pilot.
    groups: dict[Path, dict] = {}
    loaded = {f: json.loads(f.read_text()) for f in files}   # each file read once
    for f, res in loaded.items():
        g = groups.setdefault(f.parent.parent, {"model": res["model"], "runs": [], "pooled": None})
        if "pooled_runs" in res:
            g["pooled"] = f
        else:
            g["runs"].append(f)
    ordered = sorted(groups.items(), key=lambda kv: ("experiment" not in kv[0].parts, str(kv[0])))
    for _, g in ordered:   # the run with the most methods (the first of equals) is shown in full
        g["main"] = max(g["runs"], key=lambda p: len(loaded[p]["methods"])) if g["runs"] else None
    summary = []   # (model, results to conclude from, the seed-0 run for what the pooled results lack)
    for folder, g in ordered:
        if "experiment" in folder.parts and g["main"] is not None:
            main_res, pooled = loaded[g["main"]], g["pooled"] and loaded[g["pooled"]]
            summary.append((g["model"], pooled or main_res, main_res if pooled else None))
    summary += [(m, None, None) for m in dict.fromkeys(g["model"] for g in groups.values())
                if m not in {x[0] for x in summary}]
    md += conclusions_section(summary)
    for folder, g in ordered:
        paths = g["runs"]
        if not paths:
            continue
        title = f"{g['model']} — " + ("issue 17's experiment" if "experiment" in folder.parts else "the CPU pilot") \
            + f" (`{folder}`)"
        main_run = g["main"]   # the others of the same group only in the across-seeds table
        md += model_section(main_run, title)
        if g["pooled"] is not None:   # per-seed values and deltas are columns of the pooled tables
            md += pooled_section(g["pooled"], sorted(paths))
        elif len(paths) > 1:
            md += seeds_section(sorted(paths, key=lambda p: loaded[p].get("seed") or 0))
    post = Path(a.conclusions)
    if post.exists():
        md += [post.read_text().rstrip(), ""]
    Path(a.out).write_text("\n".join(md))
    print(f"wrote {a.out} from {', '.join(map(str, files))}")


if __name__ == "__main__":
    main()
