"""How to spend the cores on independent runs: one N-thread process vs N one-thread processes side by side.

    python benchmarks/bench_threads.py [--model smollm2-135m-instruct] [--tasks gsm8k,wiki-nll] [--limit 24]
        [--threads 2] [--repeats 1]

The workload is `crossdistill eval --model M --tasks T --limit L` (greedy generation and log-likelihood scoring,
the two kinds of work an experiment's eval steps do; model loading included). Side A runs it once with
OMP_NUM_THREADS=N; side B runs N copies at once, each with OMP_NUM_THREADS=1. Both sides do the same work per copy,
so the throughput ratio is N * wall(A) / wall(B): above 1, independent runs (training seeds, models) finish sooner
side by side at one thread each than one after another at N threads. The script also checks that the one-thread
and N-thread evals wrote byte-identical samples files (the scores must not depend on the thread count, or a run that
switches would change its own numbers). Sides alternate A, B, A, B ... for `--repeats`. Last line: one JSON object
{"model", "tasks", "limit", "threads", "wall_a_s", "wall_b_s", "throughput_ratio", "identical_samples"}.
"""
from __future__ import annotations

import argparse
import filecmp
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLI = str(Path(sys.executable).with_name("crossdistill"))


def _eval(model: str, tasks: str, limit: int, threads: int, out: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(out.with_suffix(".log"), "w") as log:   # the child keeps its own copy of the descriptor
        return subprocess.Popen([CLI, "eval", "--model", model, "--tasks", tasks, "--limit", str(limit),
                                 "--out", str(out)], env=env, stdout=log, stderr=subprocess.STDOUT)


def _wait(procs: list[subprocess.Popen], outs: list[Path]) -> None:
    for p, o in zip(procs, outs):
        if p.wait() != 0:
            sys.exit(f"bench_threads: eval failed, see {o.with_suffix('.log')}")


def _same_samples(a: Path, b: Path) -> bool:
    files = sorted(p.name for p in (a / "samples").glob("*.jsonl"))
    return bool(files) and all(filecmp.cmp(a / "samples" / f, b / "samples" / f, shallow=False) for f in files)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--tasks", default="gsm8k,wiki-nll")
    ap.add_argument("--limit", type=int, default=24)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    n = args.threads
    tmp = Path(tempfile.mkdtemp(prefix="bench_threads_"))
    # warm-up: the model is fetched and converted once, outside the timed runs
    _wait([_eval(args.model, args.tasks, 1, n, tmp / "warm")], [tmp / "warm"])
    wall_a, wall_b, same = [], [], True
    for r in range(args.repeats):
        out = tmp / f"a{r}"
        t = time.perf_counter()
        _wait([_eval(args.model, args.tasks, args.limit, n, out)], [out])
        wall_a.append(time.perf_counter() - t)
        print(f"[{r + 1}/{args.repeats}] one {n}-thread eval: {wall_a[-1]:.1f} s", file=sys.stderr)
        outs = [tmp / f"b{r}_{i}" for i in range(n)]
        t = time.perf_counter()
        _wait([_eval(args.model, args.tasks, args.limit, 1, o) for o in outs], outs)
        wall_b.append(time.perf_counter() - t)
        print(f"[{r + 1}/{args.repeats}] {n} one-thread evals side by side: {wall_b[-1]:.1f} s", file=sys.stderr)
        same = same and all(_same_samples(out, o) for o in outs)
    a, b = sum(wall_a) / len(wall_a), sum(wall_b) / len(wall_b)
    print(json.dumps({"model": args.model, "tasks": args.tasks, "limit": args.limit, "threads": n,
                      "wall_a_s": round(a, 2), "wall_b_s": round(b, 2), "throughput_ratio": round(n * a / b, 3),
                      "identical_samples": same}))


if __name__ == "__main__":
    main()
