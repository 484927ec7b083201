"""Domain plug-ins: one file per domain (math, code, text, tools) on the contract in `base`, found through `registry`.

    from crossdistill.domains import get_domain
    dom = get_domain("math")
    messages, prefill = dom.rewrite_messages(record)
    result = dom.verify(record, prefill + generated, finished)
"""
from .base import Domain, VerifyContext, VerifyResult
from .registry import (DOMAINS, EVAL_KINDS, RecordKind, available_domains, get_domain, kind_for_task_type,
                       record_kind, record_kinds, register_domain, required_fields)

__all__ = ["DOMAINS", "EVAL_KINDS", "Domain", "RecordKind", "VerifyContext", "VerifyResult", "available_domains",
           "get_domain", "kind_for_task_type", "record_kind", "record_kinds", "register_domain", "required_fields"]
