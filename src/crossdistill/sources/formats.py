"""Raw dataset formats -> Record, detected by their keys.

| format     | keys                                                    | domain | notes |
|------------|---------------------------------------------------------|--------|-------|
| gsm8k      | question, answer ("... #### N")                         | math   | answer = N (commas dropped); `<<calc>>` removed |
| math       | problem, solution (\\boxed{...})                         | math   | answer = the last \\boxed{} of the solution |
| mbpp       | text | prompt, code, test_list (task_id, test_setup_code, test_imports) | code | entry_point from the first test |
| humaneval  | task_id, prompt, canonical_solution, test, entry_point  | code   | tests = [test + check(entry_point)] |
| alpaca     | instruction, output (input)                             | text   | prompt = instruction + input |
| glaive     | conversations [{from, value}], tools (JSON string/list) | tools  | one record per conversation with a function_call |
| record     | the Record schema (id, domain, prompt, ...)             | any    | validated by `records.record_from_dict` |

A line that does not fit the format its file was detected as raises UserError naming file, line and field.
"""
from __future__ import annotations

import builtins
import json
import re
from typing import Any, Callable

from ..errors import UserError
from ..records import Record

# ---- small checked accessors ---------------------------------------------------------------------


class Where:
    """Where a raw object came from, for error messages."""

    def __init__(self, file: str, line: int | None):
        self.file, self.line = file, line

    def err(self, message: str, field: str | None = None) -> UserError:
        return UserError(message, file=self.file, line=self.line, field=field)


def need_str(obj: dict, key: str, w: Where, *, allow_empty: bool = False) -> str:
    if key not in obj or obj[key] is None:
        raise w.err("required field is missing", key)
    v = obj[key]
    if not isinstance(v, str):
        raise w.err(f"expected str, got {type(v).__name__}", key)
    if not allow_empty and not v.strip():
        raise w.err("must not be empty", key)
    return v


def need_list(obj: dict, key: str, w: Where, *, of: type | None = str, allow_empty: bool = False) -> list:
    if key not in obj or obj[key] is None:
        raise w.err("required field is missing", key)
    v = obj[key]
    if not isinstance(v, list):
        raise w.err(f"expected list, got {type(v).__name__}", key)
    if not allow_empty and not v:
        raise w.err("must not be empty", key)
    if of is not None:
        for i, x in enumerate(v):
            if not isinstance(x, of):
                raise w.err(f"expected {of.__name__}, got {type(x).__name__}", f"{key}[{i}]")
    return v


# ---- text helpers --------------------------------------------------------------------------------

_CALC = re.compile(r"<<[^<>]*>>")


def strip_calc(text: str) -> str:
    """Remove GSM8K calculator annotations: '= <<16-3-4=9>>9' -> '= 9'."""
    return _CALC.sub("", text)


def last_boxed(text: str) -> str | None:
    r"""Content of the last \boxed{...} (or \fbox{...}, or '\boxed 5') in a MATH solution, braces balanced."""
    idx = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if idx < 0:
        return None
    i = idx + (len("\\boxed") if text.startswith("\\boxed", idx) else len("\\fbox"))
    if i < len(text) and text[i] == " ":          # '\boxed 5'
        m = re.match(r" ([^\s$]+)", text[i:])
        return m.group(1) if m else None
    if i >= len(text) or text[i] != "{":
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1:j]
    return None


def normalize_code(code: str) -> str:
    return code.replace("\r\n", "\n").replace("\r", "\n").rstrip() + "\n"


_BUILTIN_NAMES = set(dir(builtins)) | {"math", "assert", "abs", "round", "isclose"}


def entry_point_from_tests(tests: list[str], code: str | None = None) -> str | None:
    """The function under test: the first name called in the first test that `code` defines (else not a builtin)."""
    if not tests:
        return None
    called = re.findall(r"\b([A-Za-z_]\w*)\s*\(", tests[0])
    if code:
        defined = set(re.findall(r"^\s*def\s+([A-Za-z_]\w*)\s*\(", code, flags=re.M))
        defined |= set(re.findall(r"^\s*class\s+([A-Za-z_]\w*)", code, flags=re.M))
        for name in called:
            if name in defined:
                return name
    for name in called:
        if name not in _BUILTIN_NAMES:
            return name
    return called[0] if called else None


