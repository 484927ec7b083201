"""Domain plug-ins: one file per domain (math, code, text, tools) on the contract in `base`.

    from crossdistill.domains import get_domain
    dom = get_domain("math")
    messages, prefill = dom.rewrite_messages(record)
    result = dom.verify(record, prefill + generated, finished)
    metrics = dom.score(record, model_output)
"""
from .base import DOMAINS, Domain, VerifyContext, VerifyResult, available_domains, get_domain

__all__ = ["DOMAINS", "Domain", "VerifyContext", "VerifyResult", "available_domains", "get_domain"]
