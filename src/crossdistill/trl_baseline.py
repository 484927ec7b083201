"""`method: trl-sdft`: TRL's SDFTTrainer, unmodified, as a baseline arm beside crossdistill's on-policy methods.

Same data (the distill stage's records: prompt + the original response as the privileged context), the same LoRA,
learning rate, batch size, steps and sampling budget (`train.onpolicy_max_new_tokens`, `onpolicy_temperature`) as
the other arms; everything else is TRL's default (its teacher prompt template, top-k logit distillation, teacher =
the initial model). It writes OUT/adapter as a standard PEFT folder, the same layout the eval step loads for every
arm, plus OUT/log.jsonl and OUT/train_stats.json.
"""
from __future__ import annotations

import time
from pathlib import Path

from .config import Config, TrainConfig
from .errors import UserError


def train_trl_sdft(cfg: Config, method_name: str, tc: TrainConfig, distilled_path: str, out: Path, *, model=None,
                   tokenizer=None, callbacks: list | None = None) -> dict:
    import torch
    from datasets import Dataset
    from trl.experimental.sdft import SDFTConfig, SDFTTrainer

    from . import training as T

    t_start = time.time()
    if tc.full_finetune:
        raise UserError("trl-sdft is run with a LoRA adapter here (as the other arms)", field="train.full_finetune")
    rows = T.read_distilled(distilled_path, "original_response", tc.domains)
    model, tokenizer, model_desc, resolved = T._load_model(cfg, tc, model, tokenizer)
    rows = [r for r in rows if r["target"].strip()]
    if not rows:
        raise UserError("no training examples with a non-empty reference", file=str(distilled_path))
    dataset = Dataset.from_list([{"prompt": r["messages"], "privileged_context": r["target"]} for r in rows])
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["domain"]] = counts.get(r["domain"], 0) + 1

    resume = T._resume_point(out, T._run_config(cfg, method_name, tc, model_desc, distilled_path, {}), True)
    args = SDFTConfig(**T.recipe_training_args(cfg, tc, out / "checkpoints", resolved == torch.bfloat16,
                                               resolved == torch.float16),
                      max_completion_length=tc.onpolicy_max_new_tokens, temperature=tc.onpolicy_temperature,
                      num_generations=1)
    from transformers import set_seed

    set_seed(cfg.seed)
    trainer = SDFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                          callbacks=[T._JsonlLogCallback(out / "log.jsonl")] + list(callbacks or []),
                          peft_config=T._peft_lora_config(tc))
    result = trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    stats = {
        "method_name": method_name, "method": tc.method, "model": cfg.model, "trainer": "trl.SDFTTrainer",
        "examples": len(rows), "examples_per_domain": counts, "steps": trainer.state.global_step,
        "train_loss": getattr(result, "training_loss", None),
        "resumed_from": str(resume) if resume is not None else None,
        "wall_s": round(time.time() - t_start, 2), "full_finetune": False, "adapter_dir": str(out / "adapter"),
    }
    T._save(trainer, out, stats)
    return stats
