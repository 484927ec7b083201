"""crossdistill: cross-domain self-distillation fine-tuning (CD-SDFT) of LLMs.

Stages (one module each): data -> distill -> training -> evaluation -> report; `runner` plans them.
"""
__version__ = "0.1.0"


def evaluate(*args, **kwargs):
    """See `crossdistill.evaluation.evaluate` (imported lazily: torch is heavy)."""
    from .evaluation import evaluate as _evaluate

    return _evaluate(*args, **kwargs)


def load_config(*args, **kwargs):
    from .config import load_config as _load

    return _load(*args, **kwargs)
