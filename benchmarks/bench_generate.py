"""Generation speed: crossdistill.generation (continuous batching) vs the best paths the libraries offer.

    python benchmarks/bench_generate.py [--model smollm2-135m-instruct [--model qwen2.5-coder-0.5b-instruct ...]]
        [--n 64] [--baseline-n 8] [--max-new-tokens 256] [--batch-size 32] [--dtype auto] [--threads auto]
        [--data PATH] [--device auto] [--skip generate_batch,...]
    python benchmarks/bench_generate.py --random-init llama-3.2-1b --device cuda     # GPU, no download needed

Four sides, measured in one run on the same prompts, model, dtype, thread count, EOS tokens and max_new_tokens:

* ``ours``: crossdistill.generation.generate (our continuous-batching engine), batch ``--batch-size``;
* ``generate_batch``: transformers' continuous batching (``model.generate_batch``, paged KV, its own scheduler);
* ``padded``: length-sorted static batches of ``--batch-size`` through ``model.generate`` (left padding);
* ``batch1``: one prompt at a time through ``model.generate`` on a spread subset of ``--baseline-n`` prompts, half
  before and half after the batched sides, so that a change in machine load hits them alike;
* ``vllm`` (only with ``--device cuda`` and vLLM importable): ``vllm.LLM.generate`` on the same prompts.

Workload: N GSM8K rewrite prompts exactly as the distill stage renders them (the math domain's system prompt, the
problem, the reference solution, the assistant prefill), from `--data` (default ../shared/data/gsm8k/train.jsonl
when it exists; otherwise synthetic word problems). Every side decodes greedily.

`--random-init NAME` (benchmarks/_shapes.py) builds a model of a real shape with random weights (same timings as
the trained model) and a word-level tokenizer built in code with exactly the model's vocab size (a word is about one
BPE token, so prompt lengths stay realistic): nothing is downloaded or read from a cache. Random weights make EOS
meaningless, so that mode has no EOS on either side: every row of both runs to exactly max_new_tokens.

`--device cuda` (or auto with a GPU): bf16, larger defaults (n 512, batch 256, baseline on 4 prompts),
torch.cuda.synchronize() around every timed call, and the peak of torch.cuda.max_memory_allocated of each side.

Tokens/s = generated tokens (EOS included) / wall seconds of the generation calls (tokenization and loading
excluded for all). The engine decision (generation.py routes a device to our engine only where it wins) is
``ours / best library side >= 1.3``. The last line is JSON; with one ``--model`` it is that model's figures:
{"model", "device", "dtype", "n_prompts", "max_new_tokens", "ours_tok_s", "generate_batch_tok_s", "padded_tok_s",
"batch1_tok_s", "best_library", "ratio_vs_best_library", "ours_wins", "ratio_vs_batch1", ...}; with several it is
{"runs": [one such object per model]}.
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


_REAL_ROUTE: dict = {}
WIN_RATIO = 1.3   # our engine stays on a device only where it beats the best library path by this much


def run_padded(model, tok, prompts: list[str], max_new: int, batch_size: int, eos: list[int]):
    """Length-sorted static batches through `model.generate` (left padding). Returns (token counts, wall s, cpu s)."""
    import torch

    from crossdistill.generation import left_pad

    dev = next(model.parameters()).device
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos[0]
    gen_kw = dict(eos_token_id=eos) if eos else dict(min_new_tokens=max_new)
    ids = [tok(p).input_ids for p in prompts]
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    counts, wall, cpu = [0] * len(ids), 0.0, 0.0
    for b0 in range(0, len(order), batch_size):
        chunk = order[b0:b0 + batch_size]
        inp, att = left_pad([ids[i] for i in chunk], pad)
        L = inp.shape[1]
        _sync(dev)
        w0, c0 = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            out = model.generate(input_ids=inp.to(dev), attention_mask=att.to(dev), max_new_tokens=max_new,
                                 do_sample=False, pad_token_id=pad, **gen_kw)
        _sync(dev)
        wall += time.perf_counter() - w0
        cpu += time.process_time() - c0
        for r, i in enumerate(chunk):
            new = out[r, L:].tolist()
            n = len(new)
            for j, t in enumerate(new):   # the row ends at its first EOS; the rest is padding
                if t in eos:
                    n = j + 1
                    break
            counts[i] = n
        log(f"[bench]   padded batch {b0 // batch_size + 1}: {len(chunk)} rows x {L} prompt tokens, "
            f"{wall:.1f}s so far")
    return counts, wall, cpu


def run_generate_batch(model, tok, prompts: list[str], max_new: int, batch_size: int, eos: list[int]):
    """transformers' continuous batching (`model.generate_batch`). Returns (token counts, wall s, cpu s)."""
    from transformers import GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    dev = next(model.parameters()).device
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos[0]
    gc = GenerationConfig(max_new_tokens=max_new, do_sample=False, pad_token_id=pad,
                          eos_token_id=eos or None, min_new_tokens=None if eos else max_new)
    ids = [tok(p).input_ids for p in prompts]
    cb = ContinuousBatchingConfig(max_requests_per_batch=batch_size)
    _sync(dev)
    w0, c0 = time.perf_counter(), time.process_time()
    out = model.generate_batch(inputs=ids, generation_config=gc, continuous_batching_config=cb, progress_bar=False)
    _sync(dev)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    results = list(out.values())
    if len(results) != len(prompts) or any(r.error for r in results):
        raise RuntimeError(f"generate_batch returned {len(results)} of {len(prompts)} results "
                           f"({sum(bool(r.error) for r in results)} with errors)")
    return [len(r.generated_tokens) for r in results], wall, cpu


