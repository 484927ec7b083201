"""`crossdistill export`: a run's trained method as a PEFT adapter / merged model that plain transformers, peft and
lm-eval's loading path open, with a model card."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from crossdistill.config import Config, DomainConfig, LoraConfig, TrainConfig
from crossdistill.errors import UserError
from crossdistill.export import base_model_id, export_run
from crossdistill.models import TINY, resolve_model_path

DOMAINS = ("math", "code")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run with one trained method (cdsdft, LoRA, 2 steps on the tiny model), its results and its recipe."""
    from crossdistill.training import train

    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("exp") / "run"
    rows = [{"id": f"{d}-{i}", "domain": d, "prompt": f"Question {i} about {d}?", "original_response": f"orig {i}",
             "response": f"An answer of my own, {d} {i}.", "accepted": True, "copied": False, "reason": "ok",
             "generated": ""} for i in range(4) for d in DOMAINS]
    distilled = run / "distill" / "distilled.jsonl"
    distilled.parent.mkdir(parents=True)
    distilled.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = Config(model=TINY, output_dir=str(run), seed=0, domains={d: DomainConfig() for d in DOMAINS},
                 train=TrainConfig(max_steps=2, batch_size=4, max_length=160, lr=5e-3, save_steps=1000,
                                   lora=LoraConfig(r=4, alpha=8), report_to="none"))
    train(cfg, "cdsdft", str(distilled), str(run / "train" / "cdsdft"))
    (run / "recipe.resolved.yaml").write_text(cfg.to_yaml())
    scores = [{"method": m, "task": "arc-easy", "metric": "acc", "value": v, "ci_low": v - 0.1, "ci_high": v + 0.1,
               "n": 20} for m, v in (("seed", 0.40), ("cdsdft", 0.45))]
    deltas = [{"method": "cdsdft", "vs": "seed", "task": "arc-easy", "metric": "acc", "delta": 0.05,
               "ci_low": -0.02, "ci_high": 0.12, "n": 20}]
    (run / "results.json").write_text(json.dumps({"model": TINY, "scores": scores, "deltas": deltas}))
    return run


def _logits(model, ids):
    with torch.no_grad():
        return model.eval()(input_ids=ids).logits


IDS = torch.tensor([[1, 5, 9, 42, 17, 3, 60]])


def test_adapter_export_loads_with_plain_peft_and_lm_evals_path(run_dir, tmp_path):
    from peft import AutoPeftModelForCausalLM, PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "adapter"
    summary = export_run(str(run_dir), "cdsdft", str(out))
    assert summary["kind"] == "adapter"
    acfg = json.loads((out / "adapter_config.json").read_text())
    base_path = str(Path(resolve_model_path(TINY)).resolve())
    assert acfg["base_model_name_or_path"] == base_path      # a local model: its path, loadable as is
    assert not (out / ".complete").exists() and not (out / "train_stats.json").exists()

    # the trained adapter, as the run holds it
    base = AutoModelForCausalLM.from_pretrained(resolve_model_path(TINY))
    trained = PeftModel.from_pretrained(base, str(run_dir / "train" / "cdsdft" / "adapter"))
    ref = _logits(trained, IDS)
    # plain peft: the base comes from base_model_name_or_path
    auto = AutoPeftModelForCausalLM.from_pretrained(str(out))
    assert torch.allclose(_logits(auto, IDS), ref, atol=1e-5)
    # lm-eval's HFLM with peft=: AutoModelForCausalLM.from_pretrained(pretrained) then PeftModel.from_pretrained
    base2 = AutoModelForCausalLM.from_pretrained(base_path)
    assert torch.allclose(_logits(PeftModel.from_pretrained(base2, str(out)), IDS), ref, atol=1e-5)
    assert AutoTokenizer.from_pretrained(str(out)).encode("hello") == AutoTokenizer.from_pretrained(base_path).encode("hello")
    # the LoRA is not the identity: the export carries trained weights
    assert not torch.allclose(_logits(AutoModelForCausalLM.from_pretrained(base_path), IDS), ref, atol=1e-4)

    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and f"base_model: {base_path}" in card and "library_name: peft" in card
    assert "| cdsdft | arc-easy | acc | 0.4500 |" in card and "| seed | arc-easy | acc | 0.4000 |" in card
    assert "+0.0500" in card                                   # the paired delta vs the seed
    assert "max_steps: 2" in card and "model: tiny-random-llama" in card   # training settings and the full recipe
    assert "Examples per domain" in card


def test_merged_export_is_a_plain_transformers_model(run_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "merged"
    assert export_run(str(run_dir), "cdsdft", str(out), merge=True)["kind"] == "merged"
    assert not (out / "adapter_config.json").exists() and (out / "config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(str(out))
    base = AutoModelForCausalLM.from_pretrained(resolve_model_path(TINY))
    ref = _logits(PeftModel.from_pretrained(base, str(run_dir / "train" / "cdsdft" / "adapter")), IDS)
    assert torch.allclose(_logits(merged, IDS), ref, atol=1e-4), (_logits(merged, IDS) - ref).abs().max()
    assert "library_name: transformers" in (out / "README.md").read_text()


@pytest.mark.skipif(__import__("importlib").util.find_spec("lm_eval") is None,
                    reason="lm-eval is not installed in this environment (pip install lm-eval to run this check); "
                           "the loading path it uses (PeftModel.from_pretrained on the base) is tested above")
def test_export_loads_in_lm_eval_with_peft(run_dir, tmp_path):
    from lm_eval.models.huggingface import HFLM

    out = tmp_path / "lm"
    export_run(str(run_dir), "cdsdft", str(out))
    base_path = str(Path(resolve_model_path(TINY)).resolve())
    lm = HFLM(pretrained=base_path, peft=str(out), tokenizer=str(out), device="cpu", batch_size=1, dtype="float32")
    assert type(lm.model).__name__ == "PeftModelForCausalLM"
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    trained = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path),
                                        str(run_dir / "train" / "cdsdft" / "adapter"))
    assert torch.allclose(_logits(lm.model, IDS), _logits(trained, IDS), atol=1e-5)


def test_registry_models_export_their_hub_id():
    assert base_model_id("smollm2-135m-instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert base_model_id("qwen2.5-coder-0.5b-instruct") == "Qwen/Qwen2.5-Coder-0.5B-Instruct"
    assert base_model_id("someone/some-model") == "someone/some-model"


def test_bad_exports_are_user_errors_and_write_nothing(run_dir, tmp_path):
    with pytest.raises(UserError) as e:
        export_run(str(run_dir), "cdsdf", str(tmp_path / "x"))
    assert "did you mean 'cdsdft'" in str(e.value) and e.value.field == "--method"
    with pytest.raises(UserError):
        export_run(str(tmp_path), "cdsdft", str(tmp_path / "y"))       # not a run
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    with pytest.raises(UserError) as e:
        export_run(str(run_dir), "cdsdft", str(full))
    assert "not empty" in str(e.value) and (full / "keep.txt").read_text() == "mine"
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    assert not list(tmp_path.glob(".*.partial"))


def test_cli_export(run_dir, tmp_path):
    p = subprocess.run([sys.executable, "-m", "crossdistill.cli", "export", str(run_dir), "--method", "cdsdft",
                        "--out", str(tmp_path / "cli")], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "adapter:" in p.stdout and (tmp_path / "cli" / "adapter_model.safetensors").exists()
    p = subprocess.run([sys.executable, "-m", "crossdistill.cli", "export", str(run_dir), "--method", "nope",
                        "--out", str(tmp_path / "cli2")], capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "has no finished training" in p.stderr and "Traceback" not in p.stderr
