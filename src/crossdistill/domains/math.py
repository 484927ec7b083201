"""Math word problems (GSM8K-style; MATH-style LaTeX answers are compared too).

Rewrite prompt: the seed plays a careful math solver; the problem is followed by a reference solution, and the
assistant turn is pre-filled with a short step-by-step opener so it starts reasoning at once. It is asked to write
every calculation as ``a op b = c`` and to finish with ``#### <answer>``.

Verification (after the shared checks of `base`), first failure wins:

* ``no_answer``          – no final answer can be extracted (`extract_answer`);
* ``wrong_answer``       – the final answer does not match `record.answer` (`answers_match`);
* ``arithmetic_error``   – a stated calculation is false. Every chain ``e0 = e1 = ... = en`` of arithmetic
  expressions (numbers with thousands commas, decimals, ``$``, ``%``; operators ``+ - * × x · / ÷ ^``; parentheses;
  ``\\frac{a}{b}``) is evaluated exactly (own parser over `fractions.Fraction`, never `eval`). Each neighbouring pair
  must agree to a relative 1e-4, or after rounding to 2 decimals (``10/3 = 3.33``). Lenient readings that are also
  accepted: left-to-right evaluation (``3 + 4 * 2 = 14``), ``%`` read as a plain number, and running totals
  (``3 + 4 = 7 - 2 = 5`` where each step starts from the previous result). A chain whose every side is a bare number
  (``3 = 8``, left over from ``2^3 = 8`` after text is cut) is not checked, nor one glued to a letter or a function
  sign (``√16 + 2 = 6``, ``COVID-19 = ...``): they cannot be read safely.
* ``answer_not_derived`` – the final answer must come out of the work shown. With at least one checked
  calculation it must be the value of a side of a stated calculation, a number written right after an "=" (a
  calculation too wordy to read: "= 48 mice"), or a number in the concluding line (the last line before the
  answer is stated: "... or 60% off", "divide each pizza into 8 slices"); "1 x 1 = 1 ... 2 x 2 = 4. So the total
  is 4. #### 2" is rejected although every step is true. With no checked calculation it must at least appear as a number in the text outside the places
  that merely state it ("####" lines, \\boxed{}, "the answer is ..."): "So, the answer is 6." twice over derives
  nothing. (A non-numeric LaTeX answer is not traced.)

Reading calculations: unit words between a number and an operator are dropped ("3 * 1050 liters = 3000 liters" is
checked, and fails; before "=" only when the number is an operand, so the label in "8 batches = 5.5 * 8 = 44"
stays a label), "times / multiplied by / divided by / plus / minus" between numbers are operators, and "of" after
a percentage multiplies ("20% of 50 = 10"). A lone letter is a variable, never a unit, so "2x + 3 = 7" is not read
as "2 + 3 = 7".

Target: the rewrite with any ``####`` lines removed and ``#### <record.answer>`` appended, so every math training
target ends the same way (the rest of the text is kept as written).
"""
from __future__ import annotations

import re
from fractions import Fraction

from ..records import Record
from .base import Domain, VerifyContext, VerifyResult, task_text

SYSTEM = (
    "You are a careful, precise math solver. You will see a math problem and, after it, a reference solution that "
    "is known to be correct. Follow the reference's method, but explain each step in your own words; be brief. "
    "Write every calculation out in full, like 12 * 3 = 36. Do not mention that you were given a solution. End "
    "with one last line of the form '#### <answer>' holding only the final answer."
)
PREFILL = "Let me work through this one step at a time.\n"

# --- numbers -------------------------------------------------------------------------------------

_NUM = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+"
_NUM_RE = re.compile(_NUM)


def _to_fraction(num: str) -> Fraction:
    return Fraction(num.replace(",", ""))


