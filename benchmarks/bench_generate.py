"""Generation speed: crossdistill.generation (continuous batching) vs one-at-a-time HF `model.generate`.

    python benchmarks/bench_generate.py [--model smollm2-135m-instruct] [--n 64] [--baseline-n 8]
        [--max-new-tokens 256] [--batch-size 32] [--dtype auto] [--threads auto] [--data PATH]

Workload: N GSM8K rewrite prompts exactly as the distill stage renders them (the math domain's system prompt, the
problem, the reference solution, the assistant prefill), from `--data` (default ../shared/data/gsm8k/train.jsonl
when it exists; otherwise synthetic word problems). Both sides decode greedily with the same model, dtype, thread
count, EOS tokens and max_new_tokens. The baseline runs `model.generate` on every (N / baseline-n)-th prompt, one
at a time, half before and half after our run so that a change in machine load hits both sides alike.

Tokens/s = generated tokens (EOS included) / wall seconds of the generation calls (tokenization and
loading excluded for both). The last line is JSON:
{"model", "dtype", "n_prompts", "max_new_tokens", "ours_tok_s", "baseline_tok_s", "ratio", "target": 10, ...}
with extras: batch size, threads, CPU-time tok/s of both sides (less sensitive to other processes on the machine),
and how many baseline prompts got the very same text from both (bf16 batch numerics can flip a near-tie).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "gsm8k" / "train.jsonl"
FALLBACK_MODEL = "/tmp/dl/smol_st"

# used only when crossdistill.domains is not importable (kept equal to the math domain's prompt)
_SYSTEM = (
    "You are a careful, precise math solver. You will see a math problem and, after it, a reference solution that "
    "is known to be correct. Use it only to check your thinking: solve the problem yourself and explain the steps "
    "in your own way. Write every calculation out in full, like 12 * 3 = 36. Do not mention that you were given a "
    "solution. End with one last line of the form '#### <answer>' holding only the final number."
)
_PREFILL = "Let me work through this one step at a time.\n"


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


def load(model_arg: str, dtype: str):
    import torch

    try:
        from crossdistill.models import load_model
    except ImportError:
        load_model = None
    if load_model is not None:
        return load_model(model_arg, dtype=dtype, device="cpu")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_arg)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    td = torch.bfloat16 if dtype in ("auto", "bfloat16") else getattr(torch, dtype)
    return AutoModelForCausalLM.from_pretrained(model_arg, dtype=td).eval(), tok


def gsm8k_items(path: Path | None, n: int) -> list[dict]:
    if path is not None and path.exists():
        items = []
        with open(path) as f:
            for line in f:
                d = json.loads(line)
                items.append({"question": d["question"], "answer": d["answer"]})
                if len(items) >= n:
                    break
        return items
    log(f"[bench] no data at {path}: synthesising word problems")
    rng = random.Random(0)
    names = ["Ann", "Bo", "Cai", "Dee", "Eli", "Fay", "Gus", "Hal"]
    things = ["apples", "books", "coins", "pencils", "stamps", "marbles"]
    items = []
    for i in range(n):
        a, b, c = rng.randint(3, 60), rng.randint(2, 9), rng.randint(1, 30)
        who, what = rng.choice(names), rng.choice(things)
        q = (f"{who} has {a} {what}. {who} buys {b} times as many {what} as that, then gives away {c} of them. "
             f"How many {what} does {who} have now?")
        total = a + a * b - c
        ans = (f"{who} buys {a} * {b} = <<{a}*{b}={a * b}>>{a * b} {what}.\n"
               f"So {who} has {a} + {a * b} = <<{a}+{a * b}={a + a * b}>>{a + a * b} {what}.\n"
               f"After giving away {c}: {a + a * b} - {c} = <<{a + a * b}-{c}={total}>>{total}.\n#### {total}")
        items.append({"question": q, "answer": ans})
    return items


def rewrite_prompts(tok, items: list[dict]) -> list[str]:
    from crossdistill.generation import render_chat

    try:
        from crossdistill.domains import get_domain
        from crossdistill.records import Record

        math = get_domain("math")
        out = []
        for i, it in enumerate(items):
            rec = Record(id=str(i), domain="math", prompt=it["question"], response=it["answer"],
                         answer=it["answer"].split("####")[-1].strip())
            messages, prefill = math.rewrite_messages(rec)
            out.append(render_chat(tok, messages, prefill=prefill))
        return out
    except ImportError:
        import re

        out = []
        for it in items:
            ref = re.sub(r"<<[^<>]*>>", "", it["answer"]).strip()
            user = f"Problem:\n{it['question'].strip()}\n\nReference solution:\n{ref}"
            out.append(render_chat(tok, [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": user}],
                                   prefill=_PREFILL))
        return out


def pick_threads(model, tok, requested: str) -> int:
    """`auto`: time a few one-token decode steps (the baseline's inner loop) with 1 and with all cores; keep the faster.

    On a quiet machine more threads win; when other processes share the cores, OpenMP threads that wait on each
    other at every op make a 2-thread run several times slower than a 1-thread one. Both sides use the choice.
    """
    import torch

    if requested != "auto":
        return int(requested)
    cores = os.cpu_count() or 1
    if cores == 1:
        return 1
    from transformers import DynamicCache

    from crossdistill.generation import _cache_kwarg

    kw = _cache_kwarg(model)
    ids = tok("Calibrating the number of threads for this benchmark run.", return_tensors="pt").input_ids
    best: dict[int, float] = {}
    for _ in range(3):
        for t in (1, cores):
            torch.set_num_threads(t)
            with torch.inference_mode():
                cache = DynamicCache()
                out = model(input_ids=ids, use_cache=True, **{kw: cache})
                nxt = out.logits[:, -1:].argmax(-1)
                t0 = time.perf_counter()
                for _ in range(6):
                    out = model(input_ids=nxt, use_cache=True, **{kw: cache})
                    nxt = out.logits[:, -1:].argmax(-1)
                best[t] = min(best.get(t, 1e9), time.perf_counter() - t0)
    choice = min(best, key=best.get)
    log(f"[bench] threads: 1 -> {best[1] / 6 * 1e3:.1f} ms/step, {cores} -> {best[cores] / 6 * 1e3:.1f} ms/step; "
        f"using {choice}")
    return choice


def eos_ids(model, tok) -> list[int]:
    from crossdistill.generation import _eos_ids

    return sorted(_eos_ids(model, tok))


def run_baseline(model, tok, prompts: list[str], max_new: int, eos: list[int]):
    """One prompt at a time through model.generate (greedy). Returns (texts, tokens, wall s, cpu s)."""
    import torch

    texts, tokens, wall, cpu = [], 0, 0.0, 0.0
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos[0]
    for p in prompts:
        enc = tok(p, return_tensors="pt")
        w0, c0 = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=max_new, do_sample=False, eos_token_id=eos, pad_token_id=pad)
        wall += time.perf_counter() - w0
        cpu += time.process_time() - c0
        new = out[0, enc.input_ids.shape[1]:].tolist()
        tokens += len(new)
        if new and new[-1] in eos:
            new = new[:-1]
        texts.append(tok.decode(new, skip_special_tokens=True))
        log(f"[bench]   baseline prompt: {enc.input_ids.shape[1]} prompt tokens -> "
            f"{len(out[0]) - enc.input_ids.shape[1]} new, {time.perf_counter() - w0:.1f}s")
    return texts, tokens, wall, cpu


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_model = "smollm2-135m-instruct"
    try:
        import crossdistill.models  # noqa: F401
    except ImportError:
        default_model = FALLBACK_MODEL
    ap.add_argument("--model", default=default_model, help="registry name or model folder")
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="GSM8K-style jsonl (question, answer)")
    ap.add_argument("--n", type=int, default=64, help="prompts for our generator")
    ap.add_argument("--baseline-n", type=int, default=8, help="prompts (a spread subset) for the slow baseline")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--dtype", default="auto", help="auto | bfloat16 | float32")
    ap.add_argument("--threads", default="auto", help="torch threads for both sides, or 'auto'")
    args = ap.parse_args(argv)

    import torch

    from crossdistill import generation
    from crossdistill.generation import SamplingConfig, generate

    t_load = time.perf_counter()
    model, tok = load(args.model, args.dtype)
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    items = gsm8k_items(Path(args.data) if args.data else None, args.n)
    prompts = rewrite_prompts(tok, items)
    n = len(prompts)
    step = max(1, n // max(1, args.baseline_n))
    base_idx = list(range(0, n, step))[: args.baseline_n]
    eos = eos_ids(model, tok)
    lens = [len(tok(p).input_ids) for p in prompts]
    log(f"[bench] model {args.model} ({dtype}), loaded in {time.perf_counter() - t_load:.1f}s; {n} prompts, "
        f"{sum(lens) / n:.0f} prompt tokens on average ({min(lens)}..{max(lens)})")

    threads = pick_threads(model, tok, args.threads)
    torch.set_num_threads(threads)

    # warm-up: first calls allocate and pick kernels
    cfg = SamplingConfig(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    generate(model, tok, prompts[:2], SamplingConfig(max_new_tokens=4, batch_size=2))
    run_baseline(model, tok, prompts[:1], 4, eos)

    half = (len(base_idx) + 1) // 2
    log(f"[bench] baseline, first half ({half} prompts)")
    b1 = run_baseline(model, tok, [prompts[i] for i in base_idx[:half]], args.max_new_tokens, eos)

    log(f"[bench] ours: {n} prompts, batch_size {args.batch_size}")
    w0, c0 = time.perf_counter(), time.process_time()
    outs = generate(model, tok, prompts, cfg, progress="ours")
    ours_wall, ours_cpu = time.perf_counter() - w0, time.process_time() - c0
    ours_tokens = sum(g.n_tokens for g in outs)
    st = dict(generation.last_stats)
    if st.get("steps"):
        log(f"[bench] ours: {st['steps']} decode steps, {st['rows'] / st['steps']:.1f} rows per step on average; "
            f"decode {st['decode_s']:.1f}s, prefill {st['prefill_s']:.1f}s ({st['prefill_tokens']} tokens, shared "
            f"prefix {st['shared_prefix']}), admission total {st['admit_s']:.1f}s; paged KV {bool(st['paged'])}, "
            f"packed linears {st['packed_linears']}")

    log(f"[bench] baseline, second half ({len(base_idx) - half} prompts)")
    b2 = run_baseline(model, tok, [prompts[i] for i in base_idx[half:]], args.max_new_tokens, eos)

    base_texts = b1[0] + b2[0]
    base_tokens, base_wall, base_cpu = b1[1] + b2[1], b1[2] + b2[2], b1[3] + b2[3]
    same = sum(outs[i].text == t for i, t in zip(base_idx, base_texts))
    ours_tok_s = ours_tokens / ours_wall
    base_tok_s = base_tokens / base_wall
    result = {
        "model": args.model,
        "dtype": dtype,
        "n_prompts": n,
        "max_new_tokens": args.max_new_tokens,
        "ours_tok_s": round(ours_tok_s, 1),
        "baseline_tok_s": round(base_tok_s, 2),
        "ratio": round(ours_tok_s / base_tok_s, 2),
        "target": 10,
        "batch_size": args.batch_size,
        "threads": threads,
        "ours_tokens": ours_tokens,
        "ours_s": round(ours_wall, 1),
        "baseline_prompts": len(base_idx),
        "baseline_tokens": base_tokens,
        "baseline_s": round(base_wall, 1),
        "ratio_cpu_time": round((ours_tokens / ours_cpu) / (base_tokens / base_cpu), 2),
        "same_text_as_baseline": f"{same}/{len(base_idx)}",
        "truncated": sum(not g.finished for g in outs),
        "load_avg_1m": round(os.getloadavg()[0], 1) if hasattr(os, "getloadavg") else None,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