def mbpp_prompt(text: str, tests: list[str]) -> str:
    """The standard MBPP prompt (Austin et al. 2021; lm-eval-harness): task text plus the asserts to satisfy."""
    return (f"You are an expert Python programmer, and here is your task: {text.strip()} "
            f"Your code should pass these tests:\n\n" + "\n".join(t.strip() for t in tests))


LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def choice_prompt(question: str, choices: list[str], instruction: str | None = None) -> str:
    """A self-contained multiple-choice prompt: question, lettered options, and how to answer."""
    opts = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))
    tail = instruction or "Answer with the letter of the correct option."
    return f"{question.strip()}\n\n{opts}\n\n{tail}"


def choice_record(rid: str, source: str, question: str, choices: list[str], gold: int, **meta) -> Record:
    return Record(id=rid, domain="choice", source=source, prompt=choice_prompt(question, choices),
                  response=LETTERS[gold], choices=list(choices), gold=int(gold),
                  meta={"question": question, **{k: v for k, v in meta.items() if v is not None}})


TOOLS_SYSTEM = ("You are a helpful assistant with access to the following functions. Use them if required. "
                "To call a function, reply with only a JSON object of the form "
                "{\"name\": <function name>, \"arguments\": {<argument name>: <value>, ...}}.\n\n")


def tools_system_message(tools: list[dict]) -> str:
    return TOOLS_SYSTEM + json.dumps(tools, indent=2, ensure_ascii=False)


# ---- converters ----------------------------------------------------------------------------------
# Each takes (obj, key, source, w) and returns a Record, or None when the object holds no usable example
# (only glaive: a conversation without a function call). `key` is the record's position in its file.

def conv_gsm8k(obj: dict, key: Any, source: str, w: Where) -> Record:
    q = need_str(obj, "question", w)
    a = need_str(obj, "answer", w)
    if "####" not in a:
        raise w.err("a GSM8K answer must end with '#### <number>'", "answer")
    final = a.rsplit("####", 1)[1].strip().replace(",", "").rstrip(".")
    if not final:
        raise w.err("nothing after '####'", "answer")
    meta = {}
    if "short_answer" in obj:
        meta["short_answer"] = obj["short_answer"]
    return Record(id=f"{source}/{key}", domain="math", source=source, prompt=q.strip(),
                  response=strip_calc(a).strip(), answer=final, meta=meta)


def conv_math(obj: dict, key: Any, source: str, w: Where) -> Record:
    p = need_str(obj, "problem", w)
    s = need_str(obj, "solution", w)
    ans = last_boxed(s)
    if ans is None:
        raise w.err("the solution has no \\boxed{...} final answer", "solution")
    meta = {}
    subj = obj.get("subject") or obj.get("type")
    if subj:
        meta["subject"] = subj
    level = obj.get("level")
    if level is not None:
        m = re.search(r"\d+", str(level))
        meta["level"] = int(m.group()) if m else level
    return Record(id=f"{source}/{key}", domain="math", source=source, prompt=p.strip(), response=s.strip(),
                  answer=ans.strip(), meta=meta)


def conv_mbpp(obj: dict, key: Any, source: str, w: Where) -> Record:
    text = need_str(obj, "text" if "text" in obj else "prompt", w)
    code = need_str(obj, "code", w)
    tests = need_list(obj, "test_list", w)
    setup_parts = []
    if obj.get("test_imports"):
        setup_parts.append("\n".join(need_list(obj, "test_imports", w)))
    if obj.get("test_setup_code"):
        setup_parts.append(need_str(obj, "test_setup_code", w))
    setup = normalize_code("\n".join(setup_parts)) if setup_parts else None
    code = normalize_code(code)
    tid = obj.get("task_id", key)
    meta: dict = {"task_id": tid}
    if obj.get("challenge_test_list"):
        meta["challenge_test_list"] = obj["challenge_test_list"]
    return Record(id=f"{source}/{tid}", domain="code", source=source, prompt=mbpp_prompt(text, tests),
                  response=code, tests=[t.strip() for t in tests], test_setup=setup,
                  entry_point=entry_point_from_tests(tests, code), meta={**meta, "text": text.strip()})


