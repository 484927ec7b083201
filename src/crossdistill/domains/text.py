"""Free-text instructions (Alpaca / Dolly / LIMA style).

Rewrite prompt: the instruction, then a reference answer; the seed is asked to answer the instruction itself, in its
own style, about as long as the reference, without mentioning it. No prefill.

Verification (after the shared checks of `base`), first failure wins:

* ``too_short`` / ``too_long`` – the word count must lie in [0.3 x ref, max(3 x ref, 60)], where ref is the
  reference's word count: a ratio band whose upper end never falls below 60 words, so a one-sentence answer to a
  one-word reference passes and a short reference does not forbid a normal paragraph. (The lower end needs no
  absolute relaxation: for a reference under 17 words it is already under 5 words; capping it at 5 words would let
  a one-line answer stand in for a 300-word essay.)
* ``copies_prompt`` – the rewrite is the prompt echoed back: similarity to the prompt >= 0.8 (`base.similarity`),
  unless the reference itself is that close to the prompt (>= 0.7); or the whole rewrite (3+ words) is a verbatim
  piece of the prompt while the reference is not — "Rewrite in active voice: The ball will be hit by the
  batsman." answered with the input sentence unchanged;
* ``refusal``       – the rewrite refuses (`is_refusal`) while the reference does not.

Target: the rewrite, stripped of surrounding whitespace.
"""
from __future__ import annotations

import re

from ..records import Record
from .base import Domain, VerifyContext, VerifyResult, similarity, task_text

SYSTEM = (
    "You are a helpful assistant. You will see an instruction and, after it, a reference answer written by "
    "someone else. Write your own answer to the instruction: cover what matters in the reference, keep to about "
    "the same length, and answer directly. Do not mention or quote the reference."
)

MIN_RATIO, MAX_RATIO = 0.3, 3.0
MAX_FLOOR_WORDS = 60       # the upper bound is never below this
PROMPT_COPY_SIMILARITY = 0.8

REFUSAL_PATTERNS = (
    r"\bI(?:'m| am) (?:sorry|afraid),? (?:but )?I (?:can(?:no|')t|cannot|am unable to|won't)\b",
    r"\bI (?:can(?:no|')t|cannot|won't|am unable to|am not able to) (?:help|assist|provide|comply|do that|fulfil)",
    r"\bas an AI(?: language model)?,? I (?:can(?:no|')t|cannot|am unable|don't|do not)\b",
    r"\bI(?:'m| am) not able to (?:help|assist|provide)\b",
)
_REFUSAL_RE = [re.compile(p, re.IGNORECASE) for p in REFUSAL_PATTERNS]


def is_refusal(text: str) -> bool:
    """Whether the first 300 characters of `text` refuse the request."""
    head = (text or "")[:300]
    return any(rx.search(head) for rx in _REFUSAL_RE)


def _is_piece_of(text: str, container: str, min_words: int = 3) -> bool:
    """Whether `text` (3+ words) occurs verbatim in `container`, ignoring case, punctuation and spacing."""
    words = re.findall(r"\w+", text.lower())
    if len(words) < min_words:
        return False
    haystack = " ".join(re.findall(r"\w+", container.lower()))
    return f" {' '.join(words)} " in f" {haystack} "


def length_bounds(reference: str) -> tuple[float, float]:
    ref = len((reference or "").split())
    return MIN_RATIO * ref, max(MAX_RATIO * ref, MAX_FLOOR_WORDS)


class TextDomain(Domain):
    name = "text"
    required = ("response",)
    task_types = ("gold_nll", "seed_kl")

    def rewrite_messages(self, record: Record) -> tuple[list[dict], str]:
        user = f"Instruction:\n{task_text(record).strip()}\n\nReference answer:\n{(record.response or '').strip()}"
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}], ""

    def check(self, record: Record, text: str, ctx: VerifyContext) -> VerifyResult:
        n = len(text.split())
        lo, hi = length_bounds(record.response)
        details: dict = {"words": n, "bounds": [round(lo, 1), round(hi, 1)]}
        if n < lo:
            return VerifyResult(False, "too_short", details=details)
        if n > hi:
            return VerifyResult(False, "too_long", details=details)
        prompt = task_text(record)
        sim_prompt = similarity(text, prompt)
        details["prompt_similarity"] = round(sim_prompt, 4)
        if sim_prompt >= PROMPT_COPY_SIMILARITY and similarity(record.response or "", prompt) < 0.7:
            return VerifyResult(False, "copies_prompt", details=details)
        if _is_piece_of(text, prompt) and not _is_piece_of(record.response or "", prompt):
            details["echoes_prompt_input"] = True
            return VerifyResult(False, "copies_prompt", details=details)
        if is_refusal(text) and not is_refusal(record.response or ""):
            return VerifyResult(False, "refusal", details=details)
        return VerifyResult(True, "ok", target=text.strip(), details=details)
