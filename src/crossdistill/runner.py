"""The experiment plan: data -> distill -> train (per method) -> eval (per method) -> report.

Each step's output folder holds `.key` (the hash of everything the step depends on: the recipe sections it
reads and the keys of the steps before it) and `.done` once it finished. A rerun skips steps whose `.done`
matches the current key, resumes steps whose `.key` matches but are not done (an interrupted run), and
clears and reruns steps whose key changed (an edited recipe). A done step whose files a later step reads are gone
(`Step.needs`, e.g. a step cache restored without the adapter weights: scripts/stash.py) is rebuilt only when a
step that reads them has to run.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from .config import Config, stable_hash, train_key
from .errors import UserError
from .io import write_json, write_text
from .statistics import SEED, adjust, chance_flags, paired_deltas, primary_metrics, probe_comparisons, retention_rows


@dataclass
class Step:
    name: str                      # "distill", "train/sft", "eval/sft", ...
    out: Path                      # the folder this step owns
    key: str                       # cache key
    action: Callable[[], None]
    deps: list[str] = field(default_factory=list)
    # An eval step checks every output it reuses (each task's samples carry a hash of model, adapter digest, items
    # and settings), so a new key does not wipe its folder: adding a task to a finished run scores only that task.
    keeps_outputs: bool = False
    # Glob patterns (relative to `out`) of the files later steps read; each must match a file. A cached step that
    # lacks one is still cached, and is rebuilt only when a step that depends on it has to run.
    needs: list[str] = field(default_factory=list)

    def missing(self) -> list[str]:
        return [pattern for pattern in self.needs if next(self.out.glob(pattern), None) is None]

    def status(self) -> str:
        done = self.out / ".done"
        if done.exists() and done.read_text().strip() == self.key:
            return "cached"
        key = self.out / ".key"
        if key.exists() and key.read_text().strip() == self.key:
            return "resume"
        return "run"


# what eval and probe steps read of a train step: a LoRA adapter's or a full fine-tune's weights
TRAINED_WEIGHTS = ["adapter/*.safetensors"]


def _lodo_name(method: str, domain: str) -> str:
    return f"{method}__lodo-{domain}"


def build_plan(cfg: Config) -> list[Step]:
    """Every step of the experiment with its cache key, in execution order."""
    out = Path(cfg.output_dir)
    # Which tasks measure a domain (`domains.*.eval`) does not change its training data: left out of the key.
    domains = {name: {k: v for k, v in dataclasses.asdict(d).items() if k != "eval"} for name, d in cfg.domains.items()}
    if not domains:
        raise UserError("the recipe has no training domains", file=cfg.recipe_path, field="domains")
    # Training data and eval items are keyed apart: a new eval limit or task must not redo the distillation.
    train_data_key = stable_hash({"domains": domains, "limit": cfg.limit, "seed": cfg.seed, "data_dir": cfg.data_dir})
    eval_items = {"eval_tasks": cfg.eval_tasks(), "eval_limit": cfg.effective_limit(cfg.eval.limit)}
    if cfg.eval.seed is not None:   # (only when set, so that older runs keep their cache keys)
        eval_items["eval_seed"] = cfg.eval.seed
    data_key = stable_hash({"train": train_data_key, **eval_items})
    distill_key = stable_hash({"data": train_data_key, "model": cfg.model, "distill": dataclasses.asdict(cfg.distill)})
    eval_fields = dataclasses.asdict(cfg.eval)
    if eval_fields["seed"] is None:
        del eval_fields["seed"]
    if eval_fields.get("backend") == "hf":   # (the default, left out so that older runs keep their cache keys)
        del eval_fields["backend"]
    eval_base = {"eval": eval_fields, "limit": cfg.effective_limit(cfg.eval.limit), "seed": cfg.eval_seed(),
                 "model": cfg.model}
    steps: list[Step] = [
        Step("data", out / "data", data_key, lambda: run_data_step(cfg), needs=["train-*.jsonl"]),
        Step("distill", out / "distill", distill_key, lambda: run_distill_step(cfg), ["data"],
             needs=["distilled.jsonl"]),
    ]
    for method, overrides in cfg.methods.items():
        if overrides is None:
            ekey = stable_hash({**eval_base, "tasks": cfg.eval_tasks(), "method": "seed"})
            steps.append(Step(f"eval/{method}", out / "eval" / method, ekey,
                              (lambda m=method: run_eval_step(cfg, m, None, cfg.eval_tasks())), ["data"],
                              keeps_outputs=True))
            continue
        tcfg = cfg.train_config_for(method)
        tkey = stable_hash({"distill": distill_key, "train": train_key(tcfg), "seed": cfg.seed})
        steps.append(Step(f"train/{method}", out / "train" / method, tkey,
                          (lambda m=method: run_train_step(cfg, m)), ["distill"], needs=TRAINED_WEIGHTS))
        ekey = stable_hash({**eval_base, "tasks": cfg.eval_tasks(), "train": tkey})
        steps.append(Step(f"eval/{method}", out / "eval" / method, ekey,
                          (lambda m=method: run_eval_step(cfg, m, m, cfg.eval_tasks())), [f"train/{method}"],
                          keeps_outputs=True))
    # each method's probe right after its eval: a method is finished (and its adapter no longer read) before the
    # next one starts, so that a step cache carried to another machine needs no finished method's weights
    probes = {s.name[len("probe/"):]: s for s in probe_steps(
        cfg, train_data_key, {s.name[len("train/"):]: s.key for s in steps if s.name.startswith("train/")}, out)}
    steps = [t for s in steps for t in ([s, probes[s.name[len("eval/"):]]]
                                        if s.name.startswith("eval/") and s.name[len("eval/"):] in probes else [s])]
    for method in cfg.lodo_methods():
        for left_out, dcfg in cfg.domains.items():
            if not dcfg.eval:
                continue  # nothing measures this domain; leaving it out would tell us nothing
            name = _lodo_name(method, left_out)
            lcfg = lodo_config(cfg, method, left_out)
            tcfg = lcfg.train_config_for(name)
            tkey = stable_hash({"distill": distill_key, "train": train_key(tcfg), "seed": cfg.seed})
            steps.append(Step(f"train/{name}", out / "train" / name, tkey,
                              (lambda c=lcfg, n=name: run_train_step(c, n)), ["distill"], needs=TRAINED_WEIGHTS))
            ekey = stable_hash({**eval_base, "tasks": dcfg.eval, "train": tkey})
            steps.append(Step(f"eval/{name}", out / "eval" / name, ekey,
                              (lambda n=name, t=list(dcfg.eval): run_eval_step(cfg, n, n, t)), [f"train/{name}"],
                              keeps_outputs=True))
    return steps


def probe_steps(cfg: Config, train_data_key: str, train_keys: dict[str, str], out: Path) -> list[Step]:
    """probe/<method> for the seed and every trained method (not LODO runs): the domain-invariance diagnostic,
    cached by the model, the adapter's train key, the probe settings and the training data (the probe set is the
    held-out end of the training shuffle)."""
    if not cfg.probe.enabled:
        return []
    steps = []
    for method, overrides in cfg.methods.items():
        base = {"probe": dataclasses.asdict(cfg.probe), "data": train_data_key, "model": cfg.model,
                "dtype": cfg.eval.dtype, "max_length": cfg.train.max_length,
                "outputs": 2}   # 2: features.npz beside probe.json (the MMD test between methods reads it)
        if overrides is None:
            key = stable_hash({**base, "method": "seed", "inv_layer": cfg.train.inv_layer})
            steps.append(Step(f"probe/{method}", out / "probe" / method, key,
                              (lambda m=method: run_probe_step(cfg, m, None)), ["data"]))
            continue
        steps.append(Step(f"probe/{method}", out / "probe" / method, stable_hash({**base, "train": train_keys[method]}),
                          (lambda m=method: run_probe_step(cfg, m, m)), [f"train/{method}"]))
    return steps


def trained_weights(cfg: Config, method: str) -> tuple[str, str | None]:
    """(model, adapter) of a trained method: the recipe's model + the LoRA adapter in train/<method>/adapter, or for
    a full fine-tune (that folder holds the whole model) the folder itself as the model and no adapter."""
    folder = Path(cfg.output_dir) / "train" / method / "adapter"
    if not (folder / "adapter_config.json").exists() and (folder / "config.json").exists():
        return str(folder), None
    return cfg.model, str(folder)


def run_probe_step(cfg: Config, method: str, adapter_of: str | None) -> None:
    from .probe import run_probe

    out = Path(cfg.output_dir)
    model, adapter = trained_weights(cfg, adapter_of) if adapter_of else (cfg.model, None)
    if model != cfg.model:   # a full fine-tune: its own weights
        from .models import load_model

        weights, tok = load_model(model, dtype=cfg.eval.dtype)
        run_probe(cfg, method, None, out / "probe" / method, model=weights, tokenizer=tok)
        return
    run_probe(cfg, method, adapter, out / "probe" / method)


def lodo_config(cfg: Config, method: str, left_out: str) -> Config:
    """A copy of the config whose method `<method>__lodo-<domain>` trains on every domain but `left_out`."""
    lcfg = copy.deepcopy(cfg)
    overrides = dict(cfg.methods[method] or {})
    keep = [d for d in (overrides.get("domains") or cfg.train.domains or list(cfg.domains)) if d != left_out]
    overrides["domains"] = keep
    lcfg.methods[_lodo_name(method, left_out)] = overrides
    return lcfg


# --- the steps ----------------------------------------------------------------------------------

def run_data_step(cfg: Config) -> None:
    from .data import run_data_stage

    run_data_stage(cfg)


def run_distill_step(cfg: Config) -> None:
    from .distill import distill

    ensure_step(cfg, "data")   # it reads data/train-*.jsonl: never another config's (e.g. with `--only distill`)
    distill(cfg)


def run_train_step(cfg: Config, method: str) -> None:
    from .training import train

    out = Path(cfg.output_dir)
    train(cfg, method, str(out / "distill" / "distilled.jsonl"), str(out / "train" / method))


def run_eval_step(cfg: Config, method: str, adapter_of: str | None, tasks: list[str]) -> None:
    from .evaluation import evaluate

    out = Path(cfg.output_dir)
    model, adapter = trained_weights(cfg, adapter_of) if adapter_of else (cfg.model, None)
    # a full fine-tune is its own model; seed-kl then compares it with the recipe's model (no adapter to disable)
    evaluate(model, tasks, adapter=adapter, limit=cfg.effective_limit(cfg.eval.limit),
             out_dir=str(out / "eval" / method), eval_cfg=cfg.eval, seed=cfg.eval_seed(), vllm_cfg=cfg.vllm,
             seed_model=cfg.model if model != cfg.model else None)


# --- running the plan ---------------------------------------------------------------------------

def describe_plan(cfg: Config, only: list[str] | None = None) -> str:
    steps = build_plan(cfg)
    lines = [f"plan for {cfg.recipe_path or '<defaults>'} -> {cfg.output_dir}"]
    for s in steps:
        status = s.status() if not only or any(_selected(s.name, o) for o in only) else "skip"
        lines.append(f"  [{status:6}] {s.name:32} key={s.key}  out={s.out}")
    lines.append("  [always] report")
    return "\n".join(lines)


def run(cfg: Config, *, dry_run: bool = False, only: list[str] | None = None) -> dict:
    """Run (or with dry_run, print) the whole plan; returns {step: status/seconds}."""
    from .report import write_report

    os.environ["CROSSDISTILL_SANDBOX_ISOLATION"] = cfg.sandbox.isolation  # read by crossdistill.sandbox
    steps = build_plan(cfg)
    check_only(steps, only)
    if dry_run:
        print(describe_plan(cfg, only))
        return {s.name: s.status() for s in steps}
    out = Path(cfg.output_dir)
    # Bad input stops here or in the step that reads it, with nothing written: the output folder and the model
    # name are checked first (no stage has started), and a step that fails on bad input is rolled back.
    check_output_dir(cfg)
    from .models import check_model_name

    check_model_name(cfg.model)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UserError(f"output directory is not writable ({e.strerror})", file=str(out), field="output_dir") from None
    summary: dict[str, dict] = {}
    resolved_written = False
    by_name = {s.name: s for s in steps}
    bar = tqdm(steps, desc="crossdistill run", unit="step", position=0)
    for step in bar:
        if only and not any(_selected(step.name, o) for o in only):
            continue
        status = step.status()
        bar.set_postfix_str(f"{step.name} ({status})")
        if status != "cached":
            _rebuild_missing_deps(step, by_name, out, created, summary)
        summary[step.name] = _execute(step, out, created) if status != "cached" else {"status": "cached"}
        if not resolved_written:   # once a step stands: a run that fails on bad input leaves no trace
            write_text(out / "recipe.resolved.yaml", cfg.to_yaml())
            resolved_written = True
    if not resolved_written:
        write_text(out / "recipe.resolved.yaml", cfg.to_yaml())
    collect_results(cfg)
    write_report(cfg.output_dir)
    write_json(out / "plan_summary.json", summary)
    return summary


def _rebuild_missing_deps(step: Step, by_name: dict[str, Step], out: Path, created_out: bool, summary: dict) -> None:
    """Before `step` runs: rebuild each step it depends on (first their own dependencies) that is cached but whose
    files it reads are gone. The rebuilt step keeps its key, so the steps after it stay cached."""
    for name in step.deps:
        dep = by_name[name]
        missing = dep.missing()
        if dep.status() == "cached" and missing:
            _rebuild_missing_deps(dep, by_name, out, created_out, summary)
            tqdm.write(f"{dep.name}: done, but {', '.join(missing)} is gone; rebuilding it for {step.name}")
            if not dep.keeps_outputs:
                # from scratch: what is left of it (e.g. an adapter folder whose .complete marker survived without
                # its weights) would otherwise pass for a finished output and the step would return at once
                shutil.rmtree(dep.out)
            summary[dep.name] = {**_execute(dep, out, created_out), "status": "rebuilt"}
            if still := dep.missing():
                raise RuntimeError(f"{dep.name} was rebuilt but {', '.join(still)} is still missing in {dep.out}")


def _record_machine(folder: Path) -> None:
    """Append this machine (models.machine_info) to the step's env.json: a step resumed elsewhere lists each."""
    from .models import machine_info

    f = folder / "env.json"
    runs = []
    if f.exists():
        try:
            runs = json.loads(f.read_text()).get("runs", [])
        except (ValueError, AttributeError):
            runs = []   # a damaged record is replaced, never a reason to stop a run
    runs.append({"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **machine_info()})
    write_json(f, {"runs": runs})


def _execute(step: Step, out: Path, created_out: bool) -> dict:
    """Run one step that is not cached: clear another config's outputs, mark it started (.key), run it, mark it
    done (.done). A UserError rolls back what the step created."""
    status = step.status()
    if status == "run" and step.out.exists() and not step.keeps_outputs:
        shutil.rmtree(step.out)  # outputs of another config: never resume from them
    fresh = not step.out.exists()
    step.out.mkdir(parents=True, exist_ok=True)
    write_text(step.out / ".key", step.key)
    _record_machine(step.out)
    t0 = time.time()
    try:
        step.action()
    except UserError:
        _roll_back(out, step.out if fresh else None, created_out)
        raise
    write_text(step.out / ".done", step.key)
    tqdm.write(f"done {step.name} in {time.time() - t0:.1f}s")
    return {"status": status, "seconds": round(time.time() - t0, 1)}


def ensure_step(cfg: Config, name: str) -> str:
    """Run the plan's step `name` unless its outputs are cached (for a stage command that reads them, e.g.
    `crossdistill distill` reads the data step's files); returns the status it had."""
    import fcntl

    step = next(s for s in build_plan(cfg) if s.name == name)
    status = step.status()
    if status != "cached":
        out = Path(cfg.output_dir)
        created = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
        # distill shards started together on a fresh folder: one runs the step, the others wait (a lock on the
        # output folder itself, so no lock file is left behind) and then reuse it
        fd = os.open(out, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            status = step.status()
            if status != "cached":
                _execute(step, out, created)
        finally:
            os.close(fd)
    return status


def check_only(steps: list[Step], only: list[str] | None) -> None:
    """UserError naming `--only` for an entry that selects no step of the plan (a typo would otherwise run nothing
    and look done). `report` selects no step: `--only report` rebuilds results.json and the report from the evals
    finished so far (the report step always runs)."""
    for pattern in only or []:
        if pattern.strip().rstrip("/") == "report":
            continue
        if not any(_selected(s.name, pattern) for s in steps):
            stages = sorted({s.name.split("/")[0] for s in steps})
            raise UserError(f"{pattern!r} selects no step of this plan (stages: {', '.join(stages)}; steps like "
                            f"train/sft; '*/sft' for every stage of one method; report)", field="--only")


def _selected(step_name: str, pattern: str) -> bool:
    """`--only` entries name whole path parts: "train" selects every train step, "train/sft" that one step and its
    LODO runs (train/sft__lodo-*), never train/sft-paper; "*/sft" every stage's sft step (train, eval, probe)."""
    pattern = pattern.strip().rstrip("/")
    if pattern.startswith("*/"):
        if "/" not in step_name:
            return False
        step_name, pattern = step_name.split("/", 1)[1], pattern[2:]
    return step_name == pattern or step_name.startswith(pattern + "/") or step_name.startswith(pattern + "__")


def check_output_dir(cfg: Config) -> None:
    """UserError naming the recipe's `output_dir` when it cannot be created or written; creates nothing."""
    from .io import output_dir_problem

    problem = output_dir_problem(cfg.output_dir)
    if problem:
        raise UserError(f"output directory {cfg.output_dir!r} is not usable: {problem}", file=cfg.recipe_path,
                        field="output_dir")


def _roll_back(out: Path, step_out: Path | None, created_out: bool) -> None:
    """After a step failed on bad input: remove the folder it got in this run (it holds nothing finished), and the
    output folder itself when this run created it and no file is left in it."""
    if step_out is not None:
        shutil.rmtree(step_out, ignore_errors=True)
    if created_out and out.is_dir() and not any(p.is_file() for p in out.rglob("*")):
        shutil.rmtree(out, ignore_errors=True)


def _task_name(task: str) -> str:
    """The name results.json uses for a recipe's task entry (`gsm8k-nll@100` -> gsm8k-nll; a spec -> its name)."""
    from .evaluation.tasks import resolve_task

    try:
        return resolve_task(task).name
    except UserError:
        return task


def _method_setup(cfg: Config, methods: list[str]) -> dict:
    """What each trained method is (objective, LoRA rank or full fine-tune, steps): the report says which baseline
    a comparison uses, e.g. a rank-matched SFT beside an r64 one."""
    out = {}
    for m in methods:
        if cfg.methods.get(m) is None:
            continue
        t = cfg.train_config_for(m)
        out[m] = {"method": t.method, "lora_r": None if t.full_finetune else t.lora.r,
                  "target_modules": t.lora.target_modules, "max_steps": t.max_steps, "epochs": t.epochs,
                  "invariance": t.terms.invariance, "beta": t.beta if t.terms.invariance else 0.0}
    return out


def collect_results(cfg: Config) -> dict:
    """Gather every eval/<method>/results.json into OUTPUT_DIR/results.json (method-tagged scores)."""
    out = Path(cfg.output_dir)
    scores = []
    methods = []
    for method in cfg.methods:
        res = out / "eval" / method / "results.json"
        if res.exists():
            methods.append(method)
            for s in json.loads(res.read_text())["scores"]:
                scores.append({"method": method, **s})
    lodo = []
    for method in cfg.lodo_methods():
        for left_out in cfg.domains:
            res = out / "eval" / _lodo_name(method, left_out) / "results.json"
            if res.exists():
                for s in json.loads(res.read_text())["scores"]:
                    scores.append({"method": method, **s, "left_out_domain": left_out})
                    lodo.append(left_out)
    # Every pair of methods (the later one minus the earlier, in recipe order: the seed first), paired on the
    # items both scored; the forgetting matrix uses the rows with vs == seed.
    deltas = []
    items: dict = {}   # each samples file is read once, however many pairs it is part of
    for i, base in enumerate(methods):
        for method in methods[i + 1:]:
            deltas += [{**d, "vs": base}
                       for d in paired_deltas(out / "eval" / base, out / "eval" / method, method=method, cache=items)]
    # A LODO run against the same method trained on every domain (what leaving the domain out costs) and against
    # the seed model (whether training on the other domains alone moved the left-out domain's scores).
    for method in cfg.lodo_methods():
        for left_out in cfg.domains:
            lodo_dir = out / "eval" / _lodo_name(method, left_out)
            if not (lodo_dir / "results.json").exists():
                continue
            for base in (method, SEED):
                if base in methods:
                    deltas += [{**d, "left_out_domain": left_out, "vs": base}
                               for d in paired_deltas(out / "eval" / base, lodo_dir, method=method, cache=items)]
    # Two methods both trained without the same domain, on that domain's tasks (vs = the earlier method: its LODO run)
    lodo_ms = cfg.lodo_methods()
    for left_out in cfg.domains:
        for i, base in enumerate(lodo_ms):
            base_dir = out / "eval" / _lodo_name(base, left_out)
            for method in lodo_ms[i + 1:]:
                other_dir = out / "eval" / _lodo_name(method, left_out)
                if (base_dir / "results.json").exists() and (other_dir / "results.json").exists():
                    deltas += [{**d, "left_out_domain": left_out, "vs": base}
                               for d in paired_deltas(base_dir, other_dir, method=method, cache=items)]
    # What the recipe plans but has no eval results yet: the report marks itself interim while this is not empty
    missing = [m for m in cfg.methods if m not in methods] + \
        [_lodo_name(m, d) for m in cfg.lodo_methods() for d in cfg.domains
         if not (out / "eval" / _lodo_name(m, d) / "results.json").exists()]
    in_domain = [_task_name(t) for d in cfg.domains.values() for t in d.eval]
    at_chance = chance_flags(scores)
    primary = primary_metrics(scores)
    adjust(deltas, in_domain=set(in_domain), primary=primary, at_chance=at_chance, planned=cfg.compare)
    # Gain retention (recipe `retention`): every other trained method against the reference on the in-domain tasks
    ref = cfg.retention.reference
    retention = retention_rows(out / "eval", scores, reference=ref, methods=[m for m in methods if m not in (SEED, ref)],
                               tasks=list(dict.fromkeys(in_domain)), primary=primary, share=cfg.retention.share,
                               cache=items, deltas=deltas) \
        if ref is not None and SEED in methods and ref in methods else []
    results = {
        "model": cfg.model,
        "recipe": cfg.recipe_path,
        "seed": cfg.seed,
        "methods": methods,
        "missing": missing,
        "planned": cfg.compare,
        "tasks": cfg.eval_tasks(),
        "lodo_domains": sorted(set(lodo)),
        "scores": scores,
        "in_domain_tasks": list(dict.fromkeys(in_domain)),
        "method_setup": _method_setup(cfg, methods),
        "at_chance": at_chance,
        "deltas": deltas,
        "retention": retention,
        # the domain probe: per method, paired tests between methods, and its link with drift from the seed
        **probe_comparisons(out / "probe", methods, scores, mmd_methods=[
            m for m, v in _method_setup(cfg, methods).items() if v["invariance"]]),
    }
    write_json(out / "results.json", results)
    return results
