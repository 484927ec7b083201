"""The `tool_call` checker: the Berkeley Function-Calling Leaderboard's AST-checker convention.

A gold answer is BFCL's `ground_truth`: a list of calls, each ``{function name: {argument: [acceptable values]}}``.
An argument whose list holds "" is optional. A predicted set of calls is correct when (BFCL `simple` / `multiple` /
`parallel` categories):

* there are as many calls as gold calls, and they can be paired one to one (any order) such that, per pair,
* the function names match (``.`` and ``_`` are the same, as BFCL normalises dotted names),
* every argument the function's schema marks `required` is given,
* no argument is given that the gold call does not list,
* every given value equals one of the acceptable values (`domains.tools.values_equal`: numbers numerically, strings
  after whitespace collapsing and case folding, lists and dicts structurally),
* every gold argument left out is optional.

The first failing check is the item's `reason` (no_call, wrong_count, wrong_name, missing_required,
unexpected_argument, wrong_value, missing_argument). A Glaive record's single expected call becomes a ground truth
with one acceptable value per argument and no optional ones (`ground_truth_of`).
"""
from __future__ import annotations

import json
from typing import Any

from ..domains.tools import _normalize_call, find_call, values_equal


def ground_truth_of(expected_call: dict) -> list[dict]:
    """A Glaive-style {"name", "arguments"} as a BFCL ground truth (one acceptable value per argument)."""
    args = expected_call.get("arguments") or {}
    if isinstance(args, str):
        args = json.loads(args) if args.strip() else {}
    return [{expected_call["name"]: {k: [v] for k, v in args.items()}}]


def parse_calls(text: str) -> list[dict]:
    """Every call in `text`, in order: JSON objects one after another, or a JSON list of them."""
    text = text or ""
    stripped = text.strip().strip("`").removeprefix("json").strip()
    if stripped.startswith("["):
        try:
            items = json.loads(stripped)
        except json.JSONDecodeError:
            items = None
        if isinstance(items, list):
            calls = [_normalize_call(x) for x in items]
            if calls and all(c is not None for c in calls):
                return calls
    out = []
    pos = 0
    while pos < len(text):
        found = find_call(text[pos:])
        if not found:
            break
        call, _, end = found
        out.append(call)
        pos += max(end, 1)
    return out


def _name(s: str) -> str:
    return str(s).replace(".", "_").strip().casefold()


def _check_one(pred: dict, gold: dict, schema: dict | None) -> str:
    (gname, gargs), = gold.items()
    if _name(pred["name"]) != _name(gname):
        return "wrong_name"
    args = pred.get("arguments") or {}
    required = ((schema or {}).get("parameters") or {}).get("required") or []
    if any(r not in args for r in required):
        return "missing_required"
    if any(k not in gargs for k in args):
        return "unexpected_argument"
    for k, v in args.items():
        if not any(values_equal(v, ok) for ok in gargs[k] if ok != ""):
            return "wrong_value"
    if any(k not in args and "" not in acceptable for k, acceptable in gargs.items()):
        return "missing_argument"
    return "ok"


def check_calls(pred: list[dict], ground_truth: list[dict], functions: list[dict] | None = None) -> str:
    """"ok" or the reason `pred` fails the ground truth (module docstring)."""
    if not pred:
        return "no_call"
    if len(pred) != len(ground_truth):
        return "wrong_count"
    schemas = {_name(f.get("name", "")): f for f in functions or [] if isinstance(f, dict)}
    first_reason = None

    def match(i: int, left: list[int]) -> bool:   # pair pred[i:] with the gold calls left (backtracking)
        nonlocal first_reason
        if i == len(pred):
            return True
        for j in left:
            (gname, _), = ground_truth[j].items()
            r = _check_one(pred[i], ground_truth[j], schemas.get(_name(gname)))
            if r == "ok":
                if match(i + 1, [x for x in left if x != j]):
                    return True
            elif first_reason is None:
                first_reason = r
        return False

    return "ok" if match(0, list(range(len(ground_truth)))) else (first_reason or "wrong_name")


def valid_ground_truth(gt: Any) -> bool:
    return (isinstance(gt, list) and bool(gt) and all(
        isinstance(c, dict) and len(c) == 1 and all(
            isinstance(a, dict) and all(isinstance(v, list) for v in a.values()) for a in c.values())
        for c in gt))