def conv_humaneval(obj: dict, key: Any, source: str, w: Where) -> Record:
    tid = need_str(obj, "task_id", w)
    raw = need_str(obj, "prompt", w)
    sol = need_str(obj, "canonical_solution", w)
    test = need_str(obj, "test", w)
    ep = need_str(obj, "entry_point", w)
    prompt = ("Complete the following Python function. Reply with the complete function in a ```python code "
              f"block.\n\n```python\n{raw.rstrip()}\n```")
    return Record(id=f"{source}/{tid.replace('/', '-')}", domain="code", source=source, prompt=prompt,
                  response=sol, tests=[test + f"\ncheck({ep})\n"], entry_point=ep,
                  meta={"task_id": tid, "code_prompt": raw})


def conv_alpaca(obj: dict, key: Any, source: str, w: Where) -> Record:
    ins = need_str(obj, "instruction", w)
    out = need_str(obj, "output", w)
    inp = obj.get("input") or ""
    if not isinstance(inp, str):
        raise w.err(f"expected str, got {type(inp).__name__}", "input")
    prompt = ins.strip() + (f"\n\n{inp.strip()}" if inp.strip() else "")
    return Record(id=f"{source}/{key}", domain="text", source=source, prompt=prompt, response=out.strip(),
                  meta={"has_input": bool(inp.strip())})


_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def _parse_call(value: str, w: Where, field: str) -> dict:
    try:
        call = json.loads(value)
    except json.JSONDecodeError as e:
        raise w.err(f"function_call is not valid JSON ({e.msg})", field) from None
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        raise w.err("function_call must be a JSON object with a string 'name'", field)
    args = call.get("arguments", {})
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as e:
            raise w.err(f"function_call arguments are a string but not valid JSON ({e.msg})", field) from None
    if not isinstance(args, dict):
        raise w.err(f"function_call arguments must be an object, got {type(args).__name__}", field)
    return {"name": call["name"], "arguments": args}


def conv_glaive(obj: dict, key: Any, source: str, w: Where) -> Record | None:
    conv = need_list(obj, "conversations", w, of=dict)
    tools = obj.get("tools", [])
    if isinstance(tools, str):
        try:
            tools = json.loads(tools) if tools.strip() else []
        except json.JSONDecodeError as e:
            raise w.err(f"not a valid JSON string ({e.msg})", "tools") from None
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise w.err("expected a list of function schemas (or its JSON string)", "tools")
    msgs: list[dict] = []
    if obj.get("system"):
        msgs.append({"role": "system", "content": str(obj["system"])})
    for i, turn in enumerate(conv):
        frm, val = turn.get("from"), turn.get("value")
        if not isinstance(frm, str):
            raise w.err("each turn needs a string 'from'", f"conversations[{i}].from")
        if not isinstance(val, str):
            raise w.err("each turn needs a string 'value'", f"conversations[{i}].value")
        if frm == "function_call":
            if not tools:
                raise w.err("a conversation with a function_call needs its tools", "tools")
            if not any(m["role"] == "user" for m in msgs):
                raise w.err("the function_call has no user turn before it", f"conversations[{i}]")
            call = _parse_call(val, w, f"conversations[{i}].value")
            sys_text = tools_system_message(tools)
            if msgs and msgs[0]["role"] == "system":
                msgs[0] = {"role": "system", "content": msgs[0]["content"].rstrip() + "\n\n" + sys_text}
            else:
                msgs.insert(0, {"role": "system", "content": sys_text})
            return Record(id=f"{source}/{key}", domain="tools", source=source, prompt=msgs, response=val.strip(),
                          tools=tools, expected_call=call, meta={"turn": i})
        role = _ROLES.get(frm)
        if role is None:
            if frm == "observation":   # an observation before any call: malformed
                raise w.err("an observation before any function_call", f"conversations[{i}].from")
            raise w.err(f"unknown speaker '{frm}' (expected human, gpt, function_call, observation)",
                        f"conversations[{i}].from")
        msgs.append({"role": role, "content": val})
    return None   # plain chat: no tool call to learn from


