"""The typed recipe. A recipe is YAML data; this module turns it into validated dataclasses.

    cfg = load_config("recipes/demo.yaml", ["train.lr=2e-4", "limit=8"])

Unknown keys are errors that name the key (with its line in the recipe) and suggest the closest valid one.
Every value can be overridden as `key.sub=value` (the value is parsed as YAML).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError, suggest

def domain_plugins() -> list[str]:
    """Built-in domain plug-ins plus any registered under the `crossdistill.domains` entry point group."""
    from .domains import available_domains

    return available_domains()


def _check(cond: bool, message: str, field_name: str) -> None:
    if not cond:
        raise UserError(message, field=field_name)


@dataclass
class DomainConfig:
    """One training domain: where its data comes from, how much of it, and which eval tasks belong to it."""

    source: str | None = None        # built-in dataset name, a .jsonl/.json file, or "hf:owner/name[:split]"
    size: int | None = None          # cap on training records (first N after a seeded shuffle)
    eval: list[str] = field(default_factory=list)  # eval tasks that measure this domain (used by LODO)
    weight: float = 1.0              # w_d in the objective (before the domain_weighting scheme)
    plugin: str | None = None        # a registered domain plug-in (domains/registry.py); defaults to the domain's name
    max_new_tokens: int | None = None  # distill token budget for this domain (default: distill.max_new_tokens)
    num_candidates: int | None = None  # distill candidates for this domain (default: distill.num_candidates)

    def __post_init__(self):
        _check(self.size is None or self.size >= 0, "must be >= 0", "size")
        _check(self.weight >= 0, "must be >= 0", "weight")
        _check(self.max_new_tokens is None or self.max_new_tokens > 0, "must be > 0", "max_new_tokens")
        _check(self.num_candidates is None or self.num_candidates > 0, "must be > 0", "num_candidates")


@dataclass
class DistillConfig:
    max_new_tokens: int = 384
    num_candidates: int = 1          # n: the greedy rewrite, then up to n-1 sampled ones (first verified non-copy wins)
    temperature: float = 0.0         # n = 1: 0 = greedy; n > 1: the sampled candidates' temperature (must be > 0)
    top_p: float = 1.0
    top_k: int = 0
    batch_size: int = 32
    backend: str = "hf"              # hf | vllm
    dtype: str = "auto"              # auto | bfloat16 | float32 | float16
    sandbox_timeout_s: float = 10.0
    sandbox_workers: int | None = None
    copy_threshold: float = 0.9      # similarity to the reference above which a rewrite counts as `copied`
    enabled: bool = True             # false: targets are the original responses (no rewriting)

    def __post_init__(self):
        _check(self.max_new_tokens > 0, "must be > 0", "distill.max_new_tokens")
        _check(self.temperature >= 0, "must be >= 0", "distill.temperature")
        _check(self.num_candidates >= 1, "must be >= 1", "distill.num_candidates")
        _check(self.num_candidates == 1 or self.temperature > 0,
               "must be > 0 when distill.num_candidates > 1 (the candidates after the greedy one are sampled)",
               "distill.temperature")
        _check(0 < self.top_p <= 1, "must be in (0, 1]", "distill.top_p")
        _check(self.batch_size > 0, "must be > 0", "distill.batch_size")
        _check(self.backend in ("hf", "vllm"), "must be 'hf' or 'vllm'", "distill.backend")
        _check(self.dtype in DTYPES, f"must be one of {DTYPES}", "distill.dtype")
        _check(0 < self.copy_threshold <= 1, "must be in (0, 1]", "distill.copy_threshold")


DTYPES = ("auto", "bfloat16", "float32", "float16")


@dataclass
class VllmConfig:
    """The vLLM engine, where `distill.backend` or `eval.backend` is `vllm` (the `vllm` extra, GPUs): one engine per
    model and process; each trained method's LoRA is a LoRARequest on it; freed before training starts."""

    dtype: str = "auto"
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.85   # of the GPU's memory (leave room for log-likelihood tasks in HF)
    max_model_len: int | None = None      # default: the model's context length
    max_lora_rank: int = 64               # >= every method's train.lora.r
    max_loras: int = 1
    enforce_eager: bool = False

    def __post_init__(self):
        _check(self.dtype in DTYPES, f"must be one of {DTYPES}", "vllm.dtype")
        _check(self.tensor_parallel_size >= 1, "must be >= 1", "vllm.tensor_parallel_size")
        _check(0 < self.gpu_memory_utilization <= 1, "must be in (0, 1]", "vllm.gpu_memory_utilization")
        _check(self.max_model_len is None or self.max_model_len > 0, "must be > 0 (or null)", "vllm.max_model_len")
        _check(self.max_lora_rank > 0, "must be > 0", "vllm.max_lora_rank")
        _check(self.max_loras >= 1, "must be >= 1", "vllm.max_loras")


