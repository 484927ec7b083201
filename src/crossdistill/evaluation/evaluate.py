"""The eval stage: run tasks on a model (or model + adapter), write results.json and per-item samples.

    evaluate("smollm2-135m-instruct", ["gsm8k", "arc-easy", "my_task.yaml"], limit=50, out_dir="runs/x/eval/seed")
    evaluate(model, ["humaneval"], tokenizer=tok)          # an in-memory model (e.g. right after training)

Outputs (all written atomically):
* ``out_dir/results.json`` = {"model", "adapter", "scores": [{"task", "metric", "value", "ci_low", "ci_high", "n",
  ...}], "timing": {task: seconds}, "tasks": {task: {"type", "n", "config_hash", "resumed", ...}}, "seed", "limit",
  "eval"};
* ``out_dir/samples/<task>.jsonl`` — one line per item: id, prompt, output, extracted, gold, correct (+ the task
  type's details: verdicts, log-likelihoods, instruction results);
* ``out_dir/samples/<task>.meta.json`` — the task's config hash, item count, scores and `per_item`: each metric that
  is the plain mean of per-item scores -> {item id: score} (what paired comparisons read, `item_scores`). A task
  whose samples file
  has as many lines as its meta says and whose hash equals the current one is not recomputed (per-task resume);
  the model is not even loaded when every task is complete.

The config hash covers the task definition (spec, prompt format, selected item ids), the model (registry name or
path + adapter file digest; for an in-memory model a fingerprint of its weights), the eval settings that change
outputs (max_new_tokens, n_samples, pass_k, temperature, bootstrap, dtype, sandbox timeout), the limit and seed.
Batch size is not in it: it changes speed, not (beyond padding round-off) results.

Determinism: `limit` takes the first N of a shuffle seeded by `seed` — the same N items for every model and method.
Generation is greedy (pass@k sampling uses `eval.temperature` with `seed`). Confidence intervals are 95%
percentile bootstraps over items with `eval.bootstrap` resamples, seeded.
"""
from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable

from ..config import EvalConfig, stable_hash
from ..errors import UserError
from ..io import write_json, write_jsonl
from ..records import Record
from . import tasks as T
from .metrics import pass_at_k, score_entry

EVAL_VERSION = 2  # bump when a change to scoring invalidates cached samples (2: MC margin and chance)


# --- model handling ------------------------------------------------------------------------------

class _ModelHolder:
    """Loads the model on first use, so a fully resumed evaluation never pays for it."""

    def __init__(self, model_or_name: Any, tokenizer, adapter: str | None, dtype: str, progress: bool):
        self.spec = model_or_name
        self.adapter = adapter
        self.dtype = dtype
        self.progress = progress
        self._model = None if isinstance(model_or_name, (str, Path)) else model_or_name
        self._tok = tokenizer
        self._adapter_applied = False

    @property
    def in_memory(self) -> bool:
        return not isinstance(self.spec, (str, Path))

    def name(self) -> str:
        if not self.in_memory:
            return str(self.spec)
        cfg = getattr(self.spec, "config", None)
        return str(getattr(cfg, "_name_or_path", "") or getattr(self.spec, "name_or_path", "") or
                   type(self.spec).__name__)

    def get(self):
        if self._model is None:
            from ..models import load_model

            if self.progress:
                print(f"[eval] loading {self.spec}" + (f" + adapter {self.adapter}" if self.adapter else ""),
                      file=sys.stderr)
            self._model, tok = load_model(str(self.spec), dtype=self.dtype, adapter=self.adapter)
            self._tok = self._tok or tok
            self._adapter_applied = bool(self.adapter)  # load_model applied it: never wrap the model twice
        elif self.adapter and not self._adapter_applied:
            from peft import PeftModel

            if not (Path(self.adapter) / "adapter_config.json").exists():
                raise UserError("not a PEFT adapter folder (no adapter_config.json)", file=str(self.adapter),
                                field="adapter")
            self._model = PeftModel.from_pretrained(self._model, self.adapter).eval()
            self._adapter_applied = True
        if self._tok is None:
            from ..models import load_tokenizer

            path = self.name()
            try:
                self._tok = load_tokenizer(path)
            except Exception as e:  # noqa: BLE001
                raise UserError(f"an in-memory model needs `tokenizer=` (could not load one for '{path}': {e})",
                                field="tokenizer") from None
        if self._tok.pad_token is None:
            self._tok.pad_token = self._tok.eos_token
        self._model.eval()
        return self._model, self._tok

    def seed_fingerprint(self) -> str:
        """Identity of the model without its adapter (the seed of seed_kl)."""
        if not self.in_memory:
            return stable_hash([str(self.spec)])
        import torch

        h = hashlib.sha256()
        with torch.no_grad():
            for name, p in self.spec.named_parameters():
                if "lora_" in name or "modules_to_save" in name:
                    continue
                t = p.detach().float()
                h.update(name.replace("base_model.model.", "").replace(".base_layer", "").encode())
                h.update(f"{float(t.sum()):.6e},{float(t.abs().sum()):.6e},{tuple(t.shape)}".encode())
        return h.hexdigest()[:16]

    def fingerprint(self) -> str:
        """Identity of the weights for the resume hash."""
        if not self.in_memory:
            from ..training import COMPLETE_MARKER

            parts = [str(self.spec)]
            if self.adapter:
                parts.append(_dir_digest(Path(self.adapter)))
            elif (Path(str(self.spec)) / COMPLETE_MARKER).exists():   # a full fine-tune's folder: its weights
                parts.append(_dir_digest(Path(str(self.spec))))
            return stable_hash(parts)
        import torch

        h = hashlib.sha256()
        with torch.no_grad():
            for name, p in self.spec.named_parameters():
                t = p.detach().float()
                h.update(name.encode())
                h.update(f"{float(t.sum()):.6e},{float(t.abs().sum()):.6e},{tuple(t.shape)}".encode())
        if self.adapter:
            h.update(_dir_digest(Path(self.adapter)).encode())
        return h.hexdigest()[:16]


