"""The report: setup, scores with CIs, forgetting matrix (delta vs seed), plots, LODO table.

Reads only files under OUTPUT_DIR (results.json, data/, distill/stats.json, train/*/log.jsonl), so
`crossdistill report OUTPUT_DIR` can be rerun at any time. Writes report.md and a self-contained
report.html (plots embedded as base64 PNG) plus the PNGs under plots/.
"""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from .errors import UserError
from .io import atomic_open, read_complete_rows as _read_log, write_text
from .statistics import LOWER_IS_BETTER, primary_metrics

SEED = "seed"


def _load(path: Path, default=None):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return default


def _fmt(v, digits=3):
    return "—" if v is None else f"{v:.{digits}f}"


def score_table(scores: list[dict]) -> tuple[list[str], list[tuple[str, str]], dict]:
    methods, cols, cell = [], [], {}
    for s in scores:
        if s.get("left_out_domain"):
            continue
        if s["method"] not in methods:
            methods.append(s["method"])
        col = (s["task"], s["metric"])
        if col not in cols:
            cols.append(col)
        cell[(s["method"], col)] = s
    return methods, cols, cell


def forgetting_matrix(scores: list[dict]) -> tuple[list[str], list[str], dict]:
    """(methods, tasks, {(method, task): delta vs seed}) on each task's primary metric."""
    prim = primary_metrics(scores)
    base = {s["task"]: s["value"] for s in scores
            if s["method"] == SEED and not s.get("left_out_domain") and s["metric"] == prim[s["task"]]}
    methods, tasks, delta = [], [], {}
    for s in scores:
        if s.get("left_out_domain") or s["method"] == SEED or s["metric"] != prim[s["task"]]:
            continue
        if s["task"] not in base:
            continue
        if s["method"] not in methods:
            methods.append(s["method"])
        if s["task"] not in tasks:
            tasks.append(s["task"])
        delta[(s["method"], s["task"])] = s["value"] - base[s["task"]]
    return methods, tasks, delta


def _delta_text(v: float | None, paired: dict | None) -> str:
    """'+0.050' or, with a paired row, '+0.050 [-0.050, +0.150] p=0.40' (and '*' when its Holm-adjusted test is
    significant: verdict better or worse)."""
    if v is None:
        return "—"
    if not paired or paired.get("ci_low") is None:
        return f"{v:+.3f}"
    lo, hi = paired["ci_low"], paired["ci_high"]
    star = "*" if _significant(paired) else ""
    ph = paired.get("p_holm")
    ptxt = "" if ph is None else f" p={ph:.2g}"
    return f"{v:+.3f} [{lo:+.3f}, {hi:+.3f}]{ptxt}{star}"


def _significant(row: dict | None) -> bool:
    return bool(row) and row.get("verdict") in ("better", "worse")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def plot_deltas(methods, tasks, delta, paired: dict | None = None) -> bytes | None:
    """Grouped bars of score − seed; with `paired` ({(method, task): delta row}) the paired 95% CI as error bars."""
    if not methods or not tasks:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(tasks) + 2), 4))
    width = 0.8 / len(methods)
    x = np.arange(len(tasks))
    for i, m in enumerate(methods):
        vals = [delta.get((m, t), 0.0) for t in tasks]
        rows = [(paired or {}).get((m, t)) for t in tasks]
        err = None
        if any(r is not None and r.get("ci_low") is not None for r in rows):
            err = [[max(0.0, v - r["ci_low"]) if r else 0.0 for v, r in zip(vals, rows)],
                   [max(0.0, r["ci_high"] - v) if r else 0.0 for v, r in zip(vals, rows)]]
        ax.bar(x + i * width - 0.4 + width / 2, vals, width, label=m, yerr=err, capsize=3 if err else 0)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, tasks, rotation=20)
    ax.set_ylabel("score − seed")
    ax.set_title("Change vs the seed model (primary metric per task)" + ("; error bars: paired 95% CI" if paired else ""))
    ax.legend()
    data = _png(fig)
    plt.close(fig)
    return data


def plot_training(logs: dict[str, list[dict]]) -> bytes | None:
    logs = {m: rows for m, rows in logs.items() if rows}
    if not logs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    terms = []
    for rows in logs.values():
        for r in rows:
            for k, v in r.items():
                if k in ("step", "epoch", "lr", "learning_rate", "grad_norm") or not isinstance(v, (int, float)):
                    continue
                if k not in terms:
                    terms.append(k)
    terms = terms[:9]
    if not terms:
        return None
    cols = min(3, len(terms))
    rows_n = (len(terms) + cols - 1) // cols
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.2 * cols, 3 * rows_n), squeeze=False)
    for ax, term in zip(axes.flat, terms):
        for m, rows in logs.items():
            pts = [(r.get("step", i), r[term]) for i, r in enumerate(rows) if isinstance(r.get(term), (int, float))]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], label=m, marker=".", linewidth=1)
        ax.set_title(term, fontsize=10)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(terms):]:
        ax.axis("off")
    fig.tight_layout()
    data = _png(fig)
    plt.close(fig)
    return data


