"""vLLM for generation at scale (the `vllm` extra; GPUs): `distill.backend: vllm` and `eval.backend: vllm`.

* One engine per model and process (`engine`), built with the recipe's `vllm` section (dtype, tensor-parallel size,
  GPU memory fraction, ...) and LoRA enabled, so the seed model and every trained method share it: a method's
  adapter folder is a `LoRARequest` on the seed's engine (`lora_request`), not a second model.
* `free_engines()` drops every engine and the GPU memory vLLM holds (vLLM's `cleanup_dist_env_and_memory`); the
  train stage calls it before its first step, so distill (or eval) with vLLM and training can share a process.
* Nothing here imports vllm until an engine is needed: without the extra, `backend: vllm` is one clear error.

Written against vLLM's documented offline API (`vllm.LLM`, `SamplingParams`, `vllm.lora.request.LoRARequest`,
`vllm.distributed.parallel_state.cleanup_dist_env_and_memory`). It has not run on this project's machines (no GPU,
no vllm wheel for them); tests/test_vllm.py runs where vllm imports and is skipped, saying so, elsewhere.
"""
from __future__ import annotations

import gc
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError

_ENGINES: dict[str, Any] = {}          # model path -> vllm.LLM
_LORA_IDS: dict[str, int] = {}         # adapter folder -> the LoRARequest's integer id (unique per process)


def _import_vllm():
    try:
        import vllm  # noqa: F401
    except ImportError as e:
        raise UserError("backend 'vllm' needs the vllm package: pip install 'crossdistill[vllm]' (GPUs); or use "
                        f"backend 'hf' ({e})", field="backend") from None
    return vllm


def engine_kwargs(settings, seed: int = 0) -> dict:
    """vllm.LLM keyword arguments from the recipe's `vllm` section (a config.VllmConfig)."""
    kw = dict(dtype=settings.dtype, tensor_parallel_size=int(settings.tensor_parallel_size),
              gpu_memory_utilization=float(settings.gpu_memory_utilization), seed=int(seed), enable_lora=True,
              max_lora_rank=int(settings.max_lora_rank), max_loras=int(settings.max_loras),
              enforce_eager=bool(settings.enforce_eager))
    if settings.max_model_len:
        kw["max_model_len"] = int(settings.max_model_len)
    return kw


def engine(model_path: str, settings=None, *, seed: int = 0):
    """The process's vLLM engine for `model_path` (built on first use)."""
    from .config import VllmConfig

    key = str(model_path)
    llm = _ENGINES.get(key)
    if llm is None:
        vllm = _import_vllm()
        llm = _ENGINES[key] = vllm.LLM(model=key, **engine_kwargs(settings or VllmConfig(), seed))
    return llm


def lora_request(adapter: str | None, settings=None):
    """A method's adapter folder as a vLLM LoRARequest (None for the seed model). Its rank must fit the engine."""
    if adapter is None:
        return None
    import json

    from .config import VllmConfig

    folder = Path(adapter)
    cfg_path = folder / "adapter_config.json"
    if not cfg_path.exists():
        raise UserError("vLLM serves LoRA adapters only (no adapter_config.json: a full fine-tune?); evaluate it "
                        "with backend 'hf' or give its folder as the model", file=str(folder), field="adapter")
    rank = int(json.loads(cfg_path.read_text(encoding="utf-8")).get("r", 0))
    limit = (settings or VllmConfig()).max_lora_rank
    if rank > limit:
        raise UserError(f"the adapter's LoRA rank {rank} is above vllm.max_lora_rank {limit}", file=str(cfg_path),
                        field="vllm.max_lora_rank")
    _import_vllm()
    from vllm.lora.request import LoRARequest

    key = str(folder.resolve())
    lora_id = _LORA_IDS.setdefault(key, len(_LORA_IDS) + 1)   # ids start at 1; one per adapter folder
    return LoRARequest(f"{folder.parent.name or 'adapter'}-{lora_id}", lora_id, key)


def sampling_params(cfg) -> Any:
    """vllm.SamplingParams from a generation.SamplingConfig."""
    _import_vllm()
    from vllm import SamplingParams

    return SamplingParams(n=1, temperature=max(0.0, float(cfg.temperature or 0.0)), top_p=float(cfg.top_p),
                          top_k=int(cfg.top_k) if cfg.top_k and cfg.top_k > 0 else -1,
                          max_tokens=int(cfg.max_new_tokens), seed=int(cfg.seed), stop=list(cfg.stop or []) or None,
                          skip_special_tokens=True)


def generate(model_path: str, prompts: list[str], cfg, *, adapter: str | None = None, settings=None,
             progress: str | None = None) -> list:
    """One generation.Generation per prompt (input order) from the model's engine, with `adapter` as a LoRA."""
    from .generation import Generation

    llm = engine(model_path, settings, seed=int(cfg.seed))
    outs = llm.generate(list(prompts), sampling_params(cfg), use_tqdm=bool(progress),
                        lora_request=lora_request(adapter, settings))
    result = []
    for o in outs:
        c = o.outputs[0]
        result.append(Generation(text=c.text, n_tokens=len(c.token_ids), finished=c.finish_reason == "stop"))
    return result


def free_engines() -> int:
    """Drop every engine and the GPU memory vLLM holds; returns how many were freed. Costs nothing (and imports
    nothing) when no engine was built."""
    n = len(_ENGINES)
    if not n:
        return 0
    _ENGINES.clear()
    _LORA_IDS.clear()
    gc.collect()
    if "vllm" in sys.modules:
        try:
            from vllm.distributed.parallel_state import cleanup_dist_env_and_memory
        except ImportError:   # older vLLM
            from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

            def cleanup_dist_env_and_memory():
                destroy_model_parallel()
                destroy_distributed_environment()

        cleanup_dist_env_and_memory()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass
    return n


@dataclass
class VllmModel:
    """What the eval stage passes as `model` to its generation tasks when `eval.backend` is vllm: the model's path,
    the method's adapter and the engine settings (log-likelihood tasks keep the HF model)."""

    path: str
    adapter: str | None
    settings: Any

    def generate(self, prompts: list[str], cfg, progress: str | None = None) -> list:
        return generate(self.path, prompts, cfg, adapter=self.adapter, settings=self.settings, progress=progress)
