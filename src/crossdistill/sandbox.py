"""Run untrusted, model-generated Python code against tests: the only module in crossdistill that does.

Used by the distill stage (verify code rewrites against their tests) and by the eval stage
(HumanEval / MBPP pass@k)::

    from crossdistill.sandbox import run_tests, run_many, humaneval_tests, SandboxLimits

    v = run_tests("def add(a, b):\\n    return a + b", ["assert add(1, 2) == 3"])
    v.status, v.passed                    # ("pass", True)

    # HumanEval: the test program defines check(candidate); pass it as ONE test that calls it
    v = run_tests(prompt + completion, humaneval_tests(problem["test"], problem["entry_point"]))
    # == tests=[problem["test"] + f"\\ncheck({problem['entry_point']})\\n"]

    verdicts = run_many([{"code": c, "tests": t, "setup": s}, ...], progress="verify")

Statuses: ``"pass"`` (every test ran without raising *and* the harness reported it),
``"fail"`` (a test failed, or the program exited / closed its result channel before reporting, or it
attempted a blocked operation), ``"timeout"`` (wall clock or CPU limit), ``"error"`` (candidate or setup
does not compile or raises at import time, MemoryError, crash / killed by a signal, bad test).

How a program is run
--------------------
* One fresh interpreter per program (``python -S -s -B [-P] -c <bootstrap>``, scrubbed environment:
  only ``PATH=/usr/bin:/bin``, ``LANG=C.UTF-8``, ``PYTHONHASHSEED=0`` (deterministic set/dict order for
  reproducible pass@k), ``HOME``/``TMPDIR`` = its private temp dir; no API keys or other secrets), in
  its own session / process group (``start_new_session=True``), with a fresh ``mkdtemp`` directory as
  cwd that is deleted afterwards.  No site-packages: the candidate sees the standard library only.
* The parent streams the harness (``_sandbox_harness.py``, pre-compiled and marshalled once) and the
  job over stdin.  The harness reads everything, points stdin at /dev/null and then, *before any
  candidate code runs*: sets ``RLIMIT_CPU/AS/FSIZE/CORE/NOFILE/NPROC``; drops root privileges to
  ``nobody`` when the parent runs as root and the interpreter is readable by ``nobody`` (probed once;
  ``CROSSDISTILL_SANDBOX_DROP_PRIVILEGES=0/1`` or ``SandboxLimits.drop_privileges`` override); captures
  every builtin / function it needs; patches ``_imp``, ``_thread``, ``_signal`` and ``posix``; imports
  the plain stdlib modules that the tests / setup import, and ``fractions`` / ``enum`` / ``collections``
  when the candidate's code names them; runs a self-contained ``setup``; snapshots module namespaces
  and the dicts of the classes defined there; and installs a ``sys.addaudithook`` hook (hooks cannot be
  removed).
* The candidate runs in its own globals dict.  Then ``builtins``, every module namespace loaded before
  it ran (with its classes) and those ``sys.modules`` entries are restored; a ``setup`` that uses names
  it does not define (MBPP 367: ``root = Node(1)`` with ``Node`` from the solution) runs now, in the
  candidate's namespace (and the state is restored again).  Each test runs in a separate namespace
  built from the candidate's globals, with a pristine copy of the builtins: names bound by the
  candidate resolve first, as in plain Python, except that a candidate's name that shadows a builtin is
  only seen when it is a function shadowing a side-effect-free builtin (``sum``, ``max``, ``sorted``,
  ``abs`` ...; MBPP 126 defines ``sum(a, b)``) and a call by that name is checked: the builtin runs
  first; when it accepts the arguments the candidate's function must return the same value (so ``def
  abs(x): return 0`` cannot make ``abs(f(x) - y) < 1e-9`` pass); when it refuses them (TypeError) the
  candidate's result counts only if the arguments are constants written in the test (``sum(10, 15)``,
  not ``all(f(x))`` with ``f`` returning None).  Module names bound by a setup that ran before the
  candidate stay bound to those modules (a candidate cannot rebind ``math`` to a fake).
* Wall-clock timeout → ``SIGKILL`` to the whole process group; the group is killed unconditionally
  while the leader is still unreaped (so the pgid cannot have been recycled), then the leader is reaped.
  With ``max_procs > 0`` processes that left the group (an exec'd ``setsid``) are found through
  ``/proc`` (cwd / ``TMPDIR`` in this run's directory) and killed too.

Performance: ``run_many`` runs ``workers`` (default ``os.cpu_count()``) threads, each supervising one
child at a time with ``poll`` (no reader threads).  Each worker keeps its *next* interpreter already
started with the harness loaded, waiting for its job on stdin ("pre-started, single use": every
interpreter still runs exactly one program), which hides the ~10 ms interpreter start-up.  Measured on
2 busy cores (load average ~7, ``benchmarks/bench_sandbox.py``): ~50 programs/s with a fresh spawn per
program vs ~66/s pre-started; ~15 ms of child CPU per MBPP-sized program.  The harness (~80 KiB
marshalled) is written into a pipe grown with ``F_SETPIPE_SZ`` so that pre-starting never blocks.  A fork-server ("zygote") could
cut child CPU to ~1-2 ms (measured fork cost) for roughly another 2x, at the price of fd passing and a
reaping broker; not implemented since the target (30/s) is met twice over.

Why the verdict cannot be faked
-------------------------------
* The parent decides (issue 19).  Each ``assert`` is split before the child starts (:class:`_Splitter`):
  the child receives only the probes (``add(1, 2)``) as ``h_obs(site, lambda: probe, ...)`` calls, and
  sends their values back in the result token as plain data (tagged builtins, ``repr``'d, decoded in
  the parent with ``ast.literal_eval`` - never pickle/marshal).  The skeleton (``__p(0) == 3``), with
  the expected values, never leaves the parent, which evaluates it on the decoded values with a few
  side-effect-free builtins and ``math`` functions.  A test passes only if the child ran it without
  an exception *and* every observation satisfies its skeleton *and* each straight-line assert was
  observed.  So a child whose harness state is forged (nonce, result fd, test list, trusted types,
  violations - all reachable from ``gc.garbage`` frames on 3.11) can only report values the candidate
  could have returned, without knowing what they are compared with.  Asserts that cannot be split
  safely (a comparison of two run-time values, ``is``, candidate classes, enum-based candidates, every
  assert under ``try``) are evaluated in the child as before and counted in ``Verdict.weak``.
* OS isolation (``SandboxLimits.isolation``; see :func:`_bwrap_argv` and :func:`_seccomp_filter`):
  bubblewrap namespaces (user/pid/net/ipc/uts), uid 65534 without capabilities, read-only ``/usr`` and
  interpreter prefix only, a 64 MiB tmpfs work dir, die-with-parent, and a seccomp filter; the level
  is recorded in ``Verdict.isolation``.
The in-process protections below remain as a second layer (and the only one with isolation "off"):

* The verdict never comes from the exit code.  The parent generates a random nonce per run and sends
  it over stdin; the harness keeps it only as a fast local of its main function and, after *all* tests
  ran, writes ``SBX1 <nonce> <status> <n_tests> <n_passed> <reason>`` as the last line of a dedicated
  pipe.  No token (``os._exit(0)``, ``sys.exit`` escaping, closed fd, crash), a wrong nonce, or data after
  the token → not pass.  ``atexit`` handlers never run (the harness leaves with ``os._exit``).
* Untrusted code cannot reach the nonce or the harness state: ``sys._getframe``, ``sys._current_frames``,
  ``tb_frame``/``gi_frame``/``cr_frame``/``ag_frame``/``f_*``, ``sys.settrace``/``setprofile``,
  ``gc.get_objects``/``get_referrers``/``get_referents``, Python signal handlers (they would receive the
  interrupted harness frame), ``code.__new__`` and ``marshal.loads`` of anything but the verified bytes
  of a stdlib ``.pyc`` (hand-made bytecode can read memory), ``/proc`` & arbitrary file reads, ``ctypes``
  and the ``_test*``/``_xx*`` extension modules, re-creating already loaded builtin modules via ``_imp``,
  and reading/replacing ``__defaults__``/``__kwdefaults__``/``__code__`` of harness functions are all
  refused.  The harness keeps references to every builtin it uses, so rebinding ``builtins.*``,
  ``AssertionError``, ``print``, ``os.write`` ... has no effect on it.
* Tests are compiled in the parent and rewritten with :mod:`ast` (strict mode):
  - every call to a non-builtin callable (the candidate, lambdas, stdlib Python functions) has its
    result checked: exact builtin data passes; value types pass as they are when their classes pass
    the checks below; instances of *subclasses* of builtin types (``int`` subclass with ``__eq__``
    always true, ``str``/``list``/``dict`` subclasses, ``Counter``) are converted to the exact builtin
    value; iterators are wrapped so each produced item is checked; instances of other classes
    (``__eq__``-always-true objects ...) make the test fail.  Exception: an object that the test code
    builds by calling a genuine stdlib class (one loaded before the candidate ran, e.g.
    ``random.Random(42)``, ``Fraction(1, 3)``, ``Counter(...)``) is the test's own and passes as it is.
  - value types: ``fractions.Fraction`` (a subclass is replaced by the exact genuine Fraction; values
    are read from its slots), members of ``enum.Enum`` subclasses and named tuples (``namedtuple`` /
    ``typing.NamedTuple``, attribute access kept).  The candidate-defined classes involved may not
    define anything Python calls implicitly (comparison, hashing, conversion, container or attribute
    hooks, descriptors) except the genuine enum / namedtuple machinery; an enum member's ``_value_`` must
    itself pass unchanged; a named tuple that fails the checks is converted to a plain tuple.  Decimal,
    datetime and ``array`` objects (C types, immutable) pass as before.  The stdlib classes behind an
    accepted value (``Fraction`` and the ``numbers`` ABCs, ``Enum``/``EnumType``, ``Random`` ...) and
    their modules' namespaces must be unmodified, checked when the value is accepted and after every
    later call the tests make: modifying them then is a violation.
  - ``assert a == b`` (and ``!=``, ``<``, ``in``, chains, ``not``, ``and``/``or``, bare ``assert x``) compares
    exact builtin copies of both sides, built without calling any method user code can override:
    a Fraction becomes its int / the float equal to it / an exact rational compared by
    cross-multiplication (Python's exact Fraction-vs-int/float semantics), an enum member a token that
    only equals the same member (``IntEnum``/``StrEnum`` members: their int / str value), a named tuple
    a tuple.
  - the helpers are bound into the test code objects as constants, not looked up by name.
  ``SandboxLimits(strict=False)`` turns this rewriting off (plain Python semantics, e.g. for
  class-based tasks whose tests compare instances of candidate-defined classes); every other
  protection stays on.  Any exception escaping a test - including ``SystemExit``/``KeyboardInterrupt`` raised by the
  candidate - fails that test.  Classes defined by the (trusted) ``setup`` code are accepted as values.
* Any refused operation (except the benign ``sys._getframe``) also marks the run as tampered: the
  verdict is ``"fail"`` even if the tests passed, and the reason names the operation.
* Output: stdout/stderr are read incrementally by the parent; everything beyond
  ``max_output_bytes`` per stream is discarded (the kept part is the *end* of the stream).

Threat model - what this does NOT do
------------------------------------
This is a **best-effort sandbox for reward hacking and accidents, not a security boundary against a
determined attacker**.  Audit hooks and in-process checks can be bypassed by C-level tricks (a CPython
memory-safety bug, a crafted object reaching a C API that trusts it); network isolation is by audit
hook only (no network namespace); when the parent runs as root and privileges cannot be dropped,
``RLIMIT_NPROC`` is not enforced by the kernel and only the in-process hooks stop fork/exec; un-audited
syscalls wrapped by ``posix`` (``mkfifo``, ``setsid`` ...) are patched out, but other un-audited ones
remain.  ``max_procs > 0`` allows fork/exec - an exec'd binary has no hooks at all, so only use it with
privilege dropping or trusted code.  Known strict-mode residue: a test that passes a test-defined
function/lambda *to* the candidate exposes the test namespace through ``__globals__``; monkeypatching
stdlib modules that are first imported by the candidate (other than ``math``, those loaded at startup
and those pre-imported for the tests) is not undone; Python-level iteration/``len``/arithmetic inside
builtin C functions on values that did not come from a call (e.g. candidate-created globals, attributes
of accepted enum members / named tuples the tests navigate to) is not checked; objects the tests build
from stdlib classes are trusted as the stdlib makes them (a stdlib class whose instances lie would
be believed); the watch on the classes behind accepted values runs after each non-builtin call and each
test, so a class patched by candidate code running inside a builtin call (a ``key=`` function ...) and
restored before the next such check goes unnoticed.  For untrusted code at
scale run the whole evaluation inside a container / gVisor / nsjail / firejail with no network, a
read-only filesystem and a non-root user - this module then adds defence in depth.

Strict-mode false negatives to be aware of: results of other non-builtin classes are refused
(dataclasses, candidate classes, ``random.Random`` returned by the candidate ..., unless the class is
defined by ``setup``); value types are only recognised when their module was loaded before the
candidate ran (the candidate's code names ``fractions``/``Fraction``, ``enum``/``Enum``,
``namedtuple``/``NamedTuple``, or a test imports it); an enum or named-tuple class that defines its own
comparison, conversion, ``__str__``/``__repr__`` (... ) hooks is refused (a named tuple is then
compared as a plain tuple, without attribute access); comparing a non-dyadic Fraction with a
``Decimal``, or ordering containers of such Fractions, is not exact; a candidate function named like a
side-effect-free builtin must agree with that builtin wherever the builtin accepts the arguments
(``def round(x): return int(x)`` is rejected), and one named like any other builtin (``zip``,
``map``, ``print`` ...) is not seen by the tests; ``subprocess``/``threading``/``signal``/sockets are
unavailable, and opening ``pathlib.Path`` objects (not ``str``) is refused.  ``tests/
test_sandbox_canonical.py`` runs every HumanEval / MBPP reference solution: all of them pass.
"""