def _dir_digest(d: Path) -> str:
    if not d.exists():
        return "missing"
    h = hashlib.sha256()
    for f in sorted(d.rglob("*")):
        if f.is_file():
            h.update(str(f.relative_to(d)).encode())
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:16]


# --- public API -----------------------------------------------------------------------------------

def evaluate(model_or_name: Any, tasks: list[str], *, tokenizer=None, adapter: str | None = None,
             limit: int | None = None, out_dir: str | Path | None = None, eval_cfg: EvalConfig | None = None,
             seed: int = 0, progress: bool = True, vllm_cfg=None, seed_model: Any = None) -> dict:
    """Evaluate a model on tasks; returns the results dict (also written to `out_dir/results.json`).

    `model_or_name`: a registry name, local folder or hub id (loaded with `models.load_model`, `adapter` applied),
    or an in-memory model (pass its `tokenizer`; an `adapter` folder is applied on top). `tasks`: builtin names
    (`tasks.BUILTIN_TASKS`) or task spec YAML paths. `limit`: per task, the first N of a seeded shuffle.
    """
    eval_cfg = eval_cfg or EvalConfig()
    if isinstance(tasks, str):
        tasks = [t for t in tasks.split(",") if t.strip()]
    if not tasks:
        raise UserError("no eval tasks given", field="tasks")
    if limit is not None and limit <= 0:
        raise UserError("must be > 0 (or None)", field="limit")
    specs = [T.resolve_task(t.strip()) for t in tasks]   # validate every task before any work
    names = [s.name for s in specs]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise UserError(f"task name(s) given twice: {', '.join(sorted(dup))}", field="tasks")
    for s in specs:
        if s.type == "generate_code" and eval_cfg.n_samples > 1 and eval_cfg.temperature <= 0:
            raise UserError("eval.n_samples > 1 (pass@k) needs sampling: set eval.temperature > 0",
                            field="eval.temperature")
    holder = _ModelHolder(model_or_name, tokenizer, adapter, eval_cfg.dtype, progress)
    # seed_kl's reference: `seed_model` when given (a full fine-tune), else the model with its adapter disabled
    seed_holder = _ModelHolder(seed_model, tokenizer, None, eval_cfg.dtype, progress) if seed_model is not None \
        else None
    out = Path(out_dir) if out_dir is not None else None
    fingerprint = holder.fingerprint()
    if seed_holder is not None:
        fingerprint = stable_hash([fingerprint, seed_holder.fingerprint()])
    results: dict = {"model": holder.name(), "adapter": str(adapter) if adapter else None, "scores": [],
                     "timing": {}, "tasks": {}, "seed": seed, "limit": limit,
                     "eval": {k: getattr(eval_cfg, k) for k in ("max_new_tokens", "n_samples", "pass_k", "temperature",
                                                                "bootstrap", "dtype", "sandbox_timeout_s",
                                                                "batch_size")}}
    for spec in specs:
        records, shots = T.load_task_records(spec, limit=limit, seed=seed)
        if not records:
            raise UserError(f"task '{spec.name}' has no items to score", field="tasks")
        key = _config_hash(spec, records, shots, fingerprint, eval_cfg, limit, seed)
        cached = _load_cached(out, spec.name, key) if out is not None else None
        if cached is not None:
            if progress:
                print(f"[eval] {spec.name}: complete in {out}/samples (config {key}), not recomputed", file=sys.stderr)
            scores, seconds, info = cached["scores"], cached["seconds"], cached.get("info", {})
            info = {**info, "resumed": True}
        else:
            if progress:
                print(f"[eval] {spec.name} ({spec.type}): {len(records)} items", file=sys.stderr)
            t0 = time.perf_counter()
            kw = {}
            if eval_cfg.backend == "vllm" and spec.type not in ("multiple_choice", "gold_nll", "seed_kl") \
                    and not holder.in_memory:
                from ..models import load_tokenizer, resolve_model_path
                from ..vllm_backend import VllmModel

                # generation on the model's vLLM engine, the method's adapter as a LoRARequest
                model, tok = VllmModel(resolve_model_path(str(model_or_name)), adapter, vllm_cfg), \
                    load_tokenizer(str(model_or_name))
            else:
                model, tok = holder.get()
            if spec.type == "seed_kl":
                kw = {"seed_model": seed_holder.get()[0] if seed_holder else None,
                      "seed_key": seed_holder.fingerprint() if seed_holder else holder.seed_fingerprint()}
            rows, scores, info = _RUNNERS[spec.type](spec, records, shots, model, tok, eval_cfg, seed, progress, **kw)
            seconds = round(time.perf_counter() - t0, 3)
            info = {**info, "resumed": False}
            per_item = {s["metric"]: s.pop("per_item") for s in scores if "per_item" in s}
            if out is not None:
                _save_task(out, spec.name, rows, {"config_hash": key, "n": len(rows), "scores": scores,
                                                  "seconds": seconds, "info": info, "per_item": per_item})
            if progress:
                msg = ", ".join(f"{s['metric']} {s['value']:.4f}" for s in scores if s["value"] is not None)
                print(f"[eval] {spec.name}: {msg} ({seconds:.1f}s)", file=sys.stderr)
        results["scores"].extend(scores)
        results["timing"][spec.name] = seconds
        results["tasks"][spec.name] = {"type": spec.type, "n": len(records), "config_hash": key, **info}
        if out is not None:   # results.json after every task: a killed run still leaves what it finished
            write_json(out / "results.json", results)
    return results


