"""Throughput of crossdistill.sandbox on MBPP-sized programs.

Builds N correct solutions of small MBPP-like tasks (a few lines each, 3 asserts each; constants vary
so every program is distinct; no external data), verifies them with ``run_many`` on all cores, and
measures a one-at-a-time baseline on a subset in the same run.  Progress goes to stderr; the LAST line
of stdout is one JSON object:

    {"programs": N, "target": 30, "workers": ..., "programs_per_s": <isolated rate>,
     "isolated": {"isolation": "bwrap+seccomp", "programs_per_s": ..., "baseline_sequential_per_s": ...},
     "in_process_only": {...}, "isolation_cost_ratio": ...}

Usage: ``python benchmarks/bench_sandbox.py [--n 200] [--workers W] [--baseline 30]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from crossdistill.sandbox import SandboxLimits, run_many, run_tests  # noqa: E402

TEMPLATES = [
    ("def add_k(a, b):\n    return a + b + {k}\n",
     ["assert add_k(1, 2) == {k3}", "assert add_k(0, 0) == {k}", "assert add_k(-{k}, 5) == 5"]),
    ("def count_vowels(s):\n    return sum(1 for c in s.lower() if c in 'aeiou') + {k}\n",
     ["assert count_vowels('hello') == {k2}", "assert count_vowels('') == {k}",
      "assert count_vowels('AEIOU') == {k5}"]),
    ("def reverse_words(s):\n    return ' '.join(reversed(s.split())) + '{k}'\n",
     ["assert reverse_words('a b c') == 'c b a{k}'", "assert reverse_words('x') == 'x{k}'",
      "assert reverse_words('') == '{k}'"]),
    ("import math\ndef gcd_plus(a, b):\n    return math.gcd(a, b) + {k}\n",
     ["assert gcd_plus(12, 18) == {k6}", "assert gcd_plus(7, 5) == {k1}", "assert gcd_plus(0, 9) == {k9}"]),
    ("def uniq_sorted(xs):\n    return sorted(set(xs))[:{k5}]\n",
     ["assert uniq_sorted([3, 1, 3, 2]) == [1, 2, 3]", "assert uniq_sorted([]) == []",
      "assert uniq_sorted([5, 5]) == [5]"]),
    ("def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a + {k}\n",
     ["assert fib(10) == {k55}", "assert fib(1) == {k1}", "assert fib(0) == {k}"]),
    ("import re\ndef find_nums(s):\n    return [int(x) + {k} for x in re.findall(r'\\d+', s)]\n",
     ["assert find_nums('a1b22') == [{k1}, {k22}]", "assert find_nums('') == []",
      "assert find_nums('7') == [{k7}]"]),
    ("from collections import Counter\ndef top_char(s):\n    return Counter(s).most_common(1)[0][1] + {k}\n",
     ["assert top_char('aab') == {k2}", "assert top_char('z') == {k1}", "assert top_char('xyzzz') == {k3}"]),
    ("def is_pal(s):\n    t = ''.join(c for c in s.lower() if c.isalnum())\n    return (t == t[::-1]) == ({k} >= 0)\n",
     ["assert is_pal('Racecar') == True", "assert is_pal('ab') == False", "assert is_pal('') == True"]),
    ("def sq_sum(n):\n    return sum(i * i for i in range(n + 1)) + {k}\n",
     ["assert sq_sum(3) == {k14}", "assert sq_sum(0) == {k}", "assert sq_sum(1) == {k1}"]),
]


def build_jobs(n: int) -> list[dict]:
    jobs = []
    for i in range(n):
        code, tests = TEMPLATES[i % len(TEMPLATES)]
        k = i // len(TEMPLATES)
        subs = {"k": k, "k1": k + 1, "k2": k + 2, "k3": k + 3, "k5": k + 5, "k6": k + 6, "k7": k + 7,
                "k9": k + 9, "k14": k + 14, "k22": k + 22, "k55": k + 55}
        jobs.append({"code": code.format(**subs), "tests": [t.format(**subs) for t in tests]})
    return jobs


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def measure(jobs: list[dict], limits: SandboxLimits, workers: int, baseline: int) -> dict:
    run_many(jobs[:4], limits=limits, workers=1)  # warm-up: caches, page cache, privilege probe
    print(f"[{limits.isolation}] baseline: {baseline} programs, one at a time ...", file=sys.stderr, flush=True)
    sub = jobs[:baseline]
    t = time.perf_counter()
    base = [run_tests(j["code"], j["tests"], limits=limits) for j in sub]  # strictly one at a time
    base_s = time.perf_counter() - t
    assert all(v.passed for v in base), [v.stderr_tail for v in base if not v.passed][:3]

    print(f"[{limits.isolation}] parallel: {len(jobs)} programs, {workers} workers ...", file=sys.stderr,
          flush=True)
    cpu0 = _children_cpu()
    t = time.perf_counter()
    verdicts = run_many(jobs, limits=limits, workers=workers, progress="sandbox bench")
    secs = time.perf_counter() - t
    cpu = _children_cpu() - cpu0
    failed = [v for v in verdicts if not v.passed]
    if failed:
        print(f"{len(failed)} programs did not pass, e.g. {failed[0].stderr_tail[-300:]}",
              file=sys.stderr)
    seq_rate = baseline / base_s
    rate = len(jobs) / secs
    return {"isolation": verdicts[0].isolation, "seconds": round(secs, 3), "programs_per_s": round(rate, 1),
            "baseline_sequential_per_s": round(seq_rate, 1), "ratio": round(rate / seq_rate, 2),
            "passed": len(jobs) - len(failed), "child_cpu_ms_per_program": round(1000 * cpu / len(jobs), 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--baseline", type=int, default=30, help="programs in the one-at-a-time baseline")
    args = ap.parse_args()
    jobs = build_jobs(args.n)
    # both modes side by side in one run: the OS layer (bubblewrap + seccomp where this machine
    # allows; "auto" falls back with a warning) and the in-process layer alone
    on = measure(jobs, SandboxLimits(timeout_s=20.0, isolation="auto"), args.workers, args.baseline)
    off = measure(jobs, SandboxLimits(timeout_s=20.0, isolation="off"), args.workers, args.baseline)
    print(json.dumps({
        "programs": args.n, "target": 30, "workers": args.workers,
        "programs_per_s": on["programs_per_s"], "isolated": on, "in_process_only": off,
        "isolation_cost_ratio": round(off["programs_per_s"] / on["programs_per_s"], 2),
        "loadavg_1m": round(os.getloadavg()[0], 2), "cpu_count": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
