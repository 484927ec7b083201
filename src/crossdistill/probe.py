"""The domain-invariance probe: how well can a linear classifier tell the domains apart from a model's features?

    result = run_probe(cfg, "cdsdft", adapter="runs/demo/train/cdsdft/adapter", out_dir="runs/demo/probe/cdsdft")

On a fixed probe set (per domain, `probe.size` records of the domain's source that no training run sees: the *end*
of the same seeded shuffle whose *start* is the training subset, so they are disjoint by construction, and the
project's n-gram overlap check against the training records is stored beside the result), every record's
prompt + reference response goes through the model once with `output_hidden_states`; each layer's hidden states are
mean-pooled over the positions that predict response tokens (the same pooling as the training's L_inv). Per layer:

(a) domain-probe accuracy: multinomial logistic regression (L2, features standardised on the training folds, fitted
    by L-BFGS in torch: scikit-learn is not a dependency), stratified k-fold; each record gets one out-of-fold
    prediction, and the accuracy is their mean with a 95% percentile-bootstrap CI over records. Chance is
    1 / #domains; lower is more invariant.
(b) MMD^2 between each pair of domains (unbiased estimate, multi-scale Gaussian kernel whose base scale is the median
    squared distance of that layer's pooled features over all domains, so it is comparable across layers/models).

Output: OUT/probe.json {"method", "layers": [{"layer", "acc", "ci_low", "ci_high", "n", "mmd": {"a|b": v},
"mmd_mean"}], "chosen_layer", "chance", "domains", "n_per_domain", "overlap", "seconds"}, and OUT/features.npz: the
chosen layer's pooled features (float16, ~0.35 MB for 300 records of a 576-wide model) with the records' ids and
domain ids, which the runner's paired MMD test between two methods reads (statistics.mmd_permutation_test).
"""
from __future__ import annotations

import itertools
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import losses as L
from .errors import UserError
from .io import atomic_open, write_json

logger = logging.getLogger("crossdistill.probe")


# --- the probe set ----------------------------------------------------------------------------------------------

def probe_records(cfg: Any, size: int | None = None) -> tuple[dict[str, list], dict]:
    """{domain: held-out records} and the n-gram overlap report of the probe set against the training records.

    The training subset of a domain is the first `effective_limit(domains.<d>.size)` records of a `seed` shuffle
    of its source (see `sources.take`); the probe takes up to `size` records from the other end of that shuffle,
    and drops any record whose id is a training id. A domain whose source is used whole for training has no
    held-out record and is left out (with a warning)."""
    from .sources import NgramIndex, load_source, seeded_order

    size = cfg.effective_limit(cfg.probe.size if size is None else size)
    held: dict[str, list] = {}
    train_all: list = []
    for name, d in cfg.domains.items():
        if not d.source:
            continue
        recs = load_source(d.source, domain=d.plugin or name, data_dir=cfg.data_dir)
        idx = seeded_order(len(recs), cfg.seed)          # the same shuffle as sources.take
        n_train = cfg.effective_limit(d.size)
        n_train = len(recs) if n_train is None else min(n_train, len(recs))
        train = [recs[i] for i in idx[:n_train]]
        train_ids = {r.id for r in train}
        rest = [recs[i] for i in reversed(idx[n_train:]) if recs[i].id not in train_ids]
        train_all += train
        if not rest:
            logger.warning("domain '%s' trains on its whole source: no held-out probe records", name)
            continue
        if len(rest) < size:
            logger.warning("domain '%s': only %d held-out probe records (probe.size %d)", name, len(rest), size)
        held[name] = rest[:size]
    if len(held) < 2:
        raise UserError("the probe needs held-out records of at least 2 domains (domains with a source, not "
                        "trained on whole)", file=getattr(cfg, "recipe_path", None), field="domains")
    index = NgramIndex(train_all)
    overlap = {name: {k: v for k, v in index.report(recs, examples=2).items()
                      if k in ("n", "eval_records", "contaminated", "exact_duplicates", "strong", "examples")}
               for name, recs in held.items()}
    return held, overlap