# --- resume -------------------------------------------------------------------------------------------

def _config_hash(spec: T.TaskSpec, records: list[Record], shots: list[Record], fingerprint: str,
                 eval_cfg: EvalConfig, limit: int | None, seed: int) -> str:
    items = hashlib.sha256()
    for r in records + shots:
        items.update(json.dumps(r.to_dict(), sort_keys=True, ensure_ascii=False, default=str).encode())
    spec_d = spec.to_dict()
    spec_d.pop("spec_file", None)
    return stable_hash({
        "v": EVAL_VERSION, "spec": spec_d, "items": items.hexdigest(), "model": fingerprint,
        "eval": {k: getattr(eval_cfg, k) for k in ("max_new_tokens", "n_samples", "pass_k", "temperature",
                                                  "bootstrap", "dtype", "sandbox_timeout_s")},
        "limit": limit, "seed": seed, **({"backend": "vllm"} if eval_cfg.backend == "vllm" else {}),
    })


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", name)


def _load_cached(out: Path, name: str, key: str) -> dict | None:
    meta_p = out / "samples" / f"{_safe_name(name)}.meta.json"
    samples_p = out / "samples" / f"{_safe_name(name)}.jsonl"
    if not (meta_p.exists() and samples_p.exists()):
        return None
    try:
        meta = json.loads(meta_p.read_text(encoding="utf-8"))
        with open(samples_p, encoding="utf-8") as fh:
            n = sum(1 for line in fh if line.strip())
    except (OSError, ValueError):
        return None
    if meta.get("config_hash") != key or meta.get("n") != n:
        return None
    return meta


# Samples written before meta files carried `per_item`: the row field each per-item metric is the mean of.
_LEGACY_ITEM_FIELD = {"acc": "correct", "acc_norm": "correct_norm", "exact_match": "correct", "pass@1": "correct",
                      "refusal_rate": "correct", "prompt_strict_acc": "correct", "call_acc": "correct",
                      "bpb": "bpb", "kl": "kl", "margin": "margin"}


def item_scores(eval_dir: str | Path, task: str) -> dict[str, dict[str, float]]:
    """{metric: {item id: score}} of one task of an eval folder: the meta file's `per_item`, or for samples written
    before it was recorded, the per-item fields of the samples rows. {} when the task has no samples."""
    samples = Path(eval_dir) / "samples"
    meta_p, samples_p = samples / f"{_safe_name(task)}.meta.json", samples / f"{_safe_name(task)}.jsonl"
    if meta_p.exists():
        meta = json.loads(meta_p.read_text(encoding="utf-8"))
        if "per_item" in meta:
            return meta["per_item"]
    if not samples_p.exists():
        return {}
    rows = [json.loads(line) for line in samples_p.read_text(encoding="utf-8").splitlines() if line.strip()]
    out: dict[str, dict[str, float]] = {}
    for metric, fld in _LEGACY_ITEM_FIELD.items():
        items: dict[str, float] | None = {}
        for row in rows:
            if row.get(fld) is None or row["id"] in items:
                items = None   # several samples per item (pass@k) or no such field: not a per-item mean
                break
            v = row[fld]
            items[row["id"]] = float(bool(v)) if isinstance(v, bool) else float(v)
        if items:
            out[metric] = items
    return out


