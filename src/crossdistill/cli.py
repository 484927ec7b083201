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


def _looks_like_override(arg: str | None) -> bool:
    """`limit=2` in the recipe's place: an override of the embedded demo, not a file (unless such a file exists)."""
    return bool(arg) and "=" in arg and not Path(arg).exists()


def _recipe_overrides_first(args) -> None:
    """`crossdistill run limit=2` (and `bash scripts/demo.sh limit=2`): the optional recipe was left out, so the
    first `key=value` lands in its place; move it to the overrides and use the embedded demo."""
    if _looks_like_override(getattr(args, "recipe", None)) and hasattr(args, "overrides"):
        args.overrides = [args.recipe, *args.overrides]
        args.recipe = DEMO


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


def cmd_tasks(args) -> None:
    from .evaluation.tasks import BUILTIN_TASKS
    from .sources import dataset_info

    for name, spec in BUILTIN_TASKS.items():
        info = dataset_info(spec.source) if spec.source else None
        size = f"{info.size:>6}" if info else "     -"
        desc = info.description if info else ""
        print(f"{name:14} {spec.type:16} {spec.source or '-':14} {size}  {desc}")
    print("(or any task spec .yaml: see `crossdistill eval --help`)")


def cmd_distill(args) -> None:
    from .distill import distill, merge_shards
    from .runner import ensure_step

    cfg = _load(args, args.overrides, stage=True)
    if args.merge:
        stats = merge_shards(cfg)
    else:
        ensure_step(cfg, "data")   # distill reads the data step's files: make them (or reuse them) first
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
        from .statistics import SEED

        method, overrides = _split_method(args.overrides)
        cfg = _load(args, overrides, stage=True)
        method = method or SEED
        seed_like = _is_seed_method(cfg, method)
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


def _is_seed_method(cfg, method: str) -> bool:
    """The seed model is method "seed" or any method the recipe declares as null."""
    from .statistics import SEED

    return method == SEED or (method in cfg.methods and cfg.methods[method] is None)


def cmd_export(args) -> None:
    from .export import export_run

    summary = export_run(args.run_dir, args.method, args.out, merge=args.merge, push_to_hub=args.push_to_hub,
                         private=not args.public)
    print(f"{summary['kind']}: {summary['out']}  (base_model_name_or_path: {summary['base_model_name_or_path']})")
    if summary.get("pushed"):
        print(f"pushed: {summary['pushed']}")


def cmd_probe(args) -> None:
    from .runner import run_probe_step
    from .statistics import SEED

    method, overrides = _split_method(args.overrides)
    cfg = _load(args, overrides, stage=True)
    method = method or SEED
    seed_like = _is_seed_method(cfg, method)
    if not seed_like:
        cfg.train_config_for(method)
        adapter = Path(cfg.output_dir) / "train" / method / "adapter"
        if not ((adapter / "adapter_config.json").exists() or (adapter / "config.json").exists()):
            raise UserError(f"no trained adapter: run `crossdistill train RECIPE train.method={method}` first",
                            file=str(adapter))
    run_probe_step(cfg, method, None if seed_like else method)
    import json

    out = Path(cfg.output_dir) / "probe" / method / "probe.json"
    res = json.loads(out.read_text())
    print(f"domain probe ({', '.join(res['domains'])}; chance {res['chance']:.3f}; n={sum(res['n_per_domain'].values())})")
    for row in res["layers"]:
        mark = "  <- invariance layer" if row["layer"] == res["chosen_layer"] else ""
        print(f"layer {row['layer']:3}  acc {row['acc']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]  "
              f"mean MMD^2 {row['mmd_mean']:.4f}{mark}")
    print(out)


def cmd_report(args) -> None:
    from .report import write_report

    paths = write_report(args.output_dir)
    print(paths["html"])


def cmd_pool(args) -> None:
    from .statistics import SEED, pool_runs

    pooled = pool_runs(args.runs, args.out)
    for d in pooled["deltas"]:
        if d["vs"] == SEED or (d["vs"], d["method"]) in {("sft", "cdsdft"), ("sft", "sdft"), ("sdft", "cdsdft")}:
            print(f"{d['method'] + ' - ' + d['vs']:20} {d['task']:14} {d['metric']:14} {d['delta']:+.4f}  "
                  f"[{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] seeds+items [{d['hier_ci_low']:+.3f}, "
                  f"{d['hier_ci_high']:+.3f}]  p_holm={d['p_holm']:.3g} {d['verdict']}  n={d['n']} x {d['runs']} runs")
    print(args.out)