def _colour(d: float, scale: float, row: dict | None = None) -> str:
    """Green (better) or red (worse) only when the cell's Holm-adjusted test is significant; else no colour."""
    if not _significant(row):
        return "transparent"
    a = min(1.0, abs(d) / scale) if scale > 0 else 0.0
    good = row["verdict"] == "better"
    return f"rgba(46,160,67,{0.15 + 0.6 * a:.2f})" if good else f"rgba(215,58,73,{0.15 + 0.6 * a:.2f})"


def _table(head: list[str], rows: list[list[str]]) -> tuple[list[str], list[str]]:
    md = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]
    h = ["<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>"]
    h += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows] + ["</table>"]
    return md, h


def _tasks_section(results: dict, prim: dict[str, str]) -> tuple[list[str], list[str]]:
    """Per task: its primary metric, n, the minimum detectable effect at that n, and whether the seed is at chance."""
    seed_rows = {s["task"]: s for s in results.get("scores", [])
                 if s["method"] == SEED and not s.get("left_out_domain") and s["metric"] == prim.get(s["task"])}
    if not seed_rows:
        return [], []
    chance = results.get("at_chance", {}) or {}
    in_domain = set(results.get("in_domain_tasks") or [])
    rows = []
    for t, s in seed_rows.items():
        rows.append([t, s["metric"], str(s.get("n")), _fmt(s.get("mde")), "in-domain" if t in in_domain else "general",
                     chance.get(t, "no")])
    note = ("MDE: the smallest difference to the seed a paired test detects with 80% power at α = 0.05 on this many "
            "items, 2.80·sd·√2/√n from the seed's per-item scores (normal approximation; uncorrelated items — "
            "pairing lowers it). A task at chance for the seed is left out of the forgetting verdicts.")
    md, h = _table(["task", "metric", "n", "MDE (80% power)", "role", "seed at chance"], rows)
    return ["", "## Tasks", ""] + md + ["", note], ["<h2>Tasks</h2>"] + h + [f"<p>{html.escape(note)}</p>"]


def _comparisons_section(results: dict, prim: dict[str, str]) -> tuple[list[str], list[str]]:
    """Trained method vs trained method, primary metrics: the paired test, raw and Holm-adjusted p, verdict."""
    rows = []
    for d in results.get("deltas", []):
        if d.get("left_out_domain") or d.get("vs") == SEED or d["metric"] != prim.get(d["task"]):
            continue
        rows.append([d["method"], d["vs"], d["task"], d["metric"],
                     f"{d['delta']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]", str(d.get("n")),
                     d.get("test", "—"), _fmt(d.get("p"), 4), _fmt(d.get("p_holm"), 4), _fmt(d.get("mde"), 4),
                     d.get("family", "—"), d.get("verdict", "—")])
    if not rows:
        return [], []
    setup = results.get("method_setup") or {}
    if setup:
        def what(m):
            st = setup.get(m)
            if not st:
                return f"{m}: the seed model"
            size = "full fine-tune" if st["lora_r"] is None else f"LoRA r{st['lora_r']}"
            steps = f"{st['max_steps']} steps" if st.get("max_steps") else f"{st.get('epochs')} epochs"
            return f"{m}: {st['method']}, {size}, {steps}"
        base = "Baselines: " + "; ".join(what(m) for m in results.get("methods", [])) + ". "
    else:
        base = ""
    note = (base + "method − vs on the same items. Holm–Bonferroni adjusts within each family (in-domain gain, forgetting, "
            "ablations = every comparison of two trained methods, lodo); verdicts use the adjusted p only; "
            "'not detectable at n': the difference is below the MDE of the paired test.")
    md, h = _table(["method", "vs", "task", "metric", "delta [95% CI]", "n", "test", "p", "p (Holm)", "MDE",
                    "family", "verdict"], rows)
    return (["", "## Trained methods compared", ""] + md + ["", note],
            ["<h2>Trained methods compared</h2>"] + h + [f"<p>{html.escape(note)}</p>"])


# --- domain invariance (probe/<method>/probe.json, written by probe.py) -------------------------------------------

