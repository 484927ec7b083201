"""Log-likelihood scoring of multiple-choice continuations, with the question prefix computed once.

A multiple-choice item is a context ("Question: ...\\nAnswer:") and N continuations (" " + choice). Its score for
each choice is log p(continuation | context), summed over the continuation's tokens — lm-evaluation-harness's
`loglikelihood` request. Tokenisation follows lm-eval's `_encode_pair`: trailing whitespace of the context moves
to the continuation; context tokens = tok(context); continuation tokens = tok(context + continuation) minus the
first len(context tokens) tokens; no special tokens are added (lm-eval's default for causal models). An empty
context is replaced by the EOS token, as lm-eval does.

`score_choices` (ours) shares the prefix: for a batch of questions it runs every question's context minus its last
token ONCE (right-padded batch, KV cache kept), copies each question's cache rows to as many rows as it has
choices (`DynamicCache.batch_select_indices`), then runs [last context token] + continuation[:-1] for all choices of
all questions in one padded forward on top of that cache. Positions are passed explicitly so right padding inside
the cache is invisible to the model, and no query row is ever fully masked (which would put NaNs in the cache).
`score_choices_naive` is the reference: one full forward of context + continuation per choice. Both compute the
output head in fp32 (`_Parts`) and, on CPU, run a half-precision model in float32 for the duration of the call
(`upcast_to_fp32`; see `_precision_ctx` for why). In fp32 the two agree to ~1e-5 (tested to 1e-4); in bf16 the different batch
shapes change the rounding of the transformer's activations slightly.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Callable, Iterator, Sequence

import torch

Question = tuple[str, Sequence[str]]  # (context, continuations)


def encode_pair(tok, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) exactly as lm-eval's HFLM._encode_pair for a causal model."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tok(context + continuation, add_special_tokens=False)["input_ids"]
    ctx = tok(context, add_special_tokens=False)["input_ids"]
    cont = whole[len(ctx):]
    if not ctx:
        ctx = [tok.eos_token_id if tok.eos_token_id is not None else tok.pad_token_id]
    if not cont:
        # The continuation was absorbed into the context's last token: score at least one token (lm-eval would
        # score none and return 0.0; a choice with no tokens is unrankable).
        cont = tok(continuation, add_special_tokens=False)["input_ids"][-1:] or [ctx[-1]]
    return ctx, cont


def _max_len(model) -> int:
    cfg = getattr(model, "config", None)
    return int(getattr(cfg, "max_position_embeddings", 0) or 2048)


def _cache_kw(model) -> str:
    """Name of the KV-cache argument: `cache` (transformers >= 5.2x) or `past_key_values` (older)."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        params = inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def _device(model) -> torch.device:
    return next(model.parameters()).device


@contextmanager
def upcast_to_fp32(model) -> Iterator[None]:
    """Run a half-precision model in float32 inside the block; every parameter and buffer gets its own original
    tensor back afterwards (bit-exact, and fp32 LoRA weights of a bf16 base stay as they were)."""
    saved = []
    for t in list(model.parameters()) + list(model.buffers()):
        if t.dtype in (torch.bfloat16, torch.float16):
            saved.append((t, t.data))
            t.data = t.data.float()
    try:
        yield
    finally:
        for t, data in saved:
            t.data = data


def _unmerged_lora_linears(model) -> list:
    """The PEFT LoRA linear layers of `model` whose adapters run beside the base weight (not merged, not DoRA)."""
    try:
        from peft.tuners.lora.layer import Linear as LoraLinear
    except ImportError:
        return []
    return [m for m in model.modules()
            if isinstance(m, LoraLinear) and not m.merged and not m.disable_adapters and m.active_adapters
            and not any(m.use_dora.get(a, False) for a in m.active_adapters)]


@contextmanager
def folded_lora(model) -> Iterator[None]:
    """Inside the block a LoRA adapter runs folded into float32 copies of its base weights (W + B·A·s, the layer
    marked merged): the same function to fp32 rounding (~1e-6) without the adapter's two extra small matmuls per
    linear, which made scoring an adapter ~35% slower than scoring the seed on a CPU. The original weight tensors
    and merge flags come back afterwards, bit-exact. Only for fp32 compute: a bf16 merge would round W + ΔW to bf16,
    a bigger change than many adapters' ΔW. Not while the adapter is disabled inside the block (the seed of
    seed_kl): the base weights hold W + ΔW until it ends."""
    saved, flags = [], []
    try:
        with torch.no_grad():
            for m in _unmerged_lora_linears(model):
                names = [a for a in m.active_adapters if a in m.lora_A]
                w = m.get_base_layer().weight
                if not names or w.dtype != torch.float32:
                    continue
                delta = sum(m.get_delta_weight(a).float() for a in names)
                saved.append((w, w.data))
                w.data = w.data + delta
                flags.append((m, list(m.merged_adapters)))
                m.merged_adapters = names
        yield
    finally:
        for m, f in flags:
            m.merged_adapters = f
        for t, data in saved:
            t.data = data


