"""Function calling (Glaive-style records: a conversation, the functions offered, and the expected call).

Rewrite prompt: the functions offered, the conversation, and the expected call as a list of argument values (not
its JSON text, which a seed copies token for token); the seed is asked to reply with only the call as one JSON
object ``{"name": ..., "arguments": {...}}``. The assistant turn is pre-filled with ``{"name": "<expected name>",
"arguments": {"<first argument>": `` so the reply is the call's values.

Verification (after the shared checks of `base`; leaks and loops are searched in the call only, and a reply cut at
max_new_tokens is fine once it holds a complete call):

* ``no_call``          – no call can be parsed (`parse_call`);
* ``wrong_name``       – a different function;
* ``wrong_arguments``  – a different set of argument names;
* ``wrong_value``      – an argument value differs (`values_equal`: numbers numerically, also against numeric
  strings; strings after whitespace collapsing and case folding; booleans, also against "true"/"false"; lists
  element-wise in any order; dicts key by key, recursively).

Target: the rewrite's own call text (when it is a JSON object with exactly "name" and "arguments"; else the parsed
call as canonical ``json.dumps``) put where the call stands in the reference response. The call must equal the
reference's structurally, so what self-distillation can change is its token sequence (spacing, argument order,
number and string spelling): an accepted call counts as ``copied`` only when its text equals the reference's.
"""
from __future__ import annotations

import ast
import json
from typing import Any

from ..records import Record
from .base import Domain, VerifyContext, VerifyResult, similarity

SYSTEM = (
    "You are an assistant that calls functions. You will see the functions available, a conversation, and the "
    "function and argument values that correctly serve the user's last request. Reply with only that call, "
    "written as one JSON object of the form {\"name\": <function name>, \"arguments\": {<argument>: <value>, "
    "...}}. Write nothing else."
)
PREFILL = '{"name": "'


def _normalize_call(obj: Any) -> dict | None:
    """{"name", "arguments"} from the shapes models write, or None when `obj` is not a call."""
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("tool_calls"), list) and obj["tool_calls"]:
        return _normalize_call(obj["tool_calls"][0])
    if isinstance(obj.get("function"), dict):             # OpenAI: {"type": "function", "function": {...}}
        return _normalize_call(obj["function"])
    name = obj.get("name")
    if not isinstance(name, str):
        name = obj.get("function") if isinstance(obj.get("function"), str) else None
    if not name:
        return None
    args: Any = None
    for key in ("arguments", "parameters", "args", "params"):
        if key in obj:
            args = obj[key]
            break
    if args is None:
        args = {}
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError:
            return None
    if not isinstance(args, dict):
        return None
    return {"name": name.strip(), "arguments": args}


def _balanced_end(text: str, start: int) -> int | None:
    """Index after the `}` that closes the `{` at `start` (strings respected), or None."""
    depth, i, quote = 0, start, None
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                quote = None
        elif c in "\"'":
            quote = c
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


def find_call(text: str) -> tuple[dict, int, int] | None:
    """(call, start, end) of the first function call written in `text` as a JSON object (also a Python dict literal
    with single quotes, or a call inside ``` fences), or None."""
    if not text:
        return None
    decoder = json.JSONDecoder()
    pos = 0
    while (start := text.find("{", pos)) >= 0:
        obj, end = None, None
        try:
            obj, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            e = _balanced_end(text, start)
            if e is not None:
                try:
                    obj = ast.literal_eval(text[start:e])
                    json.dumps(obj)   # a call's arguments are JSON values: a Python set, bytes, ... is no call
                    end = e
                except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
                    obj = None
        call = _normalize_call(obj)
        if call is not None and end is not None:
            return call, start, end
        pos = start + 1
    return None


def parse_call(text: str) -> dict | None:
    """The first function call in `text` as {"name": str, "arguments": dict}, or None.

    Accepts {"name": .., "arguments": {..}}, {"function": .., "parameters": ..}, OpenAI's
    {"function": {"name", "arguments"}} and {"tool_calls": [...]}; arguments may be a JSON string.
    """
    found = find_call(text)
    return found[0] if found else None


def _norm_str(s: str) -> str:
    return " ".join(s.split()).casefold()


def _as_number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v.strip().replace(",", ""))
        except ValueError:
            return None
    return None


