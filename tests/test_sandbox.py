"""Behaviour tests for crossdistill.sandbox (the hostile corpus lives in tests/hostile/)."""

from __future__ import annotations

import dis
import os
import shutil
import sys
import tempfile
import time
import types
from pathlib import Path

import pytest

from crossdistill import sandbox
from crossdistill.sandbox import (SandboxLimits, Verdict, build_program, humaneval_tests, run_many,
                                  run_tests)

FAST = SandboxLimits(timeout_s=2.0, cpu_s=2.0)
ADD = "def add(a, b):\n    return a + b\n"
ADD_TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(10, 5) == 15"]


def _run(code, tests=ADD_TESTS, setup="", limits=FAST) -> Verdict:
    return run_tests(code, tests, setup=setup, limits=limits)


# ------------------------------------------------------------------------------------ basics
def test_passing_program_passes():
    v = _run(ADD)
    assert (v.status, v.passed, v.n_tests, v.n_passed) == ("pass", True, 3, 3)
    assert v.duration_s < 2.0


def test_wrong_answer_fails_with_reason():
    v = _run("def add(a, b):\n    return a - b\n")
    assert v.status == "fail" and not v.passed
    assert (v.n_tests, v.n_passed) == (3, 0)
    assert "checked by the parent" in v.stderr_tail and "[values: -1]" in v.stderr_tail
    assert "assert add(1, 2) == 3" in v.stderr_tail


def test_partial_counts():
    v = _run("def add(a, b):\n    return a + b if a > 0 else 99\n")
    assert v.status == "fail" and (v.n_tests, v.n_passed) == (3, 2)


def test_syntax_error_is_error():
    v = _run("def add(a, b)\n    return a + b\n")
    assert v.status == "error" and "SyntaxError" in v.stderr_tail


def test_import_error_is_error():
    v = _run("import definitely_not_a_module_xyz\n" + ADD)
    assert v.status == "error" and "ModuleNotFoundError" in v.stderr_tail


def test_test_that_does_not_compile_is_error():
    v = _run(ADD, ["assert add(1, 2) == "])
    assert v.status == "error" and "does not compile" in v.stderr_tail


def test_no_tests_means_code_ran():
    assert _run(ADD, []).status == "pass"
    assert _run("raise ValueError('x')", []).status == "error"


def test_stdout_captured():
    v = _run("print('hello from candidate')\n" + ADD)
    assert v.status == "pass" and "hello from candidate" in v.stdout_tail


def test_infinite_loop_times_out_quickly():
    t = time.monotonic()
    v = _run("def add(a, b):\n    while True:\n        pass\n", limits=SandboxLimits(timeout_s=1.0))
    assert v.status == "timeout" and time.monotonic() - t < 4.0


def test_cpu_limit_is_timeout():
    t = time.monotonic()
    v = _run("while True:\n    pass\n", limits=SandboxLimits(timeout_s=20.0, cpu_s=1.0))
    assert v.status == "timeout" and "CPU" in v.stderr_tail and time.monotonic() - t < 15.0


def test_sleep_times_out():
    t = time.monotonic()
    v = _run("import time\ntime.sleep(100)\n" + ADD, limits=SandboxLimits(timeout_s=1.0))
    assert v.status == "timeout" and time.monotonic() - t < 3.0


def test_memory_hog_is_error():
    v = _run("x = bytearray(4 * 2**30)\n" + ADD, limits=SandboxLimits(timeout_s=5, memory_mb=256))
    assert v.status in ("error", "fail") and not v.passed
    v = _run("def add(a, b):\n    x = [0] * (2**31)\n    return a + b\n",
             limits=SandboxLimits(timeout_s=5, memory_mb=256))
    assert v.status == "error" and "MemoryError" in v.stderr_tail


def test_huge_stdout_is_truncated_and_finishes():
    code = "import sys\nfor _ in range(3000):\n    sys.stdout.write('y' * 65536 + '\\n')\n" + ADD
    limits = SandboxLimits(timeout_s=20, max_output_bytes=10_000)
    v = _run(code, limits=limits)
    assert v.status == "pass", v.stderr_tail
    assert len(v.stdout_tail) <= sandbox.TAIL_CHARS + 100
    assert "bytes discarded" in v.stdout_tail


def test_output_after_last_test_is_flushed():
    v = _run("import sys\nsys.stdout.write('no newline at end')\n" + ADD)
    assert v.stdout_tail.endswith("no newline at end")