from __future__ import annotations

import ast
import builtins
import fcntl
import functools
import hmac
import marshal
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["SandboxLimits", "SandboxUnavailable", "Verdict", "build_program", "humaneval_tests",
           "isolation_level", "run_tests", "run_many"]


@dataclass(frozen=True)
class SandboxLimits:
    """Per-program limits.  ``python``/``drop_privileges`` are optional extensions (defaults: the running
    interpreter; drop to ``nobody`` automatically when running as root and that works)."""

    timeout_s: float = 10.0          # wall clock per program
    cpu_s: float = 10.0              # RLIMIT_CPU
    memory_mb: int = 1024            # RLIMIT_AS
    file_size_mb: int = 16           # RLIMIT_FSIZE
    max_procs: int = 0               # extra processes allowed (0 = the program may not fork/spawn)
    max_output_bytes: int = 64_000   # captured stdout/stderr are truncated to this
    python: str | None = None        # interpreter for the child (default: sys.executable)
    drop_privileges: bool | None = None  # None = auto (env CROSSDISTILL_SANDBOX_DROP_PRIVILEGES)
    strict: bool = True              # strict-mode test rewriting (False: plain Python semantics)
    # OS layer (bubblewrap namespaces + seccomp): "auto" (use it when this machine allows, else one
    # loud warning), "required" (refuse to run without it: SandboxUnavailable), "off"; None = env
    # CROSSDISTILL_SANDBOX_ISOLATION (default "auto")
    isolation: str | None = None


@dataclass
class Verdict:
    status: str            # "pass" | "fail" | "timeout" | "error"
    passed: bool           # status == "pass"
    stderr_tail: str       # last ~2000 chars of stderr (or reason)
    stdout_tail: str
    duration_s: float
    n_tests: int = 0
    n_passed: int = 0
    # tests whose verdict rests on checks inside the candidate's process (asserts the parent could
    # not split: a comparison with a value the tests compute at run time ...); 0 = unforgeable
    weak: int = 0
    isolation: str = "none"  # OS layer the program ran under (see SandboxLimits.isolation)


TAIL_CHARS = 2000
# run_many: keep one interpreter per worker started ahead ("pre-started, single use"); None = env
# CROSSDISTILL_SANDBOX_PRESTART (default on).  Each interpreter still runs exactly one program.
PRESTART: bool | None = None
_HARNESS_PATH = Path(__file__).with_name("_sandbox_harness.py")
_BOOTSTRAP = (
    "import marshal,posix\n"
    "def r(n):\n"
    " b=b''\n"
    " while len(b)<n:\n"
    "  c=posix.read(0,n-len(b))\n"
    "  if not c:posix._exit(71)\n"
    "  b+=c\n"
    " return b\n"
    "h=r(13)\n"
    "c=r(int(h[1:]))\n"
    "exec(marshal.loads(c) if h[:1]==b'M' else compile(c,'<sandbox-harness>','exec'),"
    "{'__name__':'__main__','__builtins__':__builtins__})\n"
)
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031 if sys.platform.startswith("linux") else None)
_SENT = {k: f"\x00sbx:{k}\x00" for k in ("call", "cmp", "truth", "chain", "bcall", "obs")}
_OPS = {ast.Eq: 0, ast.NotEq: 1, ast.Lt: 2, ast.LtE: 3, ast.Gt: 4, ast.GtE: 5, ast.Is: 6,
        ast.IsNot: 7, ast.In: 8, ast.NotIn: 9}
