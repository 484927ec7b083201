"""The demo end to end: wall time and peak memory of the README's main job, plus the cached rerun.

    python benchmarks/bench_demo.py [--recipe demo] [--fresh-clone] [--profile] [--keep DIR]

Default: runs `crossdistill run RECIPE output_dir=<tmp>` in this checkout (the venv must exist), then the same
command again (everything cached: the issue's "second run under a minute"). With `--fresh-clone` it clones this
repository into a temp dir and times `bash scripts/demo.sh output_dir=...` there instead, set-up (venv, pip) and
the model download included, with an empty CROSSDISTILL_CACHE — what a new user waits for.

Memory: the peak of the summed RSS of the whole process tree (the runner and its sandbox workers), sampled every
0.5 s from /proc, and the largest single process's peak RSS from getrusage. `--profile` runs the first pass under
py-spy (sampling, in another process; `pip install py-spy`) and prints where the time goes: by stage and by the
hottest functions (self time). Per-step seconds come from the runner's plan_summary.json.

The last line is JSON: {"wall_s", "rerun_s", "peak_rss_gib", "max_process_rss_gib", "target_wall_s": 900,
"target_rss_gib": 6, "wall_ratio", "rss_ratio", "steps": {...}, ...}.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


def _tree_rss_bytes(root_pid: int) -> int:
    """Summed RSS of root_pid and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ppid, pages = int(fields[1]), int(fields[21])
        except (OSError, IndexError, ValueError):
            continue
        children[ppid].append(int(entry))
        rss[int(entry)] = pages * page
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def timed(cmd: list[str], cwd: Path, env: dict, log_path: Path) -> dict:
    """Run cmd, sampling the process tree's RSS; returns wall seconds, peak tree RSS, exit code."""
    peak = 0
    with open(log_path, "w") as logf:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=logf, stderr=subprocess.STDOUT)
        done = threading.Event()

        def sample():
            nonlocal peak
            while not done.is_set():
                peak = max(peak, _tree_rss_bytes(proc.pid))
                done.wait(0.5)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        rc = proc.wait()
        wall = time.perf_counter() - t0
        done.set()
        th.join()
    return {"rc": rc, "wall_s": round(wall, 1), "peak_rss_bytes": peak}


def summarize_profile(raw: Path, top: int = 15) -> dict:
    """py-spy --format raw (collapsed stacks: 'frame;frame;... count') -> share by stage and hottest self time."""
    stage_of = [("distill.py", "distill"), ("training.py", "train"), ("evaluation/", "eval"),
                ("sandbox", "sandbox"), ("report.py", "report"), ("data.py", "data"), ("models.py", "load model")]
    by_stage: collections.Counter = collections.Counter()
    by_self: collections.Counter = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        stage = "other (imports, start-up)"
        for frame in frames:
            hit = next((name for key, name in stage_of if f"crossdistill/{key}" in frame), None)
            if hit:
                stage = hit  # the innermost crossdistill stage module on the stack
        by_stage[stage] += n
        by_self[frames[-1].strip()] += n
    pct = lambda c: {k: round(100 * v / max(total, 1), 1) for k, v in c}  # noqa: E731
    return {"samples": total, "stage_pct": pct(by_stage.most_common()), "self_pct": pct(by_self.most_common(top))}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", default="demo")
    ap.add_argument("--fresh-clone", action="store_true", help="clone, set up and run scripts/demo.sh from scratch")
    ap.add_argument("--profile", action="store_true", help="sample the first pass with py-spy")
    ap.add_argument("--keep", default=None, help="work dir to keep (default: a temp dir, removed at the end)")
    ap.add_argument("overrides", nargs="*", help="extra key=value recipe overrides")
    args = ap.parse_args(argv)

    work = Path(args.keep or tempfile.mkdtemp(prefix="bench-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    out_dir = work / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if args.fresh_clone:
        repo = work / "clone"
        if repo.exists():
            shutil.rmtree(repo)
        subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
        env["CROSSDISTILL_CACHE"] = str(work / "cache")  # the model is downloaded and converted again
        env.pop("VIRTUAL_ENV", None)
        base = ["bash", "scripts/demo.sh", args.recipe]
        cwd = repo
    else:
        repo, cwd = ROOT, ROOT
        exe = ROOT / ".venv" / "bin" / "crossdistill"
        base = [str(exe) if exe.exists() else "crossdistill", "run", args.recipe]
    cmd = base + [f"output_dir={out_dir}"] + list(args.overrides)

    first_cmd = cmd
    setup_s = None  # included in wall_s unless --profile splits it off
    raw = work / "profile.raw.txt"
    if args.profile:
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        # the profile covers `crossdistill run` only: set-up would be pip, not our code
        if args.fresh_clone:
            t0 = time.perf_counter()
            subprocess.run(["bash", "scripts/setup.sh"], cwd=repo, env=env, check=True,
                           stdout=subprocess.DEVNULL)
            setup_s = round(time.perf_counter() - t0, 1)
            first_cmd = [str(repo / ".venv/bin/crossdistill"), "run", args.recipe, f"output_dir={out_dir}",
                         *args.overrides]
        first_cmd = [spy, "record", "--rate", "20", "--subprocesses", "--nonblocking", "--format", "raw",
                     "-o", str(raw), "--", *first_cmd]

    log(f"[bench-demo] first pass: {' '.join(first_cmd)}  (log: {work / 'first.log'})")
    first = timed(first_cmd, cwd, env, work / "first.log")
    if first["rc"] != 0:
        log((work / "first.log").read_text()[-4000:])
        raise SystemExit(f"first pass failed with exit code {first['rc']}")
    max_proc = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    steps = json.loads((out_dir / "plan_summary.json").read_text())
    log(f"[bench-demo] first pass {first['wall_s']}s; rerun (cached)")
    again = timed(cmd, cwd, env, work / "rerun.log")
    if again["rc"] != 0:
        raise SystemExit(f"rerun failed with exit code {again['rc']}")

    results = json.loads((out_dir / "results.json").read_text())
    scores = results["scores"]
    gib = 1024 ** 3
    result = {
        "recipe": args.recipe,
        "fresh_clone": args.fresh_clone,
        "wall_s": first["wall_s"] + (setup_s or 0),
        "setup_s": setup_s,
        "rerun_s": again["wall_s"],
        "peak_rss_gib": round(first["peak_rss_bytes"] / gib, 2),
        "max_process_rss_gib": round(max_proc / gib, 2),
        "target_wall_s": 900,
        "target_rss_gib": 6,
        "wall_ratio": round((first["wall_s"] + (setup_s or 0)) / 900, 3),
        "rss_ratio": round(first["peak_rss_bytes"] / gib / 6, 3),
        "methods": sorted({s["method"] for s in scores}),
        "tasks": sorted({s["task"] for s in scores}),
        "report_html": (out_dir / "report.html").exists(),
        "steps": {k: v.get("seconds", v.get("status")) for k, v in steps.items()},
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 1),
        "profiled": args.profile,
    }
    if args.profile and raw.exists():
        result["profile"] = summarize_profile(raw)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