@dataclass
class LoraConfig:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: str | list[str] = "all-linear"

    def __post_init__(self):
        _check(self.r > 0, "must be > 0", "train.lora.r")
        _check(0 <= self.dropout < 1, "must be in [0, 1)", "train.lora.dropout")


TARGETS = ("original", "rewrite", "onpolicy")
CE_WEIGHTINGS = ("token", "domain")
SAMPLERS = ("random", "balanced")
# A method is a set of orthogonal switches; the named methods are presets of them, written here and nowhere else.
# Precedence when a method's TrainConfig is built: the `train` section < the preset < the method entry's own keys, so
# `sdft` ignores `train.alpha` (as it always did) and `{method: sdft, alpha: 0.5}` adds the KL to the seed to it.
# `cdsdft` / `cdsdft-onpolicy` take alpha, beta and invariance from `train`. On-policy targets have no separate KL to
# the seed: the teacher already is the seed (shown the demonstration).
METHOD_PRESETS: dict[str, dict[str, Any]] = {
    "sft": {"targets": "original", "ce_weighting": "token", "sampler": "random", "alpha": 0.0, "beta": 0.0},
    "sdft": {"targets": "rewrite", "ce_weighting": "token", "sampler": "random", "alpha": 0.0, "beta": 0.0},
    "cdsdft": {"targets": "rewrite", "ce_weighting": "domain", "sampler": "balanced"},
    "sdft-onpolicy": {"targets": "onpolicy", "ce_weighting": "token", "sampler": "random", "alpha": 0.0,
                      "beta": 0.0},
    "cdsdft-onpolicy": {"targets": "onpolicy", "ce_weighting": "domain", "sampler": "balanced", "alpha": 0.0},
    # TRL's SDFTTrainer, unmodified (a baseline arm): its own loss; the switches only describe it.
    "trl-sdft": {"targets": "onpolicy", "ce_weighting": "token", "sampler": "random", "alpha": 0.0, "beta": 0.0},
}
TRAIN_METHODS = tuple(METHOD_PRESETS)
SWITCHES = ("targets", "ce_weighting", "sampler", "alpha", "beta", "invariance")
DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")
INVARIANCES = ("none", "mmd", "coral", "dann")
INV_GRADS = ("domain", "batch")   # how L_inv's gradient reaches the batch rows (losses.invariance_term)
DOMAIN_WEIGHTINGS = ("uniform", "size", "temperature")
REPORT_TO = ("auto", "none", "tensorboard", "wandb", "mlflow", "trackio")

# The names TRL / transformers users type, mapped onto the recipe's own `train` keys (the only place they are listed).
TRAIN_ALIASES = {
    "learning_rate": "lr",
    "per_device_train_batch_size": "batch_size",
    "num_train_epochs": "epochs",
    "gradient_accumulation_steps": "grad_accum",
    "lr_scheduler_type": "lr_scheduler",
    "max_seq_length": "max_length",
}
# TrainingArguments fields the training stage sets itself (from the keys on the right); trainer_args may not touch them.
_TRAINER_OWNED = {**{a: f"train.{k}" for a, k in TRAIN_ALIASES.items()},
                  "max_steps": "train.max_steps", "warmup_ratio": "train.warmup_ratio", "warmup_steps":
                  "train.warmup_ratio", "weight_decay": "train.weight_decay", "logging_steps": "train.logging_steps",
                  "save_steps": "train.save_steps", "seed": "seed", "report_to": "train.report_to",
                  "output_dir": "output_dir", "bf16": "train.dtype", "fp16": "train.dtype",
                  "gradient_checkpointing": "train.gradient_checkpointing",
                  "activation_checkpointing": "train.gradient_checkpointing",
                  "remove_unused_columns": None, "label_names": None}


