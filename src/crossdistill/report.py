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
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError
from .io import atomic_open, read_complete_rows as _read_log, write_text
from .statistics import LOWER_IS_BETTER, SEED, primary_metrics


def _load(path: Path, default=None):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return default


def _fmt(v, digits=3):
    return "—" if v is None else f"{v:.{digits}f}"


def _fmt_p(p) -> str:
    """A p-value: 4 decimals, or 2 significant digits below 1e-4 (never a bare 0.0000)."""
    return "—" if p is None else (f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}")


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


def vs_seed_rows(results: dict, prim: dict[str, str]) -> dict[tuple[str, str], dict]:
    """{(method, task): the paired delta row method − seed on the task's primary metric}, LODO runs left out."""
    return {(d["method"], d["task"]): d for d in results.get("deltas", [])
            if d.get("vs") == SEED and not d.get("left_out_domain") and d["metric"] == prim.get(d["task"])}


def tradeoff_points(results: dict, drift_task: str = "seed-kl") -> dict[str, list[dict]]:
    """Per in-domain task, one point per trained method: x = its drift from the seed (`drift_task`'s delta vs the
    seed), y = its in-domain change vs the seed signed so that up is better (bpb and kl negated), each with the
    paired 95% CI and whether the adjusted test decided it. {} when the run has no drift rows."""
    prim = primary_metrics(results.get("scores", []))
    rows = vs_seed_rows(results, prim)
    methods = [m for m in results.get("methods", []) if m != SEED and (m, drift_task) in rows]
    out: dict[str, list[dict]] = {}
    for task in results.get("in_domain_tasks") or []:
        if task not in prim or task == drift_task:
            continue
        sign = -1.0 if prim[task] in LOWER_IS_BETTER else 1.0
        pts = []
        for m in methods:
            d, x = rows.get((m, task)), rows[(m, drift_task)]
            if d is None or d.get("ci_low") is None or x.get("ci_low") is None:
                continue
            lo, hi = sorted((sign * d["ci_low"], sign * d["ci_high"]))
            pts.append({"method": m, "x": x["delta"], "x_lo": x["ci_low"], "x_hi": x["ci_high"],
                        "y": sign * d["delta"], "y_lo": lo, "y_hi": hi, "decided": _significant(d)})
        if pts:
            out[f"{task} ({prim[task]})"] = pts
    return out


def plot_tradeoff(points: dict[str, list[dict]], drift_task: str = "seed-kl") -> bytes | None:
    """One panel per in-domain task: in-domain gain (up = better) against drift from the seed (right = more), each
    method a point with its paired 95% CIs on both axes; a hollow marker where the adjusted test did not decide
    the gain. The question of the experiment is which methods sit up and to the left."""
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(p["method"] for pts in points.values() for p in pts))
    colour = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    cols = min(4, len(points))
    rows = -(-len(points) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.0 * rows), squeeze=False)
    for ax, (task, pts) in zip(axes.flat, points.items()):
        for p in pts:
            c = colour[p["method"]]
            ax.errorbar(p["x"], p["y"], xerr=[[p["x"] - p["x_lo"]], [p["x_hi"] - p["x"]]],
                        yerr=[[p["y"] - p["y_lo"]], [p["y_hi"] - p["y"]]], fmt="o", color=c, capsize=2,
                        markerfacecolor=c if p["decided"] else "white", label=p["method"])
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_title(task, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(points):]:
        ax.axis("off")
    for ax in list(axes.flat)[:len(points)]:
        ax.set_xlabel(f"{drift_task} − seed (drift →)", fontsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel("in-domain change (↑ better)", fontsize=8)
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=colour[m], label=m) for m in methods]
    legend_rows = -(-len(methods) // 7)
    fig.suptitle("In-domain gain vs drift from the seed (paired 95% CIs; hollow: gain not decided after Holm)",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.04 * legend_rows / rows, 1, 0.97))
    fig.legend(handles=handles, loc="lower center", ncol=min(len(methods), 7), fontsize=8, frameon=False)
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


# --- the content model: a report is a title, an intro line and a list of sections of blocks ------------------------

@dataclass
class Text:
    """A paragraph; `html`: its HTML form when it carries markup (else the escaped text)."""
    text: str
    html: str | None = None