def _save_task(out: Path, name: str, rows: list[dict], meta: dict) -> None:
    write_jsonl(out / "samples" / f"{_safe_name(name)}.jsonl", rows)
    write_json(out / "samples" / f"{_safe_name(name)}.meta.json", meta)


# --- prompts ------------------------------------------------------------------------------------------

def _few_shot_target(spec: T.TaskSpec, rec: Record) -> str:
    if spec.type == "generate_code":
        code = (rec.response or "").strip("\n")
        return f"```python\n{code}\n```" if spec.chat else code
    return (rec.response or rec.answer or "").strip()


def _user_text(spec: T.TaskSpec, rec: Record) -> str:
    return T.fill_template(spec, rec) if spec.prompt_template else rec.prompt_text()


def build_prompts(spec: T.TaskSpec, records: list[Record], shots: list[Record], tok) -> list[str]:
    """The exact model input text of every record (chat template applied when `spec.chat`)."""
    from ..generation import render_chat

    prompts = []
    for rec in records:
        if spec.chat:
            if spec.prompt_template or shots:
                msgs: list[dict] = []
                for ex in shots:
                    msgs.append({"role": "user", "content": _user_text(spec, ex)})
                    msgs.append({"role": "assistant", "content": _few_shot_target(spec, ex)})
                msgs.append({"role": "user", "content": _user_text(spec, rec)})
            else:
                msgs = rec.prompt_messages()
            prompts.append(render_chat(tok, msgs))
        else:
            parts = [f"{_user_text(spec, ex)} {_few_shot_target(spec, ex)}".rstrip() for ex in shots]
            parts.append(_user_text(spec, rec))
            prompts.append("\n\n".join(parts))
    return prompts


def _sampling(spec: T.TaskSpec, eval_cfg: EvalConfig, seed: int, *, temperature: float = 0.0):
    from ..generation import SamplingConfig

    stop = spec.stop
    if stop is None and not spec.chat and spec.few_shot:
        stop = ["\n\n"]
    return SamplingConfig(max_new_tokens=spec.max_new_tokens or eval_cfg.max_new_tokens, temperature=temperature,
                          top_p=1.0, top_k=0, batch_size=eval_cfg.batch_size, seed=seed, stop=list(stop or []))


def _generate(model, tok, prompts: list[str], cfg, label: str, progress: bool):
    from ..generation import generate

    return generate(model, tok, prompts, cfg, progress=f"[eval] {label} generate" if progress else None)


def _bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=f"[eval] {desc}", file=sys.stderr, leave=False, dynamic_ncols=True)


def _text(g) -> str:
    return g if isinstance(g, str) else g.text


# --- task types -----------------------------------------------------------------------------------------

_LAST_NUM_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def extract(spec_or_mode: T.TaskSpec | str | dict, text: str) -> str | None:
    """The answer of a generate_match output under the task's `answer_extraction`."""
    mode = spec_or_mode.answer_extraction if isinstance(spec_or_mode, T.TaskSpec) else spec_or_mode
    text = text or ""
    if isinstance(mode, dict):
        m = re.search(mode["regex"], text)
        if not m:
            return None
        return (m.group(1) if m.groups() else m.group(0)).strip()
    if mode == "last_number":
        nums = _LAST_NUM_RE.findall(text)
        return nums[-1].replace(",", "").rstrip(".") if nums else None
    if mode == "boxed":
        from ..sources.formats import last_boxed

        b = last_boxed(text)
        return b.strip() if b is not None else None
    from ..domains.math import extract_answer

    return extract_answer(text)


def match(pred: str | None, gold: str | None) -> bool:
    """Exact match: equal after whitespace/case normalisation, or equal as math answers (`answers_match`)."""
    if pred is None or gold is None:
        return False
    if " ".join(str(pred).split()).casefold() == " ".join(str(gold).split()).casefold():
        return True
    from ..domains.math import answers_match

    return answers_match(str(pred), str(gold))


def _run_generate_match(spec, records, shots, model, tok, eval_cfg, seed, progress):
    prompts = build_prompts(spec, records, shots, tok)
    gens = _generate(model, tok, prompts, _sampling(spec, eval_cfg, seed), spec.name, progress)
    rows, correct = [], []
    for rec, p, g in zip(records, prompts, gens):
        pred = extract(spec, _text(g))
        ok = match(pred, rec.answer)
        correct.append(float(ok))
        rows.append({"id": rec.id, "prompt": p, "output": _text(g), "extracted": pred, "gold": rec.answer,
                     "correct": ok, "finished": getattr(g, "finished", None), "n_tokens": getattr(g, "n_tokens", None)})
    scores = [score_entry(spec.name, "exact_match", correct, resamples=eval_cfg.bootstrap, seed=seed,
                          ids=[r["id"] for r in rows])]
    return rows, scores, {}