def _check_trainer_args(args: dict) -> None:
    """`train.trainer_args`: extra TrainingArguments fields, checked against this transformers version's fields."""
    if not args:
        return
    import dataclasses as dc

    from transformers import TrainingArguments

    names = sorted(f.name for f in dc.fields(TrainingArguments) if f.init and not f.name.startswith("_"))
    for key in args:
        full = f"train.trainer_args.{key}"
        if key in _TRAINER_OWNED:
            own = _TRAINER_OWNED[key]
            raise UserError(f"'{key}' is set by crossdistill" + (f" from '{own}'; set that instead" if own else
                                                                 " itself and cannot be overridden"), field=full)
        if key not in names:
            raise UserError(f"'{key}' is not a transformers TrainingArguments field{suggest(key, names)}",
                            field=full)


@dataclass(frozen=True)
class LossTerms:
    """Which parts of the objective a resolved TrainConfig turns on: the one answer the trainer asks for."""

    targets: str            # original | rewrite | onpolicy
    ce: bool                # token CE on fixed targets (off for on-policy: the student's own samples are the targets)
    domain_weighted: bool   # per-domain weights w_d on the token loss (CE, or the on-policy divergence)
    balanced: bool          # domain-balanced sampler
    seed_kl: bool           # alpha * D(p_seed || p_theta) on the fixed targets
    invariance: str | None  # mmd | coral | dann, or None when off

    @property
    def onpolicy(self) -> bool:
        return self.targets == "onpolicy"

    @property
    def target_field(self) -> str:
        """The distilled.jsonl field that trains (on-policy: the reference, shown to the teacher only)."""
        return "response" if self.targets == "rewrite" else "original_response"


def loss_terms(targets: str, ce_weighting: str, sampler: str, alpha: float, beta: float,
               invariance: str) -> LossTerms:
    return LossTerms(targets=targets, ce=targets != "onpolicy", domain_weighted=ce_weighting == "domain",
                     balanced=sampler == "balanced", seed_kl=targets != "onpolicy" and alpha > 0,
                     invariance=invariance if invariance != "none" and beta > 0 else None)


def _one_of(value: Any, allowed: tuple, field_name: str) -> None:
    """`value` must be one of `allowed`; the error suggests the closest one."""
    if value not in allowed:
        raise UserError(f"'{value}' is not one of {', '.join(allowed)}{suggest(str(value), allowed)}",
                        field=field_name)


