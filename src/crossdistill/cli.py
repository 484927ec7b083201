"""Thin command line: parse, load the recipe, call one stage function. No logic lives only here."""
from __future__ import annotations

import argparse
import errno
import os
import sys
from importlib import resources
from pathlib import Path

from .errors import UserError

DEMO = "demo"


def default_recipe() -> str:
    """The embedded default recipe (shipped inside the package, so it works from any folder)."""
    return str(resources.files("crossdistill") / "recipes" / "demo.yaml")


def _recipe_path(arg: str | None) -> str:
    if arg in (None, DEMO):
        return default_recipe()
    return arg


def _split_method(overrides: list[str]) -> tuple[str | None, list[str]]:
    """`train.method=NAME` may name a recipe method (e.g. an ablation); pull it out of the plain overrides."""
    method, rest = None, []
    for o in overrides:
        if o.startswith("train.method="):
            method = o.split("=", 1)[1]
        else:
            rest.append(o)
    return method, rest


def _load(args, overrides, *, stage: bool = False):
    """The recipe as a Config. `stage`: the command runs a stage (writes under `output_dir`, loads the model), so
    check the output folder and the model name before any work starts (creating and loading nothing)."""
    from .config import load_config

    args.recipe_file = _recipe_path(args.recipe)   # recipe-level errors are located in it (see main)
    cfg = load_config(args.recipe_file, overrides)
    if stage:
        from .models import check_model_name
        from .runner import check_output_dir

        check_output_dir(cfg)
        check_model_name(cfg.model)
    return cfg


def cmd_run(args) -> None:
    from .runner import run

    cfg = _load(args, args.overrides)
    run(cfg, dry_run=args.dry_run, only=args.only.split(",") if args.only else None)
    if not args.dry_run:
        print(f"report: {Path(cfg.output_dir) / 'report.html'}")
        print(f"results: {Path(cfg.output_dir) / 'results.json'}")


def cmd_config_show(args) -> None:
    cfg = _load(args, args.overrides)
    print(cfg.to_yaml(), end="")


def cmd_models(args) -> None:
    from .models import list_models, prepare_model

    if args.action == "list":
        for name, status, desc in list_models():
            print(f"{name:30} {status:14} {desc}")
    else:
        if not args.name:
            raise UserError("usage: crossdistill models prepare NAME")
        print(prepare_model(args.name))


def cmd_data(args) -> None:
    from . import sources

    if args.action == "list":
        for info in sources.list_datasets():
            print(f"{info.name:18} {info.domain:12} {info.split_role:6} {info.size:>6}  {info.description}")
    elif args.action == "prepare":
        if not args.names:
            raise UserError("usage: crossdistill data prepare NAME... --out DIR")
        for name, path in sources.prepare_datasets(args.names, args.out).items():
            print(f"{name}: {path}")
    elif args.action == "validate":
        for f in args.names:
            n = sources.validate_file(f)
            print(f"{f}: {n} records OK")
    elif args.action == "overlap":
        import json

        from .records import read_records

        if len(args.names) != 2:
            raise UserError("usage: crossdistill data overlap TRAIN.jsonl EVAL.jsonl")
        rep = sources.overlap_report(read_records(args.names[0]), read_records(args.names[1]), n=args.ngram)
        print(json.dumps(rep, indent=2))


def cmd_distill(args) -> None:
    from .distill import distill, merge_shards

    cfg = _load(args, args.overrides, stage=True)
    if args.merge:
        stats = merge_shards(cfg)
    else:
        stats = distill(cfg, shard=args.shard)
    for dom, st in stats.get("domains", {}).items():
        print(f"{dom:8} records {st['records']:5}  accepted {st['accepted']:5}  copied {st['copied']:5}  "
              f"acceptance {st['acceptance_rate']:.2f}")
    print(Path(cfg.output_dir) / "distill" / "distilled.jsonl")


def cmd_train(args) -> None:
    from .training import train

    method, overrides = _split_method(args.overrides)
    cfg = _load(args, overrides, stage=True)
    method = method or cfg.train.method
    cfg.train_config_for(method)  # validate the name before any work
    out = Path(cfg.output_dir)
    distilled = out / "distill" / "distilled.jsonl"
    if not distilled.exists():
        raise UserError("no distilled data: run `crossdistill distill RECIPE` first", file=str(distilled))
    train(cfg, method, str(distilled), str(out / "train" / method))
    print(out / "train" / method / "adapter")


def cmd_eval(args) -> None:
    from .evaluation import evaluate

    if args.model:
        if not args.tasks or not args.out:
            raise UserError("usage: crossdistill eval --model M --tasks t1,t2 --out DIR [--adapter DIR] [--limit N]")
        from .io import output_dir_problem

        problem = output_dir_problem(args.out)
        if problem:
            raise UserError(f"output directory is not usable: {problem}", field="--out")
        res = evaluate(args.model, args.tasks.split(","), adapter=args.adapter, limit=args.limit, out_dir=args.out)
        out = args.out
    else:
        if not args.recipe:
            raise UserError("usage: crossdistill eval RECIPE train.method=M  (or --model M --tasks ... --out DIR)")
        from .runner import run_eval_step

        method, overrides = _split_method(args.overrides)
        cfg = _load(args, overrides, stage=True)
        method = method or "seed"
        seed_like = cfg.methods.get(method, "x") is None or method == "seed"
        tasks = args.tasks.split(",") if args.tasks else cfg.eval_tasks()
        if not seed_like:
            cfg.train_config_for(method)
        run_eval_step(cfg, method, None if seed_like else method, tasks)
        out = str(Path(cfg.output_dir) / "eval" / method)
        import json

        res = json.loads((Path(out) / "results.json").read_text())
    for s in res["scores"]:
        print(f"{s['task']:14} {s['metric']:18} {s['value']:.4f}  [{s['ci_low']:.3f}, {s['ci_high']:.3f}]  n={s['n']}")
    print(Path(out) / "results.json")