def code_program(rec: Record, code: str) -> str:
    """The program to test: HumanEval replies that hold only a body get the prompt's signature in front; replies
    that define the function but drop the prompt's preamble (imports, helper functions) get the preamble."""
    from ..domains.code import program_for_eval

    prompt_code = (rec.meta or {}).get("code_prompt")
    ep = rec.entry_point
    if prompt_code and ep:
        m = re.search(rf"^\s*def\s+{re.escape(ep)}\b", prompt_code, re.MULTILINE)
        if m and re.search(rf"^\s*def\s+{re.escape(ep)}\b", code, re.MULTILINE):
            preamble = prompt_code[:m.start()].strip("\n")
            if preamble and preamble not in code:
                return preamble + "\n\n" + code
    return program_for_eval(rec, code)


def _run_code(spec, records, shots, model, tok, eval_cfg, seed, progress):
    from ..domains.code import extract_code, tests_program
    from ..sandbox import SandboxLimits, run_many

    prompts = build_prompts(spec, records, shots, tok)
    n = eval_cfg.n_samples
    greedy = _generate(model, tok, prompts, _sampling(spec, eval_cfg, seed), spec.name, progress)
    sampled: list = []
    if n > 1:
        rep = [p for p in prompts for _ in range(n)]
        sampled = _generate(model, tok, rep, _sampling(spec, eval_cfg, seed, temperature=eval_cfg.temperature),
                            f"{spec.name} x{n}", progress)
    outputs = [_text(g) for g in greedy] + [_text(g) for g in sampled]
    recs_of = list(records) + [r for r in records for _ in range(n if n > 1 else 0)]
    jobs, where, codes = [], [], []
    for i, (rec, o) in enumerate(zip(recs_of, outputs)):
        code = extract_code(o, rec.entry_point)
        codes.append(code)
        if code is not None:
            jobs.append({"code": code_program(rec, code), "tests": tests_program(rec), "setup": rec.test_setup or ""})
            where.append(i)
    verdicts: list[dict] = [{"status": "no_code", "passed": False} for _ in outputs]
    if jobs:
        res = run_many(jobs, limits=SandboxLimits(timeout_s=eval_cfg.sandbox_timeout_s), workers=None,
                       progress=f"[eval] {spec.name} sandbox" if progress else None)
        for i, v in zip(where, res):
            verdicts[i] = {"status": v.status, "passed": bool(v.passed), "n_tests": getattr(v, "n_tests", None),
                           "n_passed": getattr(v, "n_passed", None),
                           "stderr_tail": (getattr(v, "stderr_tail", "") or "")[-400:],
                           "isolation": getattr(v, "isolation", None), "weak": getattr(v, "weak", None)}
    rows, p1 = [], []
    per_k: dict[int, list[float]] = {k: [] for k in eval_cfg.pass_k} if n > 1 else {}
    for j, (rec, p) in enumerate(zip(records, prompts)):
        v = verdicts[j]
        p1.append(float(v["passed"]))
        row = {"id": rec.id, "prompt": p, "output": outputs[j], "extracted": codes[j],
               "gold": rec.tests, "correct": v["passed"], "verdict": v}
        if n > 1:
            base = len(records) + j * n
            c = sum(1 for s in range(n) if verdicts[base + s]["passed"])
            row["samples"] = [{"output": outputs[base + s], "status": verdicts[base + s]["status"],
                               "passed": verdicts[base + s]["passed"]} for s in range(n)]
            row["n_correct"] = c
            for k in per_k:
                per_k[k].append(pass_at_k(n, c, k))
        rows.append(row)
    scores = [score_entry(spec.name, "pass@1", p1, resamples=eval_cfg.bootstrap, seed=seed,
                          ids=[r["id"] for r in rows])]
    for k, vals in per_k.items():
        scores.append(score_entry(spec.name, f"pass@{k}_sampled", vals, resamples=eval_cfg.bootstrap, seed=seed,
                                  n_samples=n, temperature=eval_cfg.temperature))
    run_v = [v for v in verdicts if "isolation" in v]
    return rows, scores, {"sandbox_isolation": sorted({v["isolation"] for v in run_v}),
                          "sandbox_weak_programs": sum(1 for v in run_v if v.get("weak"))}