@dataclass
class TrainConfig:
    # A named preset of the switches below (METHOD_PRESETS): sft | sdft | cdsdft | sdft-onpolicy | cdsdft-onpolicy |
    # trl-sdft. The switches set in a method entry override the preset's.
    method: str = "cdsdft"
    targets: str = "rewrite"         # original (SFT) | rewrite (2024 SDFT) | onpolicy (2026 SDFT: student samples)
    ce_weighting: str = "domain"     # token (token-mean) | domain (sum_d w_d mean_d, w_d per domain_weighting)
    sampler: str = "balanced"        # random | balanced (DomainBalancedSampler)
    lr: float = 1e-4
    epochs: float = 1.0
    max_steps: int | None = None     # overrides epochs when set
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 512
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    dtype: str = "auto"
    full_finetune: bool = False
    lora: LoraConfig = field(default_factory=LoraConfig)
    domains: list[str] | None = None  # train only on these domains (SDFT per domain); None = all
    # The objective L = sum_d w_d CE_d + alpha * D(p_seed || p_theta) + beta * L_inv   (cdsdft only).
    # Its weights and temperatures, defined here and nowhere else (three names say "beta"):
    #   alpha           weight of the divergence D to the seed on fixed targets (on-policy: must be 0)
    #   beta            weight of the invariance term L_inv, reached after `beta_warmup_steps` (a linear ramp).
    #                   The trainer's CrossDistillConfig calls it `inv_beta` (TRL's configs use `beta` for other
    #                   weights); CrossDistillConfig.from_recipe is the one place that renames it.
    #   jsd_beta        mixture weight of the generalised JSD (`divergence: jsd`, GKD's / TRL's `beta`); unused by
    #                   forward_kl / reverse_kl; nothing to do with L_inv
    #   kd_temperature  softmax temperature tau of the teacher and student distributions inside D (and of the
    #                   cached seed top-k); not the sampling temperature (`onpolicy_temperature`, `distill.temperature`)
    alpha: float = 0.5
    divergence: str = "forward_kl"
    jsd_beta: float = 0.5
    kd_temperature: float = 1.0
    seed_logprobs: str = "cached"    # cached (top-k, one pass before training) | live (adapter-disabled forward per step)
    topk: int = 20
    beta: float = 0.1
    invariance: str = "mmd"
    inv_layer: int | None = None     # hidden_states index pooled for L_inv (0 = embeddings, -1 = final normed
                                     # state); null = the middle layer
    inv_queue_size: int = 128        # per-domain FIFO of recent pooled features that L_inv compares against
    inv_grad: str = "domain"         # domain: each batch row's gradient scaled to its domain's batch + queue size
                                     # (losses.domain_sized_grad); batch: 1/(batch + queue), as before (weak)
    inv_probe_every: int = 5         # log the between-domain MMD of a fixed held-out probe batch every K steps (0: off)
    inv_probe_batch: int = 8         # records per domain in that batch
    beta_warmup_steps: int = 0
    domain_weighting: str = "uniform"
    domain_temperature: float = 2.0
    balanced_batches: bool = True
    logging_steps: int = 1
    save_steps: int = 50
    gradient_checkpointing: bool = False
    # where the Trainer logs: auto (tensorboard when installed, else none) | none | tensorboard | wandb | mlflow |
    # trackio, or a list of them
    report_to: str | list[str] = "auto"
    # extra transformers TrainingArguments (e.g. {ddp_timeout: 3600, fsdp: "full_shard"}), passed through as is
    trainer_args: dict = field(default_factory=dict)

    # on-policy targets: the student's sample per training prompt (the teacher's top-k is `topk`; 0 = full vocab)
    onpolicy_max_new_tokens: int = 128
    onpolicy_temperature: float = 1.0

    def __post_init__(self):
        reporters = [self.report_to] if isinstance(self.report_to, str) else list(self.report_to)
        for r in reporters:
            _check(r in REPORT_TO, f"'{r}' is not one of {REPORT_TO}{suggest(r, REPORT_TO)}", "train.report_to")
        _check(len(reporters) == 1 or not {"auto", "none"} & set(reporters),
               "'auto' and 'none' stand alone, not in a list", "train.report_to")
        _check_trainer_args(self.trainer_args)
        _one_of(self.method, TRAIN_METHODS, "train.method")
        _one_of(self.targets, TARGETS, "train.targets")
        _one_of(self.ce_weighting, CE_WEIGHTINGS, "train.ce_weighting")
        _one_of(self.sampler, SAMPLERS, "train.sampler")
        _check(self.onpolicy_max_new_tokens > 0, "must be > 0", "train.onpolicy_max_new_tokens")
        _check(self.onpolicy_temperature > 0, "must be > 0 (on-policy samples)", "train.onpolicy_temperature")
        if self.targets == "onpolicy":
            _check(self.alpha == 0, "must be 0 with targets 'onpolicy' (the teacher already is the seed, shown "
                   "the demonstration)", "train.alpha")
            _check(not self.full_finetune, "targets 'onpolicy' needs a LoRA adapter (the teacher is the model "
                   "with its adapter disabled)", "train.full_finetune")
        _check(self.topk > 0 or not (self.terms.seed_kl and self.seed_logprobs == "cached"),
               "must be > 0 for a cached seed (0 = full vocabulary: on-policy or live only)", "train.topk")
        _check(self.lr > 0, "must be > 0", "train.lr")
        _check(self.epochs > 0, "must be > 0", "train.epochs")
        _check(self.max_steps is None or self.max_steps > 0, "must be > 0 (or null)", "train.max_steps")
        _check(self.batch_size > 0, "must be > 0", "train.batch_size")
        _check(self.grad_accum > 0, "must be > 0", "train.grad_accum")
        _check(self.max_length >= 16, "must be >= 16", "train.max_length")
        _check(self.dtype in DTYPES, f"must be one of {DTYPES}", "train.dtype")
        _check(self.alpha >= 0, "must be >= 0", "train.alpha")
        _check(self.beta >= 0, "must be >= 0", "train.beta")
        _check(self.divergence in DIVERGENCES, f"must be one of {DIVERGENCES}", "train.divergence")
        _check(0 <= self.jsd_beta <= 1, "must be in [0, 1]", "train.jsd_beta")
        _check(self.kd_temperature > 0, "must be > 0", "train.kd_temperature")
        _check(self.seed_logprobs in ("cached", "live"), "must be 'cached' or 'live'", "train.seed_logprobs")
        _check(self.topk >= 0, "must be >= 0", "train.topk")
        _check(self.invariance in INVARIANCES, f"must be one of {INVARIANCES}", "train.invariance")
        _check(self.domain_weighting in DOMAIN_WEIGHTINGS, f"must be one of {DOMAIN_WEIGHTINGS}", "train.domain_weighting")
        _check(self.domain_temperature > 0, "must be > 0", "train.domain_temperature")
        _check(self.beta_warmup_steps >= 0, "must be >= 0", "train.beta_warmup_steps")
        _check(self.inv_queue_size >= 1, "must be >= 1", "train.inv_queue_size")
        _check(self.inv_grad in INV_GRADS, f"must be one of {INV_GRADS}", "train.inv_grad")
        _check(self.inv_probe_every >= 0, "must be >= 0", "train.inv_probe_every")
        _check(self.inv_probe_batch >= 2, "must be >= 2", "train.inv_probe_batch")

    @property
    def terms(self) -> LossTerms:
        return loss_terms(self.targets, self.ce_weighting, self.sampler, self.alpha, self.beta, self.invariance)