@dataclass
class Items:
    """A bulleted list."""
    items: list[str]


@dataclass
class Heading:
    """A sub-heading inside a section."""
    text: str
    level: int = 3


@dataclass
class Table:
    """head + rows of cell texts. HTML only: `bold_first` sets each row's first cell in bold, `styles` gives a cell's
    background colour (None: none), `cls` the table's class."""
    head: list[str]
    rows: list[list[str]]
    bold_first: bool = False
    styles: list[list[str | None]] | None = None
    cls: str | None = None


@dataclass
class Image:
    """A plot: written to plots/<file>, linked from Markdown, embedded in HTML."""
    caption: str
    file: str
    data: bytes


Block = Text | Items | Heading | Table | Image


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Report:
    title: str
    intro: Text
    sections: list[Section]


# --- the two renderers ------------------------------------------------------------------------------------------

def _md_block(b: Block) -> list[str]:
    if isinstance(b, Text):
        return [b.text]
    if isinstance(b, Items):
        return [f"- {x}" for x in b.items]
    if isinstance(b, Heading):
        return ["#" * b.level + " " + b.text]
    if isinstance(b, Table):
        return (["| " + " | ".join(b.head) + " |", "|" + "---|" * len(b.head)]
                + ["| " + " | ".join(r) + " |" for r in b.rows])
    return [f"![{b.caption}](plots/{b.file})"]


def render_markdown(report: Report) -> str:
    lines = [f"# {report.title}", "", report.intro.text]
    for sec in report.sections:
        lines += ["", f"## {sec.title}"]
        for b in sec.blocks:
            lines += [""] + _md_block(b)
    return "\n".join(lines) + "\n"


def _html_block(b: Block) -> str:
    esc = html.escape
    if isinstance(b, Text):
        return f"<p>{b.html if b.html is not None else esc(b.text)}</p>"
    if isinstance(b, Items):
        return "<ul>" + "".join(f"<li>{esc(x)}</li>" for x in b.items) + "</ul>"
    if isinstance(b, Heading):
        return f"<h{b.level}>{esc(b.text)}</h{b.level}>"
    if isinstance(b, Table):
        cls = f" class='{b.cls}'" if b.cls else ""
        out = [f"<table{cls}><tr>" + "".join(f"<th>{esc(c)}</th>" for c in b.head) + "</tr>"]
        for i, r in enumerate(b.rows):
            cells = []
            for j, c in enumerate(r):
                style = b.styles[i][j] if b.styles else None
                text = f"<b>{esc(c)}</b>" if b.bold_first and j == 0 else esc(c)
                cells.append(f"<td style='background:{style}'>{text}</td>" if style else f"<td>{text}</td>")
            out.append("<tr>" + "".join(cells) + "</tr>")
        return "\n".join(out + ["</table>"])
    return f"<img alt='{esc(b.caption)}' src='data:image/png;base64,{base64.b64encode(b.data).decode()}'>"


_STYLE = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
          "table{border-collapse:collapse;margin:1em 0;font-size:14px}td,th{border:1px solid #ccc;padding:4px 8px;"
          "text-align:right}th{background:#f4f4f4}td:first-child{text-align:left}img{max-width:100%}")


def render_html(report: Report) -> str:
    """A self-contained page: the plots embedded as base64 PNG."""
    h = [f"<h1>{html.escape(report.title)}</h1>", _html_block(report.intro)]
    for sec in report.sections:
        h.append(f"<h2>{html.escape(sec.title)}</h2>")
        h += [_html_block(b) for b in sec.blocks]
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(report.title)}</title>"
            f"<style>{_STYLE}</style></head><body>" + "\n".join(h) + "</body></html>\n")


# --- the sections ----------------------------------------------------------------------------------------------