# Calls that depend on the caller's frame; their results are not guarded (they return builtin data).
_NO_WRAP = frozenset({"eval", "exec", "locals", "globals", "vars", "dir", "super", "breakpoint"})
# Side-effect-free builtins whose names a candidate function may take over in the tests (MBPP 126
# defines ``sum(a, b)``): calls written with these names go through the harness's ``h_bcall`` (keep in
# sync with PURE in _sandbox_harness.py).
_SHADOWABLE = frozenset({
    "abs", "all", "any", "ascii", "bin", "bool", "bytes", "callable", "chr", "complex", "dict",
    "divmod", "float", "format", "frozenset", "hash", "hex", "int", "isinstance", "issubclass", "len",
    "list", "max", "min", "oct", "ord", "pow", "repr", "round", "set", "sorted", "str", "sum", "tuple",
    "type"})


def _literal(e: ast.expr) -> bool:
    """A constant written in the test: ``10``, ``-2.5``, ``[1, (2, 'a')]``, ``{'k': None}``."""
    if isinstance(e, ast.Constant):
        return True
    if isinstance(e, ast.UnaryOp) and isinstance(e.op, (ast.USub, ast.UAdd)):
        return isinstance(e.operand, ast.Constant)
    if isinstance(e, (ast.List, ast.Tuple, ast.Set)):
        return all(_literal(x) for x in e.elts)
    if isinstance(e, ast.Dict):
        return all(k is not None and _literal(k) for k in e.keys) and all(_literal(v) for v in e.values)
    return False


# ---------------------------------------------------------------------------------------- helpers
def build_program(code: str, tests: list[str], setup: str = "", entry_point: str | None = None,
                  check_fn: str | None = None) -> str:
    """Plain concatenation ``setup + code + tests (+ check_fn(entry_point))`` for logging / running
    elsewhere.  :func:`run_tests` does not use it (it keeps the parts apart to run them strictly)."""
    parts = [setup, code, *tests]
    if check_fn and entry_point:
        parts.append(f"{check_fn}({entry_point})")
    return "\n\n".join(p.strip("\n") for p in parts if p and p.strip()) + "\n"


def humaneval_tests(test_program: str, entry_point: str, check_fn: str = "check") -> list[str]:
    """HumanEval-style tests for :func:`run_tests`: the check program plus a call of it, as ONE test."""
    return [f"{test_program.rstrip()}\n\n{check_fn}({entry_point})\n"]


def _sent(kind: str) -> ast.expr:
    # ``(SENTINEL if True else None)`` compiles to a single LOAD_CONST of the sentinel (no
    # "str is not callable" SyntaxWarning); the child swaps the constant for the helper function.
    return ast.IfExp(test=ast.Constant(True), body=ast.Constant(_SENT[kind]), orelse=ast.Constant(None))


class _StrictTests(ast.NodeTransformer):
    def visit_Call(self, node: ast.Call) -> ast.AST:
        node = self.generic_visit(node)
        if isinstance(node.func, ast.IfExp) and isinstance(node.func.body, ast.Constant) and (
                node.func.body.value == _SENT["obs"]):
            return node  # the harness's own probe call (see _Splitter)
        if isinstance(node.func, ast.Name) and node.func.id in _NO_WRAP:
            return node
        if isinstance(node.func, ast.Name) and node.func.id in _SHADOWABLE:
            # h_bcall(name, literal_args, f, *args): see _shadow_call in the harness
            literal = all(_literal(a) for a in node.args) and all(
                k.arg is not None and _literal(k.value) for k in node.keywords)
            return ast.copy_location(
                ast.Call(func=_sent("bcall"), args=[ast.Constant(node.func.id), ast.Constant(literal),
                                                     node.func, *node.args],
                         keywords=node.keywords), node)
        return ast.copy_location(
            ast.Call(func=_sent("call"), args=[node.func, *node.args], keywords=node.keywords), node)

    def visit_Assert(self, node: ast.Assert) -> ast.AST:
        node = self.generic_visit(node)
        node.test = self._check(node.test)
        return node

    def _check(self, e: ast.expr) -> ast.expr:
        if isinstance(e, ast.Compare):
            codes = [_OPS[type(op)] for op in e.ops]
            if len(codes) == 1:
                new = ast.Call(func=_sent("cmp"),
                               args=[ast.Constant(codes[0]), e.left, e.comparators[0]], keywords=[])
            else:
                thunks = [ast.Lambda(args=ast.arguments(posonlyargs=[], args=[], vararg=None,
                                                        kwonlyargs=[], kw_defaults=[], kwarg=None,
                                                        defaults=[]), body=c)
                          for c in e.comparators]
                new = ast.Call(func=_sent("chain"),
                               args=[ast.Tuple([ast.Constant(c) for c in codes], ast.Load()),
                                     e.left, *thunks], keywords=[])
        elif isinstance(e, ast.UnaryOp) and isinstance(e.op, ast.Not):
            new = ast.UnaryOp(op=ast.Not(), operand=self._check(e.operand))
        elif isinstance(e, ast.BoolOp):
            new = ast.BoolOp(op=e.op, values=[self._check(v) for v in e.values])
        else:
            new = ast.Call(func=_sent("truth"), args=[e], keywords=[])
        return ast.copy_location(new, e)


@functools.lru_cache(maxsize=8192)
def _compile_test(src: str, strict: bool = True) -> bytes:
    """Strict-mode transform + compile of one test; returns the marshalled code object."""
    tree = ast.parse(src, "<test>", "exec")
    if strict:
        tree = _StrictTests().visit(tree)
        ast.fix_missing_locations(tree)
    return marshal.dumps(compile(tree, "<test>", "exec", dont_inherit=True, optimize=0))


@functools.lru_cache(maxsize=8192)
def _transform_test_source(src: str, strict: bool = True) -> str:
    """Strict-mode transform as source, for a child interpreter of another Python version."""
    if not strict:
        return src
    tree = _StrictTests().visit(ast.parse(src, "<test>", "exec"))
    ast.fix_missing_locations(tree)
    return ast.unparse(tree)


# ------------------------------------------------------------------- verdict outside the child
# Each ``assert`` of a test is split in the parent: the child gets only the *probes* (the sub-
# expressions that need the candidate: ``add(1, 2)``), evaluates them and sends back their values as
# plain data; the *skeleton* (``__p(0) == 3``: the comparison and the expected values) never leaves
# the parent, which evaluates it on the decoded values.  A candidate that controls its whole process
# can only forge the values it returns anyway - it cannot learn what they are compared with.
_P_FUNCS: dict[str, Any] = {
    "abs": abs, "round": round, "len": len, "sorted": sorted, "set": set, "frozenset": frozenset,
    "tuple": tuple, "list": list, "sum": sum, "min": min, "max": max, "all": all, "any": any,
    "str": str, "int": int, "float": float, "bool": bool, "dict": dict, "isinstance": isinstance,
    "type": type, "complex": complex, "bytes": bytes, "divmod": divmod}
_P_TYPES = frozenset({"int", "float", "str", "list", "tuple", "dict", "set", "frozenset", "bool",
                      "complex", "bytes", "type"})
_P_MATH = frozenset({"isclose", "fabs", "floor", "ceil", "sqrt", "isnan", "isinf", "isfinite"})
_P_BINOPS = (ast.Add, ast.Sub, ast.Div, ast.FloorDiv, ast.Mod)
# candidate code naming these gets its asserts checked in the child (enum members compare by
# identity, Flag members combine with | ...: not plain data); such tests count as weak
_ENUMISH = frozenset({"enum", "Enum", "IntEnum", "StrEnum", "Flag", "IntFlag", "ReprEnum"})
_OBS_CAP = 2 << 20  # bytes of encoded probe values per run; more makes the run fail


@dataclass(frozen=True)
class _Site:
    skeleton: Any          # code object evaluated in the parent, probes read through ``__p(k)``
    n_probes: int
    strong: bool           # every comparison has a side the child never sees
    required: bool         # not under a loop/branch/try: must be observed at least once
    src: str
    under_try: bool = False  # may legitimately be skipped by an exception the test expects