# ------------------------------------------------------------------------------- cheating
@pytest.mark.parametrize("code", [
    "import os\ndef add(a, b):\n    return 0\nos._exit(0)\n",
    "import sys\ndef add(a, b):\n    return 0\nsys.exit(0)\n",
    "def add(a, b):\n    raise SystemExit(0)\n",
    "def add(a, b):\n    raise KeyboardInterrupt\n",
    "import os\nos.close(1); os.close(2)\nfor fd in range(3, 50):\n    try: os.close(fd)\n    except OSError: pass\n",
], ids=["os._exit", "sys.exit", "SystemExit-in-fn", "KeyboardInterrupt", "close-fds"])
def test_early_exit_never_passes(code):
    v = _run(code)
    assert v.status in ("fail", "error") and not v.passed


def test_always_true_eq_object_fails():
    code = ("class A:\n    def __eq__(self, o): return True\n    def __ne__(self, o): return False\n"
            "def add(a, b):\n    return A()\n")
    v = _run(code)
    assert v.status == "fail" and v.n_passed == 0


def test_always_true_eq_int_subclass_fails():
    code = ("class I(int):\n    def __eq__(self, o): return True\n    __hash__ = int.__hash__\n"
            "def add(a, b):\n    return I(99)\n")
    assert _run(code).status == "fail"


def test_int_subclass_with_right_value_passes():
    # strict mode compares the real value: a subclass holding the right number is fine
    code = "class I(int):\n    pass\ndef add(a, b):\n    return I(a + b)\n"
    assert _run(code).status == "pass"


def test_forged_token_on_all_fds_fails():
    code = ("import os\nfor fd in range(1, 100):\n    try:\n"
            "        os.write(fd, b'\\nSBX1 ' + b'0' * 32 + b' pass 3 3 \\n')\n    except OSError: pass\n"
            "os._exit(0)\n")
    v = _run(code)
    assert v.status == "fail" and not v.passed


def test_env_secrets_not_visible(monkeypatch):
    monkeypatch.setenv("CROSSDISTILL_FAKE_API_KEY", "sk-fake-secret-value-42")
    v = _run("import os\nprint(dict(os.environ))\n" + ADD)
    assert v.status == "pass"
    assert "sk-fake-secret-value-42" not in v.stdout_tail
    assert "CROSSDISTILL_FAKE_API_KEY" not in v.stdout_tail
    assert "PYTHONHASHSEED" in v.stdout_tail       # the environment really was printed


def test_env_secret_absent_program_level(monkeypatch):
    monkeypatch.setenv("CROSSDISTILL_FAKE_API_KEY", "sk-fake")
    v = _run("import os\nassert 'CROSSDISTILL_FAKE_API_KEY' not in os.environ\n" + ADD)
    assert v.status == "pass"


def test_write_outside_tmp_blocked(tmp_path):
    canary = tmp_path / "canary.txt"
    canary.write_text("original")
    code = (f"try:\n    open({str(canary)!r}, 'w').write('pwned')\nexcept Exception:\n    pass\n"
            f"try:\n    open({str(tmp_path / 'new.txt')!r}, 'w').write('x')\nexcept Exception:\n    pass\n"
            + ADD)
    v = _run(code)
    assert v.status == "fail" and "violation" in v.stderr_tail
    assert canary.read_text() == "original"
    assert not (tmp_path / "new.txt").exists()


def test_writing_inside_own_tmp_dir_is_fine():
    code = ("import os, tempfile\nopen('scratch.txt', 'w').write('ok')\nos.mkdir('d')\n"
            "open('d/x', 'w').write('1')\nos.rename('d/x', 'd/y')\nos.remove('d/y')\nos.rmdir('d')\n"
            "fd, p = tempfile.mkstemp()\nos.close(fd)\nos.remove(p)\n"
            "assert open('scratch.txt').read() == 'ok'\n" + ADD)
    v = _run(code)
    assert v.status == "pass", v.stderr_tail