def plot_probe(probes: dict[str, dict]) -> bytes | None:
    """Domain-probe accuracy by layer, one line per method, with its CI band and the chance level."""
    if not probes:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for m, p in probes.items():
        xs = [r["layer"] for r in p["layers"]]
        ax.plot(xs, [r["acc"] for r in p["layers"]], marker=".", label=m)
        ax.fill_between(xs, [r["ci_low"] for r in p["layers"]], [r["ci_high"] for r in p["layers"]], alpha=0.15)
    first = next(iter(probes.values()))
    ax.axhline(first["chance"], color="black", linestyle="--", linewidth=0.8, label="chance")
    ax.axvline(first["chosen_layer"], color="grey", linestyle=":", linewidth=0.8, label="invariance layer")
    ax.set_xlabel("layer (0 = embeddings)")
    ax.set_ylabel("domain-probe accuracy")
    ax.set_title("Linear domain probe by layer (lower = more domain-invariant); bands: 95% CI")
    ax.legend(fontsize=7)
    data = _png(fig)
    plt.close(fig)
    return data


def invariance_section(out: Path, plots_dir: Path) -> tuple[list[str], list[str]]:
    """(markdown lines, html lines) of the domain-invariance table and plot; empty without probe results."""
    probes = {}
    for d in sorted((out / "probe").glob("*")) if (out / "probe").exists() else []:
        p = _load(d / "probe.json")
        if p and p.get("layers"):
            probes[d.name] = p
    if not probes:
        return [], []
    if SEED in probes:   # the seed first
        probes = {SEED: probes[SEED], **{m: p for m, p in probes.items() if m != SEED}}
    first = next(iter(probes.values()))
    pairs = list(first["layers"][0]["mmd"])
    head = ["method", "layer", "probe acc [95% CI]", "mean MMD²"] + [f"MMD² {p}" for p in pairs]
    note = (f"Linear domain probe: {first['folds']}-fold logistic regression on pooled response features of "
            f"held-out records ({', '.join(f'{d} {n}' for d, n in first['n_per_domain'].items())}); chance "
            f"{first['chance']:.3f}; lower accuracy and MMD² = more domain-invariant features. CI: {first['ci']}.")
    md = ["", "## Domain invariance", "", note, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    h = ["<h2>Domain invariance</h2>", f"<p>{html.escape(note)}</p><table><tr>"
         + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>"]
    for m, p in probes.items():
        row = next((r for r in p["layers"] if r["layer"] == p["chosen_layer"]), None)
        if row is None:
            continue
        cells = [m, str(row["layer"]), f"{row['acc']:.3f} [{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}]",
                 f"{row['mmd_mean']:.4f}"] + [_fmt(row["mmd"].get(k), 4) for k in pairs]
        md.append("| " + " | ".join(cells) + " |")
        h.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    h.append("</table>")
    img = plot_probe(probes)
    if img:
        with atomic_open(plots_dir / "probe.png", "wb") as f:
            f.write(img)
        md += ["", "![Domain probe by layer](plots/probe.png)"]
        h.append(f"<img alt='Domain probe by layer' src='data:image/png;base64,{base64.b64encode(img).decode()}'>")
    return md, h


def write_report(output_dir: str) -> dict[str, str]:
    out = Path(output_dir)
    results = _load(out / "results.json")
    if results is None:
        raise UserError("no results.json here: run `crossdistill run RECIPE` first", file=str(out / "results.json"))
    scores = results.get("scores", [])
    sizes = _load(out / "data" / "sizes.json", {})
    overlap = _load(out / "data" / "overlap.json", {})
    dstats = _load(out / "distill" / "stats.json", {})
    logs = {}
    train_stats = {}
    for d in sorted((out / "train").glob("*")) if (out / "train").exists() else []:
        logs[d.name] = _read_log(d / "log.jsonl")
        train_stats[d.name] = _load(d / "train_stats.json", {})
    timing = {}
    for d in sorted((out / "eval").glob("*")) if (out / "eval").exists() else []:
        timing[d.name] = (_load(d / "results.json", {}) or {}).get("timing", {})

    methods, cols, cell = score_table(scores)
    fm_methods, fm_tasks, delta = forgetting_matrix(scores)
    prim = primary_metrics(scores)
    paired = {(d["method"], d["task"]): d for d in results.get("deltas", [])
              if not d.get("left_out_domain") and d.get("vs") == SEED and d["metric"] == prim.get(d["task"])}
    paired_lodo = {(d["vs"] == SEED, d["method"], d["left_out_domain"], d["task"], d["metric"]): d
                   for d in results.get("deltas", []) if d.get("left_out_domain")}
    plots_dir = out / "plots"
    plots_dir.mkdir(exist_ok=True)
    images = {}
    for name, data in (("deltas", plot_deltas(fm_methods, fm_tasks, delta, paired)), ("training", plot_training(logs))):
        if data:
            with atomic_open(plots_dir / f"{name}.png", "wb") as f:   # never a half-written image
                f.write(data)
            images[name] = data

    md: list[str] = []
    h: list[str] = []
    title = f"crossdistill report — {results.get('model', '?')}"
    md += [f"# {title}", "", f"Recipe: `{results.get('recipe')}` · seed {results.get('seed')}", ""]
    h += [f"<h1>{html.escape(title)}</h1>",
          f"<p>Recipe: <code>{html.escape(str(results.get('recipe')))}</code> · seed {results.get('seed')}</p>"]

    # Setup: sizes, overlap, distillation acceptance
    md += ["## Setup", ""]
    h += ["<h2>Setup</h2>"]
    from .models import model_note

    note = model_note(str(results.get("model")))
    if note:
        md += [f"- Model: {note}"]
        h += [f"<p>Model: {html.escape(note)}</p>"]
    if sizes:
        tr = ", ".join(f"{k} {v}" for k, v in sizes.get("train", {}).items())
        ev = ", ".join(f"{k} {v}" for k, v in sizes.get("eval", {}).items())
        md += [f"- Training records per domain: {tr}", f"- Eval items per task: {ev}"]
        h += [f"<ul><li>Training records per domain: {html.escape(tr)}</li><li>Eval items per task: {html.escape(ev)}</li></ul>"]
    if overlap:
        worst = overlap.get("max_fraction", 0.0)
        verdict = "clean" if worst == 0 else f"max contaminated fraction {worst:.3f}"
        md += [f"- Train/eval overlap ({overlap.get('n', 13)}-gram check): {verdict}"]
        h += [f"<p>Train/eval overlap ({overlap.get('n', 13)}-gram check): <b>{html.escape(verdict)}</b></p>"]
    per_domain = dstats.get("domains", {}) if isinstance(dstats, dict) else {}
    if per_domain:
        head = ["domain", "records", "accepted", "copied", "self-distilled", "acceptance", "top rejection reasons", "tok/s",
                "candidates", "candidate rejections"]
        md += ["", "### Distillation", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        h += ["<h3>Distillation</h3><table><tr>" + "".join(f"<th>{c}</th>" for c in head) + "</tr>"]
        for dom, st in per_domain.items():
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(st.get("reasons", {}).items(), key=lambda kv: -kv[1])[:3])
            row = [dom, st.get("records"), st.get("accepted"), st.get("copied"), st.get("accepted_not_copied"),
                   _fmt(st.get("acceptance_rate"), 2), reasons or "—", _fmt(st.get("tokens_per_s"), 1),
                   st.get("candidates", "—"),
                   ", ".join(f"{k} {v}" for k, v in list(st.get("candidate_reasons", {}).items())[:4]) or "—"]
            md.append("| " + " | ".join(str(c) for c in row) + " |")
            h.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>")
        h.append("</table>")
    md.append("")

    # Scores
    md += ["## Scores (95% bootstrap CI)", ""]
    h += ["<h2>Scores (95% bootstrap CI)</h2>"]
    if cols:
        head = ["method"] + [f"{t} {m}" for t, m in cols]
        md += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        h += ["<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>"]
        for m in methods:
            cells = []
            for col in cols:
                s = cell.get((m, col))
                cells.append("—" if s is None else f"{s['value']:.3f} [{_fmt(s.get('ci_low'), 2)}, {_fmt(s.get('ci_high'), 2)}] n={s.get('n')}")
            md.append("| " + " | ".join([m] + cells) + " |")
            h.append("<tr><td><b>" + html.escape(m) + "</b></td>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
        h.append("</table>")
    else:
        md.append("No scores yet.")
        h.append("<p>No scores yet.</p>")

    # Forgetting matrix
    md += ["", "## Forgetting matrix (score − seed, primary metric)", ""]
    h += ["<h2>Forgetting matrix (score − seed, primary metric)</h2>"]
    if fm_methods:
        scale = max([abs(v) for v in delta.values()] + [1e-9])
        md += ["| method | " + " | ".join(fm_tasks) + " |", "|" + "---|" * (len(fm_tasks) + 1)]
        h += ["<table class='fm'><tr><th>method</th>" + "".join(f"<th>{html.escape(t)}</th>" for t in fm_tasks) + "</tr>"]
        for m in fm_methods:
            vals = [delta.get((m, t)) for t in fm_tasks]
            texts = [_delta_text(v, paired.get((m, t))) for v, t in zip(vals, fm_tasks)]
            md.append(f"| {m} | " + " | ".join(texts) + " |")
            h.append(f"<tr><td><b>{html.escape(m)}</b></td>" + "".join(
                "<td>—</td>" if v is None else
                f"<td style='background:{_colour(v, scale, paired.get((m, t)))}'>{html.escape(txt)}</td>"
                for v, txt, t in zip(vals, texts, fm_tasks)) + "</tr>")
        h.append("</table>")
        note = ("In brackets: the paired bootstrap 95% CI of the difference (same items for both); p: the "
                "Holm-adjusted p of the paired test (exact McNemar for 0/1 items, sign-flip permutation otherwise) "
                "within its family; * (and a coloured cell) marks a difference significant after Holm. Lower is "
                f"better for {', '.join(sorted(LOWER_IS_BETTER))}. Every trained method is compared with the seed "
                "model (no adapter).")
        md += ["", note]
        h.append(f"<p>{note}</p>")
    else:
        md.append("Needs the seed and at least one trained method.")
        h.append("<p>Needs the seed and at least one trained method.</p>")

    tm, th = _tasks_section(results, prim)
    md += tm
    h += th
    cm, ch = _comparisons_section(results, prim)
    md += cm
    h += ch

    # Plots
    for name, caption in (("deltas", "Deltas vs seed"), ("training", "Training curves per loss term")):
        if name in images:
            md += ["", f"## {caption}", "", f"![{caption}](plots/{name}.png)"]
            b64 = base64.b64encode(images[name]).decode()
            h += [f"<h2>{caption}</h2>", f"<img alt='{caption}' src='data:image/png;base64,{b64}'>"]

    # LODO
    lodo = [s for s in scores if s.get("left_out_domain")]
    if lodo:
        full = {(s["method"], s["task"], s["metric"]): s["value"] for s in scores if not s.get("left_out_domain")}
        head = ["method", "left-out domain", "task", "metric", "seed", "with domain", "without domain",
                "without − with [paired CI]", "without − seed [paired CI]"]
        md += ["", "## Leave-one-domain-out", "",
               "Each method trained again on every domain but one, scored on that domain's tasks. *without − with*: "
               "what leaving the domain out costs; *without − seed*: what training on the other domains alone did "
               "to it (transfer when above 0, forgetting when below).", "",
               "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        h += ["<h2>Leave-one-domain-out</h2><table><tr>" + "".join(f"<th>{c}</th>" for c in head) + "</tr>"]
        for s in lodo:
            key = (s["method"], s["task"], s["metric"])
            w, base = full.get(key), full.get((SEED, s["task"], s["metric"]))
            lk = (s["method"], s["left_out_domain"], s["task"], s["metric"])
            row = [s["method"], s["left_out_domain"], s["task"], s["metric"], _fmt(base), _fmt(w), _fmt(s["value"]),
                   "—" if w is None else _delta_text(s["value"] - w, paired_lodo.get((False, *lk))),
                   "—" if base is None else _delta_text(s["value"] - base, paired_lodo.get((True, *lk)))]
            md.append("| " + " | ".join(row) + " |")
            h.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
        h.append("</table>")

    inv_md, inv_h = invariance_section(out, plots_dir)
    md += inv_md
    h += inv_h

    # Timing
    if timing or train_stats:
        md += ["", "## Wall time (s)", ""]
        h += ["<h2>Wall time (s)</h2><ul>"]
        if dstats.get("wall_s") is not None:
            md.append(f"- distill: {dstats['wall_s']:.0f}")
            h.append(f"<li>distill: {dstats['wall_s']:.0f}</li>")
        for m, st in train_stats.items():
            if st.get("wall_s") is not None:
                md.append(f"- train/{m}: {st['wall_s']:.0f}")
                h.append(f"<li>train/{html.escape(m)}: {st['wall_s']:.0f}</li>")
        for m, t in timing.items():
            if t:
                s = ", ".join(f"{k} {v:.0f}" for k, v in t.items())
                md.append(f"- eval/{m}: {s}")
                h.append(f"<li>eval/{html.escape(m)}: {html.escape(s)}</li>")
        h.append("</ul>")

    style = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:1em 0;font-size:14px}td,th{border:1px solid #ccc;padding:4px 8px;"
             "text-align:right}th{background:#f4f4f4}td:first-child{text-align:left}img{max-width:100%}")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>" + "\n".join(h) + "</body></html>\n")
    write_text(out / "report.md", "\n".join(md) + "\n")
    write_text(out / "report.html", page)
    return {"md": str(out / "report.md"), "html": str(out / "report.html")}
