"""The one registry of record kinds: which `Record.domain` values exist, which fields each needs, which eval task
types score it. Records, sources, the data stage, the distill stage and the eval tasks all ask here.

Two sorts of kind:

* **domain plug-ins** (trainable): a `Domain` subclass declares `name`, `required` and `task_types`. They come from
  the built-ins below, from `register_domain(name, target)` (a class, an instance or ``"module:Class"``), or from the
  ``crossdistill.domains`` entry-point group (``sql = "my_pkg.sql:SqlDomain"`` in a distribution's metadata);
* **eval-only kinds** (`EVAL_KINDS`: ``choice``, ``safety``, ``instruction``): records that only eval tasks read;
  they have no rewrite prompt or verifier, so they cannot be a recipe domain.

Adding a domain is one file: a `Domain` subclass, registered by one of the three routes above.
"""
from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from typing import Any

from ..errors import UserError, suggest
from .base import Domain


@dataclass(frozen=True)
class RecordKind:
    name: str
    required: tuple[str, ...]       # fields a record of this kind needs beyond id/domain/prompt
    task_types: tuple[str, ...]     # eval task types (`evaluation.tasks.TASK_TYPES`) that score it, so its metrics
    plugin: bool                    # True: a `Domain` plug-in (trainable); False: read by eval tasks only


_BUILTIN: dict[str, str] = {
    "math": "crossdistill.domains.math:MathDomain",
    "code": "crossdistill.domains.code:CodeDomain",
    "text": "crossdistill.domains.text:TextDomain",
    "tools": "crossdistill.domains.tools:ToolsDomain",
}
DOMAINS: tuple[str, ...] = tuple(_BUILTIN)

EVAL_KINDS: dict[str, RecordKind] = {
    "choice": RecordKind("choice", ("choices", "gold"), ("multiple_choice",), plugin=False),
    "safety": RecordKind("safety", (), ("refusal",), plugin=False),
    "instruction": RecordKind("instruction", (), ("instruction",), plugin=False),
}

_REGISTERED: dict[str, Any] = {}     # name -> Domain subclass, instance or "module:attr"
_CACHE: dict[str, Domain] = {}


def register_domain(name: str, target: Any) -> None:
    """Register a domain plug-in under `name`: a `Domain` subclass, an instance, or ``"module:Class"`` (imported on
    first use). Re-registering a name replaces it; a built-in or eval-only name cannot be taken."""
    if name in _BUILTIN or name in EVAL_KINDS:
        raise UserError(f"'{name}' is a built-in record kind and cannot be re-registered", field="domain")
    _REGISTERED[name] = target
    _CACHE.pop(name, None)


def _instance(obj: Any) -> Domain:
    if isinstance(obj, str):
        mod, _, attr = obj.partition(":")
        obj = getattr(importlib.import_module(mod), attr)
    return obj() if isinstance(obj, type) else obj


_EP_CACHE: dict[tuple[str, ...], dict[str, Any]] = {}


def _entry_points() -> dict[str, Any]:
    """The `crossdistill.domains` entry points of the distributions on sys.path (looked up once per sys.path: eval
    data may ask about an unknown label on every line)."""
    from importlib.metadata import entry_points

    key = tuple(sys.path)
    if key not in _EP_CACHE:
        try:
            _EP_CACHE[key] = {ep.name: ep for ep in entry_points(group="crossdistill.domains")}
        except Exception:  # noqa: BLE001 - a broken third-party distribution must not break the built-ins
            _EP_CACHE[key] = {}
    return _EP_CACHE[key]


def available_domains() -> list[str]:
    """Every domain plug-in name: built-ins, then registered ones, then entry points."""
    names = list(DOMAINS) + [n for n in _REGISTERED if n not in _BUILTIN]
    return names + [n for n in _entry_points() if n not in names]


def record_kinds() -> list[str]:
    """Every record kind (`Record.domain` value) a data file may use: built-in plug-ins, eval-only kinds, then the
    registered and entry-point plug-ins."""
    return list(DOMAINS) + list(EVAL_KINDS) + [n for n in available_domains() if n not in _BUILTIN]


def get_domain(name: str) -> Domain:
    """The plug-in instance for a domain name (built-in, registered, or from the `crossdistill.domains` entry points)."""
    if name in _CACHE:
        return _CACHE[name]
    if name in _BUILTIN:
        dom = _instance(_BUILTIN[name])
    elif name in _REGISTERED:
        dom = _instance(_REGISTERED[name])
    else:
        eps = _entry_points()
        if name not in eps:
            known = available_domains()
            raise UserError(f"unknown domain plug-in '{name}'{suggest(name, known)}; known: {', '.join(known)}",
                            field="domain")
        dom = _instance(eps[name].load())
    _CACHE[name] = dom
    return dom


def _is_plugin(name: str) -> bool:
    return name in _CACHE or name in _BUILTIN or name in _REGISTERED or name in _entry_points()


def record_kind(name: str, *, file: str | None = None, line: int | None = None) -> RecordKind:
    """The kind of records whose `domain` is `name`; an unknown name raises UserError located at file/line."""
    if name in EVAL_KINDS:
        return EVAL_KINDS[name]
    if not _is_plugin(name):
        known = record_kinds()
        raise UserError(f"unknown domain '{name}'{suggest(name, known)}; known: {', '.join(known)}",
                        file=file, line=line, field="domain")
    dom = get_domain(name)
    return RecordKind(name, tuple(dom.required), tuple(dom.task_types), plugin=True)


def required_fields(name: Any) -> tuple[str, ...]:
    """The fields a record of kind `name` needs; () for a name that is no known kind (eval task data may use any)."""
    if not isinstance(name, str) or not (name in EVAL_KINDS or _is_plugin(name)):
        return ()
    return record_kind(name).required


def kind_for_task_type(task_type: str) -> str:
    """The record kind a custom eval task's records default to: the first built-in kind scored by `task_type`."""
    for name in list(DOMAINS) + list(EVAL_KINDS):
        if task_type in record_kind(name).task_types:
            return name
    raise KeyError(task_type)