def _setup_section(results: dict, sizes: dict, overlap: dict, dstats: dict) -> Section:
    """Model, training and eval sizes, the train/eval overlap check, distillation acceptance per domain."""
    from .models import model_note

    items = []
    note = model_note(str(results.get("model")))
    if note:
        items.append(f"Model: {note}")
    if sizes:
        items += [f"Training records per domain: {', '.join(f'{k} {v}' for k, v in sizes.get('train', {}).items())}",
                  f"Eval items per task: {', '.join(f'{k} {v}' for k, v in sizes.get('eval', {}).items())}"]
    if overlap:
        worst = overlap.get("max_fraction", 0.0)
        verdict = "clean" if worst == 0 else f"max contaminated fraction {worst:.3f}"
        items.append(f"Train/eval overlap ({overlap.get('n', 13)}-gram check): {verdict}")
    blocks: list[Block] = [Items(items)] if items else []
    per_domain = dstats.get("domains", {}) if isinstance(dstats, dict) else {}
    if per_domain:
        rows = []
        for dom, st in per_domain.items():
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(st.get("reasons", {}).items(), key=lambda kv: -kv[1])[:3])
            row = [dom, st.get("records"), st.get("accepted"), st.get("copied"), st.get("accepted_not_copied"),
                   _fmt(st.get("acceptance_rate"), 2), reasons or "—", _fmt(st.get("tokens_per_s"), 1),
                   st.get("candidates", "—"),
                   ", ".join(f"{k} {v}" for k, v in list(st.get("candidate_reasons", {}).items())[:4]) or "—"]
            rows.append([str(c) for c in row])
        blocks += [Heading("Distillation"),
                   Table(["domain", "records", "accepted", "copied", "self-distilled", "acceptance",
                          "top rejection reasons", "tok/s", "candidates", "candidate rejections"], rows)]
    return Section("Setup", blocks)


def _scores_section(scores: list[dict]) -> Section:
    methods, cols, cell = score_table(scores)
    if not cols:
        return Section("Scores (95% bootstrap CI)", [Text("No scores yet.")])
    rows = []
    for m in methods:
        cells = []
        for col in cols:
            s = cell.get((m, col))
            cells.append("—" if s is None else
                         f"{s['value']:.3f} [{_fmt(s.get('ci_low'), 2)}, {_fmt(s.get('ci_high'), 2)}] n={s.get('n')}")
        rows.append([m] + cells)
    return Section("Scores (95% bootstrap CI)",
                   [Table(["method"] + [f"{t} {m}" for t, m in cols], rows, bold_first=True)])


def _forgetting_section(fm_methods: list[str], fm_tasks: list[str], delta: dict, paired: dict) -> Section:
    title = "Forgetting matrix (score − seed, primary metric)"
    if not fm_methods:
        return Section(title, [Text("Needs the seed and at least one trained method.")])
    scale = max([abs(v) for v in delta.values()] + [1e-9])
    rows, styles = [], []
    for m in fm_methods:
        vals = [delta.get((m, t)) for t in fm_tasks]
        rows.append([m] + [_delta_text(v, paired.get((m, t))) for v, t in zip(vals, fm_tasks)])
        styles.append([None] + [None if v is None else _colour(v, scale, paired.get((m, t)))
                                for v, t in zip(vals, fm_tasks)])
    note = ("In brackets: the paired bootstrap 95% CI of the difference (same items for both); p: the "
            "Holm-adjusted p of the paired test (exact McNemar for 0/1 items, sign-flip permutation otherwise) "
            "within its family; * (and a coloured cell) marks a difference significant after Holm. Lower is "
            f"better for {', '.join(sorted(LOWER_IS_BETTER))}. Every trained method is compared with the seed "
            "model (no adapter).")
    return Section(title, [Table(["method"] + fm_tasks, rows, bold_first=True, styles=styles, cls="fm"), Text(note)])


def _tasks_section(results: dict, prim: dict[str, str]) -> Section | None:
    """Per task: its primary metric, n, the minimum detectable effect at that n, and whether the seed is at chance."""
    seed_rows = {s["task"]: s for s in results.get("scores", [])
                 if s["method"] == SEED and not s.get("left_out_domain") and s["metric"] == prim.get(s["task"])}
    if not seed_rows:
        return None
    chance = results.get("at_chance", {}) or {}
    in_domain = set(results.get("in_domain_tasks") or [])
    rows = []
    for t, s in seed_rows.items():
        rows.append([t, s["metric"], str(s.get("n")), _fmt(s.get("mde")), "in-domain" if t in in_domain else "general",
                     chance.get(t, "no")])
    note = ("MDE: the smallest difference to the seed a paired test detects with 80% power at α = 0.05 on this many "
            "items, 2.80·sd·√2/√n from the seed's per-item scores (normal approximation; uncorrelated items — "
            "pairing lowers it). A task at chance for the seed is left out of the forgetting verdicts.")
    return Section("Tasks", [Table(["task", "metric", "n", "MDE (80% power)", "role", "seed at chance"], rows),
                             Text(note)])


