"""Strict mode must not reject correct code: the datasets' own reference solutions, and the value types
and name-resolution cases that used to be false negatives (the hostile side is in tests/hostile/).

* slow: every HumanEval canonical solution (prompt + canonical completion) and every MBPP reference
  solution (with its test_setup_code) passes ``run_many``;
* fast: small inline versions of the cases that failed before (a function named ``sum``, setup code
  that needs the solution's class, a test that builds ``random.Random``), value types (Fraction,
  Decimal, Enum members, named tuples) and the limits of what a builtin-named candidate function may do.
"""

from __future__ import annotations

import pytest

from crossdistill.sandbox import SandboxLimits, run_many, run_tests

LIMITS = SandboxLimits(timeout_s=10.0, cpu_s=10.0)


def _verdicts(cases: dict[str, tuple]) -> dict[str, object]:
    names = list(cases)
    jobs = [{"code": c[0], "tests": c[1], "setup": c[2] if len(c) > 2 else ""} for c in cases.values()]
    return dict(zip(names, run_many(jobs, limits=LIMITS)))


def _load(name: str):
    from crossdistill.sources import load_source
    try:
        return load_source(name)
    except Exception as e:  # noqa: BLE001 - no cache and no network
        pytest.skip(f"dataset {name} is not available: {e!r}")


# ------------------------------------------------------------------------------ the datasets
@pytest.mark.slow
def test_all_reference_solutions_pass():
    jobs, names = [], []
    for r in _load("humaneval"):
        jobs.append({"code": r.meta["code_prompt"] + r.response, "tests": r.tests, "setup": r.test_setup or ""})
        names.append(r.id)
    for r in _load("mbpp"):
        jobs.append({"code": r.response, "tests": r.tests, "setup": r.test_setup or ""})
        names.append(r.id)
    assert len(jobs) >= 600
    # generous limits: a few references take seconds of CPU (MBPP 123 ~3 s) and the box may be busy
    verdicts = run_many(jobs, limits=SandboxLimits(timeout_s=90.0, cpu_s=30.0))
    failed = {n: (v.status, v.stderr_tail[-400:]) for n, v in zip(names, verdicts) if not v.passed}
    assert failed == {}, f"{len(failed)} of {len(jobs)} reference solutions rejected"


# ------------------------------------------------------------------ the three false negatives
NODE = ("class Node:\n    def __init__(self, data):\n        self.data = data\n        self.left = None\n"
        "        self.right = None\n"
        "def height(root):\n    return 0 if root is None else 1 + max(height(root.left), height(root.right))\n")
FIXED = {
    # MBPP 126: the task's function is called `sum`; the tests must call it, not the builtin
    "function named sum": ("def sum(a, b):\n    sum = 0\n    for i in range(1, min(a, b)):\n"
                           "        if a % i == 0 and b % i == 0:\n            sum += i\n    return sum\n",
                           ["assert sum(10, 15) == 6", "assert sum(100, 150) == 93", "assert sum(4, 6) == 3"]),
    # MBPP 367: the setup code builds trees from the solution's Node class
    "setup uses the candidate's class": (NODE, ["assert height(root) == 3", "assert height(root1) == 2"],
                                         "root = Node(1)\nroot.left = Node(2)\nroot.left.left = Node(3)\n"
                                         "root1 = Node(1)\nroot1.right = Node(2)\n"),
    # HumanEval 32: the test program builds its own random.Random (and uses copy, math)
    "test builds random.Random": (
        "def double(xs):\n    return [2 * x for x in xs]\n",
        ["def check(candidate):\n    import math\n    import random\n    import copy\n    rng = random.Random(42)\n"
         "    for _ in range(20):\n        xs = [rng.randint(-10, 10) for _ in range(rng.randint(1, 5))]\n"
         "        ys = candidate(copy.deepcopy(xs))\n        assert math.fabs(sum(ys) - 2 * sum(xs)) < 1e-9\n"
         "        assert ys == [2 * x for x in xs]\n    assert 0.0 <= rng.random() < 1.0\n\ncheck(double)\n"]),
    # self-contained setup still runs before the candidate (which may use it at import time)
    "self-contained setup runs first": ("def sq(x):\n    return math.sqrt(x)\nTWO_PI = 2 * math.pi\n",
                                        ["assert sq(4) == 2.0", "assert TWO_PI > 6"], "import math"),
}


def test_fixed_false_negatives_pass():
    bad = {n: (v.status, v.stderr_tail[-400:]) for n, v in _verdicts(FIXED).items() if not v.passed}
    assert bad == {}