def _session_members(sid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                fields = Path(f"/proc/{d}/stat").read_text().rsplit(") ", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[3]) == sid:      # field 6 of /proc/pid/stat: session id
                out.append(int(d))
    return out


def test_fork_bomb_contained_and_nothing_left_running():
    code = ("import os\nprint('PID', os.getpid(), flush=True)\n"
            "for _ in range(100):\n    try:\n        os.fork()\n    except BaseException:\n        pass\n"
            + ADD)
    v = _run(code)
    assert v.status == "fail" and "os.fork" in v.stderr_tail
    pid = int(v.stdout_tail.split("PID", 1)[1].split()[0])
    assert _session_members(pid) == []


def test_timeout_kills_whole_group():
    code = "import os\nprint('PID', os.getpid(), flush=True)\nwhile True:\n    pass\n"
    v = _run(code, limits=SandboxLimits(timeout_s=1.0, isolation="off"))  # host pids
    assert v.status == "timeout"
    pid = int(v.stdout_tail.split("PID", 1)[1].split()[0])
    assert _session_members(pid) == []
    assert not Path(f"/proc/{pid}").exists()


def test_temp_dir_is_removed(monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    v = _run("import os\nos.mkdir('sub')\nopen('sub/f', 'w').write('x')\nos.chmod('sub', 0)\n" + ADD)
    assert v.status == "pass", v.stderr_tail
    assert list(tmp_path.iterdir()) == []


def test_builtins_tampering_does_not_affect_tests():
    code = ("import builtins\nbuiltins.AssertionError = type('X', (BaseException,), {})\n"
            "builtins.len = lambda x: 3\nbuiltins.abs = lambda x: 0\n" + ADD)
    # the candidate is correct: tampering with builtins (which is not a sandbox violation) must not
    # break the checks, and the checks must still use the real builtins
    v = _run(code, ADD_TESTS + ["assert len([1, 2]) == 2", "assert abs(-2) == 2"])
    assert v.status == "pass", v.stderr_tail


def test_candidate_cannot_shadow_builtins_used_by_tests():
    code = "def abs(x):\n    return 0\ndef add(a, b):\n    return 1000\n"
    v = _run(code, ["assert abs(add(1, 2) - 3) < 1e-9"])
    assert v.status == "fail"


def test_harness_functions_are_protected():
    code = ("import _imp\nfor a in ('__defaults__', '__kwdefaults__', '__code__'):\n"
            "    try:\n        getattr(_imp.create_dynamic, a)\n    except PermissionError:\n        pass\n"
            "    else:\n        raise SystemExit('leak ' + a)\n" + ADD)
    v = _run(code)
    assert v.status == "fail" and "violation" in v.stderr_tail and "leak" not in v.stderr_tail


# ------------------------------------------------------------------- strict mode compatibility
LEGIT = {
    "set/sorted/in": ("def f(x):\n    return sorted(set(x))\n",
                      ["assert f([3, 1, 3]) == [1, 3]", "assert 3 in f([3])", "assert set(f([2, 1])) == {1, 2}",
                       "assert f([]) == []", "assert not f([])"]),
    "floats": ("def f(x):\n    return x / 3\n",
               ["assert abs(f(1) - 0.3333333) < 1e-6", "import math\nassert math.isclose(f(3), 1.0)",
                "assert 0 < f(1) < 1", "assert round(f(1), 2) == 0.33"]),
    "tuple/dict/none/bool": ("def f(x):\n    return (x, {'k': [x]}, None, x > 0)\n",
                             ["assert f(1) == (1, {'k': [1]}, None, True)", "assert f(-1)[3] is False",
                              "assert f(1)[2] is None", "assert f(2)[1]['k'] == [2]"]),
    "namedtuple": ("from collections import namedtuple\nP = namedtuple('P', 'x y')\n"
                   "def f(a):\n    return P(a, a + 1)\n", ["assert f(1) == (1, 2)"]),
    "counter/defaultdict/ordered": (
        "from collections import Counter, defaultdict, OrderedDict\n"
        "def f(s):\n    return Counter(s)\n"
        "def g(s):\n    d = defaultdict(int)\n    for c in s:\n        d[c] += 1\n    return d\n"
        "def h(s):\n    return OrderedDict((c, 1) for c in s)\n",
        ["assert f('aab') == {'a': 2, 'b': 1}", "from collections import Counter\nassert f('ab') == Counter('ba')",
         "assert g('aab') == {'a': 2, 'b': 1}", "assert h('ab') == {'a': 1, 'b': 1}"]),
    "generators": ("def f(n):\n    for i in range(n):\n        yield i * i\n",
                   ["assert list(f(3)) == [0, 1, 4]", "assert sum(f(3)) == 5", "assert next(f(2)) == 0"]),
    "map/filter": ("def f(xs):\n    return list(map(lambda x: x + 1, xs))\n",
                   ["assert f([1]) == [2]", "assert list(map(f, [[1]])) == [[2]]"]),
    "strings/bytes": ("def f(s):\n    return s.upper(), s.encode()\n",
                      ["assert f('ab') == ('AB', b'ab')", "assert f('a')[0].lower() == 'a'"]),
    "exceptions expected": ("def f(x):\n    if x < 0:\n        raise ValueError('neg')\n    return x\n",
                            ["try:\n    f(-1)\n    assert False\nexcept ValueError:\n    pass"]),
    "classes from setup": (
        "def depth(n):\n    return 0 if n is None else 1 + max(depth(n.left), depth(n.right))\n",
        ["assert depth(root) == 2", "assert depth(Node(1)) == 1"]),
    "higher order": ("def make(k):\n    return lambda x: x * k\n", ["assert make(3)(2) == 6"]),
    "typing + re + heapq": ("from typing import List\nimport re, heapq\n"
                            "def f(s: str) -> List[int]:\n    return heapq.nsmallest(2, map(int, re.findall(r'\\d+', s)))\n",
                            ["assert f('a1b22c3') == [1, 3]"]),
    "decimal/fractions/datetime": (
        "from decimal import Decimal\nimport datetime\n"
        "def f():\n    return Decimal('1.10'), datetime.date(2020, 1, 2)\n",
        ["from decimal import Decimal\nimport datetime\nassert f() == (Decimal('1.1'), datetime.date(2020, 1, 2))"]),
    "dataclass/enum/stdlib users": (
        "import dataclasses, enum, functools, itertools, string, json, math, random, statistics, fractions\n"
        "@dataclasses.dataclass\nclass P:\n    x: int\nclass C(enum.IntEnum):\n    A = 1\n"
        "@functools.lru_cache(None)\ndef fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n"
        "def f():\n    return P(1).x + C.A + fib(10) + len(json.dumps([1]))\n",
        ["assert f() == 1 + 1 + 55 + 3", "assert C.A == 1"]),
    "isinstance/type": ("def f(x):\n    return [x]\n",
                        ["assert isinstance(f(1), list)", "assert type(f(1)) == list", "assert type(f(1)) is list"]),
    "big output list": ("def f(n):\n    return list(range(n))\n", ["assert f(100000) == list(range(100000))"]),
    "recursion": ("def f(n):\n    return 0 if n == 0 else 1 + f(n - 1)\n", ["assert f(500) == 500"]),
    "more stdlib": (
        "import typing, enum, logging, warnings, inspect, copy, random, statistics, bisect, heapq\n"
        "class P(typing.NamedTuple):\n    x: int\n    y: int = 0\n"
        "Color = enum.Enum('Color', 'RED GREEN')\n"
        "def f(xs):\n    logging.getLogger('x').info('hi')\n    warnings.warn('careful')\n"
        "    assert list(inspect.signature(f).parameters) == ['xs']\n"
        "    random.seed(0)\n    ys = copy.deepcopy(xs)\n    bisect.insort(ys, 2)\n"
        "    return statistics.median(ys), P(1).y, Color.RED.name, heapq.nlargest(1, ys)\n",
        ["assert f([1, 3]) == (2, 0, 'RED', [3])"]),
    "name main guard not run": ("def f():\n    return 1\nif __name__ == '__main__':\n    raise SystemExit(1)\n",
                                ["assert f() == 1"]),
}
SETUP = {"classes from setup": ("class Node:\n    def __init__(self, v, left=None, right=None):\n"
                                "        self.v, self.left, self.right = v, left, right\n"
                                "root = Node(1, Node(2))\n")}


def test_legit_programs_pass_in_strict_mode():
    names = list(LEGIT)
    jobs = [{"code": LEGIT[n][0], "tests": LEGIT[n][1], "setup": SETUP.get(n, "")} for n in names]
    verdicts = run_many(jobs, limits=SandboxLimits(timeout_s=10))
    bad = {n: (v.status, v.stderr_tail[-400:]) for n, v in zip(names, verdicts) if v.status != "pass"}
    assert bad == {}


def test_humaneval_style_check_program():
    prompt = ('from typing import List\n\n\ndef has_close_elements(numbers: List[float], threshold: float) -> bool:\n'
              '    """ Check if any two numbers are closer than threshold. """\n')
    completion = ("    for i, a in enumerate(numbers):\n        for j, b in enumerate(numbers):\n"
                  "            if i != j and abs(a - b) < threshold:\n                return True\n    return False\n")
    test = ("METADATA = {'author': 'jt'}\n\n\ndef check(candidate):\n"
            "    assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3) == True\n"
            "    assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.05) == False\n"
            "    assert candidate([1.0, 2.0, 5.9, 4.0, 5.0], 0.95) == True\n"
            "    for x in range(3):\n        assert not candidate([float(x)], 0.1)\n")
    tests = humaneval_tests(test, "has_close_elements")
    assert tests == [test.rstrip() + "\n\ncheck(has_close_elements)\n"]
    v = run_tests(prompt + completion, tests, limits=FAST)
    assert (v.status, v.n_tests, v.n_passed, v.weak) == ("pass", 1, 1, 0), v.stderr_tail
    # the asserts inside check() are split too: the child never sees `== True` / `== False` / `not`
    plan = sandbox._plan_test(tests[0], True, frozenset(), True)
    assert "== True" not in plan.blob and "== False" not in plan.blob and "not " not in plan.blob
    assert [s.required for s in plan.sites] == [True, True, True, False]
    v = run_tests(prompt + "    return True\n", tests, limits=FAST)
    assert v.status == "fail" and "checked by the parent" in v.stderr_tail
    assert "candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.05)" not in v.stdout_tail


def test_mbpp_setup_code():
    v = run_tests("def sq(x):\n    return math.sqrt(x)\n", ["assert sq(4) == 2.0"], setup="import math",
                  limits=FAST)
    assert v.status == "pass", v.stderr_tail


def test_hash_seed_is_deterministic():
    code = "def f():\n    return list({'alpha', 'beta', 'gamma', 'delta', 'eps'})\nprint(f())\n"
    a, b = _run(code, []), _run(code, [])
    assert a.status == b.status == "pass" and a.stdout_tail == b.stdout_tail


# ---------------------------------------------------------------------------------- run_many
def test_run_many_preserves_order():
    jobs = []
    for i in range(12):
        jobs.append({"code": f"def f():\n    return {i}\n", "tests": [f"assert f() == {i if i % 3 else -1}"]})
    verdicts = run_many(jobs, limits=FAST, workers=4)
    assert [v.status for v in verdicts] == ["fail" if i % 3 == 0 else "pass" for i in range(12)]
    assert run_many([]) == []


def test_run_many_reruns_an_error_the_machine_may_have_caused(monkeypatch):
    """A verdict the program may not have caused (here: the first run of two jobs reports a kill by signal, as a fork
    or memory limit hit by a busy machine would) is run once more alone; the second verdict stands. An error the
    program causes (it does not compile) is not rerun, and stays an error."""
    import crossdistill.sandbox as sb

    real_dispatch, real_run = sb._dispatch, sb.run_tests
    seen, reruns = set(), []

    def flaky(slot, code, tests, setup, lim):
        v = real_dispatch(slot, code, tests, setup, lim)
        if code not in seen and "return a" in code:   # the two programs that compile
            seen.add(code)
            return sb.Verdict("error", False, "[sandbox] error: killed by signal SIGKILL", "", 0.0, len(tests), 0)
        return v

    def counted(code, *a, **k):
        reruns.append(code)
        return real_run(code, *a, **k)

    monkeypatch.setattr(sb, "PRESTART", True)
    monkeypatch.setattr(sb, "_dispatch", flaky)
    monkeypatch.setattr(sb, "run_tests", counted)
    jobs = [{"code": ADD, "tests": ADD_TESTS}, {"code": "def add(a, b):\n    return a - b\n", "tests": ADD_TESTS},
            {"code": "def add(a, b) return", "tests": ADD_TESTS}]
    verdicts = run_many(jobs, limits=FAST, workers=2)
    assert [v.status for v in verdicts] == ["pass", "fail", "error"]
    assert sorted(reruns) == sorted(j["code"] for j in jobs[:2])       # the two killed ones, once each
    assert "compile" in verdicts[2].stderr_tail


def test_run_many_progress_bar(capsys):
    verdicts = run_many([{"code": ADD, "tests": ADD_TESTS}] * 3, limits=FAST, progress="verify")
    assert all(v.passed for v in verdicts)
    assert "verify" in capsys.readouterr().err


def test_run_many_parallel_timeouts_overlap():
    jobs = [{"code": "while True:\n    pass\n", "tests": []}] * 4
    t = time.monotonic()
    verdicts = run_many(jobs, limits=SandboxLimits(timeout_s=1.0), workers=4)
    assert all(v.status == "timeout" for v in verdicts)
    assert time.monotonic() - t < 5.0


# ----------------------------------------------------------------------------------- helpers
def test_build_program():
    p = build_program("def f():\n    return 1\n", ["assert f() == 1"], setup="import math")
    assert p == "import math\n\ndef f():\n    return 1\n\nassert f() == 1\n"
    p = build_program("def f(): pass", ["def check(c):\n    assert c() is None"], entry_point="f",
                      check_fn="check")
    assert p.rstrip().endswith("check(f)")
    ns: dict = {}
    exec(p, ns)


def test_parse_token_rejects_forgeries():
    nonce = "ab" * 16
    good = f"junk\nSBX1 {nonce} pass 3 3 {'ok'.encode().hex()} {b'[]'.hex()}\n".encode()
    assert sandbox._parse_token(good, nonce) == ("pass", 3, 3, "ok", b"[]")
    assert sandbox._parse_token(good, "cd" * 16) is False
    assert sandbox._parse_token(good + b"more\n", nonce) is None
    assert sandbox._parse_token(b"", nonce) is None
    assert sandbox._parse_token(f"SBX1 {nonce} pass x 3 00 00\n".encode(), nonce) is False


def test_strict_transform_shape():
    import dis
    import marshal
    src = "assert f(1) == 2\nassert 0 < g(1) < h(2)\n"

    def walk(co, consts, ops):
        ops.update(i.opname for i in dis.get_instructions(co))
        for c in co.co_consts:
            if isinstance(c, types.CodeType):
                walk(c, consts, ops)
            else:
                consts.add(c)
        return consts, ops

    consts, ops = walk(marshal.loads(sandbox._compile_test(src)), set(), set())
    for k in ("call", "cmp", "chain"):
        assert sandbox._SENT[k] in consts
    # every comparison became a sentinel call that the parent checks: none is left for the child to run
    assert "COMPARE_OP" not in ops
    assert "COMPARE_OP" in walk(marshal.loads(sandbox._compile_test(src, strict=False)), set(), set())[1]


def test_harness_is_closure_free():
    """Rules 1-3 of _sandbox_harness: no cells, nested functions load no globals, and _sbx_main loads
    no globals / imports nothing after the untrusted-code marker."""
    src = sandbox._HARNESS_PATH.read_text()
    module = compile(src, str(sandbox._HARNESS_PATH), "exec")
    main = next(c for c in module.co_consts if isinstance(c, types.CodeType) and c.co_name == "_sbx_main")
    assert main.co_cellvars == () and main.co_freevars == ()
    marker = next(i for i, line in enumerate(src.splitlines(), 1) if line.strip().startswith("# ====") and "UNTRUSTED CODE MAY RUN BELOW" in line)
    bad_ops = {"LOAD_GLOBAL", "LOAD_NAME", "LOAD_DEREF", "LOAD_CLOSURE", "LOAD_CLASSDEREF", "STORE_DEREF",
               "STORE_GLOBAL", "IMPORT_NAME", "MAKE_CELL", "COPY_FREE_VARS"}
    for ins in dis.get_instructions(main):
        if ins.positions and ins.positions.lineno and ins.positions.lineno > marker:
            assert ins.opname not in bad_ops, (ins.opname, ins.argval, ins.positions.lineno)

    def nested(co):
        for c in co.co_consts:
            if isinstance(c, types.CodeType):
                yield c
                yield from nested(c)
    for co in nested(main):
        assert co.co_freevars == () and co.co_cellvars == (), co.co_name
        for ins in dis.get_instructions(co):
            assert ins.opname not in bad_ops, (co.co_name, ins.opname, ins.argval)


# ------------------------------------------------------------------------- privilege dropping
SYSTEM_PY = shutil.which("python3", path="/usr/bin")


@pytest.mark.skipif(os.geteuid() != 0 or not SYSTEM_PY or not sys.platform.startswith("linux"),
                    reason="needs root and a system python readable by nobody")
def test_drop_privileges_with_world_readable_interpreter():
    limits = SandboxLimits(timeout_s=10, python=SYSTEM_PY, drop_privileges=True)
    v = run_tests("import os\nprint('UID', os.getuid(), os.geteuid())\n" + ADD, ADD_TESTS, limits=limits)
    assert v.status == "pass", v.stderr_tail
    assert "UID 65534 65534" in v.stdout_tail
    # unprivileged + RLIMIT_NPROC: the kernel refuses even if the hook were bypassed
    v = run_tests("import os\nfd = os.open('/etc/shadow', os.O_RDONLY)\n" + ADD, ADD_TESTS, limits=limits)
    assert v.status in ("error", "fail") and not v.passed


def test_auto_drop_is_off_when_interpreter_unreadable():
    # This repo's interpreter lives under /root (mode 700) in CI: dropping must not be attempted.
    if os.geteuid() == 0 and not sandbox._drop_works(sys.executable):
        assert sandbox._drop_ids(sys.executable, SandboxLimits()) is None
    assert sandbox._drop_ids(sys.executable, SandboxLimits(drop_privileges=False)) is None


def test_max_procs_allows_subprocesses():
    code = ("import subprocess, threading\n"
            "assert subprocess.run(['/bin/sh', '-c', 'exit 3']).returncode == 3\n"
            "t = threading.Thread(target=lambda: None)\nt.start()\nt.join()\n" + ADD)
    v = _run(code, limits=SandboxLimits(timeout_s=10, max_procs=4))
    assert v.status == "pass", v.stderr_tail
    v = _run(code)  # default: no processes, no threads
    assert v.status == "error" and "not allowed" in v.stderr_tail


def test_max_procs_escaped_session_is_killed():
    code = ("import subprocess\n"
            "p = subprocess.Popen(['setsid', 'sh', '-c', 'echo ESC $$; exec sleep 30'], stdout=subprocess.PIPE)\n"
            "print(p.stdout.readline().decode().strip(), flush=True)\n" + ADD)
    if not shutil.which("setsid"):
        pytest.skip("no setsid binary")
    v = _run(code, limits=SandboxLimits(timeout_s=10, max_procs=4, isolation="off"))  # host pids
    assert v.status == "pass", v.stderr_tail
    pid = int(v.stdout_tail.split("ESC", 1)[1].split()[0])
    time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(") ")[1][:2]


@pytest.mark.skipif(not SYSTEM_PY, reason="needs /usr/bin/python3")
def test_other_interpreter_gets_source():
    v = run_tests(ADD, ADD_TESTS, limits=SandboxLimits(timeout_s=10, python=SYSTEM_PY,
                                                       drop_privileges=False))
    assert v.status == "pass", v.stderr_tail
    src = sandbox._transform_test_source("assert f(1) == 2")
    assert "\\x00sbx:cmp\\x00" in src and compile(src, "t", "exec")


STACK = ("class Stack:\n    def __init__(self):\n        self.items = []\n"
         "    def push(self, x):\n        self.items.append(x)\n    def pop(self):\n        return self.items.pop()\n"
         "    def __len__(self):\n        return len(self.items)\n"
         "    def __eq__(self, other):\n        return self.items == other.items\n")
STACK_TESTS = ["s = Stack()\ns.push(1)\ns.push(2)\nassert s.pop() == 2\nassert len(s) == 1",
               "a, b = Stack(), Stack()\na.push(1)\nb.push(1)\nassert a == b"]


def test_class_based_tasks_need_non_strict_mode():
    strict = _run(STACK, STACK_TESTS)
    assert strict.status == "fail" and "non-builtin class 'Stack'" in strict.stderr_tail
    loose = _run(STACK, STACK_TESTS, limits=SandboxLimits(timeout_s=2, strict=False))
    assert loose.status == "pass", loose.stderr_tail
    # non-strict still has the nonce/token, hooks, limits ...
    assert _run("import os\nos._exit(0)", STACK_TESTS, limits=SandboxLimits(strict=False)).status == "fail"
    assert _run(STACK + "import os\nos.fork()", STACK_TESTS, limits=SandboxLimits(strict=False)).status == "error"


def test_setup_imports_do_not_unpatch_process_control():
    code = ("import os, subprocess\nfor fn in (lambda: os.mkfifo('f'), lambda: os.setsid(),\n"
            "           lambda: subprocess._fork_exec):\n    try:\n        fn()\n    except BaseException:\n"
            "        pass\n" + ADD)
    v = _run(code, setup="import os, subprocess, signal")
    assert v.status == "fail" and "os.mkfifo" in v.stderr_tail and "os.setsid" in v.stderr_tail


# ------------------------------------------------------------- the parent decides (issue 19)
def test_expected_values_never_reach_the_child():
    plan = sandbox._plan_test("assert add(1, 2) == 12345\nassert abs(add(0.5, 0.25) - 0.75) < 1e-9\n",
                              True, frozenset(), True)
    assert "12345" not in plan.blob and "0.75" not in plan.blob and "1e-09" not in plan.blob
    assert "(add, 1, 2)" in plan.blob and plan.strong and len(plan.sites) == 2


def test_forged_observations_cannot_pass():
    plan = sandbox._plan_test("assert add(1, 2) == 3", True, frozenset(), False)
    good = repr([[True], [(0, 0, [3])]]).encode()
    assert sandbox._parent_verdict([plan], good) == ([True], "")
    for forged in ([[True], [(0, 0, [4])]],            # a wrong value
                   [[True], []],                        # the observation withheld
                   [[True], [(0, 0, [["X", "Eq"]])]],   # not plain data
                   [[True], [(0, 0, [3, 3])]]):         # wrong shape
        ok, why = sandbox._parent_verdict([plan], repr(forged).encode())
        assert ok == [False] and why
    assert sandbox._parent_verdict([plan], b"__import__('os')")[0] == [False]
    loop = sandbox._plan_test("for x in [1, 2]:\n    assert add(x, 1) == x + 1", True, frozenset(), False)
    assert not loop.sites[0].required
    assert sandbox._parent_verdict([loop], repr([[True], []]).encode())[0] == [False]


def test_weak_tests_are_counted():
    v = run_tests("def f(x):\n    return x\n", ["y = [1]\nassert f(y) == y", "assert f(2) == 2"])
    assert v.passed and v.weak == 1
    v = run_tests("def f(x):\n    return None\n", ["assert f(1) is None", "assert f(1) is not None"])
    assert v.status == "fail" and v.n_passed == 1


# ------------------------------------------------------------------------ isolation (issue 19)
def test_isolation_required_refuses_without_bwrap(monkeypatch):
    monkeypatch.setattr(sandbox, "_isolation_probe", lambda python, procs: ("none", "bwrap is missing (test)"))
    with pytest.raises(sandbox.SandboxUnavailable, match="bwrap is missing"):
        run_tests(ADD, ADD_TESTS, limits=SandboxLimits(isolation="required"))
    with pytest.raises(sandbox.SandboxUnavailable):
        sandbox.run_many([{"code": ADD, "tests": ADD_TESTS}], limits=SandboxLimits(isolation="required"))
    sandbox._ISO_WARNED.clear()
    v = run_tests(ADD, ADD_TESTS, limits=SandboxLimits(isolation="auto"))
    assert v.passed and v.isolation.startswith("none")
    with pytest.raises(ValueError):
        run_tests(ADD, ADD_TESTS, limits=SandboxLimits(isolation="sometimes"))


def test_auto_warns_once(monkeypatch, capsys):
    monkeypatch.setattr(sandbox, "_isolation_probe", lambda python, procs: ("none", "no bwrap (test)"))
    sandbox._ISO_WARNED.clear()
    for _ in range(3):
        sandbox.isolation_level(SandboxLimits(isolation="auto"))
    assert capsys.readouterr().err.count("WARNING: no OS isolation (no bwrap (test))") == 1


@pytest.mark.skipif(sandbox._isolation_probe(os.path.realpath(sys.executable), 0)[0] == "none",
                    reason="bubblewrap does not run on this machine")
def test_isolated_run_is_unprivileged_and_sees_nothing():
    code = ("import os\nprint('UID', os.getuid(), 'PPID', os.getppid(), 'SEEN', os.path.exists('/work'), "
            "os.path.exists('/home'), os.path.exists('/root/.cache'))\n" + ADD)
    v = run_tests(code, ADD_TESTS, limits=SandboxLimits(isolation="required"))
    assert v.passed and v.isolation.startswith("bwrap"), v.stderr_tail
    assert "UID 65534 PPID 1 " in v.stdout_tail, v.stdout_tail  # own PID namespace, unprivileged
    assert "SEEN False False False" in v.stdout_tail  # only /usr and the interpreter are mounted


def test_recipe_key_sandbox_isolation(tmp_path):
    from crossdistill.config import load_config
    from crossdistill.errors import UserError
    assert load_config(None).sandbox.isolation == "auto"
    assert load_config(None, ["sandbox.isolation=off"]).sandbox.isolation == "off"
    with pytest.raises(UserError, match="sandbox.isolation"):
        load_config(None, ["sandbox.isolation=sometimes"])


_OS_PROBE = r"""
import os, socket, signal, sys, time, fcntl
out = {}
def tryit(name, f):
    try:
        f()
        out[name] = "ALLOWED"
    except OSError as e:
        out[name] = "refused:%d" % e.errno
tryit("fork", lambda: os._exit(0) if os.fork() == 0 else None)
tryit("socket", lambda: socket.socket())
tryit("memfd", lambda: os.memfd_create("x"))
tryit("setpriority", lambda: os.setpriority(os.PRIO_PROCESS, 0, -5))
tryit("sched_setaffinity", lambda: os.sched_setaffinity(0, {0}))
tryit("clock_settime", lambda: time.clock_settime(time.CLOCK_REALTIME, time.time()))
tryit("ioctl", lambda: fcntl.ioctl(0, 0x5401, b"\0" * 64))
tryit("pidfd_open", lambda: os.pidfd_open(os.getpid()))
tryit("write_outside", lambda: open("/tmp/crossdistill_pwned_oslayer", "w").write("x"))
tryit("write_root", lambda: open("/crossdistill_pwned", "w").write("x"))
tryit("fill_work_dir", lambda: [open("f%d" % i, "wb").write(b"x" * (1 << 20)) for i in range(80)])
tryit("write_usr", lambda: open("/usr/crossdistill_pwned", "w").write("x"))
tryit("chroot", lambda: os.chroot("/usr"))
tryit("setuid0", lambda: os.setuid(0))
print(out)
"""


@pytest.mark.skipif(sandbox._isolation_probe(os.path.realpath(sys.executable), 0)[0] != "bwrap+seccomp",
                    reason="bubblewrap + seccomp do not run on this machine")
def test_os_layer_alone_refuses_what_the_hooks_would(tmp_path):
    """Defence in depth: plain Python (no harness, no audit hook) under the OS layer alone."""
    import ast
    import subprocess
    r_fd, w_fd = os.pipe()
    os.write(w_fd, sandbox._seccomp_filter(0))
    os.close(w_fd)
    work = os.path.realpath(tempfile.mkdtemp(prefix="cdsbx-os-"))
    try:
        r = subprocess.run([*sandbox._bwrap_argv(sys.executable, work, r_fd), "-S", "-c", _OS_PROBE],
                           pass_fds=(r_fd,), capture_output=True, timeout=60, env=sandbox._base_env(work), cwd=work)
    finally:
        os.close(r_fd)
        sandbox._rmtree(work)
    assert r.returncode == 0, r.stderr
    out = ast.literal_eval(r.stdout.decode().strip().splitlines()[-1])
    assert [k for k, v in out.items() if v == "ALLOWED"] == [], out
    assert out["ioctl"] == "refused:25"  # ENOTTY: what a program without a terminal expects
    assert not Path("/tmp/crossdistill_pwned_oslayer").exists()