def _comparisons_section(results: dict, prim: dict[str, str]) -> Section | None:
    """Trained method vs trained method, primary metrics: the paired test, raw and Holm-adjusted p, verdict."""
    rows = []
    for d in results.get("deltas", []):
        if d.get("left_out_domain") or d.get("vs") == SEED or d["metric"] != prim.get(d["task"]):
            continue
        rows.append([d["method"], d["vs"], d["task"], d["metric"],
                     f"{d['delta']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]", str(d.get("n")),
                     d.get("test", "—"), _fmt_p(d.get("p")), _fmt_p(d.get("p_holm")), _fmt(d.get("mde"), 4),
                     d.get("family", "—"), d.get("verdict", "—")])
    if not rows:
        return None
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
            "planned = the recipe's `compare` pairs of trained methods, ablations = every other pair, lodo); "
            "verdicts use the adjusted p only; "
            "'not detectable at n': the difference is below the MDE of the paired test.")
    return Section("Trained methods compared",
                   [Table(["method", "vs", "task", "metric", "delta [95% CI]", "n", "test", "p", "p (Holm)", "MDE",
                           "family", "verdict"], rows), Text(note)])


def _retention_section(results: dict) -> Section | None:
    """Does each method keep a share of the reference method's in-domain gain (recipe `retention`)?"""
    rows = []
    for r in results.get("retention", []):
        kept = "—" if r.get("retained") is None else (
            f"{r['retained']:.2f}" + ("" if r.get("retained_ci_low") is None else
                                       f" [{r['retained_ci_low']:.2f}, {r['retained_ci_high']:.2f}]"))
        rows.append([r["method"], r["reference"], r["task"], r["metric"], _fmt(r.get("gain_method"), 4),
                     _fmt(r.get("gain_reference"), 4), kept, str(r.get("n")), _fmt_p(r.get("p")),
                     _fmt_p(r.get("p_holm")), r.get("verdict", "—")])
    if not rows:
        return None
    share = results["retention"][0]["share"]
    note = (f"Gains are over the seed, signed so that an improvement is positive (lower bits per byte is a gain). "
            f"retained = mean gain of the method / mean gain of the reference, with a bootstrap 95% CI over items. "
            f"p: two-sided sign-flip test of the per-item margin gain − {share:g} × reference gain; a significant "
            f"positive margin (Holm over these rows) says the method keeps at least {share:.0%} of the reference's "
            f"gain, a negative one that it keeps less. 'reference gain not detectable': the reference's own gain "
            f"over the seed was not significant (the comparisons above), so there is no gain to share out.")
    return Section("Gain retention",
                   [Table(["method", "reference", "task", "metric", "gain", "reference gain", "retained [95% CI]",
                           "n", "p", "p (Holm)", "verdict"], rows), Text(note)])


