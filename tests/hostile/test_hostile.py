"""Hostile-program corpus for crossdistill.sandbox.

Every file in ``programs/`` is a candidate for the MBPP-style task ``add(a, b)`` that tries to pass
without implementing it, or to do damage.  Its header says what it does and which verdicts are
acceptable (``# expect: fail,error,timeout``).  For each program we check that:

* the verdict is one of the expected ones and never ``"pass"``;
* the canary file outside the sandbox survives unchanged and nothing new appears next to it;
* no process of the run is left (scan of ``/proc`` for processes whose cwd/environment point into
  this module's private temp base);
* the fake API key set in the parent never shows up in the program's output;
* the run finished within its time bound.

All programs run once, in parallel, via ``run_many`` (module-scoped fixture): ~10 s on 2 cores.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

import shutil

import pytest

from crossdistill.sandbox import SandboxLimits, run_many

HERE = Path(__file__).parent
PROGRAMS = sorted((HERE / "programs").glob("*.py"))
CANARY_DIR = Path("/tmp/crossdistill_sandbox_canary")   # fixed: the programs hard-code it
CANARY = CANARY_DIR / "canary.txt"
CANARY_TEXT = "do not touch\n"
SECRET = "sk-crossdistill-FAKE-SECRET-0123456789"
STRAY = [Path("/tmp/crossdistill_pwned.txt"), Path("/dev/shm/crossdistill_pwned"),
         Path("/etc/crossdistill_pwned")]
SETUP = "import math"   # + VICTIM = <pid of a process the programs try to harm> (see the fixture)
TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(10, 5) == 15",
         "assert math.isclose(add(0.1, 0.2), 0.3)"]
LIMITS = SandboxLimits(timeout_s=2.0, cpu_s=2.0, memory_mb=512, max_output_bytes=20_000)
TIME_BOUND_S = LIMITS.timeout_s + 3.0


def _expect(path: Path) -> set[str]:
    m = re.search(r"^# expect: *([a-z, ]+)$", path.read_text(), re.M)
    assert m, f"{path.name}: missing '# expect:' header"
    return {s.strip() for s in m.group(1).split(",") if s.strip()}


def _canary_state() -> tuple[str, int, int, list[str]]:
    st = CANARY.stat()
    return CANARY.read_text(), st.st_ino, st.st_mode, sorted(os.listdir(CANARY_DIR))


def _leftover_processes(base: str) -> list[str]:
    """Processes whose cwd or environment points into ``base`` (the sandboxes of this module)."""
    found = []
    me = os.getpid()
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == me:
            continue
        try:
            cwd = os.readlink(f"/proc/{d}/cwd")
        except OSError:
            cwd = ""
        try:
            env = Path(f"/proc/{d}/environ").read_bytes()
        except OSError:
            env = b""
        if cwd.startswith(base) or base.encode() in env:
            try:
                state = Path(f"/proc/{d}/stat").read_text().split(") ", 1)[1][0]
            except (OSError, IndexError):
                continue
            if state != "Z" or True:
                found.append(f"pid {d} state {state} cwd {cwd}")
    return found


def _victim_state(pid: int) -> tuple:
    """Stopped or not, nice value and CPU affinity of the victim process (a fresh `sleep` may still be
    running its start-up: R and S both count as alive and not stopped)."""
    fields = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].split()
    return fields[0] in "tTXZ", int(fields[16]), sorted(os.sched_getaffinity(pid))


# The whole corpus runs twice: with the OS layer (bubblewrap + seccomp where the machine allows;
# "auto" falls back to the in-process layer with a warning) and with the in-process layer alone.
@pytest.fixture(scope="module", params=["auto", "off"])
def hostile_results(request):
    limits = SandboxLimits(**{**LIMITS.__dict__, "isolation": request.param})
    victim = subprocess.Popen(["sleep", "600"])
    CANARY_DIR.mkdir(mode=0o755, exist_ok=True)
    CANARY.write_text(CANARY_TEXT)
    CANARY.chmod(0o644)
    for p in STRAY:
        p.unlink(missing_ok=True)
    before = _canary_state()
    base = tempfile.mkdtemp(prefix="cdsbx-hostile-")
    old_tempdir, old_secret = tempfile.tempdir, os.environ.get("OPENAI_API_KEY")
    tempfile.tempdir = base          # the sandboxes' private dirs are created under ``base``
    os.environ["OPENAI_API_KEY"] = SECRET
    try:
        t0 = time.monotonic()
        victim_before = _victim_state(victim.pid)
        setup = f"{SETUP}\nVICTIM = {victim.pid}"
        jobs = [{"code": p.read_text(), "tests": TESTS, "setup": setup} for p in PROGRAMS]
        verdicts = run_many(jobs, limits=limits)
        wall = time.monotonic() - t0
        time.sleep(0.2)
        leftovers = _leftover_processes(base)
        victim_after = _victim_state(victim.pid) if victim.poll() is None else ("dead",)
    finally:
        victim.kill()
        victim.wait()
        tempfile.tempdir = old_tempdir
        if old_secret is None:
            os.environ.pop("OPENAI_API_KEY", None)
        else:
            os.environ["OPENAI_API_KEY"] = old_secret
    after = _canary_state()
    remaining = os.listdir(base)
    os.rmdir(base) if not remaining else None
    return {"verdicts": dict(zip((p.stem for p in PROGRAMS), verdicts)), "before": before,
            "after": after, "leftovers": leftovers, "wall": wall, "remaining": remaining,
            "victim": (victim_before, victim_after), "stray": glob.glob("/tmp/crossdistill_pwned*"),
            "mode": request.param}


def test_corpus_is_large_enough():
    assert len(PROGRAMS) >= 30
    for p in PROGRAMS:
        assert _expect(p) and "pass" not in _expect(p), p.name


@pytest.mark.parametrize("program", PROGRAMS, ids=[p.stem for p in PROGRAMS])
def test_hostile_program(program: Path, hostile_results):
    v = hostile_results["verdicts"][program.stem]
    detail = f"{program.stem}: {v.status} {v.n_passed}/{v.n_tests}\n{v.stderr_tail[-600:]}"
    assert v.status != "pass" and not v.passed, detail
    assert v.status in _expect(program), detail
    assert v.duration_s < TIME_BOUND_S, detail
    assert SECRET not in v.stdout_tail and SECRET not in v.stderr_tail, detail
    assert "SHADOW" not in v.stdout_tail, detail   # /etc/shadow read and printed
    if hostile_results["mode"] == "auto" and shutil.which("bwrap"):
        assert v.isolation.startswith("bwrap"), v.isolation
    assert hostile_results["victim"][0] == hostile_results["victim"][1], "victim process harmed"
    assert hostile_results["stray"] == [], "files created outside the sandbox"
    assert hostile_results["after"] == hostile_results["before"], "canary changed"
    assert hostile_results["leftovers"] == [], hostile_results["leftovers"]


def test_no_damage_outside(hostile_results):
    assert hostile_results["after"] == hostile_results["before"]
    assert CANARY.read_text() == CANARY_TEXT
    for p in STRAY:
        assert not p.exists(), p
    assert hostile_results["stray"] == []
    assert hostile_results["victim"][0] == hostile_results["victim"][1]
    assert hostile_results["leftovers"] == []
    assert hostile_results["remaining"] == [], "sandbox temp dirs were not cleaned up"


def test_corpus_runs_fast(hostile_results):
    assert hostile_results["wall"] < 60, hostile_results["wall"]


def test_reference_solution_passes_same_task():
    """Control: the same task, limits and corpus setup accept a correct solution."""
    v = run_many([{"code": "def add(a, b):\n    return a + b\n", "tests": TESTS, "setup": SETUP}],
                 limits=LIMITS)[0]
    assert v.status == "pass", v.stderr_tail


def test_corpus_files_are_unique():
    digests = {hashlib.sha256(p.read_bytes()).hexdigest() for p in PROGRAMS}
    assert len(digests) == len(PROGRAMS)