@dataclass
class EvalConfig:
    tasks: list[str] = field(default_factory=list)   # general tasks, on top of each domain's own eval tasks
    limit: int | None = None         # per task: first N items of a seeded shuffle
    batch_size: int = 32
    max_new_tokens: int = 384
    n_samples: int = 1               # >1 with temperature > 0 for pass@k
    pass_k: list[int] = field(default_factory=lambda: [1])
    temperature: float = 0.0
    bootstrap: int = 1000
    dtype: str = "auto"
    sandbox_timeout_s: float = 10.0
    seed: int | None = None          # the eval subset's shuffle (and sampling); null: the recipe's seed. Fix it to
                                     # score every training seed of an experiment on the same items
    backend: str = "hf"              # hf | vllm: who runs the generation tasks (log-likelihood tasks stay in HF)

    def __post_init__(self):
        _check(self.limit is None or self.limit > 0, "must be > 0 (or null)", "eval.limit")
        _check(self.batch_size > 0, "must be > 0", "eval.batch_size")
        _check(self.n_samples >= 1, "must be >= 1", "eval.n_samples")
        _check(all(k <= self.n_samples for k in self.pass_k), "every k must be <= eval.n_samples", "eval.pass_k")
        _check(self.dtype in DTYPES, f"must be one of {DTYPES}", "eval.dtype")
        _check(self.backend in ("hf", "vllm"), "must be 'hf' or 'vllm'", "eval.backend")


@dataclass
class SandboxConfig:
    # OS layer around generated code (bubblewrap namespaces + seccomp): auto = use it where this machine
    # allows (else one loud warning), required = refuse to run without it, off = in-process layer only
    isolation: str | bool = "auto"   # (YAML reads a bare `off` as false: taken as "off")

    def __post_init__(self):
        if self.isolation is False:
            self.isolation = "off"
        _check(self.isolation in ("auto", "required", "off"), "must be one of auto, required, off",
               "sandbox.isolation")


@dataclass
class ProbeConfig:
    """The domain-invariance probe (`probe.py`): held-out records per domain, k-fold linear probe, MMD per layer."""

    enabled: bool = False            # true: the runner adds probe/<method> steps (seed + every trained method)
    size: int = 100                  # held-out records per domain (the end of the training shuffle; never trained on)
    folds: int = 5                   # k of the k-fold logistic regression
    batch_size: int = 16
    max_length: int | None = None    # tokens per record (null: train.max_length)

    def __post_init__(self):
        _check(self.size >= 2, "must be >= 2", "probe.size")
        _check(self.folds >= 2, "must be >= 2", "probe.folds")
        _check(self.batch_size > 0, "must be > 0", "probe.batch_size")
        _check(self.max_length is None or self.max_length >= 16, "must be >= 16 (or null)", "probe.max_length")


@dataclass
class RetentionConfig:
    """Gain retention (results.json `retention`, report "Gain retention"): on each in-domain task, does every other
    trained method keep at least `share` of `reference`'s gain over the seed? (`statistics.retention`: one-sided
    sign-flip test of g_method − share·g_reference per item, Holm over the rows.) Off while `reference` is null."""

    reference: str | None = None   # a trained method of the recipe, e.g. the rank-matched sft
    share: float = 0.9

    def __post_init__(self):
        _check(0 < self.share <= 1, "must be in (0, 1]", "retention.share")


