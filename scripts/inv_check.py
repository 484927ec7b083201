"""Side by side: the invariance term's effect in two or more training logs (train/<method>/log.jsonl).

Prints, per log, the held-out between-domain MMD^2 (`inv_probe_mmd`, logged every `train.inv_probe_every` steps on a
fixed batch) at each logged step and its change from the first to the last reading, and the means of the term
(`inv`), the cross-entropy (`ce`) and the divergence to the seed (`div`) over the first and the last quarter of the
steps. A term that works lowers `inv_probe_mmd`; one that does not leaves it flat (recipes/check-invariance-grad.yaml).

    python scripts/inv_check.py runs/check-invariance-grad/train/inv-batch/log.jsonl \
        runs/check-invariance-grad/train/inv-domain/log.jsonl
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def read_log(path: str) -> list[dict]:
    rows = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            print(f"{path}:{n}: not JSON ({e.msg})", file=sys.stderr)
            sys.exit(2)
    return [r for r in rows if "step" in r]


def summary(rows: list[dict]) -> dict:
    probe = [(r["step"], float(r["inv_probe_mmd"])) for r in rows if "inv_probe_mmd" in r]
    steps = [r for r in rows if "ce" in r]
    q = max(1, len(steps) // 4)

    def mean(part: list[dict], key: str) -> float | None:
        vals = [float(r[key]) for r in part if key in r]
        return sum(vals) / len(vals) if vals else None

    return {"probe": probe, "steps": len(steps),
            "first": {k: mean(steps[:q], k) for k in ("inv", "ce", "div")},
            "last": {k: mean(steps[-q:], k) for k in ("inv", "ce", "div")}}


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    for path in argv:
        if not Path(path).is_file():
            print(f"{path}: no such file", file=sys.stderr)
            return 2
    for path in argv:
        s = summary(read_log(path))
        print(f"{path}  ({s['steps']} steps)")
        print("  inv_probe_mmd: " + "  ".join(f"{step}:{v:.4f}" for step, v in s["probe"]))
        if len(s["probe"]) >= 2:
            a, b = s["probe"][0][1], s["probe"][-1][1]
            print(f"  change first -> last: {b - a:+.4f} ({(b - a) / a:+.1%})")
        for k in ("inv", "ce", "div"):
            print(f"  {k:>4}: first quarter {fmt(s['first'][k])}   last quarter {fmt(s['last'][k])}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
