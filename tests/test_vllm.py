"""The vLLM backend: recipe settings -> engine arguments, adapters -> LoRARequests, engines freed before training,
and the eval/distill routing. The parts that need vLLM itself run only where it imports (a GPU machine with the
`vllm` extra); here they are skipped with the reason."""
from __future__ import annotations

import importlib.util
import json

import pytest

from crossdistill import vllm_backend
from crossdistill.config import VllmConfig, load_config
from crossdistill.errors import UserError
from crossdistill.generation import Generation, SamplingConfig

HAS_VLLM = importlib.util.find_spec("vllm") is not None
NO_VLLM = "vllm is not installed here (the `vllm` extra needs a CUDA GPU; this project's machines have none)"


def test_recipe_settings_become_engine_arguments():
    cfg = load_config(None, ["vllm.tensor_parallel_size=4", "vllm.gpu_memory_utilization=0.6", "vllm.dtype=bfloat16",
                             "vllm.max_model_len=4096", "eval.backend=vllm"])
    assert cfg.eval.backend == "vllm"
    kw = vllm_backend.engine_kwargs(cfg.vllm, seed=3)
    assert kw == {"dtype": "bfloat16", "tensor_parallel_size": 4, "gpu_memory_utilization": 0.6, "seed": 3,
                  "enable_lora": True, "max_lora_rank": 64, "max_loras": 1, "enforce_eager": False,
                  "max_model_len": 4096}
    for bad in ("vllm.gpu_memory_utilization=1.5", "vllm.tensor_parallel_size=0", "eval.backend=vlm"):
        with pytest.raises(UserError):
            load_config(None, [bad])


def test_eval_backend_default_keeps_the_eval_cache_keys():
    from crossdistill.cli import default_recipe
    from crossdistill.runner import build_plan

    demo = default_recipe()
    hf = {s.name: s.key for s in build_plan(load_config(demo))}
    explicit = {s.name: s.key for s in build_plan(load_config(demo, ["eval.backend=hf"]))}
    vl = {s.name: s.key for s in build_plan(load_config(demo, ["eval.backend=vllm"]))}
    assert hf == explicit
    assert hf["eval/seed"] != vl["eval/seed"] and hf["train/sft"] == vl["train/sft"]


def test_adapters_are_checked_before_vllm_is_needed(tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    (full / "config.json").write_text("{}")
    with pytest.raises(UserError, match="LoRA adapters only"):
        vllm_backend.lora_request(str(full))
    big = tmp_path / "big"
    big.mkdir()
    (big / "adapter_config.json").write_text(json.dumps({"r": 128}))
    with pytest.raises(UserError, match="max_lora_rank") as e:
        vllm_backend.lora_request(str(big), VllmConfig(max_lora_rank=64))
    assert e.value.field == "vllm.max_lora_rank"
    assert vllm_backend.lora_request(None) is None


@pytest.mark.skipif(HAS_VLLM, reason="checks the message shown where vllm is missing")
def test_missing_vllm_is_one_clear_error():
    with pytest.raises(UserError, match=r"pip install 'crossdistill\[vllm\]'"):
        vllm_backend.engine("some/model")


def test_training_frees_the_engines_of_its_process(tmp_path, monkeypatch):
    """An engine left by distill/eval with backend vllm is dropped before the first training step."""
    from crossdistill.config import Config, DomainConfig, LoraConfig, TrainConfig
    from crossdistill.models import build_tiny_model
    from crossdistill.training import train

    order = []
    monkeypatch.setitem(vllm_backend._ENGINES, "some/model", object())
    real_free = vllm_backend.free_engines
    monkeypatch.setattr(vllm_backend, "free_engines", lambda: order.append(("free", real_free())) or 1)
    rows = [{"id": f"{d}{i}", "domain": d, "prompt": f"q {i}", "original_response": "o", "response": f"a {i}",
             "accepted": True, "copied": False, "reason": "ok", "generated": ""} for i in range(2) for d in ("math", "text")]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = Config(domains={"math": DomainConfig(), "text": DomainConfig()},
                 train=TrainConfig(method="sft", max_steps=1, batch_size=2, max_length=64,
                                   lora=LoraConfig(r=2, alpha=4), report_to="none"))
    model, tok = build_tiny_model()

    class Step:   # records that training started after the engines were freed
        def __getattr__(self, name):
            if name.startswith("on_"):
                return lambda *a, **k: order.append(("step", not vllm_backend._ENGINES)) if name == "on_step_begin" \
                    else None
            raise AttributeError(name)

    train(cfg, "sft", str(data), str(tmp_path / "out"), model=model, tokenizer=tok, callbacks=[Step()])
    assert order[0] == ("free", 1) and ("step", True) in order


def test_eval_generation_tasks_use_the_engine_with_the_adapter_as_lora(tmp_path, monkeypatch, tiny):
    """eval.backend vllm: generation tasks go to the model's engine with the method's adapter as a LoRARequest;
    log-likelihood tasks stay in HF. (vllm_backend.generate is replaced by a recorder: no vLLM here.)"""
    from crossdistill import evaluate
    from crossdistill.config import EvalConfig
    from crossdistill.models import TINY, prepare_model

    prepare_model(TINY)
    calls = []

    def fake_generate(model_path, prompts, cfg, *, adapter=None, settings=None, progress=None):
        calls.append((model_path, adapter, settings.tensor_parallel_size, len(prompts)))
        return [Generation("#### 4", 2, True) for _ in prompts]

    monkeypatch.setattr(vllm_backend, "generate", fake_generate)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 4}))
    res = evaluate(TINY, ["gsm8k"], limit=3, eval_cfg=EvalConfig(backend="vllm", bootstrap=10), progress=False,
                   vllm_cfg=VllmConfig(tensor_parallel_size=2), adapter=str(adapter))
    # one call, with the adapter (as the LoRA of the seed's engine), the recipe's settings, every item
    assert len(calls) == 1 and calls[0][1] == str(adapter) and calls[0][2] == 2 and calls[0][3] == 3
    assert str(calls[0][0]).endswith(TINY)
    assert res["scores"][0]["n"] == 3


@pytest.mark.skipif(not HAS_VLLM, reason=NO_VLLM)
def test_vllm_engine_greedy_matches_hf_and_is_freed():   # pragma: no cover - needs a GPU and the vllm extra
    import torch

    from crossdistill.generation import generate
    from crossdistill.models import TINY, load_model, prepare_model

    if not torch.cuda.is_available():
        pytest.skip("vllm imports but there is no CUDA GPU")
    path = str(prepare_model(TINY))
    model, tok = load_model(path, dtype="float32")
    prompts = ["hello there", "one two three"]
    cfg = SamplingConfig(max_new_tokens=8)
    ours = generate(model, tok, prompts, cfg)
    theirs = generate(path, tok, prompts, cfg, backend="vllm")
    assert [g.n_tokens for g in theirs] == [g.n_tokens for g in ours]
    assert vllm_backend.free_engines() == 1 and not vllm_backend._ENGINES
