"""Python programming tasks (MBPP / HumanEval style records with executable tests).

Rewrite prompt: the task, then the reference solution in a fenced block; the seed is asked for its own solution as
one ```python block, keeping every import, helper and module-level constant, and the reference's function name and
parameters. The assistant turn is pre-filled with the opening fence, so the reply starts with code.

Verification (after the shared checks of `base`; leaks and loops are searched in the extracted code only, and a
reply cut at max_new_tokens is fine once its code block was closed):

* ``no_code``       – no code can be extracted (`extract_code`);
* ``syntax_error``  – the code does not parse;
* ``no_tests``      – the record has no tests to run;
* ``tests_failed`` / ``runtime_error`` / ``timeout`` / ``sandbox_error`` – the code, run with `record.test_setup`
  and every test of `record.tests` in the sandbox (`crossdistill.sandbox`), did not pass. A dropped import or
  module-level constant fails here, as it should.

Target: the extracted code as one ```python fenced block; the prose around it is dropped. Every token of the target
has then been executed against the tests, prose (where leaks and wrong claims hide) never reaches training, and a
fenced block is both the chat models' natural format and what `extract_code` reads first at evaluation.
`copied` compares the code with the reference code (whitespace and case ignored).
"""
from __future__ import annotations

import ast
import re
from typing import Any, Sequence

from ..records import Record
from .base import Domain, VerifyContext, VerifyResult, _as_text_finished, similarity, task_text

SYSTEM = (
    "You are an expert Python programmer. You will see a programming task and, after it, a reference solution "
    "that passes all of the task's tests. Write your own solution to the task. Reply with exactly one ```python "
    "code block that holds the complete solution: keep every import, helper function and module-level constant "
    "the code needs, and keep the reference's function name and parameters. Write the body your own way rather "
    "than copying the reference line by line. Do not mention the reference."
)
PREFILL = "```python\n"