class _Splitter(ast.NodeTransformer):
    def __init__(self, shadowed: frozenset[str]):
        self.shadowed = shadowed
        self.sites: list[_Site] = []
        self._depth_cond = 0
        self._depth_try = 0

    # statements under which an assert may legitimately not run
    def _cond(self, node: ast.AST) -> ast.AST:
        self._depth_cond += 1
        try:
            return self.generic_visit(node)
        finally:
            self._depth_cond -= 1

    def visit_Try(self, node: ast.AST) -> ast.AST:
        self._depth_try += 1
        try:
            return self._cond(node)
        finally:
            self._depth_try -= 1

    visit_For = visit_AsyncFor = visit_While = visit_If = visit_With = _cond
    visit_AsyncWith = visit_Match = visit_ClassDef = visit_AsyncFunctionDef = _cond
    if hasattr(ast, "TryStar"):
        visit_TryStar = visit_Try

    def visit_Assert(self, node: ast.Assert) -> ast.AST:
        probes: list[ast.expr] = []
        try:
            skel = self._skel(node.test, probes)
        except RecursionError:
            return node
        # strong: every comparison has a side the child never sees, and no probe compares anything
        # itself (``candidate(x) is None`` evaluated in the child would tell what is expected)
        strong = all(any(not self._has_probe(o) for o in [c.left, *c.comparators])
                     for c in ast.walk(skel) if isinstance(c, ast.Compare)) and not any(
            isinstance(n, (ast.Compare, ast.BoolOp)) for p in probes for n in ast.walk(p))
        expr = ast.Expression(body=skel)
        ast.fix_missing_locations(expr)
        code = compile(expr, "<assert>", "eval", dont_inherit=True)
        k = len(self.sites)
        self.sites.append(_Site(code, len(probes), strong, self._depth_cond == 0,
                                ast.unparse(node.test)[:200], self._depth_try > 0))
        noargs = ast.arguments(posonlyargs=[], args=[], vararg=None, kwonlyargs=[], kw_defaults=[],
                               kwarg=None, defaults=[])
        call = ast.Call(func=_sent("obs"), args=[ast.Constant(k), *[ast.Lambda(args=noargs, body=p)
                                                                     for p in probes]], keywords=[])
        return ast.copy_location(ast.Expr(value=call), node)

    @staticmethod
    def _has_probe(e: ast.AST) -> bool:
        return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "__p"
                   for n in ast.walk(e))

    def _probe(self, e: ast.expr, probes: list[ast.expr]) -> ast.expr:
        probes.append(e)
        return ast.Call(func=ast.Name("__p", ast.Load()), args=[ast.Constant(len(probes) - 1)],
                        keywords=[])

    def _skel(self, e: ast.expr, probes: list[ast.expr]) -> ast.expr:
        """The parent-side skeleton of ``e``; sub-expressions it cannot evaluate become probes."""
        mark = len(probes)
        sk = self._skel_or_none(e, probes)
        if sk is None:
            del probes[mark:]
            return self._probe(e, probes)
        return sk

    def _skel_or_none(self, e: ast.expr, probes: list[ast.expr]) -> ast.expr | None:
        S = self._skel
        if isinstance(e, ast.Constant):
            return e
        if isinstance(e, ast.Name):
            return e if e.id in _P_TYPES and e.id not in self.shadowed else None
        if isinstance(e, (ast.Tuple, ast.List, ast.Set)):
            if any(isinstance(x, ast.Starred) for x in e.elts):
                return None
            return type(e)(elts=[S(x, probes) for x in e.elts], **({} if isinstance(e, ast.Set)
                                                                      else {"ctx": ast.Load()}))
        if isinstance(e, ast.Dict):
            if any(k is None for k in e.keys):
                return None
            return ast.Dict(keys=[S(k, probes) for k in e.keys], values=[S(v, probes) for v in e.values])
        if isinstance(e, ast.UnaryOp):
            return ast.UnaryOp(op=e.op, operand=S(e.operand, probes))
        if isinstance(e, ast.BinOp):
            mark = len(probes)
            new = ast.BinOp(left=S(e.left, probes), op=e.op, right=S(e.right, probes))
            if isinstance(e.op, _P_BINOPS) or len(probes) == mark:
                return new  # (* ** << only between trusted constants: no blow-up in the parent)
            return None
        if isinstance(e, ast.Compare):
            if any(isinstance(op, (ast.Is, ast.IsNot)) for op in e.ops):
                return None  # identity: only the child can tell (the whole comparison is a probe)
            return ast.Compare(left=S(e.left, probes), ops=e.ops, comparators=[S(c, probes)
                                                                             for c in e.comparators])
        if isinstance(e, ast.BoolOp):
            return ast.BoolOp(op=e.op, values=[S(v, probes) for v in e.values])
        if isinstance(e, ast.IfExp):
            return ast.IfExp(test=S(e.test, probes), body=S(e.body, probes), orelse=S(e.orelse, probes))
        if isinstance(e, ast.Subscript) and not isinstance(e.slice, ast.Slice):
            return ast.Subscript(value=S(e.value, probes), slice=S(e.slice, probes), ctx=ast.Load())
        if isinstance(e, ast.Call):
            f = e.func
            ok = (isinstance(f, ast.Name) and f.id in _P_FUNCS and f.id not in self.shadowed) or (
                isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "math"
                and f.attr in _P_MATH and "math" not in self.shadowed)
            args = [*e.args, *[k.value for k in e.keywords]]
            if (not ok or any(isinstance(a, (ast.Starred, ast.Lambda)) for a in args)
                    or any(k.arg is None for k in e.keywords)):
                return None
            if isinstance(f, ast.Name) and f.id in ("isinstance", "type") and any(
                    self._has_probe(S(a, [])) for a in e.args[1:]):
                return None  # isinstance(x, CandidateClass): a class is not plain data
            func = f if isinstance(f, ast.Name) else ast.Name("__math_" + f.attr, ast.Load())
            return ast.Call(func=func, args=[S(a, probes) for a in e.args],
                            keywords=[ast.keyword(arg=k.arg, value=S(k.value, probes))
                                      for k in e.keywords])
        return None


@dataclass(frozen=True)
class _Plan:
    blob: bytes | str      # what the child runs (marshalled code / source for another version)
    sites: tuple[_Site, ...]
    strong: bool           # the verdict of this test cannot be forged by the candidate's process


@functools.lru_cache(maxsize=8192)
def _plan_test(src: str, strict: bool, shadowed: frozenset[str], as_source: bool) -> _Plan:
    tree = ast.parse(src, "<test>", "exec")
    sites: tuple[_Site, ...] = ()
    if strict and "\0enum" not in shadowed:
        bound = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)}
        bound |= {n.arg for n in ast.walk(tree) if isinstance(n, ast.arg)}
        bound |= {(n.asname or n.name).partition(".")[0] for n in ast.walk(tree) if isinstance(n, ast.alias)}
        bound |= {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef,
                                                                    ast.AsyncFunctionDef))}
        sp = _Splitter(shadowed | frozenset(bound))  # names the test itself binds are not builtins
        tree = sp.visit(tree)
        sites = tuple(sp.sites)
    if strict:
        tree = _StrictTests().visit(tree)
    ast.fix_missing_locations(tree)
    blob: bytes | str = (ast.unparse(tree) if strict else src) if as_source else marshal.dumps(
        compile(tree, "<test>", "exec", dont_inherit=True, optimize=0))
    # a test whose asserts all sit under try blocks may legitimately report none: its verdict then
    # rests on the child's word that the expected exception happened (weak)
    return _Plan(blob, sites, bool(sites) and all(s.strong for s in sites)
                 and not all(s.under_try for s in sites))