def _default_methods() -> dict[str, dict | None]:
    return {"seed": None, "sft": {"method": "sft"}, "sdft": {"method": "sdft"}, "cdsdft": {"method": "cdsdft"}}


@dataclass
class Config:
    model: str = "smollm2-135m-instruct"   # registry name, HF hub id, or local folder
    output_dir: str = "runs/demo"
    seed: int = 0
    limit: int | None = None               # smoke runs: caps every dataset (train and eval) at N records
    data_dir: str | None = None            # where relative data paths in `domains.*.source` are looked up
    domains: dict[str, DomainConfig] = field(default_factory=dict)
    distill: DistillConfig = field(default_factory=DistillConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    vllm: VllmConfig = field(default_factory=VllmConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    # Named methods the runner compares: name -> overrides of `train` (None for the untouched seed model).
    methods: dict[str, dict | None] = field(default_factory=_default_methods)
    # Leave-one-domain-out: also train methods without each domain that has eval tasks. true: every trained
    # method; a list: those methods only (LODO multiplies training runs, so experiments usually name one or two).
    lodo: bool | list[str] = False
    # Planned comparisons: [earlier, later] pairs of trained methods that the experiment's questions are about.
    # Their rows form the Holm family "planned"; every other pair of trained methods stays "ablations"
    # (exploratory), so the questions are not adjusted over every pair of a dozen methods. Empty: all "ablations".
    compare: list[list[str]] = field(default_factory=list)
    recipe_path: str | None = None         # where it was loaded from (not a recipe key)

    def __post_init__(self):
        _check(self.limit is None or self.limit > 0, "must be > 0 (or null)", "limit")
        for name, d in self.domains.items():
            plugin = d.plugin or name
            known = domain_plugins()
            if plugin not in known:
                raise UserError(f"unknown domain plug-in '{plugin}'{suggest(plugin, known)}; known: {', '.join(known)}",
                                file=self.recipe_path, field=f"domains.{name}")
            if (d.num_candidates or 1) > 1 and self.distill.temperature <= 0:
                raise UserError("distill.temperature must be > 0 when a domain has num_candidates > 1 (the candidates "
                                "after the greedy one are sampled)", file=self.recipe_path,
                                field=f"domains.{name}.num_candidates")
        for name, overrides in self.methods.items():
            if overrides is not None:
                self.train_config_for(name)  # validates the overrides now, not at training time
        ref = self.retention.reference
        if ref is not None:
            self._check_trained(ref, "retention.reference")
        if isinstance(self.lodo, list):
            for name in self.lodo:
                self._check_trained(name, "lodo")
        seen = set()
        for i, pair in enumerate(self.compare):
            where = f"compare[{i}]"
            if len(pair) != 2 or pair[0] == pair[1]:
                raise UserError(f"expected [earlier, later]: two different trained methods, got {pair!r}",
                                file=self.recipe_path, field=where)
            for name in pair:
                self._check_trained(name, where)   # the seed's rows vs a method have their own families
            if frozenset(pair) in seen:
                raise UserError(f"{pair!r} is listed twice", file=self.recipe_path, field=where)
            seen.add(frozenset(pair))

    def _check_trained(self, name: str, where: str) -> None:
        """`name` must be a trained method of the recipe (not missing, not the untrained seed model)."""
        if self.methods.get(name) is None:
            trained = [m for m, o in self.methods.items() if o is not None]
            raise UserError(f"'{name}' is not a trained method of this recipe{suggest(str(name), trained)}; trained: "
                            f"{', '.join(trained)}", file=self.recipe_path, field=where)

    # --- derived views -------------------------------------------------------------------------
    def lodo_methods(self) -> list[str]:
        """The trained methods that get leave-one-domain-out runs (`lodo`)."""
        if self.lodo is True:
            return [m for m, o in self.methods.items() if o is not None]
        return list(self.lodo) if isinstance(self.lodo, list) else []

    def eval_seed(self) -> int:
        """The seed of the eval items' shuffle: `eval.seed` when set, else the recipe's `seed`."""
        return self.seed if self.eval.seed is None else self.eval.seed

    def effective_limit(self, n: int | None) -> int | None:
        """Combine a section's own cap with the global smoke-run `limit`."""
        if self.limit is None:
            return n
        return self.limit if n is None else min(n, self.limit)

    def eval_tasks(self) -> list[str]:
        """All eval tasks: each domain's own, then the general ones, without repeats."""
        seen: list[str] = []
        for d in self.domains.values():
            for t in d.eval:
                if t not in seen:
                    seen.append(t)
        for t in self.eval.tasks:
            if t not in seen:
                seen.append(t)
        return seen

    def train_config_for(self, method_name: str) -> TrainConfig:
        """The `train` section with a named method's overrides applied (a plain method name works too)."""
        base = dataclasses.asdict(self.train)
        if method_name in self.methods:
            overrides = self.methods[method_name]
            if overrides is None:
                raise UserError(f"method '{method_name}' is the untrained seed model; it has nothing to train",
                                field=f"methods.{method_name}")
            overrides = _apply_aliases(overrides or {}, f"methods.{method_name}", self.recipe_path, {})
            where = f"methods.{method_name}"
        elif method_name in TRAIN_METHODS:
            overrides, where = {"method": method_name}, "train"
        else:
            hint = suggest(method_name, list(self.methods) + list(TRAIN_METHODS))
            raise UserError(f"unknown method '{method_name}'{hint}; the recipe defines: {', '.join(self.methods)}",
                            field="train.method")
        return _build(TrainConfig, resolve_method(base, overrides, where, self.recipe_path), where,
                      self.recipe_path, {})

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("recipe_path", None)
        return d

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def resolve_method(train: dict, entry: dict | None, where: str = "train", recipe: str | None = None) -> dict:
    """The one place a method's switches are decided: `train` section < preset of `method` < the entry's keys.

    `train.balanced_batches: false` (the older spelling) means `sampler: random` unless the entry names a sampler."""
    entry = dict(entry or {})
    method = entry.get("method", train.get("method", "cdsdft"))
    if not isinstance(method, str) or method not in METHOD_PRESETS:
        raise UserError(f"unknown method '{method}'{suggest(str(method), METHOD_PRESETS)}; presets: "
                        f"{', '.join(METHOD_PRESETS)} (or set the switches {', '.join(SWITCHES)})",
                        file=recipe, field=f"{where}.method")
    merged = _deep_merge(_deep_merge(train, METHOD_PRESETS[method]), entry)
    merged["method"] = method
    if not merged.get("balanced_batches", True) and "sampler" not in entry:
        merged["sampler"] = "random"
    return merged


# --- loading ------------------------------------------------------------------------------------

def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _type_ok(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def _coerce_number(value: Any, tp: Any) -> Any:
    """YAML 1.1 reads `2e-4` as a string; accept it where a float is expected."""
    if isinstance(value, str) and _type_ok(1.5, tp) and not _type_ok(value, tp):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _type_name(tp: Any) -> str:
    return str(tp).replace("typing.", "").replace("<class '", "").replace("'>", "")


def _build(cls, data: Any, path: str, recipe: str | None, lines: dict[str, int]):
    """Recursively build dataclass `cls` from a dict, with errors naming the recipe, line and key path."""
    where = lambda key: dict(file=recipe, line=lines.get(key), field=key)  # noqa: E731
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"expected a mapping, got {type(data).__name__}", **where(path))
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name != "recipe_path"]
    if cls is TrainConfig:
        data = _apply_aliases(data, path, recipe, lines)
    kwargs = {}
    for key, value in data.items():
        full = f"{path}.{key}" if path else str(key)
        if key not in names:
            hint = suggest(key, names, cutoff=0.5, prefix=f"{path}." if path else "")
            raise UserError(f"unknown key '{full}'{hint}; valid here: {', '.join(names)}", **where(full))
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value, full, recipe, lines)
        elif cls is Config and key == "domains":
            if not isinstance(value, dict):
                raise UserError("expected a mapping of domain name -> settings", **where(full))
            kwargs[key] = {str(n): _build(DomainConfig, v, f"{full}.{n}", recipe, lines) for n, v in value.items()}
        else:
            value = _coerce_number(value, tp)
            if not _type_ok(value, tp):
                raise UserError(f"expected {_type_name(tp)}, got {value!r}", **where(full))
            if tp is float or (typing.get_origin(tp) in (typing.Union, types.UnionType) and float in typing.get_args(tp)):
                value = float(value) if isinstance(value, int) and not isinstance(value, bool) else value
            kwargs[key] = value
    try:
        return cls(**kwargs)
    except UserError as e:
        # __post_init__ names the field; add the recipe and line.
        raise UserError(str(e).split(": ", 1)[-1], file=recipe, line=lines.get(e.field or ""), field=e.field) from None


