"""The Domain plug-in contract and the checks every domain shares (the registry of plug-ins is `registry`).

A domain knows three things about its records:

* which fields they need (`required`) and which eval task types score them (`task_types`, so its metrics),
* how to ask the seed model for a rewrite (`rewrite_messages` -> chat messages + an assistant prefill),
* how to verify a rewrite and turn it into a training target (`verify` / `verify_many`).

`verify` always receives the *whole* assistant text: the prefill followed by what the model generated.

Checks shared by every domain (run in this order by `Domain.verify_many`, first failure wins):

1. ``empty``       – nothing but whitespace was generated;
2. ``truncated``   – generation stopped at max_new_tokens (``finished=False``), unless the domain's target is a
   self-contained part that was complete before the cut (`Domain.complete_part`: a closed code block, a whole
   JSON call);
3. ``leak``        – the rewrite talks about the prompt set-up instead of the task (see `LEAK_PATTERNS`), searched
   in the part of the rewrite that can reach the target (`Domain.target_scope`);
4. ``degenerate``  – looping output (same scope): a block of words repeated back to back three or more times,
   a unique-word ratio under 0.15 on 60+ words, or a short character unit repeated 30+ times in a row
   (`degenerate_reason`);
5. the domain's own check (its reasons are documented in each domain file).

A rewrite that passes everything is accepted; if it is also a near-verbatim copy of the reference
(similarity >= `VerifyContext.copy_threshold`, see `similarity`) it is flagged ``copied=True``. A copy is a harmless
target (it equals the original) but must not be counted as self-distillation.

Adding a domain: one new file with a `Domain` subclass, registered by `registry.register_domain` or an entry point
in the ``crossdistill.domains`` group (``name = "pkg.module:ClassName"``); see `registry`.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..records import Record


@dataclass
class VerifyResult:
    accepted: bool
    reason: str                      # "ok" when accepted, else the first failed check
    target: str | None = None        # the training target when accepted
    copied: bool = False             # accepted, but a near-verbatim copy of the reference
    details: dict = field(default_factory=dict)


@dataclass
class VerifyContext:
    """Settings the verifiers need (built from `DistillConfig` by the distill stage)."""

    copy_threshold: float = 0.9
    sandbox_timeout_s: float = 10.0
    sandbox_workers: int | None = None
    progress: str | None = None

    @classmethod
    def from_distill_config(cls, dc: Any, progress: str | None = None) -> "VerifyContext":
        return cls(copy_threshold=dc.copy_threshold, sandbox_timeout_s=dc.sandbox_timeout_s,
                   sandbox_workers=dc.sandbox_workers, progress=progress)


# --- shared checks -------------------------------------------------------------------------------

# Phrases that give away the rewrite set-up (case-insensitive regexes). The first group is what SDFT's users saw;
# the second names the material our own templates show ("worked solution", "example answer", ...), which a seed
# that parrots its instructions repeats.
LEAK_PATTERNS: tuple[str, ...] = (
    r"\breference (?:answer|solution|response|code|implementation|program|call|function call|example)s?\b",
    r"\b(?:according to|based on|using|following|in|from|per|as (?:shown|given|stated|provided) in) the "
    r"(?:given |provided |above |original )?(?:reference|worked solution|provided solution)\b",
    r"\byour (?:own )?response\b",
    r"\bmy (?:own )?response\b",
    r"\byour own words\b",
    r"\bmy own words\b",
    r"\bnow it'?s your turn\b",
    r"\bnow it is your turn\b",
    r"^\W*your turn\b",
    r"\bthe (?:worked|provided|given|example|sample) (?:solution|answer)s?\b",
    r"\bthe solution (?:provided|given|shown) (?:above|below|earlier)\b",
    r"\bthe example (?:answer )?(?:above|below)\b",
)
_LEAK_RE = [re.compile(p, re.IGNORECASE | re.MULTILINE) for p in LEAK_PATTERNS]


def find_leak(text: str) -> str | None:
    """The first leak phrase found in `text`, or None."""
    for rx in _LEAK_RE:
        m = rx.search(text)
        if m:
            return m.group(0)
    return None


def _words(text: str) -> list[str]:
    return text.lower().split()


def _repeated_run(words: list[str], min_copies: int, min_words: int, max_period: int) -> tuple[int, int] | None:
    """(period, copies) of the first block of words repeated back to back `min_copies`+ times covering
    `min_words`+ words, or None. O(max_period x len(words))."""
    n = len(words)
    for p in range(1, min(max_period, n // min_copies) + 1):
        copies = max(min_copies, -(-min_words // p))
        run = 0
        for j in range(n - p):
            if words[j] == words[j + p]:
                run += 1
                if run >= (copies - 1) * p:
                    return p, copies
            else:
                run = 0
    return None


def degenerate_reason(text: str, *, min_copies: int = 3, min_words: int = 16, max_period: int = 60,
                      min_unique_ratio: float = 0.15, min_words_for_ratio: int = 60) -> str | None:
    """Why `text` looks like a generation loop, or None.

    * a block of 1-60 words repeated back to back 3+ times, covering 16+ words ("the answer is the answer is ...",
      a sentence or paragraph said three times over);
    * a unique-word ratio under 0.15 on 60+ words;
    * a unit of 1-12 characters holding a letter or digit repeated 30+ times in a row ("hahaha...", "1111...").

    Parallel phrasing is not a loop: "The first week she walked 1 mile, 6 days a week for a total of 1*6 = 6 ...",
    "The second week ..." repeats an 8-gram four times, which is why repetition must be back to back. Measured: none
    of the 9,446 reference responses of GSM8K train, MBPP and alpaca_en_demo trips these rules (an "8-gram seen 4
    times anywhere" rule flags 6 of them).
    """
    if re.search(r"((?=.{0,11}?\w).{1,12}?)\1{29,}", text, re.DOTALL):
        return "repeated character run"
    words = _words(text)
    rep = _repeated_run(words, min_copies, min_words, max_period)
    if rep:
        return f"a {rep[0]}-word block repeated {rep[1]}+ times in a row"
    if len(words) >= min_words_for_ratio and len(set(words)) / len(words) < min_unique_ratio:
        return f"unique-word ratio {len(set(words)) / len(words):.2f}"
    return None


def _norm_for_similarity(text: str) -> list[str]:
    text = re.sub(r"<<[^<>]*>>", "", text)           # GSM8K calculator annotations
    return re.findall(r"\w+|[^\w\s]", text.lower())


def similarity(a: str, b: str) -> float:
    """Similarity in [0, 1] of two texts compared as lower-cased word/punctuation token sequences (difflib ratio).

    GSM8K `<<...>>` calculator annotations are ignored, and whitespace/case differences count for nothing.
    """
    ta, tb = _norm_for_similarity(a), _norm_for_similarity(b)
    if not ta and not tb:
        return 1.0
    return difflib.SequenceMatcher(None, ta, tb, autojunk=False).ratio()


def task_text(record: Record) -> str:
    """The task prompt as one text: a plain prompt as is, a conversation with role labels."""
    if isinstance(record.prompt, str):
        return record.prompt
    msgs = record.prompt
    if len(msgs) == 1:
        return msgs[0].get("content", "")
    label = {"system": "System", "user": "User", "assistant": "Assistant", "tool": "Tool result"}
    return "\n\n".join(f"{label.get(m.get('role'), m.get('role', '').title())}: {m.get('content', '')}" for m in msgs)


def _as_text_finished(g: Any) -> tuple[str, bool]:
    if isinstance(g, (tuple, list)):
        return str(g[0] or ""), bool(g[1])
    if isinstance(g, str):
        return g, True
    return str(getattr(g, "text", "") or ""), bool(getattr(g, "finished", True))


# --- the contract --------------------------------------------------------------------------------

class Domain:
    """Base class of a domain plug-in. Subclasses set `name`, `required` and `task_types`, and implement the two
    hooks marked "(subclass)": `rewrite_messages` and `check`."""

    name: str = ""
    # Record fields this domain's records need beyond id/domain/prompt (checked when data is loaded; "response" only
    # where a response is required, e.g. for training).
    required: tuple[str, ...] = ("response",)
    # The eval task types (`evaluation.tasks.TASK_TYPES`) that score this domain's benchmarks, so its metrics
    # (generate_match -> exact_match, generate_code -> pass@1, gold_nll -> bpb, tool_call -> call_acc, ...).
    task_types: tuple[str, ...] = ()
    # Strings that end a rewrite naturally (besides EOS): generation stops there and the rewrite counts as finished.
    # The stop string itself is not part of the generated text.
    stop: tuple[str, ...] = ()

    # -- rewrite prompt (subclass) --
    def rewrite_messages(self, record: Record) -> tuple[list[dict], str]:
        """(chat messages incl. a system message, assistant prefill) asking the seed to rewrite the reference."""
        raise NotImplementedError

    # -- on-policy teacher (Shenfeld et al. 2026): the seed shown the reference as a demonstration --
    # {prompt}: the last user turn; {demonstration}: the reference response. Subclasses may override the template.
    teacher_template: str = ("{prompt}\n\nThis is an example for a response to the question:\n{demonstration}\n\n"
                             "Now answer with a response of your own.")

    def teacher_messages(self, messages: list[dict], demonstration: str) -> list[dict]:
        """The teacher's prompt for on-policy self-distillation: the student's messages with the last user turn
        rewritten by `teacher_template` to show the demonstration (earlier turns, e.g. a system prompt, kept)."""
        if not messages or messages[-1].get("role") != "user":
            raise ValueError("the teacher prompt needs a conversation that ends with a user turn")
        last = dict(messages[-1])
        last["content"] = self.teacher_template.format(prompt=last.get("content", ""), demonstration=demonstration)
        return [dict(m) for m in messages[:-1]] + [last]

    # -- verification --
    def check(self, record: Record, text: str, ctx: VerifyContext) -> VerifyResult:
        """The domain's own check of a rewrite that passed the shared checks (subclass).

        Returns an accepted result with `target` set, or a rejection with the domain's reason. `copied` is filled
        in afterwards from `copy_similarity`.
        """
        raise NotImplementedError

    def copy_similarity(self, record: Record, text: str, target: str) -> float:
        """How close the rewrite is to the reference (default: whole texts, prefill excluded)."""
        _, prefill = self.rewrite_messages(record)
        body = text[len(prefill):] if prefill and text.startswith(prefill) else text
        return similarity(body, record.response)

    def target_scope(self, record: Record, text: str) -> str:
        """The part of a rewrite that is searched for leaks and loops: the part that can reach the target
        (default: all of it; code and tools narrow it to the code block / the call, since their prose is dropped)."""
        return text

    def complete_part(self, record: Record, text: str) -> bool:
        """Whether a rewrite cut at max_new_tokens still holds its whole target (default: no). Code and tools
        targets are a closed code block / a complete JSON call; what the model rambles after it is dropped."""
        return False

    def shared_checks(self, record: Record, text: str, finished: bool) -> VerifyResult | None:
        """The checks every domain runs first; a rejection, or None when all pass."""
        if not text.strip():
            return VerifyResult(False, "empty")
        if not finished and not self.complete_part(record, text):
            return VerifyResult(False, "truncated")
        scope = self.target_scope(record, text)
        leak = find_leak(scope)
        if leak:
            return VerifyResult(False, "leak", details={"phrase": leak})
        why = degenerate_reason(scope)
        if why:
            return VerifyResult(False, "degenerate", details={"why": why})
        return None

    def is_copy(self, record: Record, text: str, target: str, ctx: VerifyContext) -> tuple[float, bool]:
        """(similarity to the reference, whether the accepted rewrite counts as a copy); default: similarity >=
        `ctx.copy_threshold`. Tools override it: a call must equal the reference's, so only its tokens can differ."""
        sim = self.copy_similarity(record, text, target)
        return sim, sim >= ctx.copy_threshold

    def _finish(self, record: Record, text: str, res: VerifyResult, ctx: VerifyContext) -> VerifyResult:
        if res.accepted:
            sim, copied = self.is_copy(record, text, res.target or "", ctx)
            res.details["similarity"] = round(sim, 4)
            res.copied = copied
            res.reason = "ok"
        return res

    def verify(self, record: Record, generated: str, finished: bool = True,
               ctx: VerifyContext | None = None) -> VerifyResult:
        """Verify one rewrite (prefill included in `generated`)."""
        return self.verify_many([record], [(generated, finished)], ctx)[0]

    def verify_many(self, records: Sequence[Record], generations: Sequence[Any],
                    ctx: VerifyContext | None = None) -> list[VerifyResult]:
        """Verify many rewrites. `generations[i]` is a (text, finished) pair, a str, or an object with `.text` and
        `.finished` (e.g. `generation.Generation` — then pass the prefill-joined text). Domains that execute
        code override this to run in parallel."""
        ctx = ctx or VerifyContext()
        out = []
        for rec, g in zip(records, generations, strict=True):
            text, finished = _as_text_finished(g)
            res = self.shared_checks(rec, text, finished) or self.check(rec, text, ctx)
            out.append(self._finish(rec, text, res, ctx))
        return out

    def __repr__(self) -> str:
        return f"<Domain {self.name}>"