def _precision_ctx(model, precision: str, fold: bool = True):
    """precision "auto": float32 on CPU (bf16 batch-shape rounding moves log-likelihoods by up to ~0.5 nat on a
    135M model and flips near-ties, so scores would depend on eval.batch_size), the model's own dtype on GPU;
    "fp32": always float32; "model": the model's dtype. In float32 a LoRA adapter also runs folded into its base
    weights (`folded_lora`) unless `fold` is False."""
    if precision not in ("auto", "fp32", "model"):
        raise ValueError(f"precision must be auto, fp32 or model (got {precision!r})")
    if precision == "fp32" or (precision == "auto" and _device(model).type == "cpu"):
        return _upcast_and_fold(model) if fold else upcast_to_fp32(model)
    return nullcontext()


@contextmanager
def _upcast_and_fold(model) -> Iterator[None]:
    with upcast_to_fp32(model), folded_lora(model):
        yield


class _Parts:
    """The model split into decoder and output head, so the head can run in fp32 (bf16 logits have a resolution of
    ~0.1 nat at typical magnitudes, enough to flip near-ties) and the prefix pass can skip the head entirely.
    Models whose logits are post-processed (soft-capping, scaling) or whose head carries an adapter keep the
    plain forward."""

    def __init__(self, model):
        self.model = model
        self.cache_kw = _cache_kw(model)
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        cfg = getattr(base, "config", None)
        self.decoder = self.head = None
        try:
            decoder = base.get_decoder()
            head = base.get_output_embeddings()
        except (AttributeError, NotImplementedError):
            return
        plain_head = type(head) is torch.nn.Linear
        post = any(getattr(cfg, a, None) not in (None, 1.0) for a in ("final_logit_softcapping", "logit_scale"))
        if decoder is not None and plain_head and not post and decoder is not base:
            self.decoder, self.head = decoder, head

    def run(self, ids, mask, pos, cache=None, *, logits: bool = True, use_cache: bool = False):
        """(fp32 logits or None, cache)."""
        kw = {self.cache_kw: cache} if cache is not None else {}
        if self.decoder is None:
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=use_cache,
                             logits_to_keep=0 if logits else 1, **kw)
            lg = out.logits.float() if logits else None
        else:
            out = self.decoder(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=use_cache, **kw)
            lg = None
            if logits:
                w = self.head.weight.float()
                lg = out.last_hidden_state.float() @ w.T
                if self.head.bias is not None:
                    lg = lg + self.head.bias.float()
        new_cache = None
        if use_cache:
            new_cache = getattr(out, "cache", None)
            if new_cache is None:
                new_cache = getattr(out, "past_key_values", None)
        return lg, new_cache


def _encode_questions(tok, questions: Sequence[Question], max_len: int):
    out = []
    for context, conts in questions:
        pairs = [encode_pair(tok, context, c) for c in conts]
        ctx = pairs[0][0]
        cont_ids = [p[1] for p in pairs]
        # lm-eval keeps the last max_len+1 tokens of ctx+cont: left-truncate the (shared) context.
        room = max_len + 1 - max(len(c) for c in cont_ids)
        if len(ctx) > room:
            ctx = ctx[-max(room, 1):]
        # Context ids can differ per choice only if the tokenizer is context-sensitive at the join, which
        # _encode_pair rules out: the context part is always tok(context).
        out.append((ctx, cont_ids))
    return out


@torch.no_grad()
def score_choices(model, tok, questions: Sequence[Question], *, batch_size: int = 32,
                  progress: Callable[[int], None] | None = None, precision: str = "auto") -> list[list[float]]:
    """Sum log-probs of every continuation of every question (prefix computed once per question).

    `batch_size` bounds the number of choice rows per forward (several questions share one forward).
    `precision`: see `_precision_ctx` (default: float32 on CPU).
    Returns, in input order, one list of floats per question (one per continuation).
    """
    with _precision_ctx(model, precision):
        return _score_choices(model, tok, questions, batch_size, progress)


