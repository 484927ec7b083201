"""Copy the small, committable part of a finished run into results/: what RESULTS.md is generated from.

    python scripts/publish.py runs/experiment-smollm2-cpu results/smollm2-135m-instruct/seed0

Copies results.json, report.md/html, plots/, recipe.resolved.yaml, the data step's overlap.json and sizes.json and
the distill stats; writes adapters.json with each trained adapter's sha256 and size (from the weights, or, in a run
restored from a stash without them, from the step's left_out.json). The adapters themselves (5-150 MB
each) stay out of git: the recipe rebuilds them (bit-identical on the same kind of machine, README "Determinism"),
and the digests say whether a rebuilt one is the same.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from crossdistill.io import sha256_file


def publish(run: Path, dest: Path) -> None:
    if not (run / "results.json").exists():
        raise SystemExit(f"{run}/results.json: not a finished run")
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("results.json", "report.md", "report.html", "recipe.resolved.yaml"):
        shutil.copy2(run / name, dest / name)
    for src, name in ((run / "data" / "overlap.json", "overlap.json"), (run / "data" / "sizes.json", "sizes.json"),
                      (run / "distill" / "stats.json", "distill_stats.json")):
        if src.exists():
            shutil.copy2(src, dest / name)
    if (run / "plots").is_dir():
        shutil.copytree(run / "plots", dest / "plots", dirs_exist_ok=True)
    adapters = {}
    for folder in sorted(p for p in (run / "train").glob("*") if p.is_dir()):
        method, weights = folder.name, folder / "adapter" / "adapter_model.safetensors"
        if not (run / "eval" / method / "results.json").exists():   # only adapters whose scores are published
            continue
        if weights.exists():
            adapters[method] = {"sha256": sha256_file(weights), "bytes": weights.stat().st_size}
        else:   # a run restored from a stash without finished methods' weights (scripts/stash.py)
            record = folder / "left_out.json"
            entry = json.loads(record.read_text()).get("adapter/adapter_model.safetensors") if record.exists() else None
            if entry is None:
                raise SystemExit(f"{weights}: missing, and no digest of it in {record}")
            adapters[method] = dict(entry)
    (dest / "adapters.json").write_text(json.dumps(adapters, indent=1) + "\n")
    print(f"{run} -> {dest}: {len(adapters)} adapters")
    missing = json.loads((run / "results.json").read_text()).get("missing") or []
    if missing:   # e.g. a training seed run with --only: its report says it is interim
        print(f"  no eval results in this run for: {', '.join(missing)}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    publish(Path(sys.argv[1]), Path(sys.argv[2]))