def _lodo_section(scores: list[dict], paired_lodo: dict, cross: list[dict] | None = None) -> Section | None:
    lodo = [s for s in scores if s.get("left_out_domain")]
    if not lodo:
        return None
    full = {(s["method"], s["task"], s["metric"]): s["value"] for s in scores if not s.get("left_out_domain")}
    rows = []
    for s in lodo:
        key = (s["method"], s["task"], s["metric"])
        w, base = full.get(key), full.get((SEED, s["task"], s["metric"]))
        lk = (s["method"], s["left_out_domain"], s["task"], s["metric"])
        rows.append([s["method"], s["left_out_domain"], s["task"], s["metric"], _fmt(base), _fmt(w), _fmt(s["value"]),
                     "—" if w is None else _delta_text(s["value"] - w, paired_lodo.get((False, *lk))),
                     "—" if base is None else _delta_text(s["value"] - base, paired_lodo.get((True, *lk)))])
    note = ("Each method trained again on every domain but one, scored on that domain's tasks. *without − with*: "
            "what leaving the domain out costs; *without − seed*: what training on the other domains alone did "
            "to it (transfer when above 0, forgetting when below).")
    blocks = [Text(note), Table(["method", "left-out domain", "task", "metric", "seed", "with domain",
                                 "without domain", "without − with [paired CI]", "without − seed [paired CI]"], rows)]
    if cross:
        blocks += [Text("Two methods both trained without the domain, on its tasks (method − vs; Holm within the "
                        "lodo family):"),
                   Table(["method", "vs", "left-out domain", "task", "metric", "delta [95% CI]", "n", "p (Holm)",
                          "verdict"],
                         [[d["method"], d["vs"], d["left_out_domain"], d["task"], d["metric"],
                           f"{d['delta']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]", str(d.get("n")),
                           _fmt_p(d.get("p_holm")), d.get("verdict", "—")] for d in cross])]
    return Section("Leave-one-domain-out", blocks)


def _timing_section(dstats: dict, train_stats: dict[str, dict], timing: dict[str, dict]) -> Section | None:
    if not (timing or train_stats):
        return None
    items = []
    if dstats.get("wall_s") is not None:
        items.append(f"distill: {dstats['wall_s']:.0f}")
    items += [f"train/{m}: {st['wall_s']:.0f}" for m, st in train_stats.items() if st.get("wall_s") is not None]
    items += [f"eval/{m}: " + ", ".join(f"{k} {v:.0f}" for k, v in t.items()) for m, t in timing.items() if t]
    return Section("Wall time (s)", [Items(items)])


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


def invariance_section(out: Path, results: dict | None = None) -> Section | None:
    """The domain-invariance table and plot; None without probe results. `results`: the run's results.json when
    the caller has it loaded (else read here)."""
    probes = {}
    for d in sorted((out / "probe").glob("*")) if (out / "probe").exists() else []:
        p = _load(d / "probe.json")
        if p and p.get("layers"):
            probes[d.name] = p
    if not probes:
        return None
    if SEED in probes:   # the seed first
        probes = {SEED: probes[SEED], **{m: p for m, p in probes.items() if m != SEED}}
    first = next(iter(probes.values()))
    pairs = list(first["layers"][0]["mmd"])
    note = (f"Linear domain probe: {first['folds']}-fold logistic regression on pooled response features of "
            f"held-out records ({', '.join(f'{d} {n}' for d, n in first['n_per_domain'].items())}); chance "
            f"{first['chance']:.3f}; lower accuracy and MMD² = more domain-invariant features. CI: {first['ci']}.")
    rows = []
    for m, p in probes.items():
        row = next((r for r in p["layers"] if r["layer"] == p["chosen_layer"]), None)
        if row is None:
            continue
        rows.append([m, str(row["layer"]), f"{row['acc']:.3f} [{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}]",
                     f"{row['mmd_mean']:.4f}"] + [_fmt(row["mmd"].get(k), 4) for k in pairs])
    blocks: list[Block] = [Text(note), Table(["method", "layer", "probe acc [95% CI]", "mean MMD²"]
                                             + [f"MMD² {p}" for p in pairs], rows)]
    res = (results if results is not None else _load(out / "results.json", {})) or {}
    pd = [d for d in res.get("probe_deltas") or [] if d.get("metric") != "probe_mmd"]
    if pd:
        blocks += [Text("Probe accuracy at the invariance layer, method − vs, paired by probe record (exact McNemar "
                        "on the out-of-fold correctness), Holm over these pairs: 'lower' = more domain-invariant."),
                   Table(["method", "vs", "delta [95% CI]", "n", "p", "p (Holm)", "verdict"],
                         [[d["method"], d["vs"], f"{d['delta']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]",
                           str(d["n"]), _fmt_p(d.get("p")), _fmt_p(d.get("p_holm")), d.get("verdict", "—")]
                          for d in pd])]
    mmd = [d for d in res.get("probe_deltas") or [] if d.get("metric") == "probe_mmd"]
    if mmd:
        blocks += [Text("Between-domain MMD² at the invariance layer, method − vs, for the methods trained with an "
                        "invariance term: paired swap-permutation test on the same probe records (a statistic of "
                        "the whole set: no CI), Holm over these pairs: 'lower' = more domain-invariant."),
                   Table(["method", "vs", "delta MMD²", "n", "p", "p (Holm)", "verdict"],
                         [[d["method"], d["vs"], f"{d['delta']:+.4f}", str(d["n"]), _fmt_p(d.get("p")),
                           _fmt_p(d.get("p_holm")), d.get("verdict", "—")] for d in mmd])]
    for key, what in (("probe_vs_forgetting", "probe accuracy"), ("probe_mmd_vs_forgetting", "MMD²")):
        link = res.get(key) or {}
        if link.get("rho") is not None:
            blocks.append(Text(f"Across the {link['n']} trained methods, Spearman's rho between {what} and "
                               f"{link['forgetting_task']} is {link['rho']:+.3f} (permutation p = {link['p']:.3g}):"
                               f" a positive rho means the more domain-invariant methods drifted less from the seed."))
    img = plot_probe(probes)
    if img:
        blocks.append(Image("Domain probe by layer", "probe.png", img))
    return Section("Domain invariance", blocks)


