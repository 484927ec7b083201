"""Carry a run's step cache to another machine through git: the finished steps' files, without the bulk.

    python scripts/stash.py save RUN DEST       # RUN's finished steps -> DEST (replaced as a whole)
    python scripts/stash.py save --no-weights RUN DEST   # the same without any trained weights (a commit mid-run)
    python scripts/stash.py restore DEST RUN    # back into RUN (a new or older run folder); then `crossdistill run`

A long experiment outlives the machine it started on (a session's machine can be a new one, with nothing outside the
repository). `save` copies from RUN every finished step (`.done`) and every eval step begun (its per-task outputs are
reused by hash), leaving out checkpoints and the seed log-prob cache, and the trained weights of each method whose
every reader (its eval and probe) is done: only the weights of a method still in flight are kept (with --no-weights
not even those: an in-flight method is then retrained on restore, and its eval rescored if the weights differ).
`restore` puts back each step that RUN does not already have done under the same key. The runner rebuilds a done train step whose weights
were left out only if a step that reads them must run again (runner.Step.needs), under the same key.
DEST/stash.json lists each step with its key and the sha256 of each file left out (a rebuilt adapter that differs in
its bits makes its eval score every task again: the samples are keyed by the adapter's digest); the step's own
left_out.json holds them too (with sizes), so a restored run still knows its adapters' digests (scripts/publish.py).
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from crossdistill.config import load_config
from crossdistill.errors import UserError
from crossdistill.io import sha256_file
from crossdistill.runner import Step, build_plan

SKIP_DIRS = {"checkpoints", "seed_cache"}   # training's resume points and seed log-probs: rebuilt when needed
LEFT_OUT = "left_out.json"   # in a stashed step's folder: {file: {sha256, bytes}} of the files not carried


def _read_left_out(folder: Path) -> dict:
    f = folder / LEFT_OUT
    return json.loads(f.read_text()) if f.exists() else {}


def plan_of(run: Path) -> list[Step]:
    recipe = run / "recipe.resolved.yaml"
    if not recipe.exists():
        raise UserError("not a run folder: it has no recipe.resolved.yaml", file=str(recipe))
    return build_plan(load_config(recipe, [f"output_dir={run}"]))


def save(run: Path, dest: Path, weights: bool = True) -> dict:
    steps = plan_of(run)
    status = {s.name: s.status() for s in steps}   # read each step's marker files once
    readers = {s.name: [t.name for t in steps if s.name in t.deps] for s in steps}
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    manifest = {}
    for step in steps:
        # finished steps, and evals begun (their finished tasks are reusable)
        kept = status[step.name] == "cached" or (step.keeps_outputs and status[step.name] == "resume")
        if not step.out.exists() or not kept:
            continue
        # only trained weights are dropped (the data and distill files are small, and a new sample differs)
        drop_weights = step.name.startswith("train/") and (
            not weights or all(status[r] == "cached" for r in readers[step.name]))
        drop = {p for pattern in step.needs for p in step.out.glob(pattern)} if drop_weights else set()
        # its digest tells whether a rebuilt one is the same; LEFT_OUT in the step's folder keeps the digests (and
        # sizes) of files left out by an earlier save, so that a run restored without its weights still has them
        record = _read_left_out(step.out)
        record.update({str(f.relative_to(step.out)): {"sha256": sha256_file(f), "bytes": f.stat().st_size}
                       for f in sorted(drop)})
        for f in sorted(step.out.rglob("*")):
            rel = f.relative_to(step.out)
            if f.is_file() and rel.parts[0] not in SKIP_DIRS and f not in drop and rel.name != LEFT_OUT:
                target = tmp / step.out.relative_to(run) / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, target)
        if record:
            (tmp / step.out.relative_to(run) / LEFT_OUT).write_text(json.dumps(record, indent=1) + "\n")
        left_out = {rel: r["sha256"] for rel, r in sorted(record.items())}
        manifest[step.name] = {"key": step.key, "status": status[step.name], "left_out": left_out}
    shutil.copy2(run / "recipe.resolved.yaml", tmp / "recipe.resolved.yaml")
    (tmp / "stash.json").write_text(json.dumps(manifest, indent=1) + "\n")
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    print(f"{run} -> {dest}: {len(manifest)} steps, {size / 2**20:.1f} MiB"
          + "".join(f"\n  {n}: left out {', '.join(m['left_out'])}" for n, m in manifest.items() if m["left_out"]))
    return manifest


def restore(stash: Path, run: Path) -> list[str]:
    manifest_file = stash / "stash.json"
    if not manifest_file.exists():
        raise UserError("not a stash: it has no stash.json", file=str(manifest_file))
    manifest = json.loads(manifest_file.read_text())
    restored = []
    run.mkdir(parents=True, exist_ok=True)
    for name, entry in manifest.items():
        src, dst = stash / name, run / name
        done = dst / ".done"
        if done.exists() and done.read_text().strip() == entry["key"]:
            continue   # the run already has this step done
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(src, dst)
        if entry["left_out"] and not (dst / LEFT_OUT).exists():   # a stash saved before LEFT_OUT existed
            (dst / LEFT_OUT).write_text(json.dumps({rel: {"sha256": sha, "bytes": None}
                                                    for rel, sha in entry["left_out"].items()}, indent=1) + "\n")
        restored.append(name)
    if not (run / "recipe.resolved.yaml").exists():
        shutil.copy2(stash / "recipe.resolved.yaml", run / "recipe.resolved.yaml")
    print(f"{stash} -> {run}: restored {len(restored)} of {len(manifest)} steps"
          + (f" ({', '.join(restored)})" if restored else ""))
    return restored


def main(argv: list[str]) -> int:
    weights = "--no-weights" not in argv
    argv = [a for a in argv if a != "--no-weights"]
    if len(argv) != 3 or argv[0] not in ("save", "restore") or (not weights and argv[0] != "save"):
        print(__doc__, file=sys.stderr)
        return 2
    try:
        if argv[0] == "save":
            save(Path(argv[1]).resolve(), Path(argv[2]).resolve(), weights=weights)
        else:
            restore(Path(argv[1]).resolve(), Path(argv[2]).resolve())
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
