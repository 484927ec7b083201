"""Generation speed: crossdistill.generation (continuous batching) vs one-at-a-time HF `model.generate`.

    python benchmarks/bench_generate.py [--model smollm2-135m-instruct] [--n 64] [--baseline-n 8]
        [--max-new-tokens 256] [--batch-size 32] [--dtype auto] [--threads auto] [--data PATH] [--device auto]
    python benchmarks/bench_generate.py --random-init llama-3.2-1b --device cuda     # GPU, no download needed

Workload: N GSM8K rewrite prompts exactly as the distill stage renders them (the math domain's system prompt, the
problem, the reference solution, the assistant prefill), from `--data` (default ../shared/data/gsm8k/train.jsonl
when it exists; otherwise synthetic word problems). Both sides decode greedily with the same model, dtype, thread
count, EOS tokens and max_new_tokens. The baseline runs `model.generate` on every (N / baseline-n)-th prompt, one
at a time, half before and half after our run so that a change in machine load hits both sides alike.

`--random-init NAME` (benchmarks/_shapes.py) builds a model of a real shape with random weights (same timings as
the trained model) and a word-level tokenizer built in code with exactly the model's vocab size (a word is about one
BPE token, so prompt lengths stay realistic): nothing is downloaded or read from a cache. Random weights make EOS
meaningless, so that mode has no EOS on either side: every row of both runs to exactly max_new_tokens.

`--device cuda` (or auto with a GPU): bf16, larger defaults (n 512, batch 256, baseline on 4 prompts),
torch.cuda.synchronize() around every timed call, and the peak of torch.cuda.max_memory_allocated of each side.

Tokens/s = generated tokens (EOS included) / wall seconds of the generation calls (tokenization and
loading excluded for both). The last line is JSON:
{"model", "device", "dtype", "n_prompts", "max_new_tokens", "ours_tok_s", "baseline_tok_s", "ratio", "target", ...}
(target 10 on a CPU, 250 on a GPU) with extras: batch size, threads, CPU-time tok/s of both sides (less sensitive
to other processes on the machine), how many baseline prompts got the very same text from both (bf16 batch
numerics can flip a near-tie), and on CUDA each side's peak GPU memory.
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
sys.path.insert(0, str(ROOT / "benchmarks"))

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


def load(model_arg: str, dtype: str, device: str = "cpu"):
    import torch

    try:
        from crossdistill.models import load_model
    except ImportError:
        load_model = None
    if load_model is not None:
        return load_model(model_arg, dtype=dtype, device=device)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_arg)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    td = torch.bfloat16 if dtype in ("auto", "bfloat16") else getattr(torch, dtype)
    return AutoModelForCausalLM.from_pretrained(model_arg, dtype=td).to(device).eval(), tok


def load_random(name: str, dtype: str, device: str, items: list[dict]):
    """Random-init model of shape `name` + a word-level tokenizer over the prompts' words, both built in code."""
    import torch

    from _shapes import RANDOM_INIT, build_random_model, build_word_tokenizer
    from crossdistill.models import CHAT_TEMPLATE, build_tiny_tokenizer

    if dtype == "auto":
        td = torch.bfloat16 if device.startswith("cuda") else None
        if td is None:
            from crossdistill.models import resolve_dtype

            td = resolve_dtype("auto")
    else:
        td = getattr(torch, dtype)
    model = build_random_model(name, td, device, no_eos=True).eval()
    # the prompts' words: render them once with any tokenizer that has the same chat template
    corpus = rewrite_prompts(build_tiny_tokenizer(), items)
    tok = build_word_tokenizer(RANDOM_INIT[name]["vocab_size"], corpus, chat_template=CHAT_TEMPLATE)
    return model, tok


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


