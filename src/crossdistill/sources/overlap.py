"""Train/eval contamination: word n-gram overlap and exact-duplicate prompts.

Text is lowercased and split into `\\w+` words (punctuation dropped). Every record contributes the set of hashes of
its word n-grams; an eval record is *contaminated* when one of its n-grams occurs in some train record, or when
its normalised prompt equals a train prompt (short prompts have no n-gram). Any shared 13-gram is a sensitive
test: formulaic text (MATH's Asymptote preambles, common code idioms) trips it on honestly disjoint splits, so
the report also counts *strong* contamination: an exact prompt duplicate, or at least half of the record's
n-grams found in train. Hashes live in sorted numpy arrays, so 10k x 10k records take about a second.

Templates are not content: a record's own prompt template (the MBPP instruction around the task text, the
lettered options of a multiple-choice prompt, the tool-schema system message) is left out by using the raw
question kept in `meta` where a built-in stored one. As a safety net for templates in user data, n-grams that
occur in more than `common_frac` of the train records (or of the eval records), and in more than `common_min`
records, are ignored and counted in `ignored_common_ngrams`.
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from ..records import Record

_WORD = re.compile(r"\w+")
_BASE = np.uint64(0x9E3779B97F4A7C15)   # odd 64-bit multiplier for the polynomial n-gram hash


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _prompt_content(r: Record) -> str:
    """The prompt's content without the template this package wraps around it."""
    m = r.meta or {}
    for key in ("question", "text", "code_prompt"):
        if isinstance(m.get(key), str) and m[key].strip():
            return m[key]
    if isinstance(r.prompt, list):
        return "\n".join(msg.get("content", "") for msg in r.prompt if msg.get("role") != "system")
    return r.prompt


def record_words(r: Record, include_response: bool = True) -> tuple[list[str], list[str]]:
    """(key words, all words): the prompt content (with the options of a multiple-choice item) is the key for
    exact-duplicate checks; all words add the response."""
    key = words(_prompt_content(r))
    if r.choices:
        key += words("\n".join(str(c) for c in r.choices))
    if include_response and r.response:
        return key, key + words(r.response)
    return key, key


def _horner(x: np.ndarray, n: int) -> np.ndarray:
    """Polynomial hash of every length-n window of the uint64 sequence x (wrapping arithmetic)."""
    m = len(x) - n + 1
    if m <= 0:
        return np.empty(0, dtype=np.uint64)
    with np.errstate(over="ignore"):
        h = x[:m].copy()
        for k in range(1, n):
            h *= _BASE
            h += x[k:k + m]
    return h


def _word_hashes(ws) -> np.ndarray:
    ws = list(ws)
    return np.fromiter(map(hash, ws), dtype=np.int64, count=len(ws)).view(np.uint64)


def _ngram_hashes(ws: list[str], n: int) -> np.ndarray:
    """Hashes of a text's word n-grams, in position order."""
    return _horner(_word_hashes(ws), n)


def _batch_ngrams(texts: list[list[str]], n: int) -> tuple[np.ndarray, np.ndarray]:
    """(hashes, doc index) of the n-grams of many texts at once: each (doc, hash) pair once, sorted by hash
    (then doc)."""
    lens = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    total = int(lens.sum())
    if total < n:
        return np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.int64)
    h = _horner(_word_hashes(w for t in texts for w in t), n)
    starts = np.cumsum(lens) - lens
    doc = np.repeat(np.arange(len(texts), dtype=np.int64), lens)[: len(h)]
    ok = (np.arange(len(h)) - starts[doc]) <= lens[doc] - n        # window inside its own text
    h, doc = h[ok], doc[ok]
    order = np.argsort(h, kind="stable")                            # stable: docs stay ascending within a hash
    h, doc = h[order], doc[order]
    keep = np.ones(len(h), dtype=bool)
    keep[1:] = (h[1:] != h[:-1]) | (doc[1:] != doc[:-1])
    return h[keep], doc[keep]


def _lookup(sorted_hashes: np.ndarray, hs: np.ndarray) -> np.ndarray:
    """Boolean mask: which of hs occur in sorted_hashes."""
    if not len(sorted_hashes) or not len(hs):
        return np.zeros(len(hs), dtype=bool)
    pos = np.searchsorted(sorted_hashes, hs)
    pos[pos >= len(sorted_hashes)] = 0
    return sorted_hashes[pos] == hs