def _run_multiple_choice(spec, records, shots, model, tok, eval_cfg, seed, progress):
    from .loglik import score_choices

    prefix = ""
    if shots:
        prefix = "\n\n".join(f"{T.mc_request(spec, ex)[0]} {ex.choices[ex.gold]}" for ex in shots) + "\n\n"
    reqs = []
    for rec in records:
        ctx, conts, texts = T.mc_request(spec, rec)
        reqs.append((prefix + ctx, conts, texts))
    bar = _bar(len(reqs), f"{spec.name} loglik", progress)
    try:
        lls = score_choices(model, tok, [(c, conts) for c, conts, _ in reqs], batch_size=eval_cfg.batch_size,
                            progress=bar.update if bar else None)
    finally:
        if bar:
            bar.close()
    rows, acc, acc_norm, margins = [], [], [], []
    for rec, (ctx, conts, texts), ll in zip(records, reqs, lls):
        pred = max(range(len(ll)), key=lambda i: ll[i])
        margin = ll[rec.gold] - max(x for i, x in enumerate(ll) if i != rec.gold)
        margins.append(round(margin, 6))
        norm = [x / max(len(t), 1) for x, t in zip(ll, texts)]
        pred_n = max(range(len(norm)), key=lambda i: norm[i])
        acc.append(float(pred == rec.gold))
        acc_norm.append(float(pred_n == rec.gold))
        rows.append({"id": rec.id, "prompt": ctx, "output": texts[pred], "extracted": pred, "extracted_norm": pred_n,
                     "gold": rec.gold, "correct": pred == rec.gold, "correct_norm": pred_n == rec.gold,
                     "choices": texts, "loglik": [round(x, 6) for x in ll], "margin": margins[-1]})
    chance = sum(1 / len(r.choices) for r in records) / len(records)
    ids = [r["id"] for r in rows]
    scores = [score_entry(spec.name, "acc", acc, resamples=eval_cfg.bootstrap, seed=seed, chance=round(chance, 6),
                          ids=ids),
              score_entry(spec.name, "acc_norm", acc_norm, resamples=eval_cfg.bootstrap, seed=seed, ids=ids),
              score_entry(spec.name, "margin", margins, resamples=eval_cfg.bootstrap, seed=seed, ids=ids)]
    return rows, scores, {}


def _run_refusal(spec, records, shots, model, tok, eval_cfg, seed, progress):
    from .refusal import matched_pattern

    prompts = build_prompts(spec, records, shots, tok)
    gens = _generate(model, tok, prompts, _sampling(spec, eval_cfg, seed), spec.name, progress)
    rows, refused = [], []
    for rec, p, g in zip(records, prompts, gens):
        pat = matched_pattern(_text(g))
        refused.append(float(pat is not None))
        rows.append({"id": rec.id, "prompt": p, "output": _text(g), "extracted": pat,
                     "gold": "refuse", "correct": pat is not None})
    return rows, [score_entry(spec.name, "refusal_rate", refused, resamples=eval_cfg.bootstrap, seed=seed,
                              ids=[r["id"] for r in rows])], {}


def _run_instruction(spec, records, shots, model, tok, eval_cfg, seed, progress):
    from .ifeval import check_instructions

    skipped = T.count_unsupported(spec)
    prompts = build_prompts(spec, records, shots, tok)
    gens = _generate(model, tok, prompts, _sampling(spec, eval_cfg, seed), spec.name, progress)
    rows, strict, followed, total = [], [], [], []
    for rec, p, g in zip(records, prompts, gens):
        ids = list(rec.meta.get("instruction_id_list") or [])
        res = check_instructions(_text(g), ids, rec.meta.get("kwargs"), rec.prompt_text())
        strict.append(float(all(res)))
        followed.append(float(sum(res)))
        total.append(float(len(res)))
        rows.append({"id": rec.id, "prompt": p, "output": _text(g), "extracted": dict(zip(ids, res)),
                     "gold": ids, "correct": all(res)})
    scores = [score_entry(spec.name, "prompt_strict_acc", strict, resamples=eval_cfg.bootstrap, seed=seed,
                          skipped=skipped, ids=[r["id"] for r in rows]),
              score_entry(spec.name, "instruction_acc", followed, weights=total, resamples=eval_cfg.bootstrap,
                          seed=seed, n_instructions=int(sum(total)))]
    return rows, scores, {"skipped": skipped}


# --- continuous, generation-free task types -----------------------------------------------------------------