RECIPE_HELP = "recipe YAML, or `demo` for the embedded demo (default: demo)"
OVERRIDES_HELP = ("key.sub=value overrides of the recipe, e.g. limit=8 train.lr=2e-4 (values are YAML); "
                  "with no recipe they apply to the embedded demo")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="crossdistill", description="Cross-domain self-distillation fine-tuning of LLMs.")
    p.add_argument("--version", action="version", version=f"crossdistill {__version__}",
                   help="print the version and exit")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="the whole experiment from one recipe (default: the embedded demo)",
                       description="Distill, train every method, evaluate and report, from one recipe. Finished steps "
                                   "are cached: a rerun resumes.")
    r.add_argument("recipe", nargs="?", default=DEMO, help=RECIPE_HELP)
    r.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    r.add_argument("--dry-run", action="store_true", help="print the plan and what is cached, run nothing")
    r.add_argument("--only", help="comma-separated steps to run: a stage (train), one step (train/sft, which includes its LODO "
                        "runs), '*/sft' (every stage of one method), or report (no step: rebuild the report from the "
                        "finished evals)")
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("config", help="show the resolved recipe", description="Print the recipe with every default "
                       "and override applied, as YAML.")
    c.add_argument("action", choices=["show"], help="show: print the resolved recipe")
    c.add_argument("recipe", nargs="?", default=DEMO, help=RECIPE_HELP)
    c.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    c.set_defaults(func=cmd_config_show)

    m = sub.add_parser("models", help="list or prepare models for offline use")
    m.add_argument("action", choices=["list", "prepare"],
                   help="list: the registry and what is cached; prepare: download/convert NAME into the cache")
    m.add_argument("name", nargs="?", help="registry name (see `models list`) or HF hub id, for `prepare`")
    m.set_defaults(func=cmd_models)

    d = sub.add_parser("data", help="built-in datasets, schema validation, overlap check")
    d.add_argument("action", choices=["list", "prepare", "validate", "overlap"],
                   help="list: built-in datasets; prepare NAME...: write them as JSONL under --out; validate FILE...: "
                        "check record files; overlap TRAIN EVAL: n-gram contamination report")
    d.add_argument("names", nargs="*", help="dataset names (prepare) or JSONL files (validate, overlap)")
    d.add_argument("--out", default="data", help="folder for `prepare` (default: data)")
    d.add_argument("--ngram", type=int, default=13, help="n-gram length for `overlap` (default: 13)")
    d.set_defaults(func=cmd_data)

    tk = sub.add_parser("tasks", help="list the built-in eval tasks")
    tk.add_argument("action", choices=["list"], help="list: name, type, dataset, size and description of each task")
    tk.set_defaults(func=cmd_tasks)

    ds = sub.add_parser("distill", help="seed rewrites + verification -> OUTPUT_DIR/distill/")
    ds.add_argument("recipe", nargs="?", default=DEMO, help=RECIPE_HELP)
    ds.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    ds.add_argument("--shard", help="i/n: process one shard of the records (merge with --merge)")
    ds.add_argument("--merge", action="store_true", help="merge finished shards into distilled.jsonl")
    ds.set_defaults(func=cmd_distill)

    t = sub.add_parser("train", help="train one method -> OUTPUT_DIR/train/<method>/",
                       description="Train one method on OUTPUT_DIR/distill/distilled.jsonl. Under `accelerate launch` "
                                   "it trains data-parallel.")
    t.add_argument("recipe", nargs="?", default=DEMO, help=RECIPE_HELP)
    t.add_argument("overrides", nargs="*", help="train.method=M picks the method (sft|sdft|cdsdft or a recipe name); "
                                                 "other key.sub=value overrides as for `run`")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a model/adapter on tasks",
                       description="Either a recipe's method (crossdistill eval RECIPE train.method=M) or any model "
                                   "(crossdistill eval --model M --tasks t1,t2 --out DIR).")
    e.add_argument("recipe", nargs="?", help=RECIPE_HELP + "; leave out with --model")
    e.add_argument("overrides", nargs="*", help="train.method=M picks the method to evaluate (default: seed); "
                                                 "other key.sub=value overrides as for `run`")
    e.add_argument("--model", help="registry name, HF hub id or model folder (instead of a recipe)")
    e.add_argument("--adapter", help="PEFT adapter folder to apply to --model")
    e.add_argument("--tasks", help="comma-separated task names (see `crossdistill tasks list`) or spec.yaml paths")
    e.add_argument("--limit", type=int, help="score the first N items of a seeded shuffle per task")
    e.add_argument("--out", help="output folder for results.json (with --model)")
    e.set_defaults(func=cmd_eval)

    po = sub.add_parser("pool", help="pool runs that differ only in the training seed: mean scores and paired deltas")
    po.add_argument("runs", nargs="+", help="output dirs of `crossdistill run ... seed=N eval.seed=K`")
    po.add_argument("--out", required=True, help="where the pooled results.json goes")
    po.set_defaults(func=cmd_pool)

    ex = sub.add_parser("export", help="a trained method as a PEFT adapter or merged model folder, with a model card",
                        description="Write a run's trained method as a PEFT adapter folder (default) or, with --merge, "
                                    "the base model with the adapter merged in; both with the tokenizer and a "
                                    "README.md model card (recipe, data, scores). base_model_name_or_path is the "
                                    "registry model's hub id, or a local model's path.")
    ex.add_argument("run_dir", help="a run's output_dir (holding train/<method>/adapter)")
    ex.add_argument("--method", required=True, help="the trained method to export (a name under RUN_DIR/train/)")
    ex.add_argument("--out", required=True, help="new (or empty) folder to write")
    ex.add_argument("--merge", action="store_true", help="merge the LoRA into the base weights (a plain "
                                                         "transformers model folder)")
    ex.add_argument("--push-to-hub", metavar="REPO_ID", help="then upload the folder to this Hugging Face hub repo "
                                                             "(needs the network and `huggingface-cli login`)")
    ex.add_argument("--public", action="store_true", help="with --push-to-hub: create the repo public "
                                                          "(default: private)")
    ex.set_defaults(func=cmd_export)
    pr = sub.add_parser("probe", help="domain-invariance probe of the seed or a trained method -> OUTPUT_DIR/probe/<method>/")
    pr.add_argument("recipe", nargs="?", default=DEMO, help=RECIPE_HELP)
    pr.add_argument("overrides", nargs="*", help="train.method=M picks a trained method (default: the seed model)")
    pr.set_defaults(func=cmd_probe)

    rp = sub.add_parser("report", help="(re)write report.md / report.html for an output dir")
    rp.add_argument("output_dir", help="a run's output_dir (holding results.json)")
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
    _recipe_overrides_first(args)
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