class NgramIndex:
    """The n-grams of a set of (train) records: sorted unique hashes, their document frequency, a document
    holding each, and the normalised prompts for exact-duplicate checks."""

    def __init__(self, records: Sequence[Record], n: int = 13, include_response: bool = True):
        self.n, self.include_response = n, include_response
        self.ids = [r.id for r in records]
        self.prompts: dict[str, int] = {}
        texts = []
        for i, r in enumerate(records):
            pw, ws = record_words(r, include_response)
            texts.append(ws)
            if pw:
                self.prompts.setdefault(" ".join(pw), i)
        allh, doc = _batch_ngrams(texts, n)              # sorted by hash: runs of equal hashes = documents
        start = np.flatnonzero(np.r_[True, allh[1:] != allh[:-1]]) if len(allh) else np.empty(0, dtype=np.int64)
        self.hashes = allh[start]
        self.df = np.diff(np.r_[start, len(allh)])
        self.first_doc = doc[start]

    def __len__(self) -> int:
        return len(self.ids)

    def report(self, eval_records: Sequence[Record], examples: int = 5, common_frac: float = 0.05,
               common_min: int = 3, strong_coverage: float = 0.5) -> dict:
        n, m = self.n, len(eval_records)
        both = [record_words(r, self.include_response) for r in eval_records]
        eh, ed = _batch_ngrams([ws for _, ws in both], n)
        # n-grams too common to be evidence (templates): by train and by eval document frequency
        bad = self.hashes[self.df > max(common_min, common_frac * len(self))]
        if len(eh):
            u, edf = np.unique(eh, return_counts=True)
            bad = np.union1d(bad, u[edf > max(common_min, common_frac * m)])
        valid = self.hashes[~_lookup(bad, self.hashes)] if len(bad) else self.hashes
        ignored = int(_lookup(self.hashes, bad).sum())
        found = _lookup(valid, eh)
        total = np.bincount(ed, minlength=m)
        hits = np.bincount(ed[found], minlength=m)
        coverage = np.divide(hits, total, out=np.zeros(m), where=total > 0)

        contaminated = exact = strong = 0
        shown: list[dict] = []
        for i, (r, (pw, ws)) in enumerate(zip(eval_records, both)):
            key = " ".join(pw)
            dup = self.prompts.get(key) if key else None
            if dup is None and hits[i] == 0:
                continue
            contaminated += 1
            exact += dup is not None
            strong += bool(dup is not None or coverage[i] >= strong_coverage)  # a numpy bool would make it np.int64
            if len(shown) < examples:
                if dup is not None:
                    ex = {"train_id": self.ids[dup], "ngram": " ".join(pw[:n]), "kind": "exact_prompt"}
                else:
                    ex = {**self._example(ws, valid), "kind": "ngram"}
                shown.append({"eval_id": r.id, **ex, "coverage": round(float(coverage[i]), 3)})
        return {"n": n, "train_records": len(self), "eval_records": m, "contaminated": contaminated,
                "fraction": (contaminated / m) if m else 0.0, "exact_duplicates": exact,
                "strong": strong, "strong_fraction": (strong / m) if m else 0.0, "strong_coverage": strong_coverage,
                "ignored_common_ngrams": ignored, "examples": shown}

    def _example(self, ws: list[str], valid: np.ndarray) -> dict:
        """The first shared n-gram of an eval text (position order) and a train record that holds it."""
        hs = _ngram_hashes(ws, self.n)
        i = int(np.flatnonzero(_lookup(valid, hs))[0])
        j = int(np.searchsorted(self.hashes, hs[i]))
        return {"train_id": self.ids[int(self.first_doc[j])], "ngram": " ".join(ws[i:i + self.n])}


def overlap_report(train: Sequence[Record], eval: Sequence[Record], n: int = 13, examples: int = 5, *,
                   include_response: bool = True, common_frac: float = 0.05, common_min: int = 3,
                   strong_coverage: float = 0.5) -> dict:
    """Contamination of `eval` by `train`.

    Returns {"n", "train_records", "eval_records", "contaminated", "fraction", "exact_duplicates", "strong",
    "strong_fraction", "strong_coverage", "ignored_common_ngrams", "examples": [{"eval_id", "train_id", "ngram",
    "kind", "coverage"}]}. `contaminated` counts eval records sharing any n-gram (or their exact prompt) with train;
    `strong` those whose prompt is a duplicate or of whose n-grams at least `strong_coverage` occur in train
    (`coverage` in the examples). See the module docstring for what is ignored.
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    return NgramIndex(train, n, include_response).report(eval, examples, common_frac, common_min, strong_coverage)