def conv_bfcl(obj: dict, ground_truth: Any, source: str, w: Where) -> Record:
    """A BFCL question line ({id, question: [[turns]], function: [schemas]}) with its ground truth (from the line
    or BFCL's possible-answer file: a list of {function: {argument: [acceptable values]}}) as a tools Record.
    The record's own response and expected_call are the first acceptable value of every non-optional argument;
    the checker scores against meta.ground_truth (evaluation/toolcall.py)."""
    from ..evaluation.toolcall import valid_ground_truth

    q = obj.get("question")
    msgs = q[0] if isinstance(q, list) and q and isinstance(q[0], list) else q
    if not (isinstance(msgs, list) and msgs and all(isinstance(m, dict) and "role" in m and "content" in m
                                                    for m in msgs)):
        raise w.err("expected a list of {role, content} turns (BFCL: [[...]])", "question")
    if "function" not in obj:
        raise w.err("required field is missing", "function")
    funcs = obj["function"] if isinstance(obj["function"], list) else [obj["function"]]
    if not funcs or not all(isinstance(f, dict) and isinstance(f.get("name"), str) for f in funcs):
        raise w.err("expected a list of function schemas with a name", "function")
    rid = str(obj.get("id", w.line))
    if not valid_ground_truth(ground_truth):
        raise w.err(f"no valid ground truth for id '{rid}' (a list of {{function: {{argument: [acceptable "
                    f"values]}}}}; give it on the line or in the spec's `answers` file)", "ground_truth")
    (name, args), = ground_truth[0].items()   # one reference call (first acceptable values)
    call = {"name": name, "arguments": {k: next(v for v in vals if v != "") for k, vals in args.items()
                                        if any(v != "" for v in vals)}}
    return Record(id=rid, domain="tools", source=source,
                  prompt=[{"role": "system", "content": tools_system_message(funcs)}] + [dict(m) for m in msgs],
                  tools=funcs, response=json.dumps(call), expected_call=call, meta={"ground_truth": ground_truth})


# ---- detection -----------------------------------------------------------------------------------

Converter = Callable[[dict, Any, str, Where], "Record | None"]

CONVERTERS: dict[str, tuple[str, Converter]] = {
    # name: (domain, converter)
    "glaive": ("tools", conv_glaive),
    "humaneval": ("code", conv_humaneval),
    "mbpp": ("code", conv_mbpp),
    "gsm8k": ("math", conv_gsm8k),
    "math": ("math", conv_math),
    "alpaca": ("text", conv_alpaca),
}

_RECORD_KEYS = {"id", "domain", "prompt"}

FORMAT_HELP = ("the Record schema (id, domain, prompt, response, ...) or a raw format: GSM8K {question, answer}, "
               "MATH {problem, solution}, MBPP {text|prompt, code, test_list}, HumanEval {task_id, prompt, "
               "canonical_solution, test, entry_point}, Alpaca {instruction, input, output}, "
               "Glaive/ShareGPT {conversations, tools}")


def detect_format(obj: Any) -> str | None:
    """Name of the raw format an object's keys match, 'record' for the Record schema, None when unknown."""
    if not isinstance(obj, dict):
        return None
    k = set(obj)
    if "conversations" in k:
        return "glaive"
    if {"canonical_solution", "entry_point", "test"} <= k and "prompt" in k:
        return "humaneval"
    if "code" in k and "test_list" in k and ("text" in k or "prompt" in k):
        return "mbpp"
    if k & _RECORD_KEYS and ("domain" in k or "id" in k):
        return "record"
    if "question" in k and "answer" in k:
        return "gsm8k"
    if "problem" in k and "solution" in k:
        return "math"
    if "instruction" in k and "output" in k:
        return "alpaca"
    if k & _RECORD_KEYS:
        return "record"
    return None
