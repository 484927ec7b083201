"""The eval stage: builtin and spec-defined tasks, metrics with bootstrap CIs, and `evaluate`.

    from crossdistill.evaluation import evaluate
    res = evaluate("smollm2-135m-instruct", ["gsm8k", "humaneval", "arc-easy"], limit=50, out_dir="runs/eval")

Modules: `tasks` (task types, builtin registry, spec YAML), `loglik` (prefix-shared multiple-choice scoring),
`metrics` (pass@k, bootstrap), `refusal` (pattern judge), `ifeval` (instruction checkers), `evaluate` (the
module: `evaluate()`, per-task samples and per-item scores; import its other names as
`from crossdistill.evaluation.evaluate import ...`, since the package attribute `evaluate` is the function).
"""
from __future__ import annotations

from .metrics import bootstrap_ci, pass_at_k
from .evaluate import evaluate
from .tasks import BUILTIN_TASKS, TASK_TYPES, TaskSpec, load_task_spec, resolve_task, task_names

__all__ = ["evaluate", "pass_at_k", "bootstrap_ci", "BUILTIN_TASKS", "TASK_TYPES", "TaskSpec",
           "load_task_spec", "resolve_task", "task_names"]