def _nll_sequences(spec, records: list[Record], targets: list[str], tok, max_length: int):
    """Per record (None where the target is empty): (input ids, number of prompt tokens, number of response tokens
    that are text — the appended eos is not —, truncated). With `spec.chat` exactly the training stage's
    tokenisation (`training.build_examples`: chat template + generation prompt, response + eos); else the plain
    prompt text and " " + target (lm-eval's context/continuation split, no eos)."""
    from ..training import build_examples
    from .loglik import encode_pair

    out: list = []
    for rec, target in zip(records, targets):
        if not target.strip():
            out.append(None)
            continue
        if spec.chat:
            (ex,), stats = build_examples([{"id": rec.id, "domain": rec.domain, "messages": rec.prompt_messages(),
                                            "target": target}], tok, max_length)
            n_prompt = sum(1 for x in ex["labels"] if x == -100)
            cut = bool(stats["truncated"])
            out.append((ex["input_ids"], n_prompt, len(ex["input_ids"]) - n_prompt - (0 if cut else 1), cut))
        else:
            ctx, cont = encode_pair(tok, rec.prompt_text(), " " + target)
            ids = (ctx + cont)[:max_length]
            out.append((ids, len(ctx), len(ids) - len(ctx), len(ctx) + len(cont) > max_length))
    return out


def _response_logits(model, seqs, batch_size: int, progress_bar=None):
    """Yield (index, fp32 logits [n_response, V]) predicting each sequence's response tokens, right-padded batches
    of similar length. The output head runs on the response positions only (`loglik._Parts`: decoder, then the
    head in fp32) where the model allows; else the full forward."""
    import torch

    from .loglik import _Parts

    parts = _Parts(model)
    device = next(model.parameters()).device
    order = sorted((i for i, s in enumerate(seqs) if s is not None), key=lambda i: -len(seqs[i][0]))
    for b in range(0, len(order), batch_size):
        idx = order[b:b + batch_size]
        L = max(len(seqs[i][0]) for i in idx)
        ids = torch.zeros((len(idx), L), dtype=torch.long, device=device)
        mask = torch.zeros((len(idx), L), dtype=torch.long, device=device)
        for r, i in enumerate(idx):
            ids[r, :len(seqs[i][0])] = torch.tensor(seqs[i][0], device=device)
            mask[r, :len(seqs[i][0])] = 1
        with torch.no_grad():
            if parts.decoder is None:
                logits = model(input_ids=ids, attention_mask=mask).logits.float()
                for r, i in enumerate(idx):
                    n, p = len(seqs[i][0]), seqs[i][1]
                    yield i, logits[r, p - 1:n - 1]
            else:
                hidden = parts.decoder(input_ids=ids, attention_mask=mask).last_hidden_state
                w = parts.head.weight.float()
                for r, i in enumerate(idx):
                    n, p = len(seqs[i][0]), seqs[i][1]
                    lg = hidden[r, p - 1:n - 1].float() @ w.T
                    yield i, (lg + parts.head.bias.float()) if parts.head.bias is not None else lg
        if progress_bar is not None:
            progress_bar.update(len(idx))


def _max_len(model) -> int:
    return min(2048, int(getattr(getattr(model, "config", None), "max_position_embeddings", 0) or 2048))


