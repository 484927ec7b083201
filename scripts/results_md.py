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
             "gsm8k-nll", "math500-nll", "mbpp-heldout-nll", "alpaca-heldout-nll", "glaive-heldout"]
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


def model_section(res_path: Path) -> list[str]:
    res = json.loads(res_path.read_text())
    scores = [s for s in res["scores"] if not s.get("left_out_domain")]
    prim = primary(scores)
    tasks = [t for t in prim]
    methods = res["methods"]
    cell = {(s["method"], s["task"]): s for s in scores if s["metric"] == prim[s["task"]]}
    rel = res_path.parent
    md = [f"## {res['model']}", "",
          f"Source: [`{rel}/results.json`]({rel}/results.json) · report: [`{rel}/report.md`]({rel}/report.md) · "
          f"seed {res.get('seed')}", "",
          "### Scores (primary metric, 95% bootstrap CI, n items)", "",
          "| method | " + " | ".join(f"{t} ({prim[t]})" for t in tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    for m in methods:
        row = []
        for t in tasks:
            s = cell.get((m, t))
            row.append("—" if s is None else f"{s['value']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}] n={s['n']}")
        md.append(f"| {m} | " + " | ".join(row) + " |")
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
        md.append("Not run for this model (see the scope note at the top).")
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
    return md + claim_tables(res, prim, POOLED_CLAIMS, per_run=True) + [""]


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
    by_model: dict[str, list[Path]] = {}
    pooled: dict[str, Path] = {}
    for f in files:
        res = json.loads(f.read_text())
        if "pooled_runs" in res:
            pooled[res["model"]] = f
        else:
            by_model.setdefault(res["model"], []).append(f)
    for model, paths in by_model.items():
        # the run with the most methods in full; the others of the same model only in the across-seeds table
        main_run = max(paths, key=lambda p: (len(json.loads(p.read_text())["methods"]), -paths.index(p)))
        md += model_section(main_run)
        if model in pooled:   # per-seed values and deltas are columns of the pooled tables
            md += pooled_section(pooled[model], sorted(paths))
        elif len(paths) > 1:
            md += seeds_section(sorted(paths, key=lambda p: json.loads(p.read_text()).get("seed") or 0))
    post = Path(a.conclusions)
    if post.exists():
        md += [post.read_text().rstrip(), ""]
    Path(a.out).write_text("\n".join(md))
    print(f"wrote {a.out} from {', '.join(map(str, files))}")


if __name__ == "__main__":
    main()