def _score_choices(model, tok, questions, batch_size, progress) -> list[list[float]]:
    enc = _encode_questions(tok, questions, _max_len(model))
    device = _device(model)
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    parts = _Parts(model)
    results: list[list[float] | None] = [None] * len(enc)
    # Longest contexts first (less padding per batch); questions with a 1-token context have no prefix to
    # cache, and go in batches of their own.
    order = sorted(range(len(enc)), key=lambda i: (len(enc[i][0]) > 1, len(enc[i][0])), reverse=True)
    batch: list[int] = []
    rows = 0

    def flush():
        nonlocal batch, rows
        if batch:
            scores = _score_batch(parts, [enc[i] for i in batch], pad, device)
            for i, s in zip(batch, scores):
                results[i] = s
            if progress:
                progress(len(batch))
        batch, rows = [], 0

    for i in order:
        n = len(enc[i][1])
        has_prefix = len(enc[i][0]) > 1
        if batch and (rows + n > batch_size or has_prefix != (len(enc[batch[0]][0]) > 1)):
            flush()
        batch.append(i)
        rows += n
    flush()
    return results  # type: ignore[return-value]


def _score_batch(parts: _Parts, items, pad: int, device) -> list[list[float]]:
    prefixes = [ctx[:-1] for ctx, _ in items]
    P = max(len(p) for p in prefixes)
    row_q: list[int] = []
    inputs, targets = [], []
    for q, (ctx, conts) in enumerate(items):
        for cont in conts:
            row_q.append(q)
            inputs.append([ctx[-1]] + cont[:-1])
            targets.append(cont)
    R, C = len(inputs), max(len(x) for x in inputs)
    past = None
    prefix_mask = torch.zeros((len(items), P), dtype=torch.long, device=device)
    if P > 0:
        ids = torch.full((len(items), P), pad, dtype=torch.long, device=device)
        for q, p in enumerate(prefixes):
            ids[q, :len(p)] = torch.tensor(p, device=device)
            prefix_mask[q, :len(p)] = 1
        pos = torch.arange(P, device=device).unsqueeze(0).expand(len(items), P)
        _, past = parts.run(ids, prefix_mask, pos, logits=False, use_cache=True)
        past.batch_select_indices(torch.tensor(row_q, device=device))
    ids = torch.full((R, C), pad, dtype=torch.long, device=device)
    tgt = torch.zeros((R, C), dtype=torch.long, device=device)
    cmask = torch.zeros((R, C), dtype=torch.long, device=device)
    for r, (x, t) in enumerate(zip(inputs, targets)):
        ids[r, :len(x)] = torch.tensor(x, device=device)
        tgt[r, :len(t)] = torch.tensor(t, device=device)
        cmask[r, :len(x)] = 1
    plen = torch.tensor([len(prefixes[q]) for q in row_q], device=device)
    pos = plen.unsqueeze(1) + torch.arange(C, device=device).unsqueeze(0)
    mask = torch.cat([prefix_mask[torch.tensor(row_q, device=device)], cmask], dim=1) if P > 0 else cmask
    logits, _ = parts.run(ids, mask, pos, past, use_cache=past is not None)
    logp = torch.log_softmax(logits, dim=-1).gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
    sums = (logp * cmask).sum(dim=1).tolist()
    out_scores: list[list[float]] = [[] for _ in items]
    for r, q in enumerate(row_q):
        out_scores[q].append(sums[r])
    return out_scores


@torch.no_grad()
def score_choices_naive(model, tok, questions: Sequence[Question], *,
                        progress: Callable[[int], None] | None = None, precision: str = "auto") -> list[list[float]]:
    """Reference scorer: one forward of (context + continuation) per choice, batch 1, no sharing."""
    with _precision_ctx(model, precision):
        return _score_naive(model, tok, questions, progress)


def _score_naive(model, tok, questions, progress) -> list[list[float]]:
    enc = _encode_questions(tok, questions, _max_len(model))
    device = _device(model)
    parts = _Parts(model)
    results = []
    for ctx, conts in enc:
        scores = []
        for cont in conts:
            ids = torch.tensor([ctx + cont], device=device)
            pos = torch.arange(ids.shape[1], device=device).unsqueeze(0)
            logits, _ = parts.run(ids, torch.ones_like(ids), pos)
            logp = torch.log_softmax(logits[0, len(ctx) - 1:-1], dim=-1)
            scores.append(float(logp.gather(-1, torch.tensor(cont, device=device).unsqueeze(-1)).sum()))
        results.append(scores)
        if progress:
            progress(1)
    return results
