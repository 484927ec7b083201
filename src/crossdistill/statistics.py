"""Paired comparisons of methods scored on the same eval items: tests, multiplicity control, pooled seeds.

Every delta row of results.json (`method` minus `vs` on one task and metric, on the items both scored) carries

* `delta`, `ci_low`, `ci_high`: the mean per-item difference with a percentile-bootstrap 95% CI over items;
* `test` and `p`: the test that fits the data —
  - `mcnemar_exact` when both sides are 0/1 per item (accuracy, pass@1, refusal): the exact two-sided binomial test
    on the discordant pairs (items one side got right and the other wrong), p = min(1, 2·P(X ≤ min(b, c))),
    X ~ Binomial(b + c, 1/2). 4 discordant items all one way give p = 0.125;
  - `sign_flip` otherwise (continuous per-item scores: bits per byte, KL, log-prob margins): the paired permutation
    test of the mean difference, flipping the sign of each item's difference. Exact (all 2^m sign vectors, m the
    non-zero differences) when m ≤ 16, else Monte Carlo with 10,000 flips from a fixed seed, p = (1 + #{|T*| ≥
    |T|}) / (1 + 10,000). When no flip reaches |T| that estimate stops at 1/10,001, which Holm over a few hundred
    rows would turn into "n.s." for any effect however large; then p = min(1/10,001, 2·exp(−T²/(2·Σd²))), Hoeffding's
    bound on the exact sign-flip tail (an upper bound of the exact p, so the test stays valid at every level);
* `family`, `p_holm`: Holm–Bonferroni adjustment within the row's family of claims in one results.json (see
  `family_of`): p-values sorted ascending, p_(i) · (m − i + 1), made monotone, capped at 1;
* `mde`: the minimum detectable effect at this n — the paired normal approximation
  (z_{1−α/2} + z_{power}) · sd(d) / √n with α = 0.05 and 80% power (2.80 · sd(d) / √n), sd(d) the sample standard
  deviation of the per-item differences;
* `verdict` from `p_holm` only: "better" / "worse" (by the metric's direction: lower bits per byte, KL or NLL is
  better) when p_holm < 0.05; otherwise "not detectable at n" when |delta| <= mde, else "n.s. (Holm)".

Pooled rows (`pool_runs`, several training seeds on the same items) add a hierarchical bootstrap CI (`hier_ci_low`,
`hier_ci_high`: resample the seeds with replacement, then the items, so seed-to-seed variance is in the interval);
their test is on the per-item means over seeds, and their verdict needs both p_holm < 0.05 and a hierarchical CI
that excludes 0.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from statistics import NormalDist
from typing import AbstractSet, Iterable, Sequence

import numpy as np

from .errors import UserError
from .io import write_json

ALPHA = 0.05
POWER = 0.80
EXACT_MAX = 16          # sign-flip test: exact enumeration up to 2^16 sign vectors
MC_RESAMPLES = 10_000
SEED = "seed"

# Metrics where lower is better (the rest: higher is better).
LOWER_IS_BETTER = {"bpb", "kl"}


# --- tests ----------------------------------------------------------------------------------------------

def _round_p(p: float) -> float:
    """A p-value kept to 12 significant digits (not decimals: an exact test's 2**-64 must not be stored as 0)."""
    return float(f"{p:.12g}")


def mcnemar_exact(a: Sequence[float], b: Sequence[float]) -> float:
    """Exact two-sided McNemar test of paired 0/1 outcomes: binomial test of the discordant pairs at 1/2."""
    if len(a) != len(b):
        raise ValueError("mcnemar_exact needs two equally long lists")
    n01 = sum(1 for x, y in zip(a, b) if not x and y)
    n10 = sum(1 for x, y in zip(a, b) if x and not y)
    m = n01 + n10
    if m == 0:
        return 1.0
    k = min(n01, n10)
    tail = sum(math.comb(m, i) for i in range(k + 1)) / 2 ** m
    return min(1.0, 2 * tail)


def sign_flip_test(d: Sequence[float], *, exact_max: int = EXACT_MAX, resamples: int = MC_RESAMPLES,
                   seed: int = 0, alternative: str = "two-sided") -> tuple[float, bool]:
    """Paired permutation (sign-flip) test of mean(d) = 0, two-sided, or one-sided against mean(d) > 0
    (`alternative="greater"`). Returns (p, exact)."""
    if alternative not in ("two-sided", "greater"):
        raise ValueError(f"alternative must be two-sided or greater (got {alternative!r})")
    x = np.asarray(d, dtype=np.float64)
    x = x[x != 0]
    m = len(x)
    if m == 0:
        return 1.0, True
    stat = np.abs if alternative == "two-sided" else (lambda v: v)
    t = float(stat(x.sum()))
    tol = 1e-12 * max(1.0, float(np.abs(x).sum()))
    if m <= exact_max:
        signs = ((np.arange(2 ** m)[:, None] >> np.arange(m)[None, :]) & 1) * 2 - 1
        stats = stat(signs @ x)
        return float(np.mean(stats >= t - tol)), True
    rng = np.random.default_rng(seed)
    hits = 0
    chunk = max(1, min(resamples, 2_000_000 // m))
    done = 0
    while done < resamples:
        k = min(chunk, resamples - done)
        signs = rng.integers(0, 2, size=(k, m)) * 2 - 1
        hits += int(np.sum(stat(signs @ x) >= t - tol))
        done += k
    p = (1 + hits) / (1 + resamples)
    if hits == 0:
        # Hoeffding: P(sum(eps_i x_i) >= t) <= exp(-t^2 / (2 sum x_i^2)) for independent random signs eps_i; twice
        # that for |.|. It bounds the exact permutation p from above, so a p below the MC floor is still a valid one.
        if t > 0:   # t is |sum| (two-sided) or sum (greater): the bound needs the statistic on the tested side
            p = min(p, (2.0 if alternative == "two-sided" else 1.0) * math.exp(-t ** 2 / (2 * float(x @ x))))
    return p, False


def is_binary(values: Iterable[float]) -> bool:
    return all(v in (0.0, 1.0) for v in values)


def paired_test(a: Sequence[float], b: Sequence[float], *, seed: int = 0) -> tuple[str, float]:
    """(test name, two-sided p) for per-item scores a, b of the same items."""
    if is_binary(a) and is_binary(b):
        return "mcnemar_exact", mcnemar_exact(a, b)
    p, exact = sign_flip_test(np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64), seed=seed)
    return ("sign_flip_exact" if exact else "sign_flip_mc"), p


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm–Bonferroni adjusted p-values (None entries are skipped and stay None)."""
    idx = [i for i, p in enumerate(pvalues) if p is not None]
    order = sorted(idx, key=lambda i: pvalues[i])
    m = len(order)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def mde(sd: float, n: int, *, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """Minimum detectable mean difference of a paired two-sided test at n items (normal approximation)."""
    if n < 2:
        return None
    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    return z * sd / math.sqrt(n)


def task_mde(values: Sequence[float]) -> float | None:
    """A task's MDE from one model's per-item scores, before any comparison: 2.80 · sd · √2 / √n — the paired MDE
    when the two models' item scores are uncorrelated (positive correlation, the usual case, only lowers it)."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) < 2:
        return None
    return mde(float(x.std(ddof=1)) * math.sqrt(2), len(x))


def _hierarchical_resamples(mats: list[np.ndarray], statistic, resamples: int, seed: int) -> list[float]:
    """`statistic` of (runs x items) matrices resampled together: each resample draws runs with replacement, then
    items with replacement (the same rows and columns of every matrix: they are paired). None values drop out."""
    r, n = mats[0].shape
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(resamples):
        rows = rng.integers(0, r, size=r)
        cols = rng.integers(0, n, size=n)
        v = statistic(*(m[rows][:, cols] for m in mats))
        if v is not None:
            out.append(float(v))
    return out


def hierarchical_ci(diffs: np.ndarray, *, resamples: int = 2000, seed: int = 0,
                    alpha: float = ALPHA) -> tuple[float, float]:
    """Percentile CI of the mean of a (runs × items) matrix of per-item differences: each resample draws runs with
    replacement, then items with replacement (the same items for every drawn run: they are paired)."""
    d = np.asarray(diffs, dtype=np.float64)
    stats = _hierarchical_resamples([d], lambda x: float(x.mean()), resamples, seed)
    lo, hi = np.percentile(stats, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    point = float(d.mean())
    return round(min(float(lo), point), 12) + 0.0, round(max(float(hi), point), 12) + 0.0


# --- families and verdicts ------------------------------------------------------------------------------

def family_of(row: dict, *, in_domain: set[str], primary: dict[str, str],
              planned: AbstractSet[frozenset] = frozenset()) -> str:
    """The family of claims a delta row belongs to (Holm adjusts within it):

    * "lodo": a leave-one-domain-out run against its full-data method or the seed;
    * "in-domain gain": a trained method vs the seed on a task of a trained domain (a domain's `eval` list);
    * "forgetting": a trained method vs the seed on any other task;
    * "planned": two trained methods that form one of the `planned` pairs (frozensets of the recipe's `compare`
      pairs, so either order matches): the
      comparisons the experiment's questions name, adjusted among themselves;
    * "ablations": any other two trained methods (exploratory: method choices and ablations alike).
    A row on a task's secondary metric (acc_norm, margin, ...) goes to the same family name + " (secondary)", so
    the extra metrics of one task do not dilute the primary claims."""
    if row.get("left_out_domain"):
        fam = "lodo"
    elif row.get("vs") == SEED:
        fam = "in-domain gain" if row["task"] in in_domain else "forgetting"
    elif frozenset((row.get("method"), row.get("vs"))) in planned:
        fam = "planned"
    else:
        fam = "ablations"
    if primary.get(row["task"], row["metric"]) != row["metric"]:
        fam += " (secondary)"
    return fam


def verdict(row: dict, *, alpha: float = ALPHA) -> str:
    p = row.get("p_holm")
    if p is None:
        return "untested"
    if p < alpha and (row.get("hier_ci_low") is None or row["hier_ci_low"] > 0 or row["hier_ci_high"] < 0):
        up = row["delta"] > 0
        if row["metric"] in LOWER_IS_BETTER:
            up = not up
        return "better" if up else "worse"
    if row.get("mde") is not None and abs(row["delta"]) <= row["mde"]:
        return "not detectable at n"
    return "n.s. (Holm)"


def adjust(rows: list[dict], *, in_domain: set[str], primary: dict[str, str],
           at_chance: Iterable[str] = (), planned: Iterable[Sequence[str]] = ()) -> list[dict]:
    """Give every row its family, Holm-adjusted p (within the family) and verdict, in place; returns rows.
    Forgetting rows on a task in `at_chance` (the seed is at chance there) are kept out of the forgetting family:
    family "forgetting (at chance)", adjusted among themselves, verdict "at chance"."""
    at_chance = set(at_chance)
    planned = {frozenset(p) for p in planned}
    fams: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        r["family"] = family_of(r, in_domain=in_domain, primary=primary, planned=planned)
        if r["family"].startswith("forgetting") and r["task"] in at_chance:
            r["family"] = "forgetting (at chance)"
        fams.setdefault(r["family"], []).append(i)
    for idx in fams.values():
        for i, p in zip(idx, holm([rows[i].get("p") for i in idx])):
            rows[i]["p_holm"] = None if p is None else _round_p(p)
    for r in rows:
        r["verdict"] = "at chance" if r["family"] == "forgetting (at chance)" else verdict(r)
    return rows


def primary_metrics(scores: list[dict]) -> dict[str, str]:
    """Each task's primary metric: the first one listed for it."""
    prim: dict[str, str] = {}
    for s in scores:
        prim.setdefault(s["task"], s["metric"])
    return prim


# --- per-item scores from samples files ------------------------------------------------------------------

def _item_scores(eval_dir: Path, task: str, metric: str, cache: dict) -> dict[str, float] | None:
    """The per-item scores of `metric` the eval stage recorded for `task` (each task's file read once per `cache`)."""
    from .evaluation.evaluate import item_scores

    if (eval_dir, task) not in cache:
        cache[(eval_dir, task)] = item_scores(eval_dir, task)
    return cache[(eval_dir, task)].get(metric)


def _checked_items(eval_dir: Path, task: str, metric: str, reported: float | None,
                   cache: dict) -> dict[str, float] | None:
    """The per-item scores behind a reported value, or None when there are none or their mean is not that value
    (then a paired delta would be wrong). `cache` keeps each samples file read once per caller."""
    items = _item_scores(eval_dir, task, metric, cache)
    if reported is None or not items:
        return None
    mean = sum(items.values()) / len(items)
    if abs(mean - reported) > 1e-9 * max(1.0, abs(reported)):
        return None
    return items


def compare(a: Sequence[float], b: Sequence[float], *, seed: int = 0) -> dict:
    """delta = mean(b − a) with its paired bootstrap CI, test, p and MDE."""
    from .evaluation.metrics import paired_delta_ci

    d, lo, hi = paired_delta_ci(a, b)
    test, p = paired_test(a, b, seed=seed)
    diff = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    sd = float(diff.std(ddof=1)) if len(diff) > 1 else 0.0
    m = mde(sd, len(diff))
    return {"delta": d, "ci_low": lo, "ci_high": hi, "n": len(diff), "paired": True, "test": test,
            "p": _round_p(p), "mde": None if m is None else round(m, 12)}


def retention(seed: Sequence[float], reference: Sequence[float], method: Sequence[float], *, share: float,
              lower_is_better: bool, resamples: int = 2000, seed_rng: int = 0) -> dict:
    """Does `method` keep at least `share` of `reference`'s gain over the seed? Per item (the same items for all
    three), the gains g = ±(model − seed), signed so that an improvement is positive. The statistic is
    d = g_method − share · g_reference; H0: mean(d) = 0, by a two-sided sign-flip permutation test: the sign of the
    mean margin says which way a rejection goes (keeps at least `share`, or keeps less). Also the retained fraction
    mean(g_method) / mean(g_reference) with a percentile bootstrap 95% CI over items (None when the reference gained
    nothing on average: there is no gain to keep)."""
    sign = -1.0 if lower_is_better else 1.0
    s, r, m = (np.asarray(v, dtype=np.float64) for v in (seed, reference, method))
    g_r, g_m = sign * (r - s), sign * (m - s)
    d = g_m - share * g_r
    p, _ = sign_flip_test(d, seed=seed_rng)
    n = len(d)
    ratio = lo = hi = None
    if n and g_r.mean() > 0:
        ratio = float(g_m.mean() / g_r.mean())
        rng = np.random.default_rng(seed_rng)
        idx = rng.integers(0, n, size=(resamples, n))
        den = g_r[idx].mean(1)
        ok = den > 0
        if ok.any():
            rs = g_m[idx].mean(1)[ok] / den[ok]
            lo, hi = (float(v) for v in np.percentile(rs, [2.5, 97.5]))
    return {"n": n, "share": share, "gain_method": float(g_m.mean()) if n else None,
            "gain_reference": float(g_r.mean()) if n else None, "retained": ratio, "retained_ci_low": lo,
            "retained_ci_high": hi, "margin": float(d.mean()) if n else None, "test": "sign_flip",
            "p": _round_p(p)}


def retention_rows(eval_root: Path, scores: list[dict], *, reference: str, methods: Sequence[str],
                   tasks: Sequence[str], primary: dict[str, str], share: float, cache: dict | None = None,
                   deltas: Sequence[dict] | None = None) -> list[dict]:
    """`retention` of every method against `reference` on each task's primary metric (the items all three scored,
    read from eval_root/<method>/samples and checked against the method-tagged `scores`), Holm-adjusted together
    (family "retention"), with the verdicts of `_adjust_retention` (`deltas`: the adjusted rows, which say whether
    the reference's own gain over the seed was detected)."""
    cache = {} if cache is None else cache
    reported = {(x["method"], x["task"], x["metric"]): x["value"] for x in scores if not x.get("left_out_domain")}

    def items_of(m: str, task: str, metric: str) -> dict[str, float] | None:
        return _checked_items(eval_root / m, task, metric, reported.get((m, task, metric)), cache)

    rows = []
    for task in tasks:
        metric = primary.get(task)
        base, ref = (items_of(SEED, task, metric), items_of(reference, task, metric)) if metric else (None, None)
        if base is None or ref is None:
            continue
        for m in methods:
            mine = items_of(m, task, metric)
            ids = [i for i in base if i in ref and i in (mine or {})]
            if not ids:
                continue
            rows.append({"method": m, "reference": reference, "task": task, "metric": metric,
                         **retention([base[i] for i in ids], [ref[i] for i in ids], [mine[i] for i in ids],
                                     share=share, lower_is_better=metric in LOWER_IS_BETTER)})
    return _adjust_retention(rows, share, _reference_gains(deltas, reference))


def _reference_gains(deltas: Sequence[dict] | None, reference: str) -> dict | None:
    """{(task, metric): verdict} of the reference against the seed, from adjusted delta rows (None: not known)."""
    if deltas is None:
        return None
    return {(d["task"], d["metric"]): d.get("verdict") for d in deltas
            if d.get("vs") == SEED and d["method"] == reference and not d.get("left_out_domain")}


def _adjust_retention(rows: list[dict], share: float, reference_gains: dict | None = None) -> list[dict]:
    """Holm over the retention rows (all of them), then each verdict:
    - "reference did not gain": its mean gain over the seed is <= 0, there is nothing to keep;
    - "reference gain not detectable": its gain over the seed was not significant in the adjusted deltas
      (`reference_gains`), so a share of it is no question;
    - "keeps >= X%" / "keeps < X%": p_holm < 0.05, the direction from the sign of the margin (pooled rows: and the
      seeds+items CI of the retained fraction lies on the same side of the share);
    - else "not detectable at n"."""
    for r, ph in zip(rows, holm([r["p"] for r in rows])):
        r["family"] = "retention"
        r["p_holm"] = None if ph is None else _round_p(ph)
        significant = r["p_holm"] is not None and r["p_holm"] < ALPHA
        above = r.get("hier_ci_low") is None or r["hier_ci_low"] > share
        below = r.get("hier_ci_high") is None or r["hier_ci_high"] < share
        if r["retained"] is None:
            r["verdict"] = "reference did not gain"
        elif reference_gains is not None and reference_gains.get((r["task"], r["metric"])) != "better":
            r["verdict"] = "reference gain not detectable"
        elif significant and r["margin"] > 0 and above:
            r["verdict"] = f"keeps >= {share:.0%}"
        elif significant and r["margin"] < 0 and below:
            r["verdict"] = f"keeps < {share:.0%}"
        else:
            r["verdict"] = "not detectable at n"
    return rows


def hierarchical_retention_ci(seed: np.ndarray, reference: np.ndarray, method: np.ndarray, *, lower_is_better: bool,
                              resamples: int = 2000, rng_seed: int = 0) -> tuple[float | None, float | None]:
    """Percentile 95% CI of the retained fraction over (runs × items) matrices: each resample draws runs with
    replacement, then items (the same for every drawn run); resamples where the reference gained nothing drop out."""
    sign = -1.0 if lower_is_better else 1.0
    g_r, g_m = sign * (reference - seed), sign * (method - seed)
    out = _hierarchical_resamples([g_r, g_m], lambda r, m: m.mean() / r.mean() if r.mean() > 0 else None,
                                  resamples, rng_seed)
    if not out:
        return None, None
    lo, hi = np.percentile(out, [2.5, 97.5])
    return round(float(lo), 12), round(float(hi), 12)


def paired_deltas(base_dir: Path, other_dir: Path, *, method: str, cache: dict | None = None) -> list[dict]:
    """Per task and metric: other - base on the items both scored (`compare`). Only where the metric is the plain
    mean of a per-item field of the samples (checked against the reported value)."""
    rows = []
    cache = {} if cache is None else cache
    base_scores = json.loads((base_dir / "results.json").read_text())["scores"]
    other_scores = {(s["task"], s["metric"]): s for s in json.loads((other_dir / "results.json").read_text())["scores"]}
    for s in base_scores:
        o = other_scores.get((s["task"], s["metric"]))
        if o is None:
            continue
        a = _checked_items(base_dir, s["task"], s["metric"], s["value"], cache)
        b = _checked_items(other_dir, s["task"], s["metric"], o["value"], cache)
        if a is None or b is None:
            continue
        ids = [i for i in a if i in b]
        if not ids:
            continue
        rows.append({"method": method, "task": s["task"], "metric": s["metric"],
                     **compare([a[i] for i in ids], [b[i] for i in ids])})
    return rows


def chance_flags(scores: list[dict]) -> dict[str, str]:
    """{task: reason} for tasks where the seed is at chance: its CI includes (or lies below) the chance rate (a score
    row's `chance`: multiple choice reports the mean of 1/#choices), or it scores 0. Forgetting cannot show on such
    a task; `adjust` gives its forgetting rows the verdict "at chance"."""
    out = {}
    for s in scores:
        if s.get("method") != SEED or s.get("left_out_domain") or s["metric"] in LOWER_IS_BETTER:
            continue
        if s["metric"] not in ("acc", "exact_match", "pass@1", "refusal_rate", "prompt_strict_acc", "call_acc"):
            continue
        c = s.get("chance")
        if s.get("value") == 0:
            out[s["task"]] = "seed scores 0"
        elif c is not None and s.get("ci_low") is not None and s["ci_low"] <= c:
            where = "includes" if c <= s["ci_high"] else "is below"
            out[s["task"]] = f"seed CI [{s['ci_low']:.3f}, {s['ci_high']:.3f}] {where} chance {c:.3f}"
    return out


# --- several training seeds of one experiment -----------------------------------------------------

def pool_runs(run_dirs: list[str | Path], out: str | Path | None = None) -> dict:
    """Pool runs of one experiment that differ only in the training seed (`seed=N eval.seed=K`: same model, same eval
    items). Per method and task: the score averaged over the runs; per pair of methods (the later minus the earlier,
    in the first run's order): the difference per item averaged over the runs, with a bootstrap 95% CI over items,
    a hierarchical one (seeds, then items), the paired test on the per-item means, Holm within families and a
    verdict that needs both (module docstring). Only methods and tasks present in every run, and items every run
    scored, are pooled. Written to `out` (a results.json of its own) when given."""
    from .evaluation.metrics import bootstrap_ci

    dirs = [Path(d) for d in run_dirs]
    if len(dirs) < 2:
        raise UserError("pooling needs at least two runs of the same experiment", field="runs")
    runs = []
    for d in dirs:
        p = d / "results.json"
        try:
            runs.append(json.loads(p.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise UserError("no results.json: run the experiment (`crossdistill run`) first", file=str(p)) from None
        except ValueError as e:
            raise UserError(f"not valid JSON ({e})", file=str(p)) from None
    for d, r in zip(dirs, runs):
        if r.get("model") != runs[0].get("model"):
            raise UserError(f"model {r.get('model')!r} differs from {runs[0].get('model')!r} in {dirs[0]}: pool runs "
                            "of one experiment only", file=str(d / "results.json"), field="model")
    methods = [m for m in runs[0]["methods"] if all(m in r["methods"] for r in runs)]
    metrics: list[tuple[str, str]] = []
    for s in runs[0]["scores"]:
        key = (s["task"], s["metric"])
        if not s.get("left_out_domain") and key not in metrics:
            metrics.append(key)
    reported = [{(s["method"], s["task"], s["metric"]): s["value"] for s in r["scores"] if not s.get("left_out_domain")}
                for r in runs]
    items: dict[tuple, list[dict[str, float]]] = {}
    cache: dict = {}
    for m in methods:
        for task, metric in metrics:
            per_run = [_checked_items(d / "eval" / m, task, metric, rep.get((m, task, metric)), cache)
                       for d, rep in zip(dirs, reported)]
            if all(x is not None for x in per_run):
                items[(m, task, metric)] = per_run
    scores, deltas = [], []
    for (m, task, metric), per_run in items.items():
        ids = [i for i in per_run[0] if all(i in r for r in per_run)]
        if not ids:
            continue
        avg = [sum(r[i] for r in per_run) / len(per_run) for i in ids]
        lo, hi = bootstrap_ci(avg)
        scores.append({"method": m, "task": task, "metric": metric, "value": round(sum(avg) / len(avg), 12),
                       "ci_low": round(lo, 12), "ci_high": round(hi, 12), "n": len(ids), "runs": len(per_run),
                       "per_run": [round(sum(r[i] for i in ids) / len(ids), 12) for r in per_run]})
    for i, base in enumerate(methods):
        for m in methods[i + 1:]:
            for task, metric in metrics:
                a_runs, b_runs = items.get((base, task, metric)), items.get((m, task, metric))
                if not a_runs or not b_runs:
                    continue
                ids = [x for x in a_runs[0] if all(x in r for r in a_runs + b_runs)]
                if not ids:
                    continue
                a = [sum(r[x] for r in a_runs) / len(a_runs) for x in ids]
                b = [sum(r[x] for r in b_runs) / len(b_runs) for x in ids]
                diffs = np.array([[rb[x] - ra[x] for x in ids] for ra, rb in zip(a_runs, b_runs)])
                hlo, hhi = hierarchical_ci(diffs)
                per_run = [round(float(row.mean()), 12) for row in diffs]
                deltas.append({"method": m, "vs": base, "task": task, "metric": metric, **compare(a, b),
                               "runs": len(a_runs), "per_run": per_run, "hier_ci_low": hlo, "hier_ci_high": hhi})
    in_domain: set[str] = set()
    at_chance: dict[str, str] = {}
    for r in runs:
        in_domain |= set(r.get("in_domain_tasks") or [])
        at_chance.update(r.get("at_chance") or {})
    planned = runs[0].get("planned") or []
    adjust(deltas, in_domain=in_domain, primary=primary_metrics(runs[0]["scores"]), at_chance=at_chance,
           planned=planned)
    pooled = {"model": runs[0]["model"], "pooled_runs": [str(d) for d in dirs], "seeds": [r.get("seed") for r in runs],
              "methods": methods, "planned": planned, "tasks": list(dict.fromkeys(x["task"] for x in scores)),
              "in_domain_tasks": sorted(in_domain), "at_chance": at_chance, "scores": scores, "deltas": deltas,
              "retention": _pooled_retention(runs, items, methods, in_domain, deltas),
              **probe_comparisons([d / "probe" for d in dirs], methods, scores, mmd_methods=sorted(
                  {m for r in runs for m, v in (r.get("method_setup") or {}).items() if v.get("invariance")}))}
    if out is not None:
        write_json(Path(out), pooled)
    return pooled


def _pooled_retention(runs: list[dict], items: dict, methods: list[str], in_domain: set[str],
                      deltas: list[dict]) -> list[dict]:
    """Gain retention over the pooled seeds, when every run asked it of the same reference and share: the test on
    the per-item means over the runs, the seeds+items CI of the retained fraction (`hierarchical_retention_ci`);
    `deltas`: the pooled adjusted rows (was the reference's gain detected)."""
    asked = [{(x["reference"], x["share"]) for x in r.get("retention") or []} for r in runs]
    if not all(len(a) == 1 for a in asked) or len(set.union(*asked)) != 1:
        return []
    reference, share = next(iter(asked[0]))
    prim = primary_metrics(runs[0]["scores"])
    rows = []
    for m in methods:
        if m in (SEED, reference):
            continue
        for task in sorted(in_domain):
            metric = prim.get(task)
            trip = [items.get((x, task, metric)) for x in (SEED, reference, m)]
            if metric is None or not all(trip):
                continue
            ids = [i for i in trip[0][0] if all(i in r for per_run in trip for r in per_run)]
            if not ids:
                continue
            mats = [np.array([[r[i] for i in ids] for r in per_run]) for per_run in trip]
            low = metric in LOWER_IS_BETTER
            row = {"method": m, "reference": reference, "task": task, "metric": metric, "runs": len(runs),
                   **retention(*(mat.mean(0) for mat in mats), share=share, lower_is_better=low)}
            row["hier_ci_low"], row["hier_ci_high"] = hierarchical_retention_ci(*mats, lower_is_better=low)
            rows.append(row)
    return _adjust_retention(rows, share, _reference_gains(deltas, reference))


# --- the domain probe (issue 17, question 4) -------------------------------------------------------------------

def spearman_permutation(x: Sequence[float], y: Sequence[float], *, resamples: int = MC_RESAMPLES,
                         seed: int = 0) -> tuple[float | None, float | None]:
    """Spearman's rank correlation (average ranks for ties) and its two-sided permutation p: exact over all n!
    orderings of y when n <= 8, else Monte Carlo with `resamples` seeded shuffles, p = (1 + #) / (1 + resamples).
    (None, None) below 3 points or when either side is constant."""
    import itertools

    def ranks(v):
        v = np.asarray(v, dtype=np.float64)
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=np.float64)
        for val in np.unique(v):   # ties share their mean rank
            r[v == val] = r[v == val].mean()
        return r

    n = len(x)
    if n < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None, None
    rx, ry = ranks(x), ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = float(np.sqrt((rx ** 2).sum() * (ry ** 2).sum()))
    rho = float((rx * ry).sum() / den)
    tol = 1e-12
    if n <= 8:
        stats = [abs(float((rx * ry[list(p)]).sum()) / den) for p in itertools.permutations(range(n))]
        return rho, float(np.mean([s >= abs(rho) - tol for s in stats]))
    rng = np.random.default_rng(seed)
    hits = sum(abs(float((rx * ry[rng.permutation(n)]).sum()) / den) >= abs(rho) - tol for _ in range(resamples))
    return rho, (1 + hits) / (1 + resamples)


# --- the probe's between-domain MMD: a paired permutation test ------------------------------------------------------

MMD_BANDWIDTHS = (0.25, 0.5, 1.0, 2.0, 4.0)   # losses.mmd_fixed's multi-scale kernel
MMD_PERMUTATIONS = 2000


def _sq_dists_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T, 0.0)


def mmd_mean_from_dists(d: np.ndarray, y: np.ndarray) -> float:
    """probe.pairwise_mmd_table's mean from the squared distances `d` (n, n) of one set of pooled features with domain
    ids `y`: unbiased MMD^2 of every pair of domains under the multi-scale Gaussian kernel whose base scale is the
    (lower) median squared distance over all rows, averaged over the pairs."""
    n = len(y)
    upper = d[np.triu_indices(n, 1)]
    scale = max(float(np.partition(upper, (len(upper) - 1) // 2)[(len(upper) - 1) // 2]), 1e-6) if n > 1 else 1.0
    k = sum(np.exp(-d / (2.0 * s * s * scale)) for s in MMD_BANDWIDTHS) / len(MMD_BANDWIDTHS)
    idx = [np.flatnonzero(y == c) for c in np.unique(y)]
    vals = []
    for i in range(len(idx)):
        for j in range(i + 1, len(idx)):
            a, b = idx[i], idx[j]
            kaa, kbb = k[np.ix_(a, a)], k[np.ix_(b, b)]
            if len(a) >= 2 and len(b) >= 2:   # unbiased, as mmd_fixed(unbiased=True); biased below 2 rows, as it
                eaa = (kaa.sum() - np.trace(kaa)) / (len(a) * (len(a) - 1))
                ebb = (kbb.sum() - np.trace(kbb)) / (len(b) * (len(b) - 1))
            else:
                eaa, ebb = kaa.mean(), kbb.mean()
            vals.append(eaa + ebb - 2.0 * k[np.ix_(a, b)].mean())
    return float(np.mean(vals)) if vals else 0.0


def mmd_permutation_test(runs: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], *,
                         permutations: int = MMD_PERMUTATIONS, seed: int = 0) -> dict:
    """Does method B's probe features separate the domains less (or more) than method A's? `runs`: one
    (x_a, x_b, y) per run, the two methods' pooled features of the same probe records (row i is record i under both)
    and the records' domain ids. Statistic: the mean over runs of mmd_mean(B) - mmd_mean(A). Under the null that a
    record's two feature vectors are exchangeable, swapping them record by record (independently, within each run)
    leaves the statistic's distribution unchanged: two-sided Monte Carlo p = (1 + #|perm| >= |obs|) / (1 + perms).
    The MMD is a statistic of the whole set, so there is no per-item difference to bootstrap; no CI is given."""
    rng = np.random.default_rng(seed)
    prepared = []
    for xa, xb, y in runs:
        xa, xb = np.asarray(xa, dtype=np.float64), np.asarray(xb, dtype=np.float64)
        prepared.append((_sq_dists_np(xa, xa), _sq_dists_np(xb, xb), _sq_dists_np(xa, xb), np.asarray(y)))

    def stat(swaps):
        total = 0.0
        for (daa, dbb, dab, y), sw in zip(prepared, swaps):
            if sw is None:
                da, db = daa, dbb
            else:   # row i of set A is record i under B when sw[i]: pick each distance from the matching block
                si, sj = sw[:, None], sw[None, :]
                da = np.where(~si & ~sj, daa, np.where(si & sj, dbb, np.where(~si & sj, dab, dab.T)))
                db = np.where(~si & ~sj, dbb, np.where(si & sj, daa, np.where(~si & sj, dab.T, dab)))
            total += mmd_mean_from_dists(db, y) - mmd_mean_from_dists(da, y)
        return total / len(prepared)

    obs = stat([None] * len(prepared))
    tol = 1e-12 * max(1.0, abs(obs))
    hits = sum(abs(stat([rng.random(len(p[3])) < 0.5 for p in prepared])) >= abs(obs) - tol
               for _ in range(permutations))
    return {"delta": obs, "ci_low": None, "ci_high": None, "n": int(sum(len(p[3]) for p in prepared)),
            "paired": True, "test": "mmd_swap_permutation", "p": _round_p((1 + hits) / (1 + permutations)),
            "mde": None, "runs": len(prepared)}


def _probe_features(folder: Path) -> tuple[list[str], np.ndarray, np.ndarray] | None:
    f = folder / "features.npz"
    if not f.exists():
        return None
    with np.load(f, allow_pickle=False) as z:
        return [str(i) for i in z["ids"]], z["x"].astype(np.float64), z["y"].astype(np.int64)


def probe_comparisons(probe_root: Path | Sequence[Path], methods: Sequence[str], scores: list[dict],
                      forgetting: str = "seed-kl", mmd_methods: Sequence[str] = ()) -> dict:
    """From probe/<method>/probe.json: each method's probe accuracy at its invariance layer; every pair of methods
    (the later minus the earlier; paired by probe record, exact McNemar on the out-of-fold correctness), Holm over
    the pairs (family "invariance"; verdict "lower" / "higher" accuracy, i.e. more / less domain-invariant); and
    across the trained methods, the Spearman correlation of probe accuracy with the `forgetting` task's score
    (does more invariance go with less drift from the seed?).

    The probe accuracy saturates when the domains differ in content (0.99 on the SmolLM2 experiment for the seed and
    every method), so the between-domain MMD^2 of the same features is tested too: each of `mmd_methods` (those
    trained with an invariance term) against every other method with stored features (probe/<m>/features.npz),
    `mmd_permutation_test`, Holm over those pairs (family "invariance (MMD)"; verdict "lower" = more invariant),
    and the Spearman correlation of MMD^2 with the forgetting task across the trained methods.

    Several probe roots (the runs of `pool_runs`, one per training seed) pool a method over the runs that all
    have it: its accuracy is the mean over the runs, and a pair is tested on the records of every run stacked
    (a record is paired within its own run). McNemar uses only the discordant records, and under the null each
    goes either way with probability 1/2 in every run, so the stacked test is the exact stratified test."""
    roots = [Path(probe_root)] if isinstance(probe_root, (str, Path)) else [Path(r) for r in probe_root]
    loaded: dict[str, list[dict]] = {}
    for m in methods:
        ps = [root / m / "probe.json" for root in roots]
        if all(p.exists() for p in ps):
            loaded[m] = [json.loads(p.read_text(encoding="utf-8")) for p in ps]
    summary, probes = {}, {}
    for m, runs in loaded.items():
        rows_ = [next((r for r in p.get("layers", []) if r["layer"] == p.get("chosen_layer")), None) for p in runs]
        if any(r is None for r in rows_):
            continue
        if len(runs) == 1:
            (row,) = rows_
            summary[m] = {"layer": row["layer"], "acc": row["acc"], "ci_low": row["ci_low"],
                          "ci_high": row["ci_high"], "mmd_mean": row.get("mmd_mean"), "n": row["n"],
                          "chance": runs[0].get("chance")}
        else:
            from .evaluation.metrics import bootstrap_ci

            stacked = [float(v) for p in runs for v in (p.get("chosen_items") or {}).values()]
            lo, hi = bootstrap_ci(stacked) if stacked else (None, None)
            mmd = [r.get("mmd_mean") for r in rows_]
            summary[m] = {"layer": rows_[0]["layer"], "acc": float(np.mean([r["acc"] for r in rows_])),
                          "ci_low": lo, "ci_high": hi, "n": sum(r["n"] for r in rows_), "runs": len(runs),
                          "per_run": [r["acc"] for r in rows_], "chance": runs[0].get("chance"),
                          "mmd_mean": None if None in mmd else float(np.mean(mmd))}
        if all(p.get("chosen_items") for p in runs):
            probes[m] = {"chosen_layer": rows_[0]["layer"],
                         "chosen_items": {(i, k): v for i, p in enumerate(runs) for k, v in p["chosen_items"].items()}}
    rows = []
    names = [m for m in methods if m in probes and probes[m].get("chosen_items")]
    for i, base in enumerate(names):
        for m in names[i + 1:]:
            a, b = probes[base]["chosen_items"], probes[m]["chosen_items"]
            ids = [k for k in a if k in b]
            if ids:
                rows.append({"method": m, "vs": base, "task": "probe", "metric": "probe_acc",
                             "layer": probes[m]["chosen_layer"], **compare([a[k] for k in ids], [b[k] for k in ids])})
    for r, ph in zip(rows, holm([r["p"] for r in rows])):
        r["family"] = "invariance"
        r["p_holm"] = None if ph is None else _round_p(ph)
        v = verdict(r)   # probe accuracy: a "better" (higher) one is the less invariant
        r["verdict"] = {"better": "higher", "worse": "lower"}.get(v, v)
    feats = {}
    for m in loaded:
        per_run = [_probe_features(root / m) for root in roots]
        if all(f is not None for f in per_run):
            feats[m] = per_run
    mmd_rows = []
    with_feats = [m for m in methods if m in feats]
    for i, base in enumerate(with_feats):
        for m in with_feats[i + 1:]:
            if base not in mmd_methods and m not in mmd_methods:
                continue
            runs_ = []
            for (ids_a, xa, ya), (ids_b, xb, yb) in zip(feats[base], feats[m]):
                pos_b = {k: j for j, k in enumerate(ids_b)}
                keep = [(j, pos_b[k]) for j, k in enumerate(ids_a) if k in pos_b]
                if keep:
                    ja, jb = (np.array(v) for v in zip(*keep))
                    runs_.append((xa[ja], xb[jb], ya[ja]))
            if len(runs_) == len(feats[base]):
                mmd_rows.append({"method": m, "vs": base, "task": "probe", "metric": "probe_mmd",
                                 "layer": probes.get(m, {}).get("chosen_layer"), **mmd_permutation_test(runs_)})
    for r, ph in zip(mmd_rows, holm([r["p"] for r in mmd_rows])):
        r["family"] = "invariance (MMD)"
        r["p_holm"] = None if ph is None else _round_p(ph)
        r["verdict"] = ("lower" if r["delta"] < 0 else "higher") if ph is not None and ph < ALPHA else "n.s. (Holm)"
    rows += mmd_rows
    drift = {s["method"]: s["value"] for s in scores if s["task"] == forgetting and not s.get("left_out_domain")}
    trained = [m for m in summary if m != SEED and m in drift]

    def link_of(values: dict, what: str) -> dict:
        ms = [m for m in trained if values.get(m) is not None]
        rho, p = spearman_permutation([values[m] for m in ms], [drift[m] for m in ms])
        return {"probe_metric": what, "forgetting_task": forgetting, "methods": ms, "n": len(ms),
                "rho": None if rho is None else round(rho, 6), "p": None if p is None else _round_p(p),
                "test": "spearman_permutation", "runs": len(roots)}

    return {"probe": summary, "probe_deltas": rows,
            "probe_vs_forgetting": link_of({m: v["acc"] for m, v in summary.items()}, "probe_acc"),
            "probe_mmd_vs_forgetting": link_of({m: v.get("mmd_mean") for m, v in summary.items()}, "probe_mmd")}