_OPEN_FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+.-]*)[^\n`]*\n")


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
        return True
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False


def _is_program(code: str) -> bool:
    """Parses as Python and defines, imports or assigns something (a bare word like "nope" parses too)."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom, ast.Assign)
    return any(isinstance(node, kinds) for node in tree.body)


def _fenced_blocks(text: str) -> list[tuple[str, str, bool]]:
    """(language tag, code, closed) of every fenced block; an unclosed last block runs to the end of the text."""
    out = []
    pos = 0
    while (m := _OPEN_FENCE_RE.search(text, pos)) is not None:
        end = text.find("```", m.end())
        if end < 0:
            out.append((m.group(1).lower(), text[m.end():], False))
            break
        out.append((m.group(1).lower(), text[m.end():end], True))
        pos = end + 3
    return out


def _pick(blocks: list[str], entry_point: str | None) -> str | None:
    blocks = [b for b in blocks if b.strip()]
    if not blocks:
        return None
    if entry_point:
        rx = re.compile(rf"^\s*(?:async\s+)?(?:def|class)\s+{re.escape(entry_point)}\b", re.MULTILINE)
        for b in blocks:
            if rx.search(b):
                return b
    defining = [b for b in blocks if re.search(r"^\s*(?:def|class)\s", b, re.MULTILINE)]
    return max(defining or blocks, key=len)


def extract_code(text: str, entry_point: str | None = None) -> str | None:
    """The Python code in a model reply, or None.

    In order: a ```python (or ```py / ```python3) fenced block; else any fenced block; else the whole text when it
    is a Python program (parses, and defines, imports or assigns something); else the longest run of leading lines
    that is one (bare code followed by prose). With several blocks, the first that defines `entry_point` wins, else the longest that defines a
    function or class. An unclosed final fence counts up to the end of the text.
    """
    if not text or not text.strip():
        return None
    blocks = _fenced_blocks(text)
    py = [code for lang, code, _ in blocks if lang in ("python", "py", "python3", "py3")]
    code = _pick(py, entry_point) or _pick([code for _, code, _ in blocks], entry_point)
    if code is not None:
        return code.strip("\n") + "\n"
    if _is_program(text):
        return text.strip("\n") + "\n"
    lines = text.split("\n")
    for j in range(len(lines) - 1, 0, -1):
        head = "\n".join(lines[:j])
        if _is_program(head):
            return head.strip("\n") + "\n"
    return None


def tests_program(record: Record) -> list[str]:
    """The record's tests, with `check(entry_point)` appended to a HumanEval-style checker that never calls it."""
    tests = list(record.tests or [])
    if record.entry_point:
        for i, t in enumerate(tests):
            if re.search(r"^def check\(", t, re.MULTILINE) and not re.search(r"^check\(", t, re.MULTILINE):
                tests[i] = t.rstrip() + f"\ncheck({record.entry_point})\n"
    return tests


def program_for_eval(record: Record, code: str) -> str:
    """HumanEval: a reply that is only the function body gets the prompt's signature in front of it."""
    prompt_code = (record.meta or {}).get("code_prompt")
    ep = record.entry_point
    if prompt_code and ep and not re.search(rf"^\s*def\s+{re.escape(ep)}\b", code, re.MULTILINE):
        return prompt_code.rstrip("\n") + "\n" + code
    return code


def _limits(ctx: VerifyContext):
    from ..sandbox import SandboxLimits

    return SandboxLimits(timeout_s=ctx.sandbox_timeout_s)


_STATUS_REASON = {"fail": "tests_failed", "timeout": "timeout", "error": "runtime_error"}


def _verdict_dict(v: Any) -> dict:
    """The deterministic part of a sandbox verdict (no timings: same inputs, same distilled.jsonl)."""
    return {"status": v.status, "n_tests": getattr(v, "n_tests", None), "n_passed": getattr(v, "n_passed", None),
            "stderr_tail": (getattr(v, "stderr_tail", "") or "")[-500:],
            "isolation": getattr(v, "isolation", None), "weak": getattr(v, "weak", None)}


class CodeDomain(Domain):
    name = "code"
    required = ("response", "tests")
    task_types = ("generate_code",)
    teacher_template = ("{prompt}\n\nHere is a reference solution:\n{demonstration}\n\n"
                        "Now write your own solution to the task.")
    stop = ("```",)   # the prefill opened the block: its closing fence is the rewrite's natural end

    def rewrite_messages(self, record: Record) -> tuple[list[dict], str]:
        ref = (record.response or "").strip("\n")
        extra = f"\n\nThe function under test is `{record.entry_point}`." if record.entry_point else ""
        user = f"Task:\n{task_text(record).strip()}{extra}\n\nReference solution:\n```python\n{ref}\n```"
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}], PREFILL

    def target_scope(self, record: Record, text: str) -> str:
        return extract_code(text, record.entry_point) or text

    def complete_part(self, record: Record, text: str) -> bool:
        return any(closed for lang, _, closed in _fenced_blocks(text) if lang in ("python", "py", "python3", ""))

    @staticmethod
    def make_target(code: str) -> str:
        return f"```python\n{code.strip(chr(10))}\n```"

    def copy_similarity(self, record: Record, text: str, target: str) -> float:
        ref = extract_code(record.response or "", record.entry_point) or record.response or ""
        return similarity(extract_code(text, record.entry_point) or text, ref)

    def _precheck(self, record: Record, text: str) -> tuple[VerifyResult | None, str | None]:
        code = extract_code(text, record.entry_point)
        if code is None:
            return VerifyResult(False, "no_code"), None
        if not _parses(code):
            return VerifyResult(False, "syntax_error"), None
        if not record.tests:
            return VerifyResult(False, "no_tests"), None
        return None, code

    def check(self, record: Record, text: str, ctx: VerifyContext) -> VerifyResult:
        return self.verify_many([record], [(text, True)], ctx)[0]

    def verify_many(self, records: Sequence[Record], generations: Sequence[Any],
                    ctx: VerifyContext | None = None) -> list[VerifyResult]:
        """Shared checks and extraction per rewrite, then every surviving program runs in parallel in the sandbox."""
        ctx = ctx or VerifyContext()
        results: list[VerifyResult | None] = [None] * len(records)
        texts: list[str] = []
        jobs, where = [], []
        for i, (rec, g) in enumerate(zip(records, generations, strict=True)):
            text, finished = _as_text_finished(g)
            texts.append(text)
            res = self.shared_checks(rec, text, finished)
            code = None
            if res is None:
                res, code = self._precheck(rec, text)
            if res is not None:
                results[i] = res
                continue
            jobs.append({"code": code, "tests": tests_program(rec), "setup": rec.test_setup or ""})
            where.append(i)
        if jobs:
            from ..sandbox import run_many

            verdicts = run_many(jobs, limits=_limits(ctx), workers=ctx.sandbox_workers, progress=ctx.progress)
            for i, job, v in zip(where, jobs, verdicts, strict=True):
                details = _verdict_dict(v)
                if v.passed:
                    results[i] = VerifyResult(True, "ok", target=self.make_target(job["code"]), details=details)
                else:
                    results[i] = VerifyResult(False, _STATUS_REASON.get(v.status, "sandbox_error"), details=details)
        return [self._finish(rec, text, res, ctx) for rec, text, res in zip(records, texts, results, strict=True)]
