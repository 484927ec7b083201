"""The data stage: each domain's training records, the eval tasks' records, and the train/eval overlap check.

    run_data_stage(cfg)                                # OUTPUT_DIR/data/{train-<domain>.jsonl, sizes.json, overlap.json}
    train = read_train_data(cfg)                       # what the distill stage reads: {"math": [Record, ...], ...}

    train = prepare_domain_data(cfg)                   # {"math": [Record, ...], "code": [...], ...}
    evals = load_eval_records(cfg)                     # {"gsm8k": [...], "mbpp-heldout": [...], ...}
    summary = check_overlap(train, evals)              # {"n": 13, "max_fraction": ..., "pairs": [...]}
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from .errors import UserError
from .io import write_json
from .records import Record, read_records, write_records
from .sources import NgramIndex, dataset_info, load_source

log = logging.getLogger(__name__)

def _warn(msg: str) -> None:
    log.warning(msg)
    print(f"warning: {msg}", file=sys.stderr)


def train_data_path(output_dir: str | Path, domain: str) -> Path:
    """OUTPUT_DIR/data/train-<domain>.jsonl: a domain's training records, written by the data stage."""
    return Path(output_dir) / "data" / f"train-{domain}.jsonl"


def run_data_stage(cfg: Any) -> None:
    """Load every domain's training data and every eval task's items; check train/eval overlap. Writes
    OUTPUT_DIR/data/{train-<domain>.jsonl, sizes.json, overlap.json}."""
    out = Path(cfg.output_dir) / "data"
    train = prepare_domain_data(cfg)
    for name, recs in train.items():
        write_records(train_data_path(cfg.output_dir, name), recs)
    eval_records = load_eval_records(cfg)
    overlap = check_overlap(train, eval_records)
    sizes = {"train": {k: len(v) for k, v in train.items()}, "eval": {k: len(v) for k, v in eval_records.items()}}
    write_json(out / "sizes.json", sizes)
    write_json(out / "overlap.json", overlap)


def read_train_data(cfg: Any, output_dir: str | Path | None = None) -> dict[str, list[Record]]:
    """Every recipe domain's training records as the data stage wrote them under `output_dir` (default
    `cfg.output_dir`), in recipe domain order."""
    out: dict[str, list[Record]] = {}
    for name in cfg.domains:
        path = train_data_path(output_dir or cfg.output_dir, name)
        if not path.exists():
            raise UserError(f"no training data for domain '{name}': run the data step first "
                            "(`crossdistill run RECIPE --only data`)", file=str(path))
        out[name] = read_records(path)
    return out


def prepare_domain_data(cfg: Any) -> dict[str, list[Record]]:
    """Load every `cfg.domains[name].source`, capped by `cfg.effective_limit(size)`, shuffled with `cfg.seed`;
    Record.domain is set to the domain's plug-in name. Records need a non-empty reference response."""
    out: dict[str, list[Record]] = {}
    recipe = getattr(cfg, "recipe_path", None)
    owner: dict[str, str] = {}
    for name, d in cfg.domains.items():
        fld = f"domains.{name}.source"
        plugin = d.plugin or name
        if not d.source:
            raise UserError(f"domain '{name}' has no data source (a built-in name, a .jsonl/.json file, or "
                            "hf:owner/name)", file=recipe, field=fld)
        info = dataset_info(d.source)
        if info is not None and info.split_role == "eval":
            _warn(f"domain '{name}' trains on '{d.source}', an evaluation set; do not evaluate on it")
        try:
            recs = load_source(d.source, domain=plugin, data_dir=cfg.data_dir,
                               limit=cfg.effective_limit(d.size), seed=cfg.seed)
        except UserError as e:
            if e.file is None:    # a problem with the spec itself: point at the recipe field
                raise UserError(str(e).split(": ", 1)[-1] if e.field else str(e), file=recipe, field=fld) from None
            raise UserError(f"{e} (loading {fld} = {d.source!r})", field=None) from None
        if not recs:
            why = "size is 0" if d.size == 0 else f"the source {d.source!r} holds no usable records"
            raise UserError(f"domain '{name}' has zero training records ({why})", file=recipe, field=fld)
        empty = [r.id for r in recs if not (r.response or "").strip()]
        if empty:
            msg = (f"{len(empty)} of {len(recs)} records have no reference response (first: '{empty[0]}'); "
                   "training records need one")
            where = _locate_record(d.source, cfg.data_dir, empty[0])
            if where is not None:   # point at the data line itself
                raise UserError(f"{msg} (loading {fld} = {d.source!r})", file=where[0], line=where[1],
                                field="response")
            raise UserError(msg, file=recipe, field=fld)
        for r in recs:
            if r.id in owner and owner[r.id] != name:
                raise UserError(f"record id '{r.id}' appears in both domains '{owner[r.id]}' and '{name}'; "
                                "give the records unique ids", file=recipe, field=fld)
            owner[r.id] = name
        out[name] = recs
    return out


def _locate_record(source: str, data_dir: str | None, record_id: str) -> tuple[str, int] | None:
    """(file, line) of the record `record_id` when `source` is a local file holding it under that id, else None."""
    from .sources import resolve_source
    from .sources.files import iter_objects

    try:
        kind, where = resolve_source(source, data_dir)
        if kind != "file":
            return None
        for line, obj in iter_objects(Path(where)):
            if isinstance(obj, dict) and str(obj.get("id")) == record_id:
                return where, line
    except (UserError, OSError):
        return None
    return None


def load_eval_records(cfg: Any) -> dict[str, list[Record]]:
    """Records behind each eval task (`cfg.eval_tasks()`): the items the evaluation stage scores, i.e. the first
    `cfg.effective_limit(cfg.eval.limit)` of a `cfg.eval_seed()` shuffle."""
    from .evaluation.tasks import load_task_records, resolve_task

    limit = cfg.effective_limit(cfg.eval.limit)
    return {task: load_task_records(resolve_task(task), limit=limit, seed=cfg.eval_seed())[0]
            for task in cfg.eval_tasks()}


def check_overlap(train_by_domain: dict[str, list[Record]], eval_records_by_task: dict[str, list[Record]],
                  n: int = 13, examples: int = 3) -> dict:
    """n-gram contamination of every eval task by every domain's training records.

    Returns {"n", "max_fraction", "max_strong_fraction", "flagged": ["domain/task", ...] (any contamination),
    "pairs": [{"domain", "task", "train_records", "eval_records", "contaminated", "fraction", "exact_duplicates",
    "strong", "strong_fraction", "examples"}, ...]}. Warns (stderr) for each pair with strong contamination.
    """
    pairs = []
    for domain, train in train_by_domain.items():
        index = NgramIndex(train, n)
        for task, evals in eval_records_by_task.items():
            rep = index.report(evals, examples=examples)
            pairs.append({"domain": domain, "task": task, **{k: v for k, v in rep.items() if k != "n"}})
            if rep["strong"]:
                _warn(f"{rep['strong']} of {rep['eval_records']} '{task}' eval items are duplicates or near-duplicates "
                      f"of '{domain}' training records (see overlap.json)")
    return {
        "n": n,
        "max_fraction": max((p["fraction"] for p in pairs), default=0.0),
        "max_strong_fraction": max((p["strong_fraction"] for p in pairs), default=0.0),
        "flagged": [f"{p['domain']}/{p['task']}" for p in pairs if p["contaminated"]],
        "pairs": pairs,
    }