@functools.lru_cache(maxsize=4096)
def _shadowed_names(code: str) -> frozenset[str]:
    """Names the candidate binds at top level that the parent-side skeletons would otherwise take
    for builtins / ``math`` (MBPP 126 defines ``sum``): calls by those names stay probes."""
    try:
        tree = ast.parse(code, "<candidate>", "exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return frozenset()
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).partition(".")[0])
        elif isinstance(node, ast.Global):
            names.update(node.names)
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {
        a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    if isinstance(tree, ast.Module) and (used | names) & _ENUMISH:
        names.add("\0enum")
    return frozenset(n for n in names if n in _P_FUNCS or n in _P_TYPES or n in ("math", "\0enum"))


class _Raised(Exception):
    pass


@dataclass(frozen=True)
class _Member:
    """An enum member seen in the child: equal only to the same member (identity semantics)."""
    qualname: str
    ident: int


def _decode(x: Any, d: int = 0) -> Any:
    """Plain data from the child (``ast.literal_eval`` output) -> the value it stands for."""
    if d > 400:
        raise ValueError("nested too deeply")
    if x is None or type(x) in (bool, int, str):
        return x
    if type(x) is not list or not x or type(x[0]) is not str:
        raise ValueError("garbled value")
    tag, rest = x[0], x[1:]
    if tag == "F":
        return float.fromhex(rest[0])
    if tag == "I":
        return int(rest[0], 16)
    if tag == "C":
        return complex(float.fromhex(rest[0]), float.fromhex(rest[1]))
    if tag == "B":
        return bytes.fromhex(rest[0])
    if tag == "L":
        return [_decode(v, d + 1) for v in rest]
    if tag == "T":
        return tuple(_decode(v, d + 1) for v in rest)
    if tag == "S":
        return {_decode(v, d + 1) for v in rest}
    if tag == "Z":
        return frozenset(_decode(v, d + 1) for v in rest)
    if tag == "D":
        return {_decode(k, d + 1): _decode(v, d + 1) for k, v in rest}
    if tag == "Q":
        from fractions import Fraction
        return Fraction(int(rest[0], 16), int(rest[1], 16))
    if tag == "M":
        from decimal import Decimal
        return Decimal(rest[0])
    if tag == "R":
        r = range(rest[0], rest[1], rest[2])
        if len(r) > 10**6:
            raise ValueError("range too long")
        return r
    if tag == "G":
        return iter([_decode(v, d + 1) for v in rest])
    if tag == "N":
        return _Member(rest[0], rest[1])
    if tag == "Y":
        import datetime
        if rest[0] == "timedelta":
            return datetime.timedelta(days=rest[1], seconds=rest[2], microseconds=rest[3])
        if rest[0] in ("date", "datetime", "time"):
            return getattr(datetime, rest[0]).fromisoformat(rest[1])
        raise ValueError("garbled value")
    if tag in ("E", "X"):
        return _Raised(f"{rest[0]}" if tag == "E" else f"value of type {rest[0]} cannot be checked "
                       "outside the sandbox")
    raise ValueError("garbled value")


def _eval_site(site: _Site, values: list[Any]) -> bool:
    """Evaluate one assert's skeleton in the parent on decoded probe values (exact builtins only)."""
    import math

    def p(k: int) -> Any:
        v = values[k]
        if isinstance(v, _Raised):
            raise v
        return v

    ns = {"__builtins__": {}, "__p": p, **_P_FUNCS,
          **{"__math_" + n: getattr(math, n) for n in _P_MATH}}
    return bool(eval(site.skeleton, ns))  # noqa: S307 - skeleton: trusted test code, builtin values only


def _parent_verdict(plans: list[_Plan], payload: bytes) -> tuple[list[bool], str]:
    """Per-test results decided in the parent from the child's observations, and the first reason."""
    try:
        flags, obs = ast.literal_eval(payload.decode("ascii"))
        if type(flags) is not list or len(flags) != len(plans) or type(obs) is not list:
            raise ValueError("shape")
    except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError, UnicodeDecodeError):
        return [False] * len(plans), "garbled observations from the child"
    ok = [f is True for f in flags]
    seen: set[tuple[int, int]] = set()
    reason = ""
    for item in obs:
        try:
            i, k, vals = item
            site = plans[i].sites[k]
            if len(vals) != site.n_probes:
                raise ValueError("probe count")
            decoded = [_decode(v) for v in vals]
        except (ValueError, TypeError, IndexError, OverflowError, RecursionError, ArithmeticError):
            return [False] * len(plans), "garbled observations from the child"
        seen.add((i, k))
        if not ok[i]:
            continue
        try:
            good = _eval_site(site, decoded)
            why = "is False"
        except Exception as e:  # noqa: BLE001 - any error evaluating the assert fails the test
            good, why = False, f"raised {type(e).__name__}: {str(e)[:200]}"
        if not good:
            ok[i] = False
            if not reason:
                shown = ", ".join(repr(v)[:120] for v in decoded)
                reason = f"test {i} failed (checked by the parent): assert {site.src} {why} [values: {shown}]"
    for i, plan in enumerate(plans):
        if ok[i] and plan.sites and not all(s.under_try for s in plan.sites) and not any(
                (i, k) in seen for k in range(len(plan.sites))):
            ok[i] = False  # every assert under a loop / branch, none reported: nothing was checked
            reason = reason or f"test {i}: no assert was reached"
        for k, site in enumerate(plan.sites):
            if ok[i] and site.required and (i, k) not in seen:
                ok[i] = False
                reason = reason or f"test {i}: assert {site.src} was never reached"
    return ok, reason