def _unwrap_command(text: str, command: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of every `\\command{...}` with nested braces balanced."""
    out = []
    for m in re.finditer(re.escape(command) + r"\s*\{", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            out.append((m.start(), i, text[m.end():i - 1]))
    return out


def _replace_commands(text: str, command: str, fmt: str = "{}") -> str:
    spans = _unwrap_command(text, command)
    for start, end, content in reversed(spans):
        text = text[:start] + fmt.format(content) + text[end:]
    return text


def _strip_latex_noise(s: str) -> str:
    s = s.replace("\\$", "$").replace("\\%", "%").replace("{,}", ",")
    s = re.sub(r"\\[!,;: ]|~", "", s)
    s = re.sub(r"\\left|\\right|\\displaystyle", "", s)
    s = re.sub(r"\^\s*\{?\\circ\}?|°", "", s)
    s = _replace_commands(s, "\\text", "{}")
    s = _replace_commands(s, "\\mathrm", "{}")
    s = _replace_commands(s, "\\textbf", "{}")
    return s


def parse_number(s: str) -> Fraction | None:
    """A number written as text -> exact Fraction, or None.

    Accepts signs, thousands commas, decimals, ``$``/``€``/``£``, ``%`` (read as the plain number: "50%" -> 50),
    fractions ``3/4`` and ``\\frac{3}{4}`` (also ``\\dfrac``, ``\\tfrac``, ``\\frac34``), mixed numbers ``1 1/2``,
    trailing unit words ("18 dollars", "5 km/h") and a trailing period.
    """
    if s is None:
        return None
    s = _strip_latex_noise(str(s)).strip()
    s = s.replace("−", "-").replace("$", "").replace("€", "").replace("£", "")
    s = s.strip().rstrip(".").strip()
    if not s:
        return None
    m = re.fullmatch(r"([-+]?)\s*\\[dt]?frac\s*\{([^{}]+)\}\s*\{([^{}]+)\}", s) or \
        re.fullmatch(r"([-+]?)\s*\\[dt]?frac(\d)(\d)", s)
    if m:
        a, b = parse_number(m.group(2)), parse_number(m.group(3))
        if a is None or b is None or b == 0:
            return None
        return -(a / b) if m.group(1) == "-" else a / b
    m = re.fullmatch(rf"([-+]?)\s*({_NUM})\s*/\s*({_NUM})", s)
    if m:
        b = _to_fraction(m.group(3))
        if b == 0:
            return None
        v = _to_fraction(m.group(2)) / b
        return -v if m.group(1) == "-" else v
    m = re.fullmatch(r"([-+]?)\s*(\d+)\s+(\d+)\s*/\s*(\d+)", s)
    if m and int(m.group(4)) != 0:
        v = int(m.group(2)) + Fraction(int(m.group(3)), int(m.group(4)))
        return -v if m.group(1) == "-" else v
    m = re.fullmatch(rf"([-+]?)\s*({_NUM})\s*(?:%|percent\b)?\s*(?:[A-Za-z][A-Za-z .'/²³-]*)?", s)
    if m:
        v = _to_fraction(m.group(2))
        return -v if m.group(1) == "-" else v
    return None


def format_number(v: Fraction) -> str:
    """Canonical text of a number: integers plainly, finite decimals as decimals, else ``a/b``."""
    if v.denominator == 1:
        return str(v.numerator)
    d = v.denominator
    while d % 2 == 0:
        d //= 2
    while d % 5 == 0:
        d //= 5
    if d == 1:
        s = f"{float(v):.12f}".rstrip("0").rstrip(".")
        if Fraction(s) == v:
            return s
    return f"{v.numerator}/{v.denominator}"


def normalize_latex(s: str) -> str:
    """Canonical text of a non-numeric answer (MATH style): no spaces, \\left/\\right, \\dfrac, \\text, $ ..."""
    s = str(s).strip()
    for _ in range(3):
        boxed = _unwrap_command(s, "\\boxed")
        if boxed and boxed[0][0] == 0 and boxed[0][1] == len(s):
            s = boxed[0][2].strip()
    s = _strip_latex_noise(s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("$", "")
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\sqrt(\d+)", r"\\sqrt{\1}", s)
    s = re.sub(r"\s+", "", s)
    return s.rstrip(".")


def answers_match(pred: str | None, gold: str | None) -> bool:
    """Whether a predicted final answer equals the gold one: numerically (exact rationals, tolerance 1e-6) when
    both read as numbers (`parse_number`), else as normalised LaTeX text (`normalize_latex`)."""
    if pred is None or gold is None or str(pred).strip() == "":
        return False
    p, g = parse_number(str(pred)), parse_number(str(gold))
    if p is not None and g is not None:
        return abs(p - g) <= Fraction(1, 10 ** 6)
    a, b = normalize_latex(str(pred)), normalize_latex(str(gold))
    if a == b:
        return True
    # "\frac{3}{4}" boxed vs gold "3/4" written as text once unwrapped
    pa, pb = parse_number(a), parse_number(b)
    return pa is not None and pb is not None and abs(pa - pb) <= Fraction(1, 10 ** 6)


# --- final answer --------------------------------------------------------------------------------

_HASH_RE = re.compile(r"^[ \t]*####[ \t]*(.*)$", re.MULTILINE)
_ANSWER_IS_RE = re.compile(r"\b(?:the\s+)?(?:final\s+)?answer\s*(?:is|=|:)\s*:?\s*([^\n]+)", re.IGNORECASE)
_LAST_NUM_RE = re.compile(rf"[-−]?\$?\s?(?:{_NUM})(?:\s*/\s*(?:{_NUM}))?")


def _clean_candidate(cand: str, loose: bool) -> str | None:
    cand = cand.strip()
    boxed = _unwrap_command(cand, "\\boxed")
    if boxed:
        cand = boxed[-1][2]
    cand = re.sub(r"^\$+|\$+$", "", cand.strip()).strip()
    cand = re.sub(r"[.;,!]+$", "", cand).strip()
    cand = cand.strip("*").strip()   # markdown bold
    if not cand:
        return None
    v = parse_number(cand)
    if v is not None:
        return format_number(v)
    m = re.match(rf"[-−]?\s*\$?\s*(?:{_NUM})(?:\s*/\s*(?:{_NUM}))?", cand)
    if m:
        v = parse_number(m.group(0))
        if v is not None:
            return format_number(v)
    if "\\" in cand:
        return cand
    if loose:
        m = _LAST_NUM_RE.search(cand)
        if m:
            v = parse_number(m.group(0))
            if v is not None:
                return format_number(v)
    return cand if not loose else None


def _final_answer_span(text: str) -> tuple[str | None, tuple[int, int] | None]:
    """(answer, (start, end) of the text that states it)."""
    text_n = text
    hashes = list(_HASH_RE.finditer(text_n))
    if hashes:
        m = hashes[-1]
        return _clean_candidate(m.group(1), loose=False), m.span()
    boxed = _unwrap_command(text_n, "\\boxed") or _unwrap_command(text_n, "\\fbox")
    if boxed:
        start, end, content = boxed[-1]
        return _clean_candidate(content, loose=False), (start, end)
    ans = list(_ANSWER_IS_RE.finditer(text_n))
    if ans:
        m = ans[-1]
        seg = re.split(r"(?<=[^\d])\.(?:\s|$)|\.\s", m.group(1))[0]
        # "the answer is 48 + 24 = 72" / "...: Janet makes 9 * 2 = $18": the result right of the last "="
        seg = re.split(r"(?<![<>!=])=(?!=)", seg)[-1]
        return _clean_candidate(seg, loose=True), m.span()
    nums = list(_LAST_NUM_RE.finditer(text_n))
    if nums:
        m = nums[-1]
        v = parse_number(m.group(0))
        return (format_number(v) if v is not None else None), m.span()
    return None, None


def extract_answer(text: str) -> str | None:
    """The final answer of a solution, canonical when numeric ("$1,234.50" -> "1234.5", "\\frac{3}{4}" -> "3/4").

    Looked for, in order: the last ``#### X`` line; the last ``\\boxed{X}`` (nested braces); the last "the answer
    is X" / "Answer: X"; else the last number in the text. None when there is none.
    """
    if not text:
        return None
    text = re.sub(r"<<[^<>]*>>", "", text)
    return _final_answer_span(text)[0]


# --- arithmetic checking -------------------------------------------------------------------------

_TOKEN_RE = re.compile(
    rf"(?P<num>{_NUM})(?P<pct>\s*%)?|(?P<pow>\*\*|\^)|(?P<op>[-+*/])|(?P<lp>\()|(?P<rp>\))|(?P<eq>(?<![<>!=])=(?!=))"
    r"|(?P<ws>[ \t]+)|(?P<other>.)", re.DOTALL)


def _prepare(text: str) -> str:
    """Rewrite math notation into plain operators so the tokenizer sees `3 * 4 = 12`."""
    s = re.sub(r"<<[^<>]*>>", "", text)
    s = _replace_commands(s, "\\boxed", "{}")
    for _ in range(3):  # innermost fractions first
        s = re.sub(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}", r"(\1)/(\2)", s)
    s = re.sub(r"\\[dt]?frac(\d)(\d)", r"(\1)/(\2)", s)
    s = s.replace("\\times", "*").replace("\\cdot", "*").replace("\\div", "/")
    s = re.sub(r"[×·∗⋅]", "*", s)
    s = s.replace("÷", "/").replace("−", "-").replace("–", "-").replace("\\$", "$").replace("\\%", "%")
    s = re.sub(r"\\[()\[\]]", " ", s)
    s = re.sub(r"\\left|\\right", "", s)
    s = re.sub(r"[$€£]", "", s)
    s = _WORD_OPS_RE.sub(lambda m: f" {_WORD_OPS[m.group(1).lower()]} ", s)
    s = re.sub(r"(?<=\d%)\s+of\s+(?=\.?\d)", " * ", s)      # "20% of 50"
    s = _UNIT_RE.sub(_drop_unit, s)
    s = re.sub(r"(?<=[\d)])\s*[xX]\s*(?=\(?\s*\.?\d)", " * ", s)
    s = s.replace("{", "(").replace("}", ")")
    return s


_WORD_OPS = {"times": "*", "multiplied by": "*", "divided by": "/", "plus": "+", "minus": "-"}
_WORD_OPS_RE = re.compile(r"(?<=[\d%])\s+(times|multiplied by|divided by|plus|minus)\s+(?=\(?\.?\d)", re.IGNORECASE)
# Unit words between a number and an operator: "1050 liters = 3000 liters", "6 pups/mouse * 8 mice",
# "$5 per hour * 3 hours". Up to three words of 2+ letters (a lone letter is a variable: "2x + 3 = 7").
# A phrase that starts with a function word is not a unit: "2 of Shonda's kids + 10 of their friends = 20".
_UNIT_WORD = r"[A-Za-z][A-Za-z'’-]+(?:/[A-Za-z]+)?"
_NOT_UNIT = r"(?!(?:of|and|or|to|in|on|at|is|are|was|were|the|an|from|with|by|for|that|which|so|then|than|if|as)\b)"
_UNIT_RE = re.compile(rf"(?<=[\d%])[ \t]*{_NOT_UNIT}{_UNIT_WORD}(?:[ \t]+{_UNIT_WORD}){{0,2}}"
                      r"(?=[ \t]*(?:([-+*/×÷)]|[xX][ \t]*\(?\.?\d)|=))")


def _drop_unit(m: re.Match) -> str:
    """Drop a unit before an operator; before "=" only when its number is itself an operand ("3 * 1050 liters =",
    not the label in "8 batches = 5.5 * 8 = 44")."""
    if m.group(1) is not None:
        return ""
    s = m.string
    i = m.start()
    while i > 0 and (s[i - 1].isdigit() or s[i - 1] in ".,%"):
        i -= 1
    prev = s[:i].rstrip()[-1:]
    return "" if prev and prev in "+-*/×÷xX" else m.group(0)


class _Tok:
    __slots__ = ("kind", "value", "pct", "start", "end")

    def __init__(self, kind, value, pct, start, end):
        self.kind, self.value, self.pct, self.start, self.end = kind, value, pct, start, end


def _tokenize(s: str) -> list[_Tok]:
    toks: list[_Tok] = []
    for m in _TOKEN_RE.finditer(s):
        k = m.lastgroup
        if k == "pct":
            k = "num"
        if k == "ws":
            continue
        if k == "num":
            toks.append(_Tok("num", _to_fraction(m.group("num")), bool(m.group("pct")), m.start(), m.end()))
        elif k == "other":
            if m.group(0) == "\n":
                toks.append(_Tok("brk", "\n", False, m.start(), m.end()))
            else:
                toks.append(_Tok("brk", m.group(0), False, m.start(), m.end()))
        else:
            toks.append(_Tok(k, m.group(0), False, m.start(), m.end()))
    return toks


class _Parser:
    """Exact evaluation of a token list: + - * / ^ with precedence (or strictly left to right), unary minus,
    parentheses. `pct_scale` reads "20%" as 0.2 (True) or 20 (False)."""

    def __init__(self, toks: list[_Tok], pct_scale: bool, ltr: bool, tight: bool = False):
        self.t, self.i, self.pct, self.ltr, self.tight = toks, 0, pct_scale, ltr, tight

    def parse(self) -> Fraction | None:
        try:
            v = self.expr()
        except (ZeroDivisionError, OverflowError, IndexError, ValueError, _ParseError):
            return None
        return v if self.i == len(self.t) else None

    def peek(self):
        return self.t[self.i] if self.i < len(self.t) else None

    def expr(self) -> Fraction:
        if self.ltr:
            v = self.unary()
            while self.peek() is not None and self.peek().kind == "op":
                op = self.t[self.i].value
                self.i += 1
                v = _apply(op, v, self.unary())
            return v
        v = self.term()
        while self.peek() is not None and self.peek().kind == "op" and self.peek().value in "+-":
            op = self.t[self.i].value
            self.i += 1
            v = _apply(op, v, self.term())
        return v

    def term(self) -> Fraction:
        v = self.unary()
        while self.peek() is not None and self.peek().kind == "op" and self.peek().value in "*/":
            op = self.t[self.i].value
            self.i += 1
            v = _apply(op, v, self.unary())
        return v

    def unary(self) -> Fraction:
        p = self.peek()
        if p is not None and p.kind == "op" and p.value == "-":
            self.i += 1
            return -self.unary()
        return self.power()

    def power(self) -> Fraction:
        base = self.atom()
        p = self.peek()
        if p is not None and p.kind == "pow":
            self.i += 1
            exp = self.unary()
            if exp.denominator != 1 or abs(exp) > 64 or abs(base) > 10 ** 12:
                raise _ParseError
            return base ** int(exp)
        return base

    def atom(self) -> Fraction:
        p = self.peek()
        if p is None:
            raise _ParseError
        if p.kind == "num":
            self.i += 1
            v = p.value / 100 if (p.pct and self.pct) else p.value
            # tight reading: "28 / 1/5" -- an unspaced a/b is one fraction
            if self.tight and self.i + 1 < len(self.t):
                op, q = self.t[self.i], self.t[self.i + 1]
                if op.kind == "op" and op.value == "/" and q.kind == "num" and p.end == op.start and op.end == q.start:
                    self.i += 2
                    v = v / q.value
            return v
        if p.kind == "lp":
            self.i += 1
            v = self.expr()
            q = self.peek()
            if q is None or q.kind != "rp":
                raise _ParseError
            self.i += 1
            return v
        raise _ParseError


class _ParseError(Exception):
    pass


def _apply(op: str, a: Fraction, b: Fraction) -> Fraction:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    return a / b


def _values(toks: list[_Tok]) -> list[Fraction]:
    """Every lenient reading of an expression: precedence or left to right; "%" scaled or plain; unspaced
    fractions "1/5" as one number or not."""
    vals: list[Fraction] = []
    has_pct = any(t.pct for t in toks)
    has_slash = any(t.kind == "op" and t.value == "/" for t in toks)
    for ltr in (False, True):
        for pct in ((True, False) if has_pct else (False,)):
            for tight in ((False, True) if has_slash else (False,)):
                v = _Parser(toks, pct, ltr, tight).parse()
                if v is not None and v not in vals:
                    vals.append(v)
    return vals


def _valid(toks: list[_Tok]) -> bool:
    return bool(toks) and _Parser(toks, True, False).parse() is not None


def _close(a: Fraction, b: Fraction) -> bool:
    if a == b:
        return True
    fa, fb = float(a), float(b)
    if abs(fa - fb) <= 1e-4 * max(abs(fa), abs(fb)):
        return True
    return round(fa, 2) == round(fb, 2) or abs(fa - fb) <= 0.005 + 1e-12


class Equation:
    """One stated chain `e0 = e1 = ... = en`, with its source text and whether it holds."""

    def __init__(self, sides: list[list[_Tok]], text: str):
        self.sides = sides
        self.text = text
        self.values = [_values(s) for s in sides]

    @property
    def checkable(self) -> bool:
        return any(len(s) > 1 for s in self.sides) and all(self.values)

    def holds(self) -> bool:
        for i in range(len(self.sides) - 1):
            left, right = self.values[i], self.values[i + 1]
            if any(_close(a, b) for a in left for b in right):
                continue
            # running total: "3 + 4 = 7 - 2 = 5" (the next side starts from this side's value)
            first = self.sides[i + 1][0]
            if first.kind == "num" and len(self.sides[i + 1]) > 1 and any(_close(a, first.value) for a in left):
                continue
            return False
        return True

    def results(self) -> list[Fraction]:
        return [v for vs in self.values for v in vs]


def find_equations(text: str) -> list[Equation]:
    """Every arithmetic chain stated in `text` (checkable or not); see the module docstring for the reading.

    The text is cut into runs at anything that is not a number, operator, parenthesis or "=" (words, commas,
    line ends). In a run with "=", the first side is the longest valid expression ending at the first "=", the
    last side the longest valid expression starting after the last "="; a side that is not one expression ends
    the chain there.
    """
    s = _prepare(text)
    eqs: list[Equation] = []

    def glued_left(side: list[_Tok]) -> bool:
        """The expression continues leftwards with something unreadable (a variable, a function sign, an
        operator whose left operand was cut off): `X*11/4`, `√16 + 2`, `G - 5`, `COVID-19`."""
        before = s[side[0].start - 1] if side[0].start > 0 else " "
        if before.isalnum() or before in "√∛^!_'.:":
            return True
        left = s[:side[0].start].rstrip()
        prev = left[-1:]
        if prev and (prev.isdigit() or prev in "+-*/^)=("):
            return True   # "1 1/2 * 60", "X*11/4": the readable part is only the tail of the expression
        if re.search(r"(?:^|\W)(?:x|times|by|of|plus|minus|over|per)$", left, re.IGNORECASE):
            return True   # "35 questions x 2/5 = 14": an operator in words
        # a leading minus is a sign only at the start of a line or after "(" / ":"; else its left operand is lost
        return side[0].kind == "op" and not (prev == "" or prev in "\n(:" or s[:side[0].start].endswith("\n"))

    def glued_right(side: list[_Tok]) -> bool:
        after = s[side[-1].end] if side[-1].end < len(s) else " "
        return after.isalpha() or after in "^√!:"

    def longest_suffix(seg):
        return next((seg[i:] for i in range(len(seg)) if _valid(seg[i:])), None)

    def longest_prefix(seg):
        return next((seg[:j] for j in range(len(seg), 0, -1) if _valid(seg[:j])), None)

    def close(chain: list[list[_Tok]]) -> None:
        if chain and glued_right(chain[-1]):
            chain.pop()
        # a bare number right after a word is a label, not a value: "Week 2 = 35 + 35", "Remaining 10 = 62,300/10"
        if len(chain) > 2 or (len(chain) == 2 and len(chain[1]) > 1):
            first = chain[0]
            if len(first) == 1 and first[0].kind == "num" and s[:first[0].start].rstrip()[-1:].isalpha():
                chain.pop(0)
        if len(chain) >= 2:
            eqs.append(Equation(list(chain), s[chain[0][0].start:chain[-1][-1].end]))
        chain.clear()

    def flush(run: list[_Tok]) -> None:
        if not any(t.kind == "eq" for t in run):
            return
        segs: list[list[_Tok]] = [[]]
        for t in run:
            if t.kind == "eq":
                segs.append([])
            else:
                segs[-1].append(t)
        chain: list[list[_Tok]] = []
        for k, seg in enumerate(segs):
            if k > 0 and _valid(seg):
                chain.append(seg)
                continue
            if k > 0 and chain:
                pre = longest_prefix(seg)
                # "= 16 + x - 16", "= 2 1/2", "= 18 000": what follows the readable prefix continues the side
                if pre is not None and seg[len(pre)].kind not in ("op", "pow", "num", "lp"):
                    chain.append(pre)
            close(chain)
            suf = longest_suffix(seg)
            if suf is not None and not glued_left(suf):
                chain.append(suf)
        close(chain)

    run: list[_Tok] = []
    for t in _tokenize(s):
        if t.kind == "brk":
            flush(run)
            run = []
        else:
            run.append(t)
    flush(run)
    return eqs


def _strip_answer_statements(text: str) -> str:
    """`text` without the places that only *state* the final answer: "#### N" lines, \\boxed{...}, "the answer is
    ..." to the end of its line."""
    text = _HASH_RE.sub(" ", text)
    for cmd in ("\\boxed", "\\fbox"):
        for start, end, _ in reversed(_unwrap_command(text, cmd)):
            text = text[:start] + " " + text[end:]
    return _ANSWER_IS_RE.sub(" ", text)


def _derived(pred: str, eq_text: str, eqs: list[Equation]) -> bool:
    """Whether the final answer comes out of the stated work (see the module docstring)."""
    value = parse_number(pred)
    if value is None:
        return True    # a non-numeric (LaTeX) answer: nothing reliable to trace
    prepared = _prepare(eq_text)
    after_eq = [_to_fraction(m.group(1)) for m in re.finditer(rf"=\s*\(?\s*-?\s*({_NUM})", prepared)]
    body = _strip_answer_statements(eq_text)

    def mentioned(text: str) -> bool:
        return any((v := parse_number(m.group(0))) is not None and _close(v, value) for m in _LAST_NUM_RE.finditer(text))

    if not eqs:
        return mentioned(body)
    if any(_close(v, value) for e in eqs for v in e.results()) or any(_close(v, value) for v in after_eq):
        return True
    lines = [ln for ln in body.splitlines() if ln.strip()]
    return bool(lines) and mentioned(lines[-1])     # the concluding line: "... or 60% off", "into 8 slices"


# --- the domain ----------------------------------------------------------------------------------

class MathDomain(Domain):
    name = "math"
    required = ("response", "answer")
    task_types = ("generate_match",)
    teacher_template = ("{prompt}\n\nHere is a worked solution to this problem:\n{demonstration}\n\n"
                        "Now solve the problem yourself, step by step, ending with the final answer.")

    def rewrite_messages(self, record: Record) -> tuple[list[dict], str]:
        reference = re.sub(r"<<[^<>]*>>", "", record.response or "").strip()
        user = f"Problem:\n{task_text(record).strip()}\n\nReference solution:\n{reference}"
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}], PREFILL

    def check(self, record: Record, text: str, ctx: VerifyContext) -> VerifyResult:
        clean = re.sub(r"<<[^<>]*>>", "", text)
        pred, _span = _final_answer_span(clean)
        if pred is None:
            return VerifyResult(False, "no_answer")
        details: dict = {"pred": pred, "gold": record.answer}
        if not answers_match(pred, record.answer):
            return VerifyResult(False, "wrong_answer", details=details)
        eq_text = _HASH_RE.sub("", clean)        # the "#### N" line states the answer, it derives nothing
        eqs = [e for e in find_equations(eq_text) if e.checkable]
        details["n_equations"] = len(eqs)
        bad = [e for e in eqs if not e.holds()]
        if bad:
            details["bad_equation"] = bad[0].text.strip()
            return VerifyResult(False, "arithmetic_error", details=details)
        if not _derived(pred, eq_text, eqs):
            return VerifyResult(False, "answer_not_derived", details=details)
        return VerifyResult(True, "ok", target=self.make_target(record, text), details=details)

    @staticmethod
    def make_target(record: Record, text: str) -> str:
        body = _HASH_RE.sub("", text).rstrip()
        body = re.sub(r"\n{3,}", "\n\n", body)
        return f"{body}\n#### {str(record.answer).strip()}"

    def copy_similarity(self, record: Record, text: str, target: str) -> float:
        from .base import similarity

        body = text[len(PREFILL):] if text.startswith(PREFILL) else text
        return similarity(body, record.response or "")
