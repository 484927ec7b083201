"""Export a trained method out of a run: a PEFT adapter folder or a merged model folder, with a model card.

    crossdistill export runs/demo --method cdsdft --out exported/cdsdft            # adapter (+ tokenizer, card)
    crossdistill export runs/demo --method cdsdft --merge --out exported/merged    # base + LoRA merged
    crossdistill export runs/demo --method cdsdft --out DIR --push-to-hub me/my-model   # then upload (online)

The adapter's `base_model_name_or_path` is an id others can load: the hub id of a registry model
(smollm2-135m-instruct -> HuggingFaceTB/SmolLM2-135M-Instruct), the path of a local model, a hub id as given. The
registry models are dequantised GGUFs (see `models.model_note`), so the hub weights are close to, not the same as,
the weights the adapter was trained on; the card says so, and `--merge` writes the exact trained weights.

The folder is built next to `--out` and renamed into place when complete: an interrupted export leaves nothing at
`--out`, and an existing non-empty `--out` is refused rather than overwritten.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError, suggest
from .io import output_dir_problem, write_text
from .statistics import SEED

_RUN_ONLY_FILES = {".complete", "train_stats.json", "domain_classifier.pt", "README.md"}


def base_model_id(model: str) -> str:
    """A loadable id for the base a run trained on: a registry model's hub id, a local folder's absolute path,
    anything else (a hub id) as given."""
    from .models import REGISTRY, TINY, resolve_model_path

    if model in REGISTRY:
        return REGISTRY[model].hub_id
    if model == TINY:
        return str(Path(resolve_model_path(model)).resolve())
    p = Path(model).expanduser()
    return str(p.resolve()) if p.exists() else model


def _trained_methods(run: Path) -> list[str]:
    d = run / "train"
    return sorted(p.name for p in d.iterdir() if (p / "adapter" / ".complete").exists()) if d.is_dir() else []


def _read_yaml(path: Path) -> dict:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"cannot read: {e}", file=str(path)) from None


def _read_json(path: Path) -> Any:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read: {e}", file=str(path)) from None


def _scores(run: Path, method: str) -> tuple[list[dict], list[dict]]:
    """(this method's and the seed's scores, this method's paired deltas vs the seed) from results.json."""
    res = _read_json(run / "results.json")
    if res is None:
        own = _read_json(run / "eval" / method / "results.json") or {}
        return [dict(s, method=method) for s in own.get("scores", [])], []
    scores = [s for s in res.get("scores", []) if s.get("method") in (method, "seed") and not s.get("left_out_domain")]
    deltas = [d for d in res.get("deltas", []) if d.get("method") == method and d.get("vs") == SEED
              and not d.get("left_out_domain")]
    return scores, deltas


def model_card(*, run: Path, method: str, run_cfg: dict, base_id: str, merged: bool, full: bool) -> str:
    """README.md of the exported folder: what it is, how it was trained (recipe, data), its scores, how to load it."""
    from . import __version__
    from .models import REGISTRY, model_note

    model = str(run_cfg.get("model"))
    spec = REGISTRY.get(model)
    stats = _read_json(run / "train" / method / "train_stats.json") or {}
    dstats = _read_json(run / "distill" / "stats.json") or {}
    recipe = run / "recipe.resolved.yaml"
    recipe_text = recipe.read_text(encoding="utf-8") if recipe.exists() else None
    scores, deltas = _scores(run, method)
    lib = "transformers" if (merged or full) else "peft"
    front = {"base_model": base_id, "library_name": lib, "tags": ["crossdistill", "cd-sdft", method] +
             ([] if (merged or full) else ["lora"]), "pipeline_tag": "text-generation"}
    if spec is not None:
        front["license"] = "apache-2.0" if spec.license.lower().startswith("apache-2.0") else "other"
    what = ("the full fine-tuned model" if full else "the base model with the LoRA adapter merged in" if merged
            else "a LoRA adapter (PEFT)")
    L = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
         f"# {run.name} / {method}", "",
         f"{what.capitalize()}, trained with crossdistill {__version__} "
         f"(cross-domain self-distillation fine-tuning) from `{model}`.", ""]
    L += ["## Base model", "", f"- `base_model_name_or_path`: `{base_id}`"]
    note = model_note(model)
    if note:
        L += [f"- {note}.", "- The exact base is what `crossdistill models prepare "
              f"{model}` writes; an adapter applied to the hub weights runs on close, not identical, weights. "
              "The merged export (`--merge`) holds the exact trained weights."]
    L += [f"- Training seed: {run_cfg.get('seed')}", ""]
    L += ["## Training", "", f"- Method: `{method}` (objective `{(run_cfg.get('train') or {}).get('method')}`)"]
    if stats:
        L += [f"- Examples per domain: {stats.get('examples_per_domain')}; optimizer steps: {stats.get('steps')}; "
              f"precision: {stats.get('precision')}; final train loss: {stats.get('train_loss')}"]
    if run_cfg.get("domain_weights"):
        L += [f"- Domain weights: {run_cfg['domain_weights']}"]
    for dom, st in (dstats.get("domains") or {}).items():
        L += [f"- Distilled data, {dom}: {st.get('records')} records, {st.get('accepted')} rewrites accepted "
              f"({st.get('copied')} copies), the rest train on the original response"]
    L += ["", "Training settings (`train`, with the method's overrides):", "", "```yaml",
          yaml.safe_dump(run_cfg.get("train") or {}, sort_keys=False).strip(), "```", ""]
    if recipe_text:
        L += ["<details><summary>The full recipe (recipe.resolved.yaml)</summary>", "", "```yaml",
              recipe_text.strip(), "```", "", "</details>", ""]
    L += ["## Scores", ""]
    if scores:
        L += ["| method | task | metric | value | 95% CI | n |", "|---|---|---|---|---|---|"]
        for s in scores:
            L.append(f"| {s.get('method')} | {s['task']} | {s['metric']} | {s['value']:.4f} | "
                     f"[{s.get('ci_low', float('nan')):.3f}, {s.get('ci_high', float('nan')):.3f}] | {s.get('n')} |")
        if deltas:
            L += ["", f"Paired difference {method} − seed on the same items (bootstrap 95% CI):", "",
                  "| task | metric | delta | 95% CI | n |", "|---|---|---|---|---|"]
            for d in deltas:
                L.append(f"| {d['task']} | {d['metric']} | {d['delta']:+.4f} | [{d['ci_low']:+.3f}, "
                         f"{d['ci_high']:+.3f}] | {d.get('n')} |")
    else:
        L += ["No evaluation of this method in the run (run `crossdistill eval`, then export again)."]
    L += ["", "## Use", "", "```python"]
    if merged or full:
        L += ["from transformers import AutoModelForCausalLM, AutoTokenizer",
              "model = AutoModelForCausalLM.from_pretrained(\"PATH\")", "tok = AutoTokenizer.from_pretrained(\"PATH\")"]
    else:
        L += ["from peft import AutoPeftModelForCausalLM", "from transformers import AutoTokenizer",
              "model = AutoPeftModelForCausalLM.from_pretrained(\"PATH\")   # loads base_model_name_or_path",
              "tok = AutoTokenizer.from_pretrained(\"PATH\")"]
    L += ["```", "", "lm-evaluation-harness:", "", "```bash"]
    if merged or full:
        L += ["lm_eval --model hf --model_args pretrained=PATH --tasks arc_easy"]
    else:
        L += [f"lm_eval --model hf --model_args pretrained={base_id},peft=PATH,tokenizer=PATH --tasks arc_easy"]
    L += ["```", ""]
    return "\n".join(L)