def _apply_aliases(data: dict, path: str, recipe: str | None, lines: dict[str, int]) -> dict:
    """TRL/transformers names (TRAIN_ALIASES) -> the recipe's `train` keys; both spellings at once is an error."""
    out = {}
    for key, value in data.items():
        name = TRAIN_ALIASES.get(key, key)
        if name != key and name in data:
            full = f"{path}.{key}" if path else str(key)
            raise UserError(f"'{key}' is another name for '{name}', which is also set; keep one",
                            file=recipe, line=lines.get(full), field=full)
        out[name] = value
    return out


def _aliases_in(doc: dict, recipe: str | None, lines: dict[str, int]) -> None:
    """Rename TRL aliases in a recipe (or overrides) document's `train` and `methods.*` sections, in place, so that
    a recipe's `lr` and an override's `learning_rate` are the same key when they merge."""
    if isinstance(doc.get("train"), dict):
        doc["train"] = _apply_aliases(doc["train"], "train", recipe, lines)
    if isinstance(doc.get("methods"), dict):
        for name, over in doc["methods"].items():
            if isinstance(over, dict):
                doc["methods"][name] = _apply_aliases(over, f"methods.{name}", recipe, lines)


def train_key(tc: TrainConfig) -> dict:
    """The `train` settings that decide the trained model (cache keys): not where it logs, and trainer_args only
    when given (so adding the knob left earlier runs' keys unchanged)."""
    return model_settings(dataclasses.asdict(tc))