def probe_examples(records: dict[str, list], tokenizer, max_length: int, domains: list[str]) -> list[dict]:
    """Tokenised probe examples (chat-template prompt + reference response, as in training) with `domain_id`
    = the index of the domain in `domains`, at most `max_length` tokens each. A longer record is cut, not dropped
    (a domain with long prompts, such as tool schemas, must not vanish from the probe): the response keeps its first
    tokens (at least max_length // 2 of them, fewer only when it is shorter) and the prompt its *last* tokens."""
    from .training import build_examples

    rows = []
    for name, recs in records.items():
        for r in recs:
            rows.append({"id": r.id, "domain": name, "messages": r.prompt_messages(), "target": r.response or ""})
    examples, _ = build_examples(rows, tokenizer, 1 << 20)
    index = {d: i for i, d in enumerate(domains)}
    out = []
    for e in examples:
        n_prompt = sum(1 for x in e["labels"] if x == -100)
        p_ids, r_ids = e["input_ids"][:n_prompt], e["input_ids"][n_prompt:]
        r_ids = r_ids[:max(max_length - len(p_ids), max_length // 2)]
        p_ids = p_ids[len(p_ids) - (max_length - len(r_ids)):] if len(p_ids) + len(r_ids) > max_length else p_ids
        out.append({**e, "input_ids": p_ids + r_ids, "labels": [-100] * len(p_ids) + r_ids,
                    "domain_id": index[e["domain"]]})
    return out


# --- features -----------------------------------------------------------------------------------------------------

@torch.no_grad()
def pooled_features(model, examples: list[dict], layers: list[int] | None = None, batch_size: int = 16,
                    progress: bool = False) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """({layer: (N, H) fp32 cpu}, domain ids (N,)) in the order of `examples`: each layer's hidden states (HF's
    `hidden_states` index: 0 = embeddings, i = output of decoder layer i, last = final normed state) mean-pooled
    over the positions that predict response tokens. `model` may be a PEFT model (its adapter is applied)."""
    from .arch import backbone as _backbone, causal_lm

    backbone = _backbone(causal_lm(model))
    device = next(model.parameters()).device
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i]["input_ids"]))
    out: dict[int, list] = {}
    rows: dict[int, int] = {}
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(examples), desc="probe features")
    pos = 0
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        T = max(len(examples[i]["input_ids"]) for i in idx)
        ids = torch.zeros((len(idx), T), dtype=torch.long)
        lab = torch.full((len(idx), T), -100, dtype=torch.long)
        att = torch.zeros((len(idx), T), dtype=torch.long)
        for b, i in enumerate(idx):
            n = len(examples[i]["input_ids"])
            ids[b, :n] = torch.tensor(examples[i]["input_ids"])
            lab[b, :n] = torch.tensor(examples[i]["labels"])
            att[b, :n] = 1
        ids, lab, att = ids.to(device), lab.to(device), att.to(device)
        hs = backbone(input_ids=ids, attention_mask=att, use_cache=False, output_hidden_states=True).hidden_states
        sel = lab[:, 1:] != -100
        for li in (range(len(hs)) if layers is None else layers):
            out.setdefault(li, []).append(L.masked_mean_pool(hs[li][:, :-1].float(), sel).cpu())
        for b, i in enumerate(idx):
            rows[i] = pos + b
        pos += len(idx)
        if bar is not None:
            bar.update(len(idx))
    if bar is not None:
        bar.close()
    perm = torch.tensor([rows[i] for i in range(len(examples))], dtype=torch.long)
    feats = {li: torch.cat(v)[perm] for li, v in out.items()}
    return feats, torch.tensor([e["domain_id"] for e in examples], dtype=torch.long)


# --- (a) linear probe ---------------------------------------------------------------------------------------------

def _fit_logreg(x: torch.Tensor, y: torch.Tensor, n_classes: int, l2: float, iters: int) -> torch.Tensor:
    """Multinomial logistic regression (weights with a bias column) minimising mean CE + l2 * ||W||^2 by L-BFGS."""
    xb = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], 1)
    w = torch.zeros(xb.shape[1], n_classes, dtype=x.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=iters, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xb @ w, y) + l2 * w[:-1].pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach()


def stratified_folds(y: torch.Tensor, k: int, seed: int = 0) -> torch.Tensor:
    """Fold index (N,) in 0..k-1: each class's records shuffled (seeded) and dealt round-robin."""
    g = torch.Generator().manual_seed(seed)
    fold = torch.empty_like(y)
    for c in torch.unique(y).tolist():
        where = torch.nonzero(y == c).flatten()
        where = where[torch.randperm(len(where), generator=g)]
        fold[where] = torch.arange(len(where)) % k
    return fold


