"""scripts/results_md.py reads verdicts from the Holm-adjusted tests, never from a CI alone."""
import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "results_md.py"


def _load():
    spec = importlib.util.spec_from_file_location("results_md", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_verdicts_are_the_adjusted_ones(tmp_path):
    scores = [{"method": m, "task": "arc-easy", "metric": "acc", "value": v, "ci_low": 0, "ci_high": 1, "n": 20}
              for m, v in (("seed", 0.5), ("sft", 0.3), ("sdft", 0.5))]
    deltas = [
        # the bootstrap CI excludes 0, the exact McNemar test after Holm does not: not a "worse"
        {"method": "sft", "vs": "seed", "task": "arc-easy", "metric": "acc", "delta": -0.2, "ci_low": -0.4,
         "ci_high": -0.05, "n": 20, "test": "mcnemar_exact", "p": 0.125, "p_holm": 0.25, "mde": 0.3,
         "family": "forgetting", "verdict": "not detectable at n"},
        {"method": "sdft", "vs": "sft", "task": "arc-easy", "metric": "acc", "delta": 0.2, "ci_low": 0.05,
         "ci_high": 0.4, "n": 20},   # written before the tests existed
    ]
    d = tmp_path / "results" / "m" / "seed0"
    d.mkdir(parents=True)
    (d / "results.json").write_text(json.dumps({"model": "m", "seed": 0, "methods": ["seed", "sft", "sdft"],
                                                "scores": scores, "deltas": deltas}))
    out = tmp_path / "R.md"
    _load().main(["--results", str(tmp_path / "results"), "--out", str(out), "--preamble", "none",
                  "--conclusions", "none"])
    md = out.read_text()
    row = next(line for line in md.splitlines() if line.startswith("| sft − seed | arc-easy"))
    assert row.endswith("| not detectable at n |") and "| 0.25 |" in row and "mcnemar_exact" in row
    old = next(line for line in md.splitlines() if line.startswith("| sdft − sft | arc-easy"))
    assert old.endswith("| untested |")            # its CI excludes 0, but no test was stored