def test_fixed_false_negatives_still_check_answers():
    wrong = {
        "function named sum": ("def sum(a, b):\n    return a + b\n", ["assert sum(10, 15) == 6"]),
        "setup uses the candidate's class": (NODE.replace("return 0 if", "return 1 if"), ["assert height(root) == 3"],
                                             FIXED["setup uses the candidate's class"][2]),
        "test builds random.Random": ("def double(xs):\n    return xs\n", FIXED["test builds random.Random"][1]),
        "candidate lacks the setup's class": ("def height(root):\n    return 3\n", ["assert height(root) == 3"],
                                              "root = Node(1)\n"),
    }
    verdicts = _verdicts(wrong)
    assert {n: v.passed for n, v in verdicts.items()} == dict.fromkeys(wrong, False)
    assert verdicts["candidate lacks the setup's class"].status == "error"
    assert "setup code failed: NameError" in verdicts["candidate lacks the setup's class"].stderr_tail


# ------------------------------------------------------------------------------ value types
VALUES = {
    "Fraction": (
        "from fractions import Fraction\ndef f(a, b):\n    return Fraction(a, b)\n",
        ["assert f(1, 2) == 0.5", "from fractions import Fraction\nassert f(2, 6) == Fraction(1, 3)",
         "assert f(4, 2) == 2 and f(0, 5) == 0 and not f(0, 5)", "assert f(1, 3) != 1 / 3",
         "assert f(1, 3) < 0.34 and f(1, 3) > Fraction(1, 4)", "assert float('-inf') < f(1, 3) < float('inf')",
         "assert f(1, 3).numerator == 1 and f(1, 3).limit_denominator(2) == Fraction(1, 2)",
         "assert abs(f(1, 3) - Fraction(1, 3)) < 1e-12", "import math\nassert math.isclose(f(1, 3), 1 / 3)",
         "assert [f(1, 3), f(1, 2)] == [Fraction(1, 3), 0.5] and f(1, 3) in {Fraction(1, 3)}",
         "assert sorted([f(1, 2), f(1, 3)]) == [Fraction(1, 3), Fraction(1, 2)] and str(f(1, 3)) == '1/3'"]),
    "Decimal": ("from decimal import Decimal\ndef f(s):\n    return Decimal(s)\n",
                ["from decimal import Decimal\nassert f('1.10') == Decimal('1.1')", "assert f('2') == 2",
                 "assert f('0.5') == 0.5"]),
    "Enum": (
        "import enum\nclass Color(enum.Enum):\n    RED = 1\n    GREEN = 2\n    def describe(self):\n"
        "        return self.name.lower()\n"
        "def f(x):\n    return Color.RED if x else Color.GREEN\n",
        ["assert f(1) == Color.RED and f(0) != Color.RED and f(1) is Color.RED",
         "assert f(1).name == 'RED' and f(1).value == 1 and f(1).describe() == 'red'",
         "assert f(0) in (Color.GREEN,) and {f(1): 1} == {Color.RED: 1} and str(f(1)) == 'Color.RED'"]),
    "IntEnum/StrEnum/Flag": (
        "import enum\nclass I(enum.IntEnum):\n    A = 3\nclass F(enum.Flag):\n    R = 1\n    W = 2\n"
        "def f():\n    return I.A\ndef h():\n    return F.R | F.W\ndef z():\n    return F.R & F.W\n",
        ["assert f() == 3 and f() == I.A and f().name == 'A'",
         "assert h() == F.R | F.W and F.R in h() and list(h()) == [F.R, F.W]", "assert h() and not z()"]),
    "named tuples keep their attributes": (
        "from collections import namedtuple\nfrom typing import NamedTuple\nP = namedtuple('P', 'x y')\n"
        "class Q(NamedTuple):\n    a: int\n    b: int = 0\n    def total(self):\n        return self.a + self.b\n"
        "def f(a):\n    return P(a, a + 1)\ndef g(a):\n    return Q(a)\n",
        ["assert f(1) == (1, 2) and f(1) == P(1, 2) and f(1).x == 1 and f(1).y == 2",
         "assert g(2).a == 2 and g(2).total() == 2 and g(2) == (2, 0) and isinstance(g(2), Q)",
         "assert f(1)._asdict() == {'x': 1, 'y': 2} and repr(f(1)) == 'P(x=1, y=2)'"]),
    "tests build stdlib objects": (
        "def f(s):\n    return s\n",
        ["import collections, fractions\nc = collections.Counter('aab')\nassert c.most_common(1) == [('a', 2)]\n"
         "assert f(fractions.Fraction(1, 3)) == fractions.Fraction(2, 6)"]),
}


