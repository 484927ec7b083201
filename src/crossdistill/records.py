"""The one record schema every domain shares, and line-numbered JSONL reading/validation.

A Record is one example: a prompt, a reference response, and the fields a domain needs to check an answer:
math `answer`; code `tests` (+ `test_setup`, `entry_point`); tool use `tools` + `expected_call`;
multiple choice `choices` + `gold`. Everything else goes in `meta`. Which fields each kind of record needs is
declared by its domain in `domains.registry` (the readers above this module pass them in as `required`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable

from .errors import UserError, suggest
from .io import iter_jsonl, write_jsonl

Message = dict  # {"role": "system"|"user"|"assistant", "content": str}


@dataclass
class Record:
    id: str
    domain: str
    prompt: str | list[Message]
    response: str = ""
    source: str = ""
    answer: str | None = None            # math: final answer as text ("18", "3/4")
    tests: list[str] | None = None       # code: assert lines, or one HumanEval check program
    test_setup: str | None = None        # code: run before the tests (imports)
    entry_point: str | None = None       # code: function name under test
    tools: list[dict] | None = None      # tools: JSON schemas of the functions offered
    expected_call: dict | None = None    # tools: {"name": ..., "arguments": {...}}
    choices: list[str] | None = None     # multiple choice
    gold: int | None = None              # multiple choice: index of the right choice
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None and v != {}}

    def prompt_messages(self) -> list[Message]:
        if isinstance(self.prompt, str):
            return [{"role": "user", "content": self.prompt}]
        return list(self.prompt)

    def prompt_text(self) -> str:
        """The prompt flattened to text (for overlap checks and logs)."""
        if isinstance(self.prompt, str):
            return self.prompt
        return "\n".join(m.get("content", "") for m in self.prompt)


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "id": (str, int),
    "domain": (str,),
    "prompt": (str, list),
    "response": (str,),
    "source": (str,),
    "answer": (str, int, float),
    "tests": (list,),
    "test_setup": (str,),
    "entry_point": (str,),
    "tools": (list,),
    "expected_call": (dict,),
    "choices": (list,),
    "gold": (int,),
    "meta": (dict,),
}
_KNOWN = {f.name for f in fields(Record)}


def record_from_dict(d: Any, *, file: str = "<memory>", line: int | None = None, require_response: bool = False,
                     required: Iterable[str] = ()) -> Record:
    """Validate one JSON object into a Record; any problem raises UserError naming file, line and field.

    `required`: the fields the record's kind needs (`domains.required_fields(domain)`; "response" is checked only
    with `require_response`)."""
    if not isinstance(d, dict):
        raise UserError(f"expected a JSON object, got {type(d).__name__}", file=file, line=line)
    unknown = set(d) - _KNOWN
    if unknown:
        k = sorted(unknown)[0]
        raise UserError(f"unknown field{suggest(k, sorted(_KNOWN))}; known fields: {', '.join(sorted(_KNOWN))}",
                        file=file, line=line, field=k)
    for name in ("id", "domain", "prompt"):
        if name not in d or d[name] is None:
            raise UserError("required field is missing", file=file, line=line, field=name)
    for name, value in d.items():
        if value is None:
            continue
        if not isinstance(value, _FIELD_TYPES[name]) or isinstance(value, bool):
            want = " or ".join(t.__name__ for t in _FIELD_TYPES[name])
            raise UserError(f"expected {want}, got {type(value).__name__}", file=file, line=line, field=name)
    if str(d["id"]).strip() == "":
        raise UserError("must not be empty", file=file, line=line, field="id")
    if d["domain"].strip() == "":
        raise UserError("must not be empty", file=file, line=line, field="domain")
    prompt = d["prompt"]
    if isinstance(prompt, str):
        if not prompt.strip():
            raise UserError("must not be empty", file=file, line=line, field="prompt")
    else:
        if not prompt:
            raise UserError("must not be an empty message list", file=file, line=line, field="prompt")
        for i, m in enumerate(prompt):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise UserError("each message needs string 'role' and 'content'", file=file, line=line, field=f"prompt[{i}]")
    domain = d["domain"]
    for name in required:
        if name == "response" and not require_response:
            continue
        v = d.get(name)
        if v is None or (isinstance(v, (str, list)) and len(v) == 0):
            raise UserError(f"required for domain '{domain}' and missing or empty", file=file, line=line, field=name)
    if require_response and not str(d.get("response") or "").strip():
        raise UserError("required for training and missing or empty", file=file, line=line, field="response")
    if d.get("choices") is not None and d.get("gold") is not None and not (0 <= d["gold"] < len(d["choices"])):
        raise UserError(f"gold index {d['gold']} out of range for {len(d['choices'])} choices", file=file, line=line, field="gold")
    if d.get("tests") is not None and not all(isinstance(t, str) for t in d["tests"]):
        raise UserError("every test must be a string", file=file, line=line, field="tests")
    kw = dict(d)
    kw["id"] = str(kw["id"])
    if kw.get("answer") is not None:
        kw["answer"] = str(kw["answer"])
    return Record(**kw)


def read_records(path: str | Path, *, require_response: bool = False) -> list[Record]:
    """Read a JSONL file of records. Malformed JSON, bad fields and duplicate ids raise UserError with the line."""
    out: list[Record] = []
    seen: dict[str, int] = {}
    for lineno, obj in iter_jsonl(path):
        rec = record_from_dict(obj, file=str(path), line=lineno, require_response=require_response)
        if rec.id in seen:
            raise UserError(f"duplicate id '{rec.id}' (first on line {seen[rec.id]})", file=str(path), line=lineno,
                            field="id")
        seen[rec.id] = lineno
        out.append(rec)
    return out


def write_records(path: str | Path, records: Iterable[Record]) -> int:
    return write_jsonl(path, (r.to_dict() for r in records))