def _run_gold_nll(spec, records, shots, model, tok, eval_cfg, seed, progress):
    import math

    import torch

    from .loglik import _precision_ctx

    targets = [rec.response or "" for rec in records]
    seqs = _nll_sequences(spec, records, targets, tok, _max_len(model))
    rows_of: dict[int, dict] = {}
    bar = _bar(sum(s is not None for s in seqs), f"{spec.name} nll", progress)
    with _precision_ctx(model, "auto"):
        for i, lg in _response_logits(model, seqs, max(1, eval_cfg.batch_size // 4), bar):
            ids, p, n_text, cut = seqs[i]
            tgt = torch.tensor(ids[p:p + n_text], device=lg.device)
            nll = -float(torch.log_softmax(lg[:n_text], dim=-1).gather(-1, tgt.unsqueeze(-1)).sum())
            # bits per byte of the text scored: the whole reference, or what fits in the context window
            text = tok.decode(ids[p:p + n_text]) if cut else (targets[i] if spec.chat else " " + targets[i])
            n_bytes = len(text.encode("utf-8"))
            if n_bytes:
                rows_of[i] = {"id": records[i].id, "n_tokens": n_text, "n_bytes": n_bytes, "truncated": cut,
                              "nll": round(nll, 6), "bpb": round(nll / math.log(2) / n_bytes, 9)}
    if bar:
        bar.close()
    rows = [rows_of[i] for i in sorted(rows_of)]
    return rows, [score_entry(spec.name, "bpb", [r["bpb"] for r in rows], resamples=eval_cfg.bootstrap,
                              seed=seed, ids=[r["id"] for r in rows])], {"skipped": len(records) - len(rows)}


def seed_responses(spec, records, model, tok, eval_cfg, seed_key: str, progress: bool) -> list[str]:
    """The seed model's greedy responses to the records' prompts, generated once and cached on disk under
    $CROSSDISTILL_CACHE/seed_responses/<hash of seed, prompts and settings>.json (`model` must be the seed)."""
    from ..io import write_json
    from ..models import cache_dir

    prompts = build_prompts(spec, records, [], tok)
    cfg = _sampling(spec, eval_cfg, 0)
    key = stable_hash({"seed": seed_key, "prompts": prompts, "max_new_tokens": cfg.max_new_tokens,
                       "stop": cfg.stop, "dtype": eval_cfg.dtype})
    path = cache_dir() / "seed_responses" / f"{key}.json"
    if path.exists():
        try:
            cached = json.loads(path.read_text(encoding="utf-8"))
            if cached.get("n") == len(prompts):
                return cached["responses"]
        except (OSError, ValueError):
            pass
    gens = _generate(model, tok, prompts, cfg, f"{spec.name} seed responses", progress)
    texts = [_text(g) for g in gens]
    write_json(path, {"n": len(texts), "responses": texts})
    return texts


def _run_seed_kl(spec, records, shots, model, tok, eval_cfg, seed, progress, *, seed_model=None, seed_key="?"):
    import contextlib

    import torch

    from ..training import _adapter_disabled
    from .loglik import _precision_ctx, folded_lora

    seed_ctx = (lambda: contextlib.nullcontext()) if seed_model is not None else (lambda: _adapter_disabled(model))
    seed_m = seed_model if seed_model is not None else model
    with seed_ctx():
        targets = seed_responses(spec, records, seed_m, tok, eval_cfg, seed_key, progress)
    seqs = _nll_sequences(spec, records, targets, tok, _max_len(model))
    bs = max(1, eval_cfg.batch_size // 8)
    kl: dict[int, tuple[float, int]] = {}
    # Batch by batch: the model's logits, then the seed's on the same batch (same shapes: no batch-shape noise).
    order = [i for i, s in enumerate(seqs) if s is not None]   # 16 sequences at a time: bounded memory
    if seed_model is None and not hasattr(model, "peft_config"):
        # the model is its own seed (no adapter to disable): KL(seed || seed) is exactly 0, no forward needed
        kl = {i: (0.0, len(seqs[i][0]) - seqs[i][1]) for i in order}
        order = []
    bar = _bar(len(order), f"{spec.name} kl", progress) if order else None
    # the adapter is folded only while the model's own logits run: the seed's are the same weights, adapter disabled
    with (_precision_ctx(model, "auto", fold=False) if order else contextlib.nullcontext()), \
            (_precision_ctx(seed_model, "auto") if seed_model is not None and order else contextlib.nullcontext()):
        for b in range(0, len(order), 16):
            part = set(order[b:b + 16])
            chunk = [seqs[i] if i in part else None for i in range(len(seqs))]
            with folded_lora(model):
                mine = {i: lg for i, lg in _response_logits(model, chunk, bs)}
            with seed_ctx():
                for i, lg_s in _response_logits(seed_m, chunk, bs):
                    lp_s = torch.log_softmax(lg_s, dim=-1)
                    lp_m = torch.log_softmax(mine.pop(i), dim=-1)
                    per_tok = (lp_s.exp() * (lp_s - lp_m)).sum(-1)
                    kl[i] = (float(per_tok.mean()), int(per_tok.numel()))
            if bar:
                bar.update(len(part))
    if bar:
        bar.close()
    rows = [{"id": rec.id, "output": targets[i], "n_tokens": kl[i][1], "kl": round(kl[i][0], 9)}
            for i, rec in enumerate(records) if i in kl]
    vals = [r["kl"] for r in rows]
    return rows, [score_entry(spec.name, "kl", vals, resamples=eval_cfg.bootstrap, seed=seed,
                              ids=[r["id"] for r in rows])], {
        "skipped": len(records) - len(rows)}


def _run_tool_call(spec, records, shots, model, tok, eval_cfg, seed, progress):
    from .toolcall import check_calls, ground_truth_of, parse_calls

    prompts = build_prompts(spec, records, shots, tok)
    gens = _generate(model, tok, prompts, _sampling(spec, eval_cfg, seed), spec.name, progress)
    rows, correct = [], []
    for rec, p, g in zip(records, prompts, gens):
        gt = rec.meta.get("ground_truth") or ground_truth_of(rec.expected_call)
        calls = parse_calls(_text(g))
        reason = check_calls(calls, gt, rec.tools)
        correct.append(float(reason == "ok"))
        rows.append({"id": rec.id, "prompt": p, "output": _text(g), "extracted": calls, "gold": gt,
                     "correct": reason == "ok", "reason": reason})
    return rows, [score_entry(spec.name, "call_acc", correct, resamples=eval_cfg.bootstrap, seed=seed,
                              ids=[r["id"] for r in rows])], {}


_RUNNERS: dict[str, Callable] = {
    "generate_match": _run_generate_match,
    "generate_code": _run_code,
    "multiple_choice": _run_multiple_choice,
    "refusal": _run_refusal,
    "instruction": _run_instruction,
    "gold_nll": _run_gold_nll,
    "seed_kl": _run_seed_kl,
    "tool_call": _run_tool_call,
}