def build_report(out: Path) -> Report:
    """The report of the run in `out`, as content: read once, rendered by `render_markdown` and `render_html`."""
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

    fm_methods, fm_tasks, delta = forgetting_matrix(scores)
    prim = primary_metrics(scores)
    paired = vs_seed_rows(results, prim)
    paired_lodo = {(d["vs"] == SEED, d["method"], d["left_out_domain"], d["task"], d["metric"]): d
                   for d in results.get("deltas", []) if d.get("left_out_domain") and d["vs"] in (SEED, d["method"])}
    cross_lodo = [d for d in results.get("deltas", []) if d.get("left_out_domain")
                  and d["vs"] not in (SEED, d["method"]) and d["metric"] == prim.get(d["task"])]
    plots = []
    for name, caption, data in (("deltas", "Deltas vs seed", plot_deltas(fm_methods, fm_tasks, delta, paired)),
                                ("tradeoff", "In-domain gain vs drift from the seed",
                                 plot_tradeoff(tradeoff_points(results))),
                                ("training", "Training curves per loss term", plot_training(logs))):
        if data:
            plots.append(Section(caption, [Image(caption, f"{name}.png", data)]))
    sections = [_setup_section(results, sizes, overlap, dstats), _scores_section(scores),
                _forgetting_section(fm_methods, fm_tasks, delta, paired), _tasks_section(results, prim),
                _comparisons_section(results, prim), _retention_section(results), *plots,
                _lodo_section(scores, paired_lodo, cross_lodo),
                invariance_section(out, results), _timing_section(dstats, train_stats, timing)]
    recipe = results.get("recipe")
    intro_md = f"Recipe: `{recipe}` · seed {results.get('seed')}"
    intro_html = f"Recipe: <code>{html.escape(str(recipe))}</code> · seed {results.get('seed')}"
    missing = results.get("missing") or []
    if missing:   # a run still going, or one run with --only: its tests and Holm cover the finished methods only
        note = (f"Interim: no eval results yet for {', '.join(missing)}. Every comparison and Holm's adjustment "
                f"below covers the {len(results.get('methods', []))} finished methods only.")
        intro_md += f"\n\n**{note}**"
        intro_html += f"<br><strong>{html.escape(note)}</strong>"
    intro = Text(intro_md, html=intro_html)
    return Report(f"crossdistill report — {results.get('model', '?')}", intro, [s for s in sections if s])


def write_report(output_dir: str) -> dict[str, str]:
    """OUTPUT_DIR/report.md, report.html and plots/*.png from the run's files."""
    out = Path(output_dir)
    report = build_report(out)
    plots_dir = out / "plots"
    plots_dir.mkdir(exist_ok=True)
    for sec in report.sections:
        for b in sec.blocks:
            if isinstance(b, Image):
                with atomic_open(plots_dir / b.file, "wb") as f:   # never a half-written image
                    f.write(b.data)
    write_text(out / "report.md", render_markdown(report))
    write_text(out / "report.html", render_html(report))
    return {"md": str(out / "report.md"), "html": str(out / "report.html")}