def run_vllm(model_path: str, prompts: list[str], max_new: int, dtype: str, ignore_eos: bool):
    """vLLM on the same prompts (GPU only; the HF model stays loaded beside it, so half the memory). Returns (token
    counts, wall s)."""
    from vllm import LLM, SamplingParams

    llm = LLM(model=model_path, dtype=dtype, seed=0, gpu_memory_utilization=0.5)
    params = SamplingParams(temperature=0.0, max_tokens=max_new, ignore_eos=ignore_eos)
    w0 = time.perf_counter()
    outs = llm.generate(prompts, params, use_tqdm=False)
    wall = time.perf_counter() - w0
    return [len(o.outputs[0].token_ids) for o in outs], wall


def bench_one(args, model_arg: str | None, device: str, skip: set[str]) -> dict:
    import torch

    from crossdistill import generation
    from crossdistill.generation import SamplingConfig, generate

    cuda = torch.device(device).type == "cuda"
    # `ours` is our engine on every device, also where generation.py routes to the library path (no figure said it
    # wins there): this run is what would change that routing.
    real_route = _REAL_ROUTE.setdefault("route", generation._engine_route)   # the router, before the override
    generation._engine_route = lambda m: "engine" if generation._supports_engine(m) else "library"
    t_load = time.perf_counter()
    items = gsm8k_items(Path(args.data) if args.data else None, args.n)
    if args.random_init:
        model, tok = load_random(args.random_init, args.dtype, device, items)
        model_name = f"random-init {args.random_init}"
    else:
        model, tok = load(model_arg, args.dtype, device)
        model_name = model_arg
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
    run_padded(model, tok, prompts[:2], 4, 2, eos)
    _sync(device)

    def peak_reset():
        if cuda:
            torch.cuda.reset_peak_memory_stats()

    def peak_mb():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None

    peaks: dict[str, float | None] = {}
    half = (len(base_idx) + 1) // 2
    log(f"[bench] batch-1 generate, first half ({half} prompts)")
    peak_reset()
    b1 = run_baseline(model, tok, [prompts[i] for i in base_idx[:half]], args.max_new_tokens, eos)
    peaks["batch1"] = peak_mb()

    log(f"[bench] ours: {n} prompts, batch_size {args.batch_size}")
    peak_reset()
    _sync(device)
    w0, c0 = time.perf_counter(), time.process_time()
    ours_error = None
    try:
        outs = generate(model, tok, prompts, cfg, progress="ours")
    except Exception as e:  # noqa: BLE001 - never measured off a CPU: report it and time what the router does
        if not cuda:
            raise
        ours_error = f"{type(e).__name__}: {e}"[:300]
        log(f"[bench] our engine failed on {device}: {ours_error}; timing the routed (library) path instead")
        generation._engine_route = real_route
        _sync(device)
        w0, c0 = time.perf_counter(), time.process_time()
        outs = generate(model, tok, prompts, cfg, progress="ours")
    _sync(device)
    ours_wall, ours_cpu = time.perf_counter() - w0, time.process_time() - c0
    peaks["ours"] = peak_mb()
    ours_tokens = sum(g.n_tokens for g in outs)
    st = dict(generation.last_stats)
    ours_route = st.get("route", "engine")
    if st.get("steps"):
        log(f"[bench] ours: {st['steps']} decode steps, {st['rows'] / st['steps']:.1f} rows per step on average; "
            f"decode {st['decode_s']:.1f}s, prefill {st['prefill_s']:.1f}s ({st['prefill_tokens']} tokens, shared "
            f"prefix {st['shared_prefix']}), admission total {st['admit_s']:.1f}s; paged KV {bool(st['paged'])}, "
            f"packed linears {st['packed_linears']}")
    log(f"[bench] ours: {ours_tokens} tokens in {ours_wall:.1f}s = {ours_tokens / ours_wall:.1f} tok/s")

    sides: dict[str, dict] = {}
    if "padded" not in skip:
        log(f"[bench] padded length-sorted model.generate: {n} prompts, batch {args.batch_size}")
        peak_reset()
        counts, wall, cpu = run_padded(model, tok, prompts, args.max_new_tokens, args.batch_size, eos)
        peaks["padded"] = peak_mb()
        sides["padded"] = {"tokens": sum(counts), "s": wall, "cpu_s": cpu}
        log(f"[bench] padded: {sum(counts)} tokens in {wall:.1f}s = {sum(counts) / wall:.1f} tok/s")
    if "generate_batch" not in skip:
        log(f"[bench] transformers generate_batch: {n} prompts, max {args.batch_size} requests per batch")
        peak_reset()
        try:
            run_generate_batch(model, tok, prompts[:2], 4, 2, eos)   # warm-up
            counts, wall, cpu = run_generate_batch(model, tok, prompts, args.max_new_tokens, args.batch_size, eos)
            sides["generate_batch"] = {"tokens": sum(counts), "s": wall, "cpu_s": cpu}
            log(f"[bench] generate_batch: {sum(counts)} tokens in {wall:.1f}s = {sum(counts) / wall:.1f} tok/s")
        except Exception as e:  # noqa: BLE001 - reported in the JSON, the other sides still count
            sides["generate_batch"] = {"error": f"{type(e).__name__}: {e}"[:300]}
            log(f"[bench] generate_batch failed: {e}")
        peaks["generate_batch"] = peak_mb()
    if cuda and "vllm" not in skip:
        import importlib.util
        import tempfile

        if importlib.util.find_spec("vllm") is None:
            sides["vllm"] = {"error": "vllm is not installed"}
        else:
            try:
                if args.random_init:   # vLLM loads from a folder: save the random model and its tokenizer
                    path = tempfile.mkdtemp(prefix="bench-vllm-")
                    model.save_pretrained(path)
                    tok.save_pretrained(path)
                else:
                    from crossdistill.models import resolve_model_path

                    path = resolve_model_path(model_arg)
                counts, wall = run_vllm(path, prompts, args.max_new_tokens, dtype, ignore_eos=not eos)
                sides["vllm"] = {"tokens": sum(counts), "s": wall}
            except Exception as e:  # noqa: BLE001 - reported in the JSON, the other sides still count
                sides["vllm"] = {"error": f"{type(e).__name__}: {e}"[:300]}

    log(f"[bench] batch-1 generate, second half ({len(base_idx) - half} prompts)")
    peak_reset()
    b2 = run_baseline(model, tok, [prompts[i] for i in base_idx[half:]], args.max_new_tokens, eos)
    if cuda:
        peaks["batch1"] = max(peaks["batch1"], peak_mb())

    base_texts = b1[0] + b2[0]
    base_tokens, base_wall, base_cpu = b1[1] + b2[1], b1[2] + b2[2], b1[3] + b2[3]
    same = sum(outs[i].text == t for i, t in zip(base_idx, base_texts))
    ours_tok_s = ours_tokens / ours_wall
    base_tok_s = base_tokens / base_wall
    lib = {k: v["tokens"] / v["s"] for k, v in sides.items() if "tokens" in v}
    lib["batch1"] = base_tok_s
    best = max(lib, key=lib.get)
    result = {
        "model": model_name,
        "device": dev_name,
        "dtype": dtype,
        "n_prompts": n,
        "max_new_tokens": args.max_new_tokens,
        "ours_tok_s": round(ours_tok_s, 1),
        "ours_route": ours_route,
        "ours_error": ours_error,
        "generate_batch_tok_s": round(lib["generate_batch"], 1) if "generate_batch" in lib else None,
        "padded_tok_s": round(lib["padded"], 1) if "padded" in lib else None,
        "batch1_tok_s": round(base_tok_s, 2),
        "best_library": best,
        "ratio_vs_best_library": round(ours_tok_s / lib[best], 2),
        "ours_wins": ours_tok_s / lib[best] >= WIN_RATIO,
        "ratio_vs_batch1": round(ours_tok_s / base_tok_s, 2),
        "batch_size": args.batch_size,
        "threads": threads,
        "ours_tokens": ours_tokens,
        "ours_s": round(ours_wall, 1),
        "sides": {k: ({kk: (round(vv, 1) if isinstance(vv, float) else vv) for kk, vv in v.items()})
                  for k, v in sides.items()},
        "baseline_prompts": len(base_idx),
        "baseline_tokens": base_tokens,
        "baseline_s": round(base_wall, 1),
        "ratio_cpu_time_vs_batch1": round((ours_tokens / ours_cpu) / (base_tokens / base_cpu), 2),
        "same_text_as_batch1": f"{same}/{len(base_idx)}",
        "truncated": sum(not g.finished for g in outs),
        "load_avg_1m": round(os.getloadavg()[0], 1) if hasattr(os, "getloadavg") else None,
    }
    if "vllm" in lib:
        result["vllm_tok_s"] = round(lib["vllm"], 1)
    if args.random_init:   # no EOS: every side must have run every row to max_new_tokens
        result["equal_lengths"] = (ours_tokens == n * args.max_new_tokens
                                   and base_tokens == len(base_idx) * args.max_new_tokens
                                   and all(v.get("tokens", n * args.max_new_tokens) == n * args.max_new_tokens
                                           for k, v in sides.items() if k != "vllm"))
    if cuda:
        result["peak_mb"] = peaks
        result["avg_prompt_tokens"] = round(sum(lens) / n, 1)
    log(f"[bench] {model_name}: {json.dumps(result)}")
    del model
    return result


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_model = "smollm2-135m-instruct"
    try:
        import crossdistill.models  # noqa: F401
    except ImportError:
        default_model = FALLBACK_MODEL
    from _shapes import RANDOM_INIT

    ap.add_argument("--model", action="append", default=None,
                    help=f"registry name or model folder; repeat for several models (default: {default_model})")
    ap.add_argument("--random-init", choices=sorted(RANDOM_INIT), default=None,
                    help="a random-weight model of this shape + a tokenizer built in code (no download)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="GSM8K-style jsonl (question, answer)")
    ap.add_argument("--n", type=int, default=None, help="prompts for the batched sides (default: 512 CUDA, 64 CPU)")
    ap.add_argument("--baseline-n", type=int, default=None,
                    help="prompts (a spread subset) for the slow batch-1 side (default: 4 CUDA, 8 CPU)")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=None, help="rows decoding together (default: 256 CUDA, 32 CPU)")
    ap.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA) | bfloat16 | float32")
    ap.add_argument("--threads", default="auto", help="torch threads for every side, or 'auto'")
    ap.add_argument("--skip", default="", help="comma-separated library sides to leave out: generate_batch,padded,vllm")
    args = ap.parse_args(argv)

    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = torch.device(device).type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch sees no GPU")
    args.n = args.n or (512 if cuda else 64)
    args.baseline_n = args.baseline_n or (4 if cuda else 8)
    args.batch_size = args.batch_size or (256 if cuda else 32)
    skip = {s for s in args.skip.split(",") if s}
    models = [None] if args.random_init else (args.model or [default_model])
    runs = [bench_one(args, m, device, skip) for m in models]
    result = runs[0] if len(runs) == 1 else {"runs": runs, "win_ratio": WIN_RATIO}
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