def model_settings(train: dict) -> dict:
    """A `train` section (as a dict) less what does not change the trained model: `train_key`, and the training
    stage's check that checkpoints it resumes from were made with the same settings."""
    d = dict(train)
    d.pop("report_to", None)
    if d.get("invariance") in (None, "none") or not d.get("beta"):
        d.pop("inv_grad", None)   # no L_inv, nothing it changes (and those methods' runs keep their keys)
    if not d.get("trainer_args"):
        d.pop("trainer_args", None)
    return d


def _line_map(text: str) -> dict[str, int]:
    """key path ('train.lora.r') -> 1-based line in the YAML text, for error messages."""
    out: dict[str, int] = {}
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return out

    def walk(node, prefix):
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = f"{prefix}.{k.value}" if prefix else str(k.value)
                out[key] = k.start_mark.line + 1
                walk(v, key)
        elif isinstance(node, yaml.SequenceNode):   # list items: 'compare[1]'
            for i, v in enumerate(node.value):
                out[f"{prefix}[{i}]"] = v.start_mark.line + 1
                walk(v, f"{prefix}[{i}]")

    walk(root, "")
    return out


def parse_overrides(overrides: list[str]) -> dict:
    """['train.lr=2e-4', 'limit=8'] -> nested dict. Values are YAML scalars/lists."""
    out: dict = {}
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override '{item}' is not of the form key.sub=value", field=item)
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise UserError(f"override '{item}' has an empty key", field=item)
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise UserError(f"override '{item}' conflicts with another override", field=key)
        node[parts[-1]] = value
    return out


def load_config(recipe: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a recipe YAML (or the defaults when None) and apply `key.sub=value` overrides."""
    data: dict = {}
    lines: dict[str, int] = {}
    recipe_str = None
    if recipe is not None:
        p = Path(recipe)
        if not p.exists():
            raise UserError("recipe file not found", file=str(p))
        text = p.read_text(encoding="utf-8")
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            raise UserError(f"invalid YAML: {getattr(e, 'problem', e)}", file=str(p),
                            line=(mark.line + 1) if mark else None) from None
        if not isinstance(data, dict):
            raise UserError("a recipe must be a mapping of keys to values", file=str(p))
        lines = _line_map(text)
        recipe_str = str(p)
    over = parse_overrides(overrides or [])
    _aliases_in(data, recipe_str, lines)
    _aliases_in(over, None, {})
    # Overrides of a named method's settings (methods.cdsdft.beta=0) merge into that entry.
    merged = _deep_merge(data, over)
    cfg = _build(Config, merged, "", recipe_str, lines)
    cfg.recipe_path = recipe_str
    return cfg


def stable_hash(obj: Any, n: int = 16) -> str:
    """Hash of JSON-serialisable data, independent of dict order (cache keys)."""
    blob = json.dumps(obj, sort_keys=True, default=str, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:n]