@functools.lru_cache(maxsize=8192)
def _source_imports(src: str) -> tuple[str, ...]:
    """Top-level names of the modules that ``src`` (a test or setup: trusted) imports.  The child
    imports those it considers plain stdlib before the candidate runs (see ``PREIMPORT_OK`` in the
    harness), so that their namespaces are restored before the tests and strict mode knows their
    classes (``random.Random(42)`` built by a test, ``Fraction`` ...) are genuine."""
    try:
        tree = ast.parse(src, "<test>", "exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return ()
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.partition(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.partition(".")[0])
    return tuple(sorted(names))


_BUILTIN_NAMES = frozenset(dir(builtins)) | {"__name__", "__file__", "__doc__", "__builtins__"}


@functools.lru_cache(maxsize=1024)
def _setup_runs_after(setup: str) -> bool:
    """True when ``setup`` uses names it does not bind itself (e.g. MBPP 367: ``root = Node(1)`` with
    ``Node`` defined by the solution): it then runs in the candidate's namespace *after* the
    candidate.  Self-contained setup (``import math``, helper classes) runs before the candidate."""
    if not setup.strip():
        return False
    try:
        tree = ast.parse(setup, "<setup>", "exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False  # the child reports the error
    used: set[str] = set()
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (used if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).partition(".")[0])
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            bound.update(node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            bound.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            bound.add(node.rest)
    return bool(used - bound - _BUILTIN_NAMES)


@functools.lru_cache(maxsize=8)
def _harness_payload(python: str) -> bytes:
    src = _HARNESS_PATH.read_text(encoding="utf-8")
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        blob, tag = marshal.dumps(compile(src, "<sandbox-harness>", "exec", dont_inherit=True,
                                          optimize=0)), b"M"
    else:  # another interpreter: send source, it compiles itself (marshal format is version-bound)
        blob, tag = src.encode("utf-8"), b"S"
    return tag + b"%012d" % len(blob) + blob


@functools.lru_cache(maxsize=8)
def _interp_version(python: str) -> tuple[int, int]:
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        return sys.version_info[:2]
    try:
        out = subprocess.run([python, "-S", "-c", "import sys;print(*sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=60, env=_base_env("/"))
        major, minor = out.stdout.split()
        return int(major), int(minor)
    except (OSError, subprocess.SubprocessError, ValueError):
        return (0, 0)


def _interp_flags(python: str) -> tuple[str, ...]:
    return ("-S", "-s", "-B", "-P") if _interp_version(python) >= (3, 11) else ("-S", "-s", "-B")


def _base_env(tmp: str) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONHASHSEED": "0",
            "HOME": tmp, "TMPDIR": tmp, "PYTHONDONTWRITEBYTECODE": "1"}


def _nobody_ids() -> tuple[int, int]:
    try:
        import pwd
        pw = pwd.getpwnam("nobody")
        return pw.pw_uid, pw.pw_gid
    except (KeyError, ImportError):
        return 65534, 65534


@functools.lru_cache(maxsize=8)
def _drop_works(python: str) -> bool:
    """Can ``python`` run and import its stdlib as ``nobody``?  (e.g. not when it lives under /root)."""
    uid, gid = _nobody_ids()
    try:
        r = subprocess.run([python, "-S", "-s", "-B", "-c", "import math, json, collections, re"],
                           user=uid, group=gid, extra_groups=[], env=_base_env("/"), cwd="/",
                           capture_output=True, timeout=60)
        return r.returncode == 0
    except (OSError, subprocess.SubprocessError, ValueError):
        return False


def _drop_ids(python: str, limits: SandboxLimits) -> tuple[int, int] | None:
    if os.geteuid() != 0:
        return None
    want = limits.drop_privileges
    if want is None:
        env = os.environ.get("CROSSDISTILL_SANDBOX_DROP_PRIVILEGES", "auto").strip().lower()
        want = {"0": False, "false": False, "no": False, "1": True, "true": True, "yes": True}.get(env)
    if want is False:
        return None
    if want is None and not _drop_works(python):
        return None
    return _nobody_ids()


def _count_procs_of(uid: int) -> int:
    n = 0
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.stat(f"/proc/{d}").st_uid == uid:
                    n += len(os.listdir(f"/proc/{d}/task"))
            except OSError:
                pass
    return n


class _Tail:
    """Keeps the last ``cap`` bytes of a stream and counts the rest."""

    def __init__(self, cap: int):
        self.cap = max(0, int(cap))
        self.buf = bytearray()
        self.total = 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        if self.cap == 0:
            return
        self.buf += data
        if len(self.buf) > 2 * self.cap + 65536:
            del self.buf[:-self.cap]

    def text(self, chars: int = TAIL_CHARS) -> str:
        kept = bytes(self.buf[-self.cap:]) if self.cap else b""
        s = kept.decode("utf-8", "replace")[-chars:]
        dropped = self.total - len(kept)
        if dropped > 0 and len(s) < chars:
            s = f"[... {dropped} bytes discarded ...]\n" + s
        elif dropped > 0:
            s = f"[... {self.total - len(s.encode('utf-8'))} bytes discarded ...]\n" + s
        return s


_FS_IOC_GETFLAGS, _FS_IOC_SETFLAGS = 0x80086601, 0x40086602  # Linux (x86-64 / arm64 values)
_IMMUTABLE_FLAGS = 0x10 | 0x20  # FS_IMMUTABLE_FL | FS_APPEND_FL


def _unprotect(name: str, dir_fd: int | None) -> None:
    """Best effort: make ``name`` deletable (chmod, and clear the immutable / append-only flags)."""
    import array
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError:
        return
    try:
        try:
            os.fchmod(fd, 0o700)
        except OSError:
            pass
        flags = array.array("l", [0])
        try:
            fcntl.ioctl(fd, _FS_IOC_GETFLAGS, flags, True)
            if flags[0] & _IMMUTABLE_FLAGS:
                flags[0] &= ~_IMMUTABLE_FLAGS
                fcntl.ioctl(fd, _FS_IOC_SETFLAGS, flags)
        except OSError:
            pass
    finally:
        os.close(fd)


def _rmtree(path: str) -> bool:
    """Delete ``path`` iteratively (any depth, any number of entries), through directory fds (no
    path-length limit), unprotecting what refuses; never raises.  Returns whether it is gone."""
    try:
        _rmtree_fd(path)
    except Exception:  # noqa: BLE001 - cleanup must never sink the caller
        pass
    return not os.path.lexists(path)


def _rmtree_fd(path: str) -> None:
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    parent, name = os.path.split(os.path.abspath(path))
    try:
        pfd = os.open(parent, flags)
    except OSError:
        return
    stack: list[tuple[int, str]] = [(pfd, name)]  # (fd of the parent directory, entry to delete)
    opened: list[int] = [pfd]
    try:
        while stack:
            dfd, entry = stack[-1]
            try:
                st = os.stat(entry, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                stack.pop()
                continue
            if not (st.st_mode & 0o170000 == 0o040000):
                for attempt in (0, 1):
                    try:
                        os.unlink(entry, dir_fd=dfd)
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        if attempt:
                            raise
                        _unprotect(entry, dfd)
                        _unprotect(".", dfd)
                stack.pop()
                continue
            try:
                os.rmdir(entry, dir_fd=dfd)
                stack.pop()
                continue
            except FileNotFoundError:
                stack.pop()
                continue
            except OSError:
                pass
            _unprotect(entry, dfd)
            try:
                cfd = os.open(entry, flags, dir_fd=dfd)
            except OSError:
                _unprotect(".", dfd)
                cfd = os.open(entry, flags, dir_fd=dfd)
            opened.append(cfd)
            names = os.listdir(cfd)
            if not names:  # empty but rmdir refused: the directory itself is protected
                _unprotect(".", cfd)
                _unprotect(".", dfd)
                os.rmdir(entry, dir_fd=dfd)
                stack.pop()
                continue
            stack.extend((cfd, n) for n in names)
            if len(opened) > 200:  # very deep: move this subtree up to the top, restart from there
                os.rename(entry, f".cdsbx-up-{len(stack)}-{time.monotonic_ns()}", src_dir_fd=dfd,
                          dst_dir_fd=opened[1])
                for fd in opened[1:]:
                    os.close(fd)
                opened[1:] = []
                stack = [(pfd, name)]
    finally:
        for fd in opened:
            try:
                os.close(fd)
            except OSError:
                pass


def _parse_token(res: bytes, nonce: str) -> tuple[str, int, int, str, bytes] | None | bool:
    """Token of the last line of the result channel; ``None`` if absent, ``False`` if forged/garbled."""
    body = res.rstrip(b"\n")
    if not body:
        return None
    last = body.rsplit(b"\n", 1)[-1]
    parts = last.split(b" ")
    if len(parts) != 7 or parts[0] != b"SBX1":
        return False if b"SBX1" in last else None
    try:
        if not hmac.compare_digest(parts[1].decode("ascii"), nonce):
            return False
        status = parts[2].decode("ascii")
        if status not in ("pass", "fail", "error"):
            return False
        return status, int(parts[3]), int(parts[4]), bytes.fromhex(parts[5].decode("ascii")).decode(
            "utf-8", "replace"), bytes.fromhex(parts[6].decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        return False


# ---------------------------------------------------------------------------------- OS isolation
class SandboxUnavailable(RuntimeError):
    """``isolation: required`` and this machine cannot give the OS layer."""


ISOLATION_MODES = ("auto", "required", "off")
_WORK_TMPFS_BYTES = 64 << 20   # the work dir inside the namespace: a tmpfs of this size
_SECCOMP_X86_64 = {  # syscalls the child may never make (x86-64 numbers); ioctl answers ENOTTY
    "always": (101, 310, 311, 434, 424, 438, 141, 203, 144, 142, 314, 319, 447, 227, 305, 164, 159,
               165, 166, 155, 161, 272, 308, 250, 248, 249, 321, 298, 323, 425, 426, 427, 135, 169,
               167, 168, 175, 313, 176, 246, 320, 163, 179, 133, 259, 112, 109, 105, 106, 113, 114,
               117, 119, 116, 122, 123, 157, 300, 303, 304, 103, 153, 172, 173, 154, 41, 53, 42, 49,
               50, 43, 288, 322),
    # fork, vfork, clone, clone3 (threads too): only with max_procs == 0
    "procs": (57, 58, 56, 435),
}
_ISO_WARNED: set[str] = set()


def _seccomp_filter(max_procs: int) -> bytes | None:
    """A classic-BPF seccomp program (``struct sock_filter[]``) for bubblewrap's ``--seccomp``: other
    architectures than x86-64 are killed, the listed syscalls fail with EPERM (ioctl: ENOTTY).
    ``execve`` stays allowed (bubblewrap needs it to start the interpreter; the in-process layer
    refuses exec, and without fork an exec can only replace the sandboxed process itself)."""
    import platform
    import struct
    if platform.machine() not in ("x86_64", "AMD64"):
        return None
    deny = list(_SECCOMP_X86_64["always"]) + (list(_SECCOMP_X86_64["procs"]) if max_procs <= 0 else [])
    LD, JEQ, JGE, RET = 0x20, 0x15, 0x35, 0x06
    ALLOW, KILL = 0x7FFF0000, 0x80000000
    EPERM, ENOTTY = 0x00050000 | 1, 0x00050000 | 25
    prog = [(LD, 0, 0, 4), (JEQ, 1, 0, 0xC000003E), (RET, 0, 0, KILL), (LD, 0, 0, 0),
            (JGE, 0, 1, 0x40000000), (RET, 0, 0, KILL), (JEQ, 0, 1, 16), (RET, 0, 0, ENOTTY)]
    for nr in deny:
        prog += [(JEQ, 0, 1, nr), (RET, 0, 0, EPERM)]
    prog.append((RET, 0, 0, ALLOW))
    return b"".join(struct.pack("=HBBI", *ins) for ins in prog)


def _isolation_mode(limits: SandboxLimits) -> str:
    mode = (limits.isolation or os.environ.get("CROSSDISTILL_SANDBOX_ISOLATION", "auto")).strip().lower()
    if mode not in ISOLATION_MODES:
        raise ValueError(f"sandbox isolation must be one of {ISOLATION_MODES}, not {mode!r}")
    return mode


def _bwrap_argv(python: str, tmp: str, seccomp_fd: int | None) -> list[str]:
    real = os.path.realpath(python)
    prefix = os.path.dirname(os.path.dirname(real))
    argv = ["bwrap", "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--uid", "65534", "--gid", "65534", "--hostname", "sandbox",
            "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
            "--symlink", "usr/bin", "/bin", "--symlink", "usr/sbin", "/sbin",
            "--ro-bind-try", "/etc/localtime", "/etc/localtime", "--proc", "/proc", "--dev", "/dev"]
    if not (prefix == "/usr" or prefix.startswith("/usr/")):
        argv += ["--ro-bind", prefix, prefix]
    # the only writable place is the size-limited work dir: bubblewrap's own root tmpfs (where it made
    # the mount points, /tmp included) is remounted read-only
    argv += ["--size", str(_WORK_TMPFS_BYTES), "--perms", "1777", "--tmpfs", tmp, "--remount-ro", "/",
             "--chdir", tmp]
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    return argv + ["--", real]


@functools.lru_cache(maxsize=8)
def _isolation_probe(python: str, max_procs: int) -> tuple[str, str]:
    """(level, why not more): what this machine gives, tried once: ``bwrap+seccomp``, ``bwrap`` or
    ``none``."""
    if not shutil.which("bwrap"):
        return "none", "bubblewrap (bwrap) is not installed"
    bpf = _seccomp_filter(max_procs)
    tmp = os.path.realpath(tempfile.mkdtemp(prefix="cdsbx-probe-"))
    try:
        for level, filt in (("bwrap+seccomp", bpf), ("bwrap", None)):
            if level == "bwrap+seccomp" and filt is None:
                continue
            r_fd = -1
            try:
                if filt is not None:
                    r_fd, w_fd = os.pipe()
                    os.write(w_fd, filt)
                    os.close(w_fd)
                r = subprocess.run([*_bwrap_argv(python, tmp, r_fd if filt else None), "-S", "-c",
                                    "import os,math,json;open('x','w').write('1');print(os.getuid())"],
                                   pass_fds=(r_fd,) if filt else (), capture_output=True, timeout=60,
                                   env=_base_env(tmp), cwd=tmp)
                if r.returncode == 0 and r.stdout.strip() == b"65534":
                    return level, "" if level == "bwrap+seccomp" else "seccomp filter: x86-64 only"
                why = (r.stderr or r.stdout).decode("utf-8", "replace").strip()[-300:]
            except (OSError, subprocess.SubprocessError) as e:
                why = repr(e)
            finally:
                if r_fd >= 0:
                    os.close(r_fd)
        return "none", f"bubblewrap does not start here: {why}"
    finally:
        _rmtree(tmp)


def isolation_level(limits: SandboxLimits | None = None) -> str:
    """What a run with ``limits`` gets on this machine: ``bwrap+seccomp``, ``bwrap`` or ``none``
    (raises :class:`SandboxUnavailable` when ``required`` cannot be met)."""
    limits = limits or SandboxLimits()
    return _isolation(limits, limits.python or sys.executable)


def _isolation(limits: SandboxLimits, python: str) -> str:
    """The isolation level for this run (raises :class:`SandboxUnavailable` under ``required``)."""
    mode = _isolation_mode(limits)
    if mode == "off":
        return "none"
    level, why = _isolation_probe(os.path.realpath(python), 1 if limits.max_procs > 0 else 0)
    if level == "none":
        if mode == "required":
            raise SandboxUnavailable(f"sandbox isolation is required but unavailable: {why}")
        if why not in _ISO_WARNED:
            _ISO_WARNED.add(why)
            print(f"[sandbox] WARNING: no OS isolation ({why}); generated code runs under the "
                  "in-process layer only (set sandbox.isolation: required to refuse this)",
                  file=sys.stderr, flush=True)
    return level


# ---------------------------------------------------------------------------------------- running
def _error(reason: str, n_tests: int, t0: float) -> Verdict:
    return Verdict("error", False, reason, "", time.monotonic() - t0, n_tests, 0)


class _Slot:
    """A started interpreter (harness loaded, blocked reading its job) with its private temp dir."""

    __slots__ = ("proc", "tmp", "r_fd", "w_fd", "res_no", "python", "ids", "nproc", "limits_key", "level")

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.tmp = ""
        self.r_fd = self.w_fd = -1

    def close(self) -> None:
        proc = self.proc
        if proc is not None:
            _reap(proc)
            for f in (proc.stdin, proc.stdout, proc.stderr):
                try:
                    f.close()
                except (OSError, ValueError):
                    pass
            self.proc = None
        for fd in (self.r_fd, self.w_fd):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.r_fd = self.w_fd = -1
        if self.tmp:
            _rmtree(self.tmp)
            self.tmp = ""


def _prepare(limits: SandboxLimits) -> _Slot:
    """Start an interpreter and stream the harness into it; it then waits for its job on stdin."""
    python = limits.python or sys.executable
    slot = _Slot()
    slot.python = python
    level = _isolation(limits, python)
    iso = level != "none"
    slot.ids = ids = None if iso else _drop_ids(python, limits)
    slot.nproc = None
    if iso:  # its own user namespace: the count is of this sandbox's processes only
        slot.nproc = 0 if limits.max_procs <= 0 else limits.max_procs + 2
    elif ids is not None or os.geteuid() != 0:
        uid = ids[0] if ids else os.getuid()
        slot.nproc = 0 if limits.max_procs <= 0 else _count_procs_of(uid) + limits.max_procs + 1
    elif os.geteuid() == 0:  # a recorded downgrade, never a silent one
        level = "none (root: privileges not dropped)"
    slot.level = level
    slot.limits_key = (python, ids, slot.nproc)
    sec_fd = -1
    try:
        slot.tmp = os.path.realpath(tempfile.mkdtemp(prefix="cdsbx-"))
        if ids:
            os.chown(slot.tmp, ids[0], ids[1])
        slot.r_fd, slot.w_fd = os.pipe()
        slot.res_no = slot.w_fd  # pass_fds keeps the number in the child
        argv = [python]
        fds = [slot.w_fd]
        if iso:
            filt = _seccomp_filter(limits.max_procs) if level == "bwrap+seccomp" else None
            if filt is not None:  # bubblewrap reads the BPF program from this pipe
                sec_fd, w = os.pipe()
                os.write(w, filt)
                os.close(w)
                fds.append(sec_fd)
            argv = _bwrap_argv(python, slot.tmp, sec_fd if filt is not None else None)
        slot.proc = subprocess.Popen([*argv, *_interp_flags(python), "-c", _BOOTSTRAP],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, pass_fds=tuple(fds), cwd=slot.tmp,
                                     env=_base_env(slot.tmp), start_new_session=True, close_fds=True)
        os.close(slot.w_fd)
        slot.w_fd = -1
        if sec_fd >= 0:
            os.close(sec_fd)
            sec_fd = -1
        payload = _harness_payload(python)
        if len(payload) > 65536 and _F_SETPIPE_SZ is not None:
            try:  # grow the pipe (Linux) so that the harness fits and the write below cannot block
                fcntl.fcntl(slot.proc.stdin.fileno(), _F_SETPIPE_SZ, 1 << 18)
            except OSError:
                pass
        try:  # the harness fits into the empty pipe: this does not block (else: until the child reads)
            slot.proc.stdin.write(payload)
            slot.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass
    except BaseException:
        if sec_fd >= 0:
            os.close(sec_fd)
        slot.close()
        raise
    return slot


def _dispatch(slot: _Slot, code: str, tests: list[str], setup: str, limits: SandboxLimits) -> Verdict:
    """Send one job to a prepared interpreter and supervise it; always consumes the slot."""
    t0 = time.monotonic()
    try:
        tests = list(tests)
        same_version = _interp_version(slot.python) == sys.version_info[:2]
        shadowed = _shadowed_names(code) if limits.strict else frozenset()
        try:  # marshalled code is version-bound: another interpreter gets the transformed source
            plans = [_plan_test(t, limits.strict, shadowed, not same_version) for t in tests]
        except (SyntaxError, ValueError, RecursionError) as e:
            return _error(f"[sandbox] a test does not compile: {e!r}", len(tests), t0)
        setup = setup or ""
        preimport = sorted({m for t in (*tests, setup) for m in _source_imports(t)})
        nonce = secrets.token_hex(16)
        job = {"nonce": nonce, "res_fd": slot.res_no, "preimport": preimport,
               "setup_after": _setup_runs_after(setup),
               "tmp": slot.tmp, "code": code, "setup": setup, "tests": [p.blob for p in plans],
               # the source of a strong test holds its expected values: the child never sees it
               "test_srcs": [("" if p.strong else t[:300]) for t, p in zip(tests, plans)], "cpu_s": float(limits.cpu_s),
               "mem_mb": int(limits.memory_mb), "fsize_mb": int(limits.file_size_mb),
               "max_procs": int(limits.max_procs), "nproc": slot.nproc,
               "uid": slot.ids[0] if slot.ids else None, "gid": slot.ids[1] if slot.ids else None}
        jobb = marshal.dumps(job)
        verdict = _supervise(slot.proc, b"%012d" % len(jobb) + jobb, slot.r_fd, nonce, limits,
                             len(tests), t0, plans, slot.level.startswith("bwrap"))
        if limits.max_procs > 0:
            _kill_escaped(slot.tmp)
        verdict.isolation = slot.level
        return verdict
    finally:
        slot.close()


def run_tests(code: str, tests: list[str], setup: str = "", limits: SandboxLimits | None = None) -> Verdict:
    """Run ``setup`` + ``code`` and then each test in a fresh sandboxed interpreter.

    ``tests``: MBPP-style statements (``"assert f(1) == 2"``; one list element = one test) or, for
    HumanEval, ONE element holding the check program followed by ``check(entry_point)`` (see
    :func:`humaneval_tests`).  ``setup`` is trusted code (e.g. MBPP ``test_setup_code``) run in the
    candidate's namespace: before the candidate when it is self-contained, after it when it uses names
    it does not define (the solution's classes)."""
    limits = limits or SandboxLimits()
    t0 = time.monotonic()
    _isolation(limits, limits.python or sys.executable)  # SandboxUnavailable: before anything runs
    try:
        slot = _prepare(limits)
    except OSError as e:
        return _error(f"[sandbox] could not start the interpreter: {e!r}", len(list(tests)), t0)
    return _dispatch(slot, code, tests, setup, limits)


def _kill_escaped(tmp: str) -> None:
    """With ``max_procs > 0`` a child may have left the process group (an exec'd ``setsid``): kill
    every process whose cwd is in, or whose environment names, this run's private directory."""
    marker = f"TMPDIR={tmp}\0".encode()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{d}/cwd")
        except OSError:
            cwd = ""
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                env = f.read()
        except OSError:
            env = b""
        if cwd == tmp or cwd.startswith(tmp + "/") or marker in env:
            try:
                os.kill(int(d), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _reap(proc: subprocess.Popen) -> None:
    if proc.returncode is None:
        _kill_group(proc.pid)
        try:
            proc.wait()
        except ChildProcessError:
            proc.returncode = -signal.SIGKILL


def _supervise(proc: subprocess.Popen, payload: bytes, r_fd: int, nonce: str, limits: SandboxLimits,
               n_tests: int, t0: float, plans: list[_Plan] | None = None, isolated: bool = False) -> Verdict:
    deadline = t0 + float(limits.timeout_s)
    in_fd, out_fd, err_fd = proc.stdin.fileno(), proc.stdout.fileno(), proc.stderr.fileno()
    for fd in (in_fd, out_fd, err_fd, r_fd):
        os.set_blocking(fd, False)
    out, err = _Tail(limits.max_output_bytes), _Tail(limits.max_output_bytes)
    res = _Tail(4 * _OBS_CAP + (1 << 16))
    sinks = {out_fd: out, err_fd: err, r_fd: res}
    poller = select.poll()
    poller.register(in_fd, select.POLLOUT)
    for fd in sinks:
        poller.register(fd, select.POLLIN)
    pending = memoryview(payload)
    open_fds = set(sinks) | {in_fd}
    timed_out = closed_early = False
    while open_fds:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        for fd, ev in poller.poll(max(1, int(left * 1000))):
            if fd == in_fd:
                try:
                    n = os.write(in_fd, pending[:65536])
                    pending = pending[n:]
                    done = not pending
                except (BrokenPipeError, OSError):
                    done = True
                if done:
                    poller.unregister(in_fd)
                    open_fds.discard(in_fd)
                    proc.stdin.close()
                continue
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data:
                sinks[fd].add(data)
            else:
                poller.unregister(fd)
                open_fds.discard(fd)
        if r_fd not in open_fds and not isinstance(_parse_token(bytes(res.buf), nonce), tuple):
            closed_early = True  # result channel closed without a valid token: cannot pass any more
            break
    # Wait (bounded) for the leader to exit without reaping it, so its pgid cannot be recycled yet.
    # (bubblewrap: also after an early close, so that its exit status tells a signal death)
    if not timed_out and (not closed_early or isolated):
        delay = 0.0005
        until = min(deadline, time.monotonic() + 0.5) if closed_early else deadline
        while True:
            try:
                if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                    break
            except ChildProcessError:
                break
            if time.monotonic() >= until:
                timed_out = not closed_early
                break
            time.sleep(delay)
            delay = min(delay * 2, 0.02)
    _kill_group(proc.pid)
    try:
        _, status, ru = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        cpu = ru.ru_utime + ru.ru_stime
    except ChildProcessError:
        proc.returncode, cpu = -signal.SIGKILL, 0.0
    if isolated and proc.returncode is not None and 128 < proc.returncode < 128 + 65:
        proc.returncode = 128 - proc.returncode  # bubblewrap reports a signal death as 128 + n
    for fd in (out_fd, err_fd, r_fd):  # drain what is left (the group is dead now)
        if fd in open_fds:
            try:
                while len(data := os.read(fd, 65536)) > 0:
                    sinks[fd].add(data)
            except OSError:
                pass
    duration = time.monotonic() - t0
    token = _parse_token(bytes(res.buf), nonce)
    rc = proc.returncode
    if isinstance(token, tuple):
        status, nt, npass, reason, obs = token
        if status == "pass" and (nt != n_tests or npass != n_tests):
            status, reason = "fail", f"inconsistent report ({npass}/{nt} of {n_tests})"
        if status == "pass" and plans is not None:  # the parent decides what the asserts say
            ok, why = _parent_verdict(plans, obs)
            npass = sum(ok)
            if not all(ok):
                status, reason = "fail", why
    elif token is False:
        status, nt, npass, reason = "fail", n_tests, 0, "forged or garbled result token"
    elif timed_out:
        status, nt, npass, reason = "timeout", n_tests, 0, f"wall-clock limit of {limits.timeout_s}s"
    elif rc == -signal.SIGXCPU or (rc == -signal.SIGKILL and cpu >= limits.cpu_s - 0.05):
        status, nt, npass, reason = "timeout", n_tests, 0, f"CPU limit of {limits.cpu_s}s"
    elif closed_early and rc in (0, None):
        status, nt, npass, reason = "fail", n_tests, 0, "result channel closed before the report"
    elif rc is not None and rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = str(-rc)
        status, nt, npass, reason = "error", n_tests, 0, f"killed by signal {name}"
    elif rc == 0:
        status, nt, npass, reason = "fail", n_tests, 0, "exited before reporting results"
    else:
        status, nt, npass, reason = "error", n_tests, 0, f"exited with status {rc} without a report"
    stderr_tail = err.text()
    if reason:
        stderr_tail = (stderr_tail + ("\n" if stderr_tail else "") + "[sandbox] " + status + ": "
                       + reason)[-TAIL_CHARS:]
    weak = n_tests if plans is None else sum(not p.strong for p in plans)
    return Verdict(status, status == "pass", stderr_tail, out.text(), duration, nt, npass, weak)


def run_many(jobs: list[dict], limits: SandboxLimits | None = None, workers: int | None = None,
             progress: str | None = None) -> list[Verdict]:
    """Run many jobs (dicts with ``code``, ``tests`` and optional ``setup``) in parallel, one sandboxed
    interpreter per job; returns verdicts in input order.  ``workers`` defaults to ``os.cpu_count()``;
    ``progress``: show a tqdm bar with that description."""
    jobs = list(jobs)
    if not jobs:
        return []
    _isolation(limits or SandboxLimits(), (limits or SandboxLimits()).python or sys.executable)
    workers = max(1, int(workers or os.cpu_count() or 1))
    results: list[Verdict | None] = [None] * len(jobs)
    # compile the tests once up front (cached), so worker threads only spawn and supervise
    for j in jobs:
        for t in j.get("tests", []):
            try:
                _compile_test(t, (limits or SandboxLimits()).strict)
            except (SyntaxError, ValueError, RecursionError):
                pass
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(jobs), desc=progress, dynamic_ncols=True)
    lock = threading.Lock()
    next_index = iter(range(len(jobs)))
    prestart = PRESTART if PRESTART is not None else (
        os.environ.get("CROSSDISTILL_SANDBOX_PRESTART", "1").strip().lower() not in ("0", "false", "no"))
    lim = limits or SandboxLimits()

    def take() -> int | None:
        with lock:
            return next(next_index, None)

    def worker() -> None:
        ready: _Slot | None = None
        try:
            while (i := take()) is not None:
                j = jobs[i]
                try:
                    if prestart:
                        slot = ready if ready is not None else _prepare(lim)
                        ready = None
                        if len(jobs) - i > 1:  # start the next interpreter while this job runs
                            try:
                                ready = _prepare(lim)
                            except OSError:
                                ready = None
                        v = _dispatch(slot, j["code"], j.get("tests", []), j.get("setup", "") or "", lim)
                    else:
                        v = run_tests(j["code"], j.get("tests", []), j.get("setup", "") or "", lim)
                except Exception as e:  # noqa: BLE001 - one bad job must not sink the batch
                    v = Verdict("error", False, f"[sandbox] internal error: {e!r}", "", 0.0,
                                len(j.get("tests", [])), 0)
                results[i] = v
                if bar is not None:
                    with lock:
                        bar.update(1)
        finally:
            if ready is not None:
                ready.close()

    try:
        with ThreadPoolExecutor(max_workers=min(workers, len(jobs)), thread_name_prefix="sandbox") as ex:
            for f in [ex.submit(worker) for _ in range(min(workers, len(jobs)))]:
                f.result()
    finally:
        if bar is not None:
            bar.close()
    # An "error" the program may not have caused (killed by a signal, gone without a report, a sandbox fault) runs
    # once more, alone and in a fresh interpreter, and the second verdict stands: a program that does it itself
    # does it again, a machine under load (a fork or memory limit hit by the neighbours) does not get to change a
    # verdict, and so what distill writes.
    for i, v in enumerate(results):
        if v is not None and v.status == "error" and any(m in v.stderr_tail for m in _TRANSIENT_ERRORS):
            j = jobs[i]
            try:
                results[i] = run_tests(j["code"], j.get("tests", []), j.get("setup", "") or "", lim)
            except Exception as e:  # noqa: BLE001
                results[i] = Verdict("error", False, f"[sandbox] internal error: {e!r}", "", 0.0,
                                     len(j.get("tests", [])), 0)
    return [r for r in results]  # type: ignore[misc]


# run_many's verdicts that may come from the machine rather than the program (rerun once)
_TRANSIENT_ERRORS = ("[sandbox] error: killed by signal", "without a report", "[sandbox] internal error")


def _selftest() -> dict[str, Any]:  # pragma: no cover - handy from the shell
    ok = run_tests("def add(a, b):\n    return a + b\n", ["assert add(1, 2) == 3"])
    bad = run_tests("def add(a, b):\n    return a - b\n", ["assert add(1, 2) == 3"])
    return {"pass": ok.status, "fail": bad.status}


if __name__ == "__main__":  # pragma: no cover
    print(_selftest())
