"""Local files (.jsonl / .json / .json.gz / .jsonl.gz) and hub datasets ("hf:owner/name[:config][:split]") -> Records.

A file is either Record-schema JSONL or one raw format (see `formats`), decided by the keys of its first object;
every later object must fit the same format. Every problem raises UserError naming the file, the line and the field.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..domains.registry import record_kind
from ..errors import UserError
from ..io import jsonl_values
from ..records import Record, record_from_dict
from .formats import CONVERTERS, FORMAT_HELP, Where, detect_format

FILE_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz")


def has_data_suffix(spec: str) -> bool:
    return spec.lower().endswith(FILE_SUFFIXES)


def file_stem(path: str | Path) -> str:
    name = Path(path).name
    for suf in sorted(FILE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return Path(name).stem


# ---- reading objects with line numbers -----------------------------------------------------------

def _read_text(path: Path) -> str:
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rt", encoding="utf-8") as f:
                return f.read()
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"not UTF-8 text ({e.reason} at byte {e.start})", file=str(path)) from None
    except (OSError, EOFError) as e:
        raise UserError(f"cannot read: {e}", file=str(path)) from None


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def _json_array_objects(text: str, file: str) -> Iterator[tuple[int, Any]]:
    """Elements of a top-level JSON array, each with the line it starts on."""
    dec = json.JSONDecoder()
    i = _skip_ws(text, 0)
    if i < len(text) and text[i] == "\ufeff":
        i = _skip_ws(text, i + 1)
    i += 1  # '['
    line, pos = 1, 0

    def line_at(k: int) -> int:
        nonlocal line, pos
        line += text.count("\n", pos, k)
        pos = k
        return line

    i = _skip_ws(text, i)
    if i < len(text) and text[i] == "]":
        return
    while True:
        i = _skip_ws(text, i)
        try:
            obj, end = dec.raw_decode(text, i)
        except json.JSONDecodeError as e:
            raise UserError(f"malformed JSON ({e.msg} at column {e.colno})", file=file, line=e.lineno) from None
        yield line_at(i), obj
        i = _skip_ws(text, end)
        if i < len(text) and text[i] == ",":
            i += 1
            continue
        if i < len(text) and text[i] == "]":
            if _skip_ws(text, i + 1) != len(text):
                raise UserError("extra data after the closing ']'", file=file, line=line_at(i))
            return
        raise UserError("malformed JSON (expected ',' or ']' between array elements)", file=file,
                        line=line_at(min(i, len(text))))


def iter_objects(path: Path) -> Iterator[tuple[int, Any]]:
    """(line, object) for every record in a .jsonl/.json file (gzip allowed)."""
    file = str(path)
    text = _read_text(path)
    head = text.lstrip("\ufeff \t\r\n")[:1]
    if head == "[":
        yield from _json_array_objects(text.lstrip("\ufeff"), file)
        return
    if head == "{" and not path.name.lower().endswith((".jsonl", ".jsonl.gz")):
        # A .json file holding one object, or JSON-lines despite the name.
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            if e.msg != "Extra data":
                raise UserError(f"malformed JSON ({e.msg} at column {e.colno})", file=file, line=e.lineno) from None
        else:
            if isinstance(obj, dict) and detect_format(obj) is None:
                for k in ("data", "records", "examples", "rows"):
                    if isinstance(obj.get(k), list):
                        raise UserError(f"put the records in a top-level JSON array (found them under '{k}')",
                                        file=file, line=1)
            yield 1, obj
            return
    yield from jsonl_values(text.splitlines(), file)


# ---- objects -> records --------------------------------------------------------------------------

def convert_objects(objs: Iterable[tuple[int, Any]], *, label: str, source: str, domain: str | None,
                    fmt: str | None = None) -> list[Record]:
    """Turn (line, object) pairs into validated Records. The format is that of the first object unless given."""
    if domain is not None:
        record_kind(domain, file=label)
    out: list[Record] = []
    seen: dict[str, int | None] = {}
    k = 0
    for line, obj in objs:
        if not isinstance(obj, dict):
            raise UserError(f"expected a JSON object, got {type(obj).__name__}", file=label, line=line)
        if fmt is None:
            fmt = detect_format(obj)
            if fmt is None:
                raise UserError(f"unrecognised record format (keys: {', '.join(sorted(obj)) or 'none'}); "
                                f"expected {FORMAT_HELP}", file=label, line=line)
        if fmt == "record":
            d = dict(obj)
            if domain is not None:
                d["domain"] = domain
            kind = d.get("domain")
            required = record_kind(kind, file=label, line=line).required if isinstance(kind, str) else ()
            rec = record_from_dict(d, file=label, line=line, required=required)
        else:
            w = Where(label, line)
            rec = CONVERTERS[fmt][1](obj, k, source, w)
            if rec is not None and domain is not None and rec.domain != domain:
                rec = record_from_dict({**rec.to_dict(), "domain": domain}, file=label, line=line,
                                       required=record_kind(domain).required)
        k += 1
        if rec is None:
            continue
        if rec.id in seen:
            first = seen[rec.id]
            where = f" (first on line {first})" if first is not None else ""
            raise UserError(f"duplicate id '{rec.id}'{where}", file=label, line=line, field="id")
        seen[rec.id] = line
        out.append(rec)
    return out


def load_file(path: str | Path, *, domain: str | None = None, source: str | None = None) -> list[Record]:
    path = Path(path)
    if not path.exists():
        raise UserError("file not found", file=str(path))
    if path.is_dir():
        raise UserError("is a folder; give a .jsonl or .json file", file=str(path))
    return convert_objects(iter_objects(path), label=str(path), source=source or file_stem(path), domain=domain)


def validate_record_file(path: str | Path) -> int:
    """Strict schema check of a Record JSONL (no raw formats). Returns the record count."""
    path = Path(path)
    if not path.exists():
        raise UserError("file not found", file=str(path))
    if path.is_dir():
        raise UserError("is a folder; give a .jsonl file", file=str(path))
    return len(convert_objects(iter_objects(path), label=str(path), source=file_stem(path), domain=None,
                               fmt="record"))


# ---- hub -----------------------------------------------------------------------------------------

_SPLITS = {"train", "test", "validation", "valid", "dev", "eval"}
# Known hub datasets: base name -> (default config, default split). Their rows go through the raw adapters.
HUB_DEFAULTS: dict[str, tuple[str | None, str]] = {
    "gsm8k": ("main", "train"),
    "mbpp": (None, "train"),
    "alpaca": (None, "train"),
    "alpaca-cleaned": (None, "train"),
    "openai_humaneval": (None, "test"),
    "competition_math": (None, "train"),
    "math-500": (None, "test"),
}


def parse_hub_spec(spec: str) -> tuple[str, str | None, str | None]:
    """'hf:owner/name[:config][:split]' -> (repo, config, split); a lone second part that names a split is the split."""
    rest = spec[3:].strip()
    parts = rest.split(":")
    if not parts[0] or len(parts) > 3:
        raise UserError(f"'{spec}' is not of the form hf:owner/name[:config][:split]", field="source")
    repo, config, split = parts[0], None, None
    if len(parts) == 2:
        if parts[1].split("[")[0] in _SPLITS:
            split = parts[1]
        else:
            config = parts[1] or None
    elif len(parts) == 3:
        config, split = parts[1] or None, parts[2] or None
    return repo, config, split


def load_hub(spec: str, *, domain: str | None = None, load_dataset=None) -> list[Record]:
    repo, config, split = parse_hub_spec(spec)
    base = repo.split("/")[-1].lower()
    dconf, dsplit = HUB_DEFAULTS.get(base, (None, "train"))
    config = config or dconf
    split = split or dsplit
    if load_dataset is None:
        try:
            from datasets import load_dataset
        except ImportError:
            raise UserError("loading from the hub needs the `datasets` package (pip install datasets)",
                            field="source") from None
    try:
        ds = load_dataset(repo, config, split=split)
    except Exception as e:  # network, missing config/split, auth: all user-facing
        raise UserError(f"could not load hub dataset '{repo}' (config {config}, split {split}): "
                        f"{type(e).__name__}: {str(e)[:500]}", field="source") from None
    rows = ((i + 1, dict(row)) for i, row in enumerate(ds))
    return convert_objects(rows, label=spec, source=base, domain=domain)