def test_value_types_are_comparable():
    bad = {n: (v.status, v.stderr_tail[-400:]) for n, v in _verdicts(VALUES).items() if not v.passed}
    assert bad == {}


def test_value_types_still_compare_by_value():
    wrong = {
        "Fraction": ("from fractions import Fraction\ndef f():\n    return Fraction(1, 3)\n", ["assert f() == 1 / 3"]),
        "Fraction subclass": ("from fractions import Fraction\nclass G(Fraction):\n    def __eq__(self, o):\n"
                              "        return True\ndef f():\n    return G(1, 3)\n",
                              ["from fractions import Fraction\nassert f() == Fraction(1, 2)"]),
        "Enum": ("import enum\nclass C(enum.Enum):\n    A = 1\n    B = 2\ndef f():\n    return C.B\n", ["assert f() == C.A"]),
        "Enum with __eq__": ("import enum\nclass C(enum.Enum):\n    A = 1\n    B = 2\n    def __eq__(self, o):\n"
                             "        return True\n    __hash__ = object.__hash__\ndef f():\n    return C.B\n",
                             ["assert f() == C.A"]),
        "named tuple": ("from collections import namedtuple\nP = namedtuple('P', 'x y')\ndef f():\n    return P(1, 3)\n",
                        ["assert f() == (1, 2)"]),
    }
    verdicts = _verdicts(wrong)
    assert {n: v.passed for n, v in verdicts.items()} == dict.fromkeys(wrong, False)


def test_patching_fraction_during_the_tests_is_a_violation():
    code = ("from fractions import Fraction\ndef f(x):\n    if x:\n        Fraction.__float__ = lambda self: 0.5\n"
            "    return Fraction(1, 3)\n")
    v = run_tests(code, ["assert f(0) == Fraction(1, 3)", "import math\nassert math.isclose(f(1), 0.5)"],
                  setup="from fractions import Fraction", limits=LIMITS)
    assert v.status == "fail" and "violation" in v.stderr_tail and "Fraction" in v.stderr_tail


# ------------------------------------------------------------------------- builtin-named functions
SHADOWS = {
    # (code, tests, passes?)
    "task function named like a builtin": ("def sum(a, b):\n    return a * b\n", ["assert sum(3, 4) == 12"], True),
    "honest helper named like a builtin": (
        "def max(*args):\n    best = None\n    for x in (args[0] if len(args) == 1 else args):\n"
        "        if best is None or x > best:\n            best = x\n    return best\n"
        "def f(x):\n    return [x, x + 1]\n",
        ["assert max(1, 2) == 2", "assert max(f(1)) == 2"], True),
    "lying all()": ("def all(*a, **k):\n    return True\ndef f(x):\n    return [x]\n",
                    ["assert all(v == 1 for v in f(2))"], False),
    "lying all() on a non-iterable result": ("def all(*a, **k):\n    return True\ndef f(x):\n    return None\n",
                                             ["assert all(f(2))"], False),
    "lying abs()": ("def abs(x):\n    return 0\ndef f(x):\n    return 99\n", ["assert abs(f(1) - 3) < 1e-9"], False),
    "lying sorted() with key": ("def sorted(x, key=None, reverse=False):\n    return []\ndef f():\n    return [3, 1]\n",
                                ["assert sorted(f(), key=lambda p: -p) == sorted([1, 2], key=lambda p: -p)"], False),
    "lying zip() is not seen": ("def zip(*a):\n    return []\ndef f():\n    return [3, 1]\n",
                                ["assert all(a == b for a, b in zip(f(), [1, 2]))"], False),
    "lying class named like a builtin is not seen": ("class list(list):\n    def __eq__(self, o):\n        return True\n"
                                                     "def f():\n    return [0]\n",
                                                     ["assert isinstance(f(), list) and f() == list([1])"], False),
}


def test_builtin_named_candidate_functions():
    verdicts = _verdicts({n: c[:2] for n, c in SHADOWS.items()})
    got = {n: v.passed for n, v in verdicts.items()}
    assert got == {n: c[2] for n, c in SHADOWS.items()}, {n: verdicts[n].stderr_tail[-300:] for n in got}
    assert "shadows the builtin" in verdicts["lying all()"].stderr_tail