def probe_accuracy(x: torch.Tensor, y: torch.Tensor, folds: int = 5, seed: int = 0, l2: float = 1e-3,
                   iters: int = 100) -> dict:
    """k-fold linear-probe accuracy of predicting y from x: {"acc", "ci_low", "ci_high", "n", "correct"}; the CI
    is a 95% percentile bootstrap over records of their out-of-fold correctness."""
    from .evaluation.metrics import bootstrap_ci

    x = x.double()
    n_classes = int(y.max()) + 1
    fold = stratified_folds(y, folds, seed)
    correct = torch.zeros(len(y), dtype=torch.bool)
    for f in range(folds):
        tr, te = fold != f, fold == f
        if not te.any() or not tr.any():
            continue
        mu, sd = x[tr].mean(0), x[tr].std(0).clamp(min=1e-6)
        w = _fit_logreg((x[tr] - mu) / sd, y[tr], n_classes, l2, iters)
        xt = (x[te] - mu) / sd
        pred = (torch.cat([xt, torch.ones(xt.shape[0], 1, dtype=xt.dtype)], 1) @ w).argmax(1)
        correct[te] = pred == y[te]
    vals = correct.double().tolist()
    lo, hi = bootstrap_ci(vals, seed=seed)
    return {"acc": sum(vals) / len(vals), "ci_low": lo, "ci_high": hi, "n": len(vals), "correct": int(sum(vals)),
            "item_correct": [int(v) for v in vals]}


# --- (b) MMD between domains ----------------------------------------------------------------------------------------

def pairwise_mmd_table(x: torch.Tensor, y: torch.Tensor, names: list[str]) -> dict[str, float]:
    """{"a|b": unbiased MMD^2(x[y == a], x[y == b])} for every pair of domains, with the base kernel scale = the
    median squared distance over all rows of x."""
    scale = L.median_sq_dist(x)
    out = {}
    for a, b in itertools.combinations(sorted(torch.unique(y).tolist()), 2):
        out[f"{names[a]}|{names[b]}"] = float(L.mmd_fixed(x[y == a], x[y == b], scale, unbiased=True))
    return out


def pairwise_mmd_median(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean over domain pairs of `pairwise_mmd_table` (the training log's `inv_probe_mmd`)."""
    vals = list(pairwise_mmd_table(x, y, [str(i) for i in range(int(y.max()) + 1)]).values())
    return sum(vals) / len(vals) if vals else 0.0


# --- the stage ------------------------------------------------------------------------------------------------------

def run_probe(cfg: Any, method: str, adapter: str | None, out_dir: str | Path, *, model=None,
              tokenizer=None) -> dict:
    """Features of the probe set under the seed model (adapter None) or a trained adapter, then (a) and (b) per
    layer; writes OUT/probe.json atomically and returns it."""
    from .models import load_model
    from .arch import backbone, causal_lm, resolve_layer

    t0 = time.time()
    out = Path(out_dir)
    records, overlap = probe_records(cfg)
    domains = sorted(records)
    if model is None:
        model, tokenizer = load_model(cfg.model, dtype=cfg.eval.dtype, adapter=adapter)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    pc = cfg.probe
    examples = probe_examples(records, tokenizer, pc.max_length or cfg.train.max_length, domains)
    feats, y = pooled_features(model, examples, None, pc.batch_size, progress=True)
    t_feat = time.time() - t0
    tc = cfg.train_config_for(method) if cfg.methods.get(method, None) is not None else cfg.train
    chosen = resolve_layer(backbone(causal_lm(model)), tc.inv_layer)
    layers = []
    chosen_items = {}
    for li in sorted(feats):
        acc = probe_accuracy(feats[li], y, pc.folds, cfg.seed)
        per_item = acc.pop("item_correct")
        if li == chosen:   # out-of-fold correctness per probe record: paired tests between methods (runner)
            chosen_items = {str(e.get("id", i)): v for i, (e, v) in enumerate(zip(examples, per_item, strict=True))}
        mmd = pairwise_mmd_table(feats[li], y, domains)
        layers.append({"layer": li, **acc, "mmd": mmd, "mmd_mean": sum(mmd.values()) / max(1, len(mmd))})
    counts = {d: int((y == i).sum()) for i, d in enumerate(domains)}
    result = {"method": method, "adapter": adapter, "model": cfg.model, "domains": domains, "n_per_domain": counts,
              "chance": 1.0 / len(domains), "chosen_layer": chosen, "folds": pc.folds,
              "ci": "95% percentile bootstrap over probe records (out-of-fold predictions)",
              "layers": layers, "chosen_items": chosen_items, "overlap": overlap,
              "seconds": {"features": round(t_feat, 1), "total": round(time.time() - t0, 1)}}
    ids = [str(e.get("id", i)) for i, e in enumerate(examples)]
    with atomic_open(out / "features.npz", "wb") as f:
        np.savez_compressed(f, ids=np.array(ids), y=y.numpy().astype(np.int16),
                            x=feats[chosen].numpy().astype(np.float16))
    write_json(out / "probe.json", result)
    return result
