"""scripts/inv_check.py: the held-out MMD change and the loss means it reads from training logs."""
import json
from pathlib import Path

import pytest

from scripts_loader import load_script


def load():
    return load_script("inv_check")


def write_log(path, probe, ce):
    rows = []
    for step in range(1, len(ce) + 1):
        r = {"step": step, "ce": ce[step - 1], "inv": 0.5 - 0.01 * step, "div": 0.01 * step}
        if step in probe:
            r["inv_probe_mmd"] = probe[step]
        rows.append(r)
    rows.append({"train_runtime": 1.0})   # the trainer's closing line has no step: ignored
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_inv_check_reports_the_probe_change_and_quarter_means(tmp_path, capsys):
    mod = load()
    log = tmp_path / "log.jsonl"
    write_log(log, {1: 0.20, 4: 0.19, 8: 0.15}, [1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 6.0])
    s = mod.summary(mod.read_log(str(log)))
    assert s["probe"] == [(1, 0.20), (4, 0.19), (8, 0.15)]
    assert s["steps"] == 8
    assert s["first"]["ce"] == pytest.approx(1.0) and s["last"]["ce"] == pytest.approx(5.0)
    assert mod.main([str(log)]) == 0
    out = capsys.readouterr().out
    assert "change first -> last: -0.0500 (-25.0%)" in out


def test_inv_check_names_a_bad_line_and_a_missing_file(tmp_path, capsys):
    mod = load()
    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 1, "ce": 1.0}\nnot json\n')
    with pytest.raises(SystemExit) as e:
        mod.read_log(str(log))
    assert e.value.code == 2 and "log.jsonl:2: not JSON" in capsys.readouterr().err
    assert mod.main([str(tmp_path / "missing.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err
