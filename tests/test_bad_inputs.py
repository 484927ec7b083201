"""The bad-input corpus (tests/bad_inputs/, described in its cases.yaml), through the CLI in-process.

Every case must end with exit code 2 and ONE stderr line `crossdistill: error: FILE[, line N][: field 'F']: ...`
(no traceback), and leave no output. "No output" means, for every case but the full-disk ones: the recipe's
`output_dir` does not exist afterwards and every file of the corpus copy is byte-for-byte unchanged (nothing was
created or touched anywhere, e.g. beside the data files). For a full disk, which can only strike after work has
started: no file at any final path (distilled.jsonl, generations.jsonl, stats.json), no temp file, nothing outside
`output_dir/distill/` (but the data step's files, written before the disk fills); the one file left is the resumable log `generations.jsonl.partial`, holding only whole rows
(plus at most one torn last line, which a resume drops), and rerunning the same command once there is room
finishes the stage, regenerating only the rows the log does not hold.
"""
from __future__ import annotations

import builtins
import errno
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml

import crossdistill.io as cio
from crossdistill.cli import main
from crossdistill.io import read_complete_rows

CORPUS = Path(__file__).parent / "bad_inputs"
CASES: dict[str, dict] = yaml.safe_load((CORPUS / "cases.yaml").read_text(encoding="utf-8"))
EXTRA = {"run": [], "distill": [], "train": ["train.method=sft"], "eval": ["train.method=seed"]}
N_RECORDS = 6   # data/math.jsonl + data/code.jsonl, the records of recipes/good.yaml


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("crossdistill-cache")   # tiny-random-llama is prepared here once


@pytest.fixture
def corpus(tmp_path, monkeypatch, model_cache) -> Path:
    """A copy of the corpus as the working directory (the recipes' paths are relative to it)."""
    root = tmp_path / "corpus"
    shutil.copytree(CORPUS, root)
    monkeypatch.chdir(root)
    monkeypatch.setenv("CROSSDISTILL_CACHE", str(model_cache))
    return root


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def expected_prefix(case: dict) -> str:
    prefix = f"crossdistill: error: {case['file']}"
    if case.get("line") is not None:
        prefix += f", line {case['line']}"
    if case.get("field"):
        prefix += f": field '{case['field']}'"
    return prefix + ": "


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """main(argv) -> (exit code, the one error line), asserting the one-line, no-traceback contract."""
    rc = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [ln.strip() for ln in err.splitlines()]
    errors = [ln for ln in lines if ln.startswith("crossdistill: error:")]
    assert len(errors) <= 1, err
    assert [ln for ln in lines if "error" in ln.lower()] == errors, f"other error output besides the one line:\n{err}"
    return rc, (errors[0] if errors else "")


PARAMS = [pytest.param(name, cmd, id=f"{name}-{cmd}") for name, case in CASES.items() for cmd in case["commands"]]


def test_the_corpus_is_what_cases_yaml_says():
    recipes = {p.stem for p in (CORPUS / "recipes").glob("*.yaml")}
    assert {c.get("recipe", n) for n, c in CASES.items()} | {"good"} == recipes
    for name, case in CASES.items():
        assert set(case["commands"]) <= set(EXTRA), name
        if "disk_full" not in case:
            assert (CORPUS / case["file"]).is_file(), (name, case["file"])


@pytest.mark.parametrize("name,cmd", [p for p in PARAMS if "disk_full" not in CASES[p.values[0]]])
def test_bad_input_exits_2_with_one_clear_line_and_writes_nothing(corpus, capsys, name, cmd):
    case = CASES[name]
    recipe = f"recipes/{case.get('recipe', name)}.yaml"
    output_dir = Path(yaml.safe_load(Path(recipe).read_text())["output_dir"])
    before = snapshot(corpus)

    rc, line = run_cli([cmd, recipe, *EXTRA[cmd]], capsys)

    assert rc == 2, line
    assert line.startswith(expected_prefix(case)), f"\n{line}\nshould start with\n{expected_prefix(case)}"
    assert case["says"] in line, line
    assert not output_dir.exists(), sorted(str(p) for p in output_dir.rglob("*"))
    assert snapshot(corpus) == before


# --- a full disk, simulated in the one module every stage writes through ------------------------------

class FullDisk:
    """`free_bytes` of room, shared by every write it meters; a write that does not fit writes what fits, then
    raises ENOSPC without a file name, like a real write(2) through a Python file object."""

    def __init__(self, free_bytes: int):
        self.free = free_bytes
        self.hits: list[tuple[str, int]] = []   # (path written, bytes that fitted in the failing write)

    def meter(self, f, path: str):
        return _Metered(f, self, path)


