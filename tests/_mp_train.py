"""Launched by tests/test_multiprocess.py (`accelerate launch --cpu --num_processes N tests/_mp_train.py ...`, or plain
python for one process): the train stage on the tiny model, recording per rank which examples each batch held and
how often the seed cache was computed. Not a test module itself."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--distilled", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--grad-accum", type=int, default=1)
    ap.add_argument("--max-steps", type=int, default=4)
    ap.add_argument("--save-steps", type=int, default=1000)
    ap.add_argument("--crash-at", type=int, default=0, help="raise KeyboardInterrupt at the end of this step")
    a = ap.parse_args()

    import torch
    from transformers import TrainerCallback

    from crossdistill import training
    from crossdistill.config import Config, DomainConfig, LoraConfig, TrainConfig
    from crossdistill.models import TINY

    torch.set_num_threads(1)
    rank = int(os.environ.get("RANK", "0"))
    rec = {"rank": rank, "world": int(os.environ.get("WORLD_SIZE", "1")), "batches": [], "seed_cache_computed": 0}
    real_cache, real_call = training.compute_seed_cache, training.CrossDistillCollator.__call__

    def counted_cache(*args, **kw):
        rec["seed_cache_computed"] += 1
        return real_cache(*args, **kw)

    def recording_call(self, features):
        rec["batches"].append([[int(f["idx"]), int(f["domain_id"])] for f in features])
        return real_call(self, features)

    training.compute_seed_cache = counted_cache
    training.CrossDistillCollator.__call__ = recording_call

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if a.crash_at and state.global_step == a.crash_at:
                raise KeyboardInterrupt

    domains = sorted({json.loads(x)["domain"] for x in Path(a.distilled).read_text().splitlines() if x.strip()})
    cfg = Config(model=TINY, output_dir=str(Path(a.out).parent), seed=0,
                 domains={d: DomainConfig() for d in domains},
                 train=TrainConfig(method="cdsdft", max_steps=a.max_steps, batch_size=a.batch_size,
                                   grad_accum=a.grad_accum, max_length=160, lr=5e-3, save_steps=a.save_steps,
                                   logging_steps=1, lora=LoraConfig(r=4, alpha=8), invariance="mmd", beta=0.1,
                                   alpha=0.5, seed_logprobs="cached", report_to="none", dtype="float32"))
    record = Path(a.out + f".rank{rank}.json")
    try:
        stats = training.train(cfg, "cdsdft", a.distilled, a.out, callbacks=[Crash()])
        rec["stats"] = stats
    except KeyboardInterrupt:
        rec["crashed"] = True
        record.write_text(json.dumps(rec))
        sys.exit(3)
    record.write_text(json.dumps(rec))


if __name__ == "__main__":
    main()
