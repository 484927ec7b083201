"""Self-distilled share of the distill stage: greedy-only vs verified best-of-n, and what each costs.

    python benchmarks/bench_distill.py [--runs smollm2-135m-instruct=src/crossdistill/recipes/demo.yaml,...]
        [--per-domain 8] [--n 4] [--temperature 0.8] [--ceiling 0] [--domains math,code] [--out /tmp/bench-distill]

For each MODEL=RECIPE pair (default: the default model on the demo's domain data, and Qwen2.5-Coder-0.5B on the
CPU pilot's, recipes/experiment-qwen-cpu.yaml with data_dir=/work/shared/data when it exists), the recipe's domains
are capped at `--per-domain` records each (the first N of the recipe's seeded shuffle, so a subset of what the
recipe distills; a recipe's per-domain `num_candidates` is dropped, so every domain gets each run's n), the model
is loaded once, and the real distill stage runs twice into one output folder:

1. greedy-only: `distill.num_candidates=1, temperature=0` (the stage's previous behaviour, with the per-domain
   budgets and stops of the recipe);
2. best-of-n: `num_candidates=N, temperature=T`; candidate 0 is the same greedy rewrite, so it is read back from
   the generation cache and only the sampled candidates are generated. Its cost is the greedy run's plus these.

With `--ceiling K` a third run (K candidates) measures the ceiling: the share of records for which any of K
candidates verifies (copies included, since a copy verifies too) and the share with a verified non-copy.

Per run and domain: records, self-distilled (accepted, not a copy), accepted, copies, candidates generated,
rejection reasons over all candidates, new tokens and generation seconds. Seconds are wall time on a shared CPU
(the load average is printed beside them); tokens are exact. The last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

DEFAULT_RUNS = (f"smollm2-135m-instruct={ROOT / 'src/crossdistill/recipes/demo.yaml'},"
                f"qwen2.5-coder-0.5b-instruct={ROOT / 'recipes/experiment-qwen-cpu.yaml'}")


def _summary(stats: dict) -> dict:
    out = {}
    for name, d in {**stats["domains"], "all": stats["totals"]}.items():
        out[name] = {"records": d["records"], "self_distilled": d["accepted_not_copied"],
                     "self_distilled_share": d["self_distilled_rate"], "accepted": d["accepted"],
                     "copies": d["copied"], "candidates": d["candidates"], "targets_differ": d["targets_differ"],
                     "candidate_reasons": d["candidate_reasons"], "new_tokens": d["new_tokens"],
                     "generation_s": d["generation_s"], "verify_s": d["verify_s"]}
    return out


def bench_one(model_name: str, recipe: str, args) -> dict:
    from crossdistill.config import load_config
    from crossdistill.data import prepare_domain_data
    from crossdistill.distill import distill
    from crossdistill.models import load_model

    out = Path(args.out) / model_name
    overrides = [f"model={model_name}", f"output_dir={out}"]
    if "experiment-qwen" in recipe and Path("/work/shared/data").is_dir():
        overrides.append("data_dir=/work/shared/data")
    cfg = load_config(recipe, overrides)
    if args.domains:
        keep = args.domains.split(",")
        cfg.domains = {d: c for d, c in cfg.domains.items() if d in keep}
    for d in cfg.domains.values():
        d.size = min(d.size or args.per_domain, args.per_domain)
        d.num_candidates = None   # every domain gets each run's n (the recipe's per-domain n would cap the ceiling)
    records = prepare_domain_data(cfg)
    model, tok = load_model(cfg.model, dtype=cfg.distill.dtype)
    runs: dict[str, dict] = {}
    plan = [("greedy", 1, 0.0), ("best_of_n", args.n, args.temperature)]
    if args.ceiling:
        plan.append(("ceiling", args.ceiling, args.temperature))
    for label, n, temp in plan:
        cfg.distill.num_candidates, cfg.distill.temperature = n, temp
        t0 = time.perf_counter()
        stats = distill(cfg, records_by_domain=records, model=model, tokenizer=tok, progress=args.progress)
        wall = time.perf_counter() - t0
        rows = [json.loads(line) for line in (out / "distill" / "distilled.jsonl").read_text().splitlines()]
        runs[label] = {"num_candidates": n, "temperature": temp, "wall_s": round(wall, 1),
                       "load_avg_1m": round(os.getloadavg()[0], 2), "domains": _summary(stats)}
        if label == "ceiling":
            per: dict[str, list[int]] = {}
            for r in rows:
                c = per.setdefault(r["domain"], [0, 0, 0])
                c[0] += 1
                c[1] += any(x["reason"] == "ok" for x in r["candidates"])
                c[2] += any(x["reason"] == "ok" and not x["copied"] for x in r["candidates"])
            runs[label]["any_verifies_share"] = {d: round(c[1] / c[0], 4) for d, c in per.items()}
            runs[label]["any_non_copy_share"] = {d: round(c[2] / c[0], 4) for d, c in per.items()}
        print(f"{model_name} {label}: " + ", ".join(
            f"{d} {v['self_distilled']}/{v['records']}" for d, v in runs[label]["domains"].items())
              + f" ({wall:.0f} s)", file=sys.stderr, flush=True)
    g, b = runs["greedy"]["domains"]["all"], runs["best_of_n"]["domains"]["all"]
    # the best-of-n run reads its greedy candidates back from the cache: its cost is the greedy run's plus its own
    cost = {"greedy": {"new_tokens": g["new_tokens"], "generation_s": g["generation_s"]},
            "best_of_n": {"new_tokens": g["new_tokens"] + b["new_tokens"],
                          "generation_s": round(g["generation_s"] + b["generation_s"], 1)}}
    cost["token_ratio"] = round(cost["best_of_n"]["new_tokens"] / max(1, g["new_tokens"]), 3)
    return {"model": model_name, "recipe": str(Path(recipe).relative_to(ROOT)) if recipe.startswith(str(ROOT))
            else recipe, "per_domain": args.per_domain, "records": {d: len(r) for d, r in records.items()},
            "cost": cost, "runs": runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default=DEFAULT_RUNS, help="comma-separated MODEL=RECIPE pairs")
    ap.add_argument("--per-domain", type=int, default=8)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--ceiling", type=int, default=0, help="also run K candidates (0: skip)")
    ap.add_argument("--out", default="/tmp/bench-distill")
    ap.add_argument("--domains", default="", help="comma-separated recipe domains to keep (default: all)")
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args()
    results = []
    for pair in args.runs.split(","):
        model_name, _, recipe = pair.partition("=")
        results.append(bench_one(model_name.strip(), recipe.strip(), args))
    share = {r["model"]: {label: {d: v["self_distilled_share"] for d, v in run["domains"].items()}
                          for label, run in r["runs"].items()} for r in results}
    print(json.dumps({"self_distilled_share": share, "n": args.n, "temperature": args.temperature,
                      "per_domain": args.per_domain, "results": results}, ensure_ascii=False))


if __name__ == "__main__":
    main()