def values_equal(a: Any, b: Any) -> bool:
    """Structural equality of two argument values (see the module docstring)."""
    if isinstance(a, bool) or isinstance(b, bool):
        ta = a if isinstance(a, bool) else {"true": True, "false": False}.get(_norm_str(a)) if isinstance(a, str) else None
        tb = b if isinstance(b, bool) else {"true": True, "false": False}.get(_norm_str(b)) if isinstance(b, str) else None
        return ta is not None and ta == tb
    if isinstance(a, (int, float)) or isinstance(b, (int, float)):
        na, nb = _as_number(a), _as_number(b)
        return na is not None and nb is not None and abs(na - nb) <= 1e-9 * max(1.0, abs(na), abs(nb))
    if isinstance(a, str) and isinstance(b, str):
        return _norm_str(a) == _norm_str(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return set(a) == set(b) and all(values_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return False
        if all(values_equal(x, y) for x, y in zip(a, b)):
            return True
        left = list(b)
        for x in a:
            j = next((j for j, y in enumerate(left) if values_equal(x, y)), None)
            if j is None:
                return False
            left.pop(j)
        return True
    return a == b


def compare_calls(pred: dict | None, gold: dict) -> str:
    """"ok", or the reason the predicted call differs from the gold one."""
    if pred is None:
        return "no_call"
    if _norm_str(pred["name"]) != _norm_str(str(gold.get("name", ""))):
        return "wrong_name"
    gargs = gold.get("arguments") or {}
    if isinstance(gargs, str):
        gargs = json.loads(gargs) if gargs.strip() else {}
    if set(pred["arguments"]) != set(gargs):
        return "wrong_arguments"
    if not all(values_equal(pred["arguments"][k], gargs[k]) for k in gargs):
        return "wrong_value"
    return "ok"


def _conversation(record: Record) -> str:
    if isinstance(record.prompt, str):
        return f"User: {record.prompt}"
    label = {"user": "User", "assistant": "Assistant", "tool": "Function result", "system": "System"}
    msgs = [m for m in record.prompt if not (record.tools and m.get("role") == "system")]
    return "\n\n".join(f"{label.get(m.get('role'), m.get('role', '').title())}: {m.get('content', '')}" for m in msgs)


def call_prefill(record: Record) -> str:
    """The assistant prefill: the call up to its first argument's value (`PREFILL` + the expected name + the first
    argument's name), so the seed writes the values and the rest of the call itself; shown only the values, SmolLM2
    otherwise copied the functions' JSON schema into "arguments" (measured: 3 of 4 demo records)."""
    call = record.expected_call or parse_call(record.response or "") or {}
    name = call.get("name")
    if not isinstance(name, str) or not name:
        return PREFILL
    out = PREFILL + json.dumps(name, ensure_ascii=False)[1:] + ', "arguments": {'
    args = call.get("arguments")
    if isinstance(args, dict) and args:   # the first argument's name too: else a small seed writes out the schema
        out += json.dumps(str(next(iter(args))), ensure_ascii=False) + ": "
    return out


def _call_as_list(record: Record) -> str:
    """The expected call as a list of argument values, not as JSON: shown the reference's JSON text, a seed copies it
    token for token (0 of 11 demo rewrites differed); shown the values, it writes the call in its own tokens."""
    call = record.expected_call or parse_call(record.response or "") or {}
    args = call.get("arguments") or {}
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError:
            args = {"arguments": args}
    lines = [f"Function to call: {call.get('name', '')}"]
    if isinstance(args, dict) and args:
        lines.append("Arguments:")
        lines += [f"- {k} = {json.dumps(v, ensure_ascii=False)}" for k, v in args.items()]
    else:
        lines.append("Arguments: none")
    return "\n".join(lines)


class ToolsDomain(Domain):
    name = "tools"
    required = ("response", "expected_call")
    task_types = ("tool_call",)
    teacher_template = ("{prompt}\n\nHere is an example of the right response (tool call or answer):\n{demonstration}\n\n"
                        "Now give your own response, in the same format.")
    # the call is the whole reply: a blank line or a new conversation turn after it is where a seed starts to ramble
    stop = ("\n\n", "\nUser:")

    def rewrite_messages(self, record: Record) -> tuple[list[dict], str]:
        parts = []
        if record.tools:
            parts.append("Available functions:\n" + json.dumps(record.tools, indent=2, ensure_ascii=False))
        parts.append("Conversation:\n" + _conversation(record))
        parts.append(_call_as_list(record))
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}], \
            call_prefill(record)

    def target_scope(self, record: Record, text: str) -> str:
        found = find_call(text)
        return text[found[1]:found[2]] if found else text

    def complete_part(self, record: Record, text: str) -> bool:
        return find_call(text) is not None

    @staticmethod
    def make_target(record: Record, call_text: str) -> str:
        """The rewrite's own call text, put where the call stands in the reference response."""
        ref = record.response or ""
        found = find_call(ref)
        if found is None:
            return call_text
        return ref[:found[1]] + call_text + ref[found[2]:]

    def copy_similarity(self, record: Record, text: str, target: str) -> float:
        return similarity(target, record.response or "")

    def is_copy(self, record: Record, text: str, target: str, ctx: VerifyContext) -> tuple[float, bool]:
        """A verified call equals the reference's structurally; it is self-distilled when its text (so its token
        sequence) differs from the reference's, a copy when it is the same text."""
        return self.copy_similarity(record, text, target), target.strip() == (record.response or "").strip()

    def check(self, record: Record, text: str, ctx: VerifyContext) -> VerifyResult:
        found = find_call(text)
        call = found[0] if found else None
        reason = compare_calls(call, record.expected_call or {})
        details = {"call": call}
        if reason != "ok":
            return VerifyResult(False, reason, details=details)
        own = text[found[1]:found[2]]
        try:
            as_json = json.loads(own)
        except json.JSONDecodeError:
            as_json = None
        if not (isinstance(as_json, dict) and set(as_json) == {"name", "arguments"}):
            # a Python literal or another call shape: the canonical JSON, never a form the reference does not use
            own = json.dumps({"name": call["name"], "arguments": call["arguments"]}, ensure_ascii=False)
        return VerifyResult(True, "ok", target=self.make_target(record, own), details=details)
