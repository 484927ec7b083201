"""Step time and peak memory: a CD-SDFT step (cached top-k seed log-probs + MMD) and an on-policy SDFT step
(the student samples the response, the demonstration-shown seed scores it, top-k 20 + tail) vs a plain TRL
SFTTrainer step.

Same model, same synthetic batch (prompt = first `--prompt-frac` of each row, loss on the rest), same LoRA
(r16, alpha 32, all-linear), same precision. Each side runs in its own fresh subprocess (clean allocator, clean
peak), `--warmup` untimed + `--steps` timed optimizer steps; sides alternate `--repeats` times and each side's step
time is the smallest of its per-repeat medians (robust to other processes sharing the CPU).

The on-policy side (`sdft-onpolicy`) trains on as many sampled tokens as the SFT side has response tokens
(`seq_len - prompt`, unless the sample ends early at an eos); its teacher prompt is the prompt plus the SFT row's
response as the demonstration. Its step = generation + teacher forward + student forward/backward; the first two
are timed separately (`onpolicy_gen_s`, `onpolicy_teacher_s`, per step).

Peak memory: CUDA -> torch.cuda.max_memory_allocated over the training phase (weights included, reset after
setup). CPU -> peak RSS of the training phase (VmHWM after resetting it via /proc/self/clear_refs right before the
first step) minus the RSS right after the imports, i.e. what the model, optimizer and steps added on top of the
Python/torch runtime.

    python benchmarks/bench_train.py                                  # smollm2-135m-instruct, this device
    python benchmarks/bench_train.py --random-init llama-3.2-1b --batch 8 --seq-len 1024 --steps 10   # GPU

Last line: one JSON {"model", "device", "batch", "seq_len", "sft_step_s", "cdsdft_step_s", "time_ratio",
"sft_peak_mb", "cdsdft_peak_mb", "mem_ratio", "target": 1.15, "onpolicy_step_s", "onpolicy_ratio",
"onpolicy_gen_s", "onpolicy_teacher_s", "onpolicy_sample_len", "onpolicy_target": 3.0, ...}.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

TARGET = 1.15
ONPOLICY_TARGET = 3.0
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(_HERE), "src"))   # crossdistill from this checkout, installed or not
sys.path.insert(0, _HERE)
from _shapes import RANDOM_INIT, build_random_model  # noqa: E402  (shapes shared with bench_generate)


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ------------------------------------------------------------------------------------------------------------------
# worker: one side in this process
# ------------------------------------------------------------------------------------------------------------------

def worker(a) -> dict:
    rss0_kb = _status_kb("VmRSS")
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, TrainerCallback

    from crossdistill.models import resolve_dtype, resolve_model_path

    device = a.device if a.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.startswith("cuda")
    dtype = resolve_dtype(a.dtype)
    if a.random_init:
        model = build_random_model(a.random_init, dtype, device)   # on the GPU directly when there is one
        model_name = f"random-init {a.random_init}"
    else:
        path = resolve_model_path(a.model)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        model_name = a.model
    V = model.config.vocab_size
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    bf16 = dtype == torch.bfloat16
    fp16 = dtype == torch.float16
    n_rows = (a.warmup + a.steps) * a.batch * a.grad_accum
    g = torch.Generator().manual_seed(1)
    p_len = max(1, int(a.seq_len * a.prompt_frac))
    rows = [torch.randint(5, V - 5, (a.seq_len,), generator=g).tolist() for _ in range(a.batch)]
    rows = [rows[i % a.batch] for i in range(n_rows)]   # every step sees the same batch content
    common = dict(output_dir=os.path.join(a.tmp, a.side), per_device_train_batch_size=a.batch,
                  gradient_accumulation_steps=a.grad_accum, max_steps=a.warmup + a.steps, learning_rate=1e-4, lr_scheduler_type="constant", bf16=bf16,
                  fp16=fp16 and cuda, use_cpu=not cuda, report_to="none", save_strategy="no", logging_steps=10_000,
                  disable_tqdm=True, dataloader_pin_memory=cuda, seed=0)

    times: list[float] = []

    class Timer(TrainerCallback):
        """Wall time from one optimizer step's end to the next's: it includes fetching the step's micro-batches
        (`get_batch_samples`, where an on-policy window is sampled), which on_step_begin would miss."""
        def on_train_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            now = time.perf_counter()
            times.append(now - self.t)
            self.t = now

    extra: dict = {}
    if a.side == "sft":
        from datasets import Dataset
        from trl import SFTConfig, SFTTrainer

        ds = Dataset.from_dict({"input_ids": rows, "completion_mask": [[0] * p_len + [1] * (a.seq_len - p_len)] * n_rows})
        args = SFTConfig(max_length=a.seq_len, completion_only_loss=True, packing=False, padding_free=False,
                         gradient_checkpointing=False, shuffle_dataset=False, **common)
        tok = _dummy_tokenizer(V)
        trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, callbacks=[Timer()])
    else:
        from crossdistill.config import Config, TrainConfig
        from crossdistill.training import (CrossDistillCollator, CrossDistillConfig, CrossDistillTrainer,
                                           ExampleDataset, compute_seed_cache)

        method = {"cdsdft": "cdsdft", "onpolicy": "sdft-onpolicy", "onpolicy_micro": "sdft-onpolicy"}.get(a.side, "sft")
        tc = Config(train=TrainConfig(alpha=0.5, beta=0.1, invariance="mmd", topk=a.topk, seed_logprobs="cached",
                                      onpolicy_max_new_tokens=a.seq_len - p_len)).train_config_for(method)
        if method == "sdft-onpolicy":
            examples = [{"input_ids": r[:p_len], "labels": [-100] * p_len, "teacher_prompt_ids": r,
                         "domain": ("a", "b")[i % 2], "id": str(i)} for i, r in enumerate(rows)]
        else:
            examples = [{"input_ids": r, "labels": [-100] * p_len + r[p_len:], "domain": ("a", "b")[i % 2],
                         "id": str(i)} for i, r in enumerate(rows)]
        ds = ExampleDataset(examples, ["a", "b"])
        cache = None
        if method == "cdsdft":
            model.to(device)
            t0 = time.perf_counter()
            cache = compute_seed_cache(model, ds, k=a.topk, temperature=1.0, key="bench", batch_size=a.batch,
                                       device=device, autocast_dtype=torch.bfloat16 if bf16 else None)
            if cuda:
                torch.cuda.synchronize()
            extra["cache_s_per_batch"] = (time.perf_counter() - t0) / (n_rows / a.batch)
            if cuda:
                torch.cuda.empty_cache()
        args = CrossDistillConfig(**CrossDistillConfig.knobs_of(tc), remove_unused_columns=False, label_names=["labels"],
                                  **common)
        trainer = CrossDistillTrainer(model=model, args=args, train_dataset=ds, processing_class=_dummy_tokenizer(V),
                                      data_collator=CrossDistillCollator(0, cache), callbacks=[Timer()],
                                      domain_names=["a", "b"], eos_ids={1})
        if method == "sdft-onpolicy":
            # per optimizer step (the index is the number of steps already finished): sampling and teacher seconds
            parts: dict[str, dict[int, float]] = {"gen": {}, "teacher": {}}
            lens: list[float] = []
            trainer.rollout_per_window = a.side == "onpolicy"   # onpolicy_micro: one sampling call per micro-batch

            def timed(fn, key):
                def run(*args, **kw):
                    if cuda:
                        torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    r = fn(*args, **kw)
                    if cuda:
                        torch.cuda.synchronize()
                    parts[key][len(times)] = parts[key].get(len(times), 0.0) + time.perf_counter() - t0
                    if key == "gen":
                        lens.extend(float(x["sample_len"]) for x in r)
                    return r
                return run

            trainer.rollout_window = timed(trainer.rollout_window, "gen")
            trainer.teacher_hidden = timed(trainer.teacher_hidden, "teacher")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss_setup_kb = _status_kb("VmRSS")
    hwm_reset = _reset_hwm() if not cuda else False
    trainer.train()
    if cuda:
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = (_status_kb("VmHWM") - rss0_kb) / 1024
    timed = times[a.warmup:]
    if a.side.startswith("onpolicy"):
        extra.update({"gen_s": statistics.median(v for k, v in parts["gen"].items() if k >= a.warmup),
                      "teacher_s": statistics.median(v for k, v in parts["teacher"].items() if k >= a.warmup),
                      "sample_len": statistics.mean(lens)})
    return {"side": a.side, "model": model_name, "device": device if not cuda else torch.cuda.get_device_name(),
            "dtype": str(dtype).replace("torch.", ""), "step_s": statistics.median(timed), "steps_s": timed,
            "peak_mb": peak_mb, "setup_rss_mb": (rss_setup_kb - rss0_kb) / 1024, "hwm_reset": hwm_reset, **extra}


def _dummy_tokenizer(vocab_size: int):
    """SFTTrainer wants a processing_class; the data is pre-tokenised so only pad/eos ids matter."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel(vocab={f"t{i}": i for i in range(8)}, unk_token="t0"))
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="t0", eos_token="t1", unk_token="t0")
    return tok