class _Metered:
    def __init__(self, f, disk: FullDisk, path: str):
        self._f, self._disk, self._path, self._written = f, disk, path, 0

    def write(self, s):
        data = s.encode("utf-8") if isinstance(s, str) else bytes(s)
        if len(data) <= self._disk.free:
            self._disk.free -= len(data)
            self._written += len(data)
            return self._f.write(s)
        fit = data[: self._disk.free]
        self._f.write(fit.decode("utf-8", errors="ignore") if isinstance(s, str) else fit)
        self._f.flush()
        self._disk.free = 0
        self._disk.hits.append((self._path, self._written + len(fit)))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)


class _OsWithFullDisk:
    """`os` for crossdistill.io: files from os.fdopen (atomic_open's temp files) are metered."""

    def __init__(self, disk: FullDisk):
        self._disk = disk

    def fdopen(self, fd, mode="r", *a, **k):
        f = os.fdopen(fd, mode, *a, **k)
        return self._disk.meter(f, os.readlink(f"/proc/self/fd/{fd}")) if set(mode) & set("wa") else f

    def __getattr__(self, name):
        return getattr(os, name)


@pytest.mark.parametrize("name,cmd", [p for p in PARAMS if "disk_full" in CASES[p.values[0]]])
def test_full_disk_exits_2_leaves_no_final_or_temp_file_and_resumes(corpus, capsys, monkeypatch, name, cmd):
    case = CASES[name]
    spec = case["disk_full"]
    disk = FullDisk(spec["free_bytes"])
    if "atomic" in spec["limits"]:
        monkeypatch.setattr(cio, "os", _OsWithFullDisk(disk))
    if "log" in spec["limits"]:     # JsonlAppender's append-only log: builtins.open(path, "a")
        def metered_open(file, mode="r", *a, **k):
            f = builtins.open(file, mode, *a, **k)
            return disk.meter(f, str(file)) if set(mode) & set("wa") else f
        monkeypatch.setattr(cio, "open", metered_open, raising=False)
    recipe = f"recipes/{case.get('recipe', name)}.yaml"
    argv = [cmd, recipe, *EXTRA[cmd]]
    if cmd == "distill":   # the data step's files, which distill reads, are there before the disk fills
        from crossdistill.config import load_config
        from crossdistill.runner import ensure_step

        free, disk.free = disk.free, 10 ** 12
        ensure_step(load_config(recipe, []), "data")
        disk.free = free
    before = snapshot(corpus)

    rc, line = run_cli(argv, capsys)

    assert rc == 2, line
    assert line.startswith(expected_prefix(case)) and case["says"] in line, line
    assert disk.hits and disk.hits[0][1] > 0, "the disk must fill in the middle of a file"
    # nothing outside out/distill, and in it only the resumable log
    after = snapshot(corpus)
    assert {k: v for k, v in after.items() if not k.startswith("out/distill/")} == before
    assert sorted(k for k in after if k.startswith("out/distill/")) == ["out/distill/generations.jsonl.partial"]
    temps = [path for path, _ in disk.hits if Path(path).name.endswith(".tmp")]
    assert all(not Path(t).exists() for t in temps)   # the half-written temp file is gone, its target untouched
    partial = corpus / "out/distill/generations.jsonl.partial"
    whole = read_complete_rows(partial)
    assert len({r["key"] for r in whole}) == len(whole)
    if "log" in spec["limits"]:
        assert len(whole) < N_RECORDS
        assert not partial.read_bytes().endswith(b"\n")   # a torn last row, which the resume must drop
    else:
        assert temps and len(whole) == N_RECORDS           # the log was complete; a final write failed

    disk.free = 10 ** 12   # room again: the same command finishes, regenerating only what the log lacks
    rc, line = run_cli(argv, capsys)
    assert rc == 0, line
    stats = json.loads((corpus / "out/distill/stats.json").read_text())
    assert stats["reused_generations"] == len(whole) and stats["generated_now"] == N_RECORDS - len(whole)
    ids = [r["id"] for r in read_complete_rows(corpus / "out/distill/distilled.jsonl")]
    assert sorted(ids) == sorted(f"{d}{i}" for d in "mc" for i in range(3)) and len(set(ids)) == len(ids)
    assert not partial.exists()
    assert not [p for p in corpus.rglob("*.tmp")]