def export_run(run_dir: str, method: str, out_dir: str, *, merge: bool = False,
               push_to_hub: str | None = None, private: bool = True) -> dict:
    """Write OUT (adapter or merged model, tokenizer, README.md model card); returns a summary dict."""
    run = Path(run_dir)
    if not (run / "train").is_dir():
        raise UserError("not a crossdistill run (no train/ folder): give a run's output_dir", file=str(run))
    adapter = run / "train" / method / "adapter"
    if not (adapter / ".complete").exists():
        trained = _trained_methods(run)
        raise UserError(f"method '{method}' has no finished training in this run{suggest(method, trained)}; trained: "
                        f"{', '.join(trained) or 'none'}", file=str(run), field="--method")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError("exists and is not empty; export into a new folder", file=str(out), field="--out")
    problem = output_dir_problem(out.parent if str(out.parent) else ".")
    if problem:
        raise UserError(f"output directory is not usable: {problem}", file=str(out), field="--out")
    if push_to_hub and os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
        raise UserError("--push-to-hub needs the network, and HF_HUB_OFFLINE is set", field="--push-to-hub")
    run_cfg = _read_yaml(run / "train" / method / "config.yaml")
    model = str(run_cfg.get("model") or "")
    if not model:
        raise UserError("has no `model`", file=str(run / "train" / method / "config.yaml"), field="model")
    full = not (adapter / "adapter_config.json").exists()   # full fine-tuning saved the whole model
    base_id = base_model_id(model)

    tmp = out.parent / f".{out.name}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        from .models import load_tokenizer, resolve_model_path

        tok = load_tokenizer(model)
        if full:
            for f in adapter.iterdir():
                if f.name not in _RUN_ONLY_FILES and f.is_file():
                    shutil.copy2(f, tmp / f.name)
        elif merge:
            import torch
            from peft import PeftModel
            from transformers import AutoModelForCausalLM

            base = AutoModelForCausalLM.from_pretrained(resolve_model_path(model), dtype="auto")
            merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
            merged.config.name_or_path = base_id
            with torch.no_grad():
                merged.save_pretrained(str(tmp), safe_serialization=True)
        else:
            for f in adapter.iterdir():
                if f.name not in _RUN_ONLY_FILES and f.is_file():
                    shutil.copy2(f, tmp / f.name)
            cfg_path = tmp / "adapter_config.json"
            acfg = json.loads(cfg_path.read_text(encoding="utf-8"))
            acfg["base_model_name_or_path"] = base_id
            write_text(cfg_path, json.dumps(acfg, indent=2, sort_keys=True) + "\n")
        tok.save_pretrained(str(tmp))
        write_text(tmp / "README.md", model_card(run=run, method=method, run_cfg=run_cfg, base_id=base_id,
                                                 merged=merge and not full, full=full))
        if out.exists():
            out.rmdir()   # empty (checked above)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    summary = {"out": str(out), "method": method, "kind": "full" if full else ("merged" if merge else "adapter"),
               "base_model_name_or_path": base_id}
    if push_to_hub:   # needs the network and a token (huggingface-cli login); not exercised by the offline tests
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(push_to_hub, private=private, exist_ok=True)
        info = api.upload_folder(folder_path=str(out), repo_id=push_to_hub,
                                 commit_message=f"crossdistill export of {run.name}/{method}")
        summary["pushed"] = str(getattr(info, "commit_url", push_to_hub))
    return summary