def _sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def run_baseline(model, tok, prompts: list[str], max_new: int, eos: list[int]):
    """One prompt at a time through model.generate (greedy). Returns (texts, tokens, wall s, cpu s).

    `eos` empty (random-init mode): no EOS at all, every prompt runs to max_new tokens."""
    import torch

    texts, tokens, wall, cpu = [], 0, 0.0, 0.0
    dev = next(model.parameters()).device
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos[0]
    gen_kw = dict(eos_token_id=eos) if eos else dict(min_new_tokens=max_new)  # no EOS: nothing may end a row early
    for p in prompts:
        enc = tok(p, return_tensors="pt").to(dev)
        enc.pop("token_type_ids", None)
        _sync(dev)
        w0, c0 = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=max_new, do_sample=False, pad_token_id=pad, **gen_kw)
        _sync(dev)
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
    from _shapes import RANDOM_INIT

    ap.add_argument("--model", default=default_model, help="registry name or model folder")
    ap.add_argument("--random-init", choices=sorted(RANDOM_INIT), default=None,
                    help="a random-weight model of this shape + a tokenizer built in code (no download)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="GSM8K-style jsonl (question, answer)")
    ap.add_argument("--n", type=int, default=None, help="prompts for our generator (default: 512 CUDA, 64 CPU)")
    ap.add_argument("--baseline-n", type=int, default=None,
                    help="prompts (a spread subset) for the slow baseline (default: 4 CUDA, 8 CPU)")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=None, help="rows decoding together (default: 256 CUDA, 32 CPU)")
    ap.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA) | bfloat16 | float32")
    ap.add_argument("--threads", default="auto", help="torch threads for both sides, or 'auto'")
    args = ap.parse_args(argv)

    import torch

    from crossdistill import generation
    from crossdistill.generation import SamplingConfig, generate

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = torch.device(device).type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch sees no GPU")
    args.n = args.n or (512 if cuda else 64)
    args.baseline_n = args.baseline_n or (4 if cuda else 8)
    args.batch_size = args.batch_size or (256 if cuda else 32)

    t_load = time.perf_counter()
    items = gsm8k_items(Path(args.data) if args.data else None, args.n)
    if args.random_init:
        model, tok = load_random(args.random_init, args.dtype, device, items)
        model_name = f"random-init {args.random_init}"
    else:
        model, tok = load(args.model, args.dtype, device)
        model_name = args.model
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    prompts = rewrite_prompts(tok, items)
    n = len(prompts)
    step = max(1, n // max(1, args.baseline_n))
    base_idx = list(range(0, n, step))[: args.baseline_n]
    eos = eos_ids(model, tok)
    if args.random_init and eos:
        raise SystemExit(f"random-init mode must have no EOS ids, got {eos}")
    lens = [len(tok(p).input_ids) for p in prompts]
    dev_name = torch.cuda.get_device_name(torch.device(device)) if cuda else "cpu"
    log(f"[bench] model {model_name} ({dtype}) on {dev_name}, loaded in {time.perf_counter() - t_load:.1f}s; "
        f"{n} prompts, {sum(lens) / n:.0f} prompt tokens on average ({min(lens)}..{max(lens)})")

    if cuda:
        threads = int(args.threads) if args.threads != "auto" else torch.get_num_threads()
    else:
        threads = pick_threads(model, tok, args.threads)
    torch.set_num_threads(threads)

    # warm-up: first calls allocate and pick kernels (on a GPU, at the full batch's shapes too)
    cfg = SamplingConfig(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    warm = prompts[: min(n, args.batch_size)] if cuda else prompts[:2]
    generate(model, tok, warm, SamplingConfig(max_new_tokens=4, batch_size=len(warm)))
    run_baseline(model, tok, prompts[:1], 4, eos)
    _sync(device)

    def peak_reset():
        if cuda:
            torch.cuda.reset_peak_memory_stats()

    def peak_mb():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None

    half = (len(base_idx) + 1) // 2
    log(f"[bench] baseline, first half ({half} prompts)")
    peak_reset()
    b1 = run_baseline(model, tok, [prompts[i] for i in base_idx[:half]], args.max_new_tokens, eos)
    base_peak = peak_mb()

    log(f"[bench] ours: {n} prompts, batch_size {args.batch_size}")
    peak_reset()
    _sync(device)
    w0, c0 = time.perf_counter(), time.process_time()
    outs = generate(model, tok, prompts, cfg, progress="ours")
    _sync(device)
    ours_wall, ours_cpu = time.perf_counter() - w0, time.process_time() - c0
    ours_peak = peak_mb()
    ours_tokens = sum(g.n_tokens for g in outs)
    st = dict(generation.last_stats)
    if st.get("steps"):
        log(f"[bench] ours: {st['steps']} decode steps, {st['rows'] / st['steps']:.1f} rows per step on average; "
            f"decode {st['decode_s']:.1f}s, prefill {st['prefill_s']:.1f}s ({st['prefill_tokens']} tokens, shared "
            f"prefix {st['shared_prefix']}), admission total {st['admit_s']:.1f}s; paged KV {bool(st['paged'])}, "
            f"packed linears {st['packed_linears']}")

    log(f"[bench] baseline, second half ({len(base_idx) - half} prompts)")
    peak_reset()
    b2 = run_baseline(model, tok, [prompts[i] for i in base_idx[half:]], args.max_new_tokens, eos)
    if cuda:
        base_peak = max(base_peak, peak_mb())

    base_texts = b1[0] + b2[0]
    base_tokens, base_wall, base_cpu = b1[1] + b2[1], b1[2] + b2[2], b1[3] + b2[3]
    same = sum(outs[i].text == t for i, t in zip(base_idx, base_texts))
    ours_tok_s = ours_tokens / ours_wall
    base_tok_s = base_tokens / base_wall
    result = {
        "model": model_name,
        "device": dev_name,
        "dtype": dtype,
        "n_prompts": n,
        "max_new_tokens": args.max_new_tokens,
        "ours_tok_s": round(ours_tok_s, 1),
        "baseline_tok_s": round(base_tok_s, 2),
        "ratio": round(ours_tok_s / base_tok_s, 2),
        "target": 250 if cuda else 10,
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
    if args.random_init:   # no EOS: both sides must have run every row to max_new_tokens
        result["equal_lengths"] = (ours_tokens == n * args.max_new_tokens
                                   and base_tokens == len(base_idx) * args.max_new_tokens)
    if cuda:
        result["ours_peak_mb"] = ours_peak
        result["baseline_peak_mb"] = base_peak
        result["avg_prompt_tokens"] = round(sum(lens) / n, 1)
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