def cmd_report(args) -> None:
    from .report import write_report

    paths = write_report(args.output_dir)
    print(paths["html"])


def cmd_pool(args) -> None:
    from .runner import pool_runs

    pooled = pool_runs(args.runs, args.out)
    for d in pooled["deltas"]:
        if d["vs"] == "seed" or (d["vs"], d["method"]) in {("sft", "cdsdft"), ("sft", "sdft"), ("sdft", "cdsdft")}:
            print(f"{d['method'] + ' - ' + d['vs']:20} {d['task']:14} {d['metric']:14} {d['delta']:+.4f}  "
                  f"[{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] seeds+items [{d['hier_ci_low']:+.3f}, "
                  f"{d['hier_ci_high']:+.3f}]  p_holm={d['p_holm']:.3g} {d['verdict']}  n={d['n']} x {d['runs']} runs")
    print(args.out)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="crossdistill", description="Cross-domain self-distillation fine-tuning of LLMs.")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="the whole experiment from one recipe (default: the embedded demo)")
    r.add_argument("recipe", nargs="?", default=DEMO, help="recipe YAML (default: the embedded demo)")
    r.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. limit=8 train.lr=2e-4")
    r.add_argument("--dry-run", action="store_true", help="print the plan and what is cached, run nothing")
    r.add_argument("--only", help="comma-separated steps to run: a stage (train) or one step (train/sft, which includes its LODO runs)")
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("config", help="show the resolved recipe")
    c.add_argument("action", choices=["show"])
    c.add_argument("recipe", nargs="?", default=DEMO)
    c.add_argument("overrides", nargs="*")
    c.set_defaults(func=cmd_config_show)

    m = sub.add_parser("models", help="list or prepare models for offline use")
    m.add_argument("action", choices=["list", "prepare"])
    m.add_argument("name", nargs="?")
    m.set_defaults(func=cmd_models)

    d = sub.add_parser("data", help="built-in datasets, schema validation, overlap check")
    d.add_argument("action", choices=["list", "prepare", "validate", "overlap"])
    d.add_argument("names", nargs="*")
    d.add_argument("--out", default="data")
    d.add_argument("--ngram", type=int, default=13)
    d.set_defaults(func=cmd_data)

    ds = sub.add_parser("distill", help="seed rewrites + verification -> OUTPUT_DIR/distill/")
    ds.add_argument("recipe", nargs="?", default=DEMO)
    ds.add_argument("overrides", nargs="*")
    ds.add_argument("--shard", help="i/n: process one shard of the records (merge with --merge)")
    ds.add_argument("--merge", action="store_true", help="merge finished shards into distilled.jsonl")
    ds.set_defaults(func=cmd_distill)

    t = sub.add_parser("train", help="train one method -> OUTPUT_DIR/train/<method>/")
    t.add_argument("recipe", nargs="?", default=DEMO)
    t.add_argument("overrides", nargs="*", help="train.method=M picks the method (sft|sdft|cdsdft or a recipe name)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a model/adapter on tasks")
    e.add_argument("recipe", nargs="?")
    e.add_argument("overrides", nargs="*")
    e.add_argument("--model")
    e.add_argument("--adapter")
    e.add_argument("--tasks", help="comma-separated task names or spec.yaml paths")
    e.add_argument("--limit", type=int)
    e.add_argument("--out")
    e.set_defaults(func=cmd_eval)

    po = sub.add_parser("pool", help="pool runs that differ only in the training seed: mean scores and paired deltas")
    po.add_argument("runs", nargs="+", help="output dirs of `crossdistill run ... seed=N eval.seed=K`")
    po.add_argument("--out", required=True, help="where the pooled results.json goes")
    po.set_defaults(func=cmd_pool)

    rp = sub.add_parser("report", help="(re)write report.md / report.html for an output dir")
    rp.add_argument("output_dir")
    rp.set_defaults(func=cmd_report)
    return p


# The user's disk, not our bug: one message, exit code 2, and a rerun resumes once it is fixed.
_DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EROFS)


def _located(e: UserError, recipe: str | None) -> UserError:
    """A recipe-level error (a recipe field such as `model` or `domains.math.source`, no file) names the recipe and
    the field's line in it. Errors about command-line flags (`shard`, `--out`, ...) are left as they are."""
    if recipe is None or e.field is None or e.file not in (None, recipe) or e.line is not None:
        return e
    import dataclasses

    from .config import Config, _line_map

    if e.field.split(".")[0] not in {f.name for f in dataclasses.fields(Config)} - {"recipe_path"}:
        return e

    try:
        lines = _line_map(Path(recipe).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        lines = {}
    return e.located(recipe, lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except UserError as e:
        msg = " ".join(str(_located(e, getattr(args, "recipe_file", None))).split("\n"))
        print(f"crossdistill: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("crossdistill: interrupted (rerun the same command to resume)", file=sys.stderr)
        return 130
    except OSError as e:
        if e.errno in _DISK_ERRORS:
            where = f"{e.filename}: " if e.filename else ""
            resume = " (free some space, then rerun the same command to resume)" \
                if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else ""
            print(f"crossdistill: error: {where}{e.strerror or os.strerror(e.errno)}{resume}", file=sys.stderr)
            return 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