# ------------------------------------------------------------------------------------------------------------------
# driver
# ------------------------------------------------------------------------------------------------------------------

def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--random-init", choices=sorted(RANDOM_INIT), default=None)
    ap.add_argument("--batch", type=int, default=None, help="default: 8 on CUDA, 4 on CPU")
    ap.add_argument("--seq-len", type=int, default=None, help="default: 1024 on CUDA, 256 on CPU")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per repeat (default: 10 CUDA, 3 CPU)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps (default: 3 CUDA, 1 CPU)")
    ap.add_argument("--repeats", type=int, default=2, help="alternate the sides this many times")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--topk", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads per side (default: torch's own; use 1 on a shared, oversubscribed CPU)")
    ap.add_argument("--prompt-frac", type=float, default=0.25)
    ap.add_argument("--grad-accum", type=int, default=1,
                    help="micro-batches per optimizer step; > 1 adds the side onpolicy_micro (one sampling call per "
                         "micro-batch) beside onpolicy (one per accumulation window)")
    ap.add_argument("--ours-sft", action="store_true", help="also time crossdistill's own sft path")
    ap.add_argument("--side", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--tmp", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)

    if a.side is None:
        import torch   # only to pick defaults

        cuda = (a.device == "auto" and torch.cuda.is_available()) or a.device.startswith("cuda")
    else:
        cuda = a.device.startswith("cuda") or a.device == "auto"
    a.batch = a.batch or (8 if cuda else 4)
    a.seq_len = a.seq_len or (1024 if cuda else 256)
    a.steps = a.steps or (10 if cuda else 3)
    a.warmup = a.warmup if a.warmup is not None else (3 if cuda else 1)

    if a.side is not None:
        print("RESULT " + json.dumps(worker(a)), flush=True)
        return {}

    import tempfile

    sides = ["sft", "cdsdft", "onpolicy"] + (["onpolicy_micro"] if a.grad_accum > 1 else []) \
        + (["ours_sft"] if a.ours_sft else [])
    results: dict[str, list[dict]] = {s: [] for s in sides}
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        for rep in range(a.repeats):
            for side in sides:
                cmd = [sys.executable, os.path.abspath(__file__), "--side", side, "--tmp", tmp,
                       "--model", a.model, "--batch", str(a.batch), "--seq-len", str(a.seq_len),
                       "--steps", str(a.steps), "--warmup", str(a.warmup), "--device", a.device,
                       "--dtype", a.dtype, "--topk", str(a.topk), "--prompt-frac", str(a.prompt_frac),
                       "--grad-accum", str(a.grad_accum)]
                if a.threads:
                    cmd += ["--threads", str(a.threads)]
                if a.random_init:
                    cmd += ["--random-init", a.random_init]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
                if proc.returncode != 0 or not line:
                    sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
                    raise SystemExit(f"side {side} failed (exit {proc.returncode})")
                r = json.loads(line[-1][7:])
                results[side].append(r)
                print(f"[rep {rep}] {side}: step {r['step_s']:.3f}s peak {r['peak_mb']:.0f} MB "
                      f"(steps {', '.join(f'{x:.3f}' for x in r['steps_s'])})", file=sys.stderr, flush=True)

    def step(side):
        return min(r["step_s"] for r in results[side])

    def peak(side):
        return min(r["peak_mb"] for r in results[side])

    first = results["sft"][0]
    out = {
        "model": first["model"], "device": first["device"], "dtype": first["dtype"],
        "batch": a.batch, "grad_accum": a.grad_accum, "seq_len": a.seq_len, "steps": a.steps, "repeats": a.repeats, "threads": a.threads,
        "sft_step_s": round(step("sft"), 4), "cdsdft_step_s": round(step("cdsdft"), 4),
        "time_ratio": round(step("cdsdft") / step("sft"), 3),
        "sft_peak_mb": round(peak("sft"), 1), "cdsdft_peak_mb": round(peak("cdsdft"), 1),
        "mem_ratio": round(peak("cdsdft") / peak("sft"), 3),
        "cache_s_per_batch": round(min(r["cache_s_per_batch"] for r in results["cdsdft"]), 4),
        "target": TARGET,
    }
    best = min(results["onpolicy"], key=lambda r: r["step_s"])
    out.update({"onpolicy_step_s": round(best["step_s"], 4), "onpolicy_ratio": round(best["step_s"] / step("sft"), 3),
                "onpolicy_gen_s": round(best["gen_s"], 4), "onpolicy_teacher_s": round(best["teacher_s"], 4),
                "onpolicy_student_s": round(best["step_s"] - best["gen_s"] - best["teacher_s"], 4),
                "onpolicy_sample_len": round(best["sample_len"], 1), "onpolicy_target": ONPOLICY_TARGET})
    if a.grad_accum > 1:
        micro = min(results["onpolicy_micro"], key=lambda r: r["step_s"])
        out.update({"onpolicy_micro_step_s": round(micro["step_s"], 4), "onpolicy_micro_gen_s": round(micro["gen_s"], 4),
                    "onpolicy_micro_sample_len": round(micro["sample_len"], 1),
                    "window_rollout_speedup": round(micro["step_s"] / best["step_s"], 3)})
    if a.ours_sft:
        out["ours_sft_step_s"] = round(step("ours_sft"), 4)
        out["ours_sft_peak_mb"] = round(peak("ours_sft"), 1)
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
