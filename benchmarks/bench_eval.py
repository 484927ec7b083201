"""Multiple-choice scoring speed: prefix-shared batched scorer (ours) vs one full forward per choice (baseline).

    python benchmarks/bench_eval.py [--model smollm2-135m-instruct] [--task arc-easy] [--items 100] [--dtype auto]
        [--adapter-rank 16]

A third, lm-eval-style scorer (all context+continuation rows in right-padded batches, no sharing) is timed too
and reported as extra keys. All scorers run on the same items (the first N of the task's seeded shuffle, lm-eval's context format), in the same
process, after a short warm-up of each. Prints per-scorer items/s, accuracy of each (they must agree), the largest
log-likelihood difference, and a last line of JSON:
{"model", "items", "ours_items_s", "baseline_items_s", "ratio", ...}.

With `--adapter-rank R` the model carries a LoRA adapter (rank R, all linear layers, seeded non-zero B, as after
training) and a fourth scorer runs ours with the adapter beside the base weights (PEFT's forward) instead of folded
into fp32 copies of them (`loglik.folded_lora`, what the eval does): keys "adapter_beside_items_s",
"fold_ratio" (beside time / folded time) and "fold_max_loglik_diff".
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def score_batched_no_sharing(model, tok, questions, batch_size: int):
    """lm-eval-style reference: every (context + continuation) row in right-padded batches, no prefix sharing."""
    import torch

    from crossdistill.evaluation.loglik import _encode_questions, _max_len, _Parts

    parts = _Parts(model)
    enc = _encode_questions(tok, questions, _max_len(model))
    rows = [(q, ctx, cont) for q, (ctx, conts) in enumerate(enc) for cont in conts]
    rows.sort(key=lambda r: -(len(r[1]) + len(r[2])))
    out = [[] for _ in enc]
    scores = {}
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    with torch.no_grad():
        for b in range(0, len(rows), batch_size):
            chunk = rows[b:b + batch_size]
            L = max(len(c) + len(x) for _, c, x in chunk)
            ids = torch.full((len(chunk), L), pad)
            mask = torch.zeros((len(chunk), L), dtype=torch.long)
            for i, (_, c, x) in enumerate(chunk):
                ids[i, :len(c) + len(x)] = torch.tensor(c + x)
                mask[i, :len(c) + len(x)] = 1
            pos = torch.arange(L).unsqueeze(0).expand(len(chunk), L)
            logits, _ = parts.run(ids, mask, pos)
            logp = torch.log_softmax(logits, dim=-1)
            for i, (q, c, x) in enumerate(chunk):
                idx = torch.arange(len(c) - 1, len(c) + len(x) - 1)
                scores[(q, tuple(c), tuple(x), b + i)] = float(logp[i, idx, torch.tensor(x)].sum())
    # restore input order
    by_q = {}
    for (q, c, x, _), v in scores.items():
        by_q.setdefault((q, x), v)
    for q, (ctx, conts) in enumerate(enc):
        out[q] = [by_q[(q, tuple(x))] for x in conts]
    return out


def _with_precision(model, precision, fn):
    from crossdistill.evaluation.loglik import _precision_ctx

    with _precision_ctx(model, precision):
        return fn()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--task", default="arc-easy")
    ap.add_argument("--items", type=int, default=100)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--batch-size", type=int, default=32, help="choice rows per forward (ours)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chunk", type=int, default=10, help="questions per interleaved timing chunk")
    ap.add_argument("--precision", default="auto", help="scoring precision: auto (fp32 on CPU) | fp32 | model")
    ap.add_argument("--adapter-rank", type=int, default=0, help="score with a LoRA of this rank: folded vs beside")
    args = ap.parse_args()

    import torch

    from crossdistill.evaluation import tasks as T
    from crossdistill.evaluation.loglik import score_choices, score_choices_naive
    from crossdistill.models import load_model

    model, tok = load_model(args.model, dtype=args.dtype)
    if args.adapter_rank:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=args.adapter_rank, lora_alpha=2 * args.adapter_rank,
                                                 target_modules="all-linear")).eval()
        g = torch.Generator().manual_seed(args.seed)
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.data.copy_(torch.randn(p.shape, generator=g) * 0.02)
    spec = T.resolve_task(args.task)
    if spec.type != "multiple_choice":
        sys.exit(f"{args.task} is not a multiple-choice task")
    records, _ = T.load_task_records(spec, limit=args.items, seed=args.seed)
    reqs = [T.mc_request(spec, r) for r in records]
    questions = [(ctx, conts) for ctx, conts, _ in reqs]
    n_choices = sum(len(c) for _, c in questions)

    from crossdistill.evaluation.loglik import _precision_ctx

    scorers = {
        "baseline": lambda qs: score_choices_naive(model, tok, qs, precision=args.precision),
        "ours": lambda qs: score_choices(model, tok, qs, batch_size=args.batch_size, precision=args.precision),
        "batched": lambda qs: _with_precision(model, args.precision,
                                              lambda: score_batched_no_sharing(model, tok, qs, args.batch_size)),
    }
    if args.adapter_rank:
        def beside(qs):
            with _precision_ctx(model, args.precision, fold=False):
                return score_choices(model, tok, qs, batch_size=args.batch_size, precision="model")

        scorers["adapter_beside"] = beside
    warm = questions[: min(4, len(questions))]
    for fn in scorers.values():
        fn(warm)
    # Interleave the scorers chunk by chunk (rotating their order) so that a change in machine load during the run
    # hits all of them alike.
    secs = {k: 0.0 for k in scorers}
    res: dict[str, list] = {k: [] for k in scorers}
    names = list(scorers)
    for c, start in enumerate(range(0, len(questions), args.chunk)):
        chunk = questions[start:start + args.chunk]
        for k in names[c % len(names):] + names[:c % len(names)]:
            t0 = time.perf_counter()
            res[k].extend(scorers[k](chunk))
            secs[k] += time.perf_counter() - t0
        print(f"  chunk {c + 1}: {min(start + args.chunk, len(questions))}/{len(questions)} items; seconds so far "
              + ", ".join(f"{k} {v:.1f}" for k, v in secs.items()), file=sys.stderr, flush=True)
    base, ours, batched = res["baseline"], res["ours"], res["batched"]
    t_base, t_ours, t_batched = secs["baseline"], secs["ours"], secs["batched"]
    with _precision_ctx(model, args.precision):
        score_dtype = str(next(model.parameters()).dtype).replace("torch.", "")

    def acc(lls):
        return sum(max(range(len(ll)), key=ll.__getitem__) == r.gold for ll, r in zip(lls, records)) / len(records)

    acc_ours, acc_base, acc_batched = acc(ours), acc(base), acc(batched)
    max_diff = max(abs(a - b) for u, v in zip(ours, base) for a, b in zip(u, v))
    fold_diff = max(abs(a - b) for u, v in zip(ours, res["adapter_beside"]) for a, b in zip(u, v)) \
        if args.adapter_rank else 0.0
    if args.adapter_rank:
        print(f"adapter r{args.adapter_rank} beside the weights: {secs['adapter_beside']:.2f}s vs folded "
              f"{t_ours:.2f}s: {secs['adapter_beside'] / t_ours:.2f}x; max |loglik diff| {fold_diff:.2e}",
              file=sys.stderr)
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    print(f"{args.task}: {len(records)} items, {n_choices} choices, model {args.model} (loaded {dtype}, "
          f"scored in {score_dtype}), "
          f"threads {torch.get_num_threads()}", file=sys.stderr)
    print(f"baseline (one forward per choice): {t_base:.2f}s  {len(records) / t_base:.2f} items/s  acc {acc_base:.4f}",
          file=sys.stderr)
    print(f"ours (prefix shared, batched):     {t_ours:.2f}s  {len(records) / t_ours:.2f} items/s  acc {acc_ours:.4f}",
          file=sys.stderr)
    print(f"batched, no prefix sharing (lm-eval style, {args.batch_size} rows): {t_batched:.2f}s  "
          f"{len(records) / t_batched:.2f} items/s  acc {acc_batched:.4f}", file=sys.stderr)
    print(f"max |loglik diff| {max_diff:.2e}; same acc: {acc_ours == acc_base}", file=sys.stderr)
    print(json.dumps({"model": args.model, "items": len(records), "ours_items_s": round(len(records) / t_ours, 3),
                      "baseline_items_s": round(len(records) / t_base, 3), "ratio": round(t_base / t_ours, 3),
                      "task": args.task, "dtype": dtype, "scoring_dtype": score_dtype, "choices": n_choices, "acc_ours": acc_ours,
                      "acc_baseline": acc_base, "same_acc": acc_ours == acc_base,
                      "max_loglik_diff": float(f"{max_diff:.3e}"),
                      "batched_no_sharing_items_s": round(len(records) / t_batched, 3),
                      "ratio_vs_batched_no_sharing": round(t_batched / t_ours, 3), "acc_batched_no_sharing": acc_batched,
                      **({"adapter_rank": args.adapter_rank,
                          "adapter_beside_items_s": round(len(records) / secs["adapter_beside"], 3),
                          "fold_ratio": round(secs["adapter_beside"] / t_ours, 3),
                          "fold_max_loglik_diff": float(f"{fold_diff:.3e}")} if args.adapter_rank else {})}))


if __name__ == "__main__":
    main()
