"""Loss functions of the CD-SDFT objective. Pure functions of tensors: no model code lives here.

    L = sum_d w_d * CE_d  +  alpha * D(p_seed || p_theta)  +  beta_t * L_inv

Conventions
-----------
* Distributions are over the next token at *response* positions only; `mask` (bool, same leading shape as the
  logits) selects them and every "mean" is a mean over the selected tokens.
* Temperature tau: both distributions are softmax(z / tau). Following TRL's GKD trainer, the divergence is *not*
  multiplied by tau^2 (alpha absorbs any rescaling).
* Divergences (p_T = seed / teacher, p_S = student):
    forward_kl   KL(p_T || p_S) = sum_v p_T(v) (log p_T(v) - log p_S(v))          (mode covering, SFT-like)
    reverse_kl   KL(p_S || p_T) = sum_v p_S(v) (log p_S(v) - log p_T(v))          (mode seeking)
    jsd          generalised JSD of GKD (Agarwal et al. 2024, eq. 1) with mixture M = beta p_T + (1 - beta) p_S:
                     JSD_beta = beta KL(p_T || M) + (1 - beta) KL(p_S || M)
                 The end points are special-cased exactly as TRL does: beta = 0 -> forward KL(p_T || p_S),
                 beta = 1 -> reverse KL(p_S || p_T). (The formula itself tends to 0 at both ends; TRL/GKD read the
                 end points as the limits of the *normalised* divergence, which are the two KLs.) At beta = 0.5 it
                 is the ordinary, symmetric Jensen-Shannon divergence.
* Top-k teacher: a cached teacher keeps only its k most likely tokens (log-probs + ids). Both distributions are then
  compared on k + 1 buckets: the k teacher tokens and one "other" bucket holding the remaining mass
  (teacher: 1 - sum_k p_T; student: logsumexp of its logits outside the k ids, computed exactly, not as 1 - sum).
  Both bucket distributions are renormalised to sum to 1 before the divergence. With k >= vocab there is no "other"
  bucket and the result equals the full-vocabulary divergence.
"""
from __future__ import annotations

import itertools
import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import INV_GRADS

DIVERGENCE_KINDS = ("forward_kl", "reverse_kl", "jsd")
_LOGP_FLOOR = -1.0e4   # log-probs below this are treated as 0 probability (keeps 0 * log 0 finite)


# ---------------------------------------------------------------------------------------------------------------
# Divergences
# ---------------------------------------------------------------------------------------------------------------

def _check_kind(kind: str, beta: float) -> None:
    if kind not in DIVERGENCE_KINDS:
        raise ValueError(f"unknown divergence kind '{kind}' (known: {', '.join(DIVERGENCE_KINDS)})")
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"jsd beta must be in [0, 1], got {beta}")


def divergence_from_logprobs(student_logp: torch.Tensor, teacher_logp: torch.Tensor, kind: str = "forward_kl",
                             beta: float = 0.5) -> torch.Tensor:
    """Per-row divergence between two normalised log-prob tensors of the same shape (..., K) -> (...).

    forward_kl: sum p_T (log p_T - log p_S); reverse_kl: sum p_S (log p_S - log p_T);
    jsd: beta KL(p_T||M) + (1-beta) KL(p_S||M), M = beta p_T + (1-beta) p_S (beta=0 / 1 -> forward / reverse KL).
    Teacher log-probs are floored at -1e4 so that zero-probability entries contribute exactly 0.
    """
    _check_kind(kind, beta)
    t = teacher_logp.clamp(min=_LOGP_FLOOR)
    s = student_logp
    if kind == "jsd" and beta == 0.0:
        kind = "forward_kl"
    elif kind == "jsd" and beta == 1.0:
        kind = "reverse_kl"
    if kind == "forward_kl":
        return (t.exp() * (t - s)).sum(-1)
    if kind == "reverse_kl":
        return (s.exp() * (s - t)).sum(-1)
    log_m = torch.logaddexp(t + math.log(beta), s + math.log1p(-beta))
    return beta * (t.exp() * (t - log_m)).sum(-1) + (1.0 - beta) * (s.exp() * (s - log_m)).sum(-1)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return values.mean()
    mask = mask.to(torch.bool)
    return values[mask].sum() / mask.sum().clamp(min=1)


def token_divergence(student_logits: torch.Tensor, seed_logprobs_or_logits: torch.Tensor,
                     mask: torch.Tensor | None = None, kind: str = "forward_kl", beta: float = 0.5,
                     temperature: float = 1.0) -> torch.Tensor:
    """Mean over masked tokens of D(p_T || p_S) with full-vocabulary distributions.

    student_logits, seed_logprobs_or_logits: (..., V). The seed may be given as logits or as log-probs (the same
    thing up to a per-row constant, which log_softmax removes: log_softmax(logp / tau) == log_softmax(z / tau)).
    p = softmax(x / temperature) for both. mask: (...) bool, True on the tokens to average over.
    """
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    t = F.log_softmax(seed_logprobs_or_logits.float() / temperature, dim=-1)
    return _masked_mean(divergence_from_logprobs(s, t, kind, beta), mask)


def teacher_topk_buckets(teacher_topk_logprobs: torch.Tensor, with_other: bool = True) -> torch.Tensor:
    """(..., k) teacher top-k log-probs -> (..., k+1) normalised bucket log-probs (last = "other" mass).

    other = log(max(0, 1 - sum_k p_k)); the k + 1 buckets are then renormalised (stored log-probs are rounded).
    """
    lp = teacher_topk_logprobs.float().clamp(min=_LOGP_FLOOR)
    if with_other:
        rest = (1.0 - lp.exp().sum(-1, keepdim=True)).clamp(min=0.0)
        other = torch.where(rest > 0, rest.clamp(min=1e-30).log(), torch.full_like(rest, _LOGP_FLOOR))
        lp = torch.cat([lp, other], dim=-1)
    return (lp - torch.logsumexp(lp, dim=-1, keepdim=True)).clamp(min=_LOGP_FLOOR)


def student_topk_buckets(student_logits: torch.Tensor, topk_ids: torch.Tensor, temperature: float = 1.0,
                         with_other: bool = True) -> torch.Tensor:
    """(..., V) student logits + (..., k) token ids -> (..., k+1) normalised bucket log-probs.

    log p_S(id_i) = z_i/tau - logsumexp(z/tau); other = logsumexp over the ids *not* in the top-k, minus the same
    normaliser (an exact masked logsumexp, so a tiny "other" mass keeps a finite, correct gradient).
    """
    z = student_logits.float()
    if temperature != 1.0:
        z = z / temperature
    lse = torch.logsumexp(z, dim=-1, keepdim=True)
    ids = topk_ids.long()
    top = z.gather(-1, ids)
    if not with_other:
        lp = top - lse
    else:
        rest = torch.logsumexp(z.scatter(-1, ids, float("-inf")), dim=-1, keepdim=True)
        lp = torch.cat([top, rest], dim=-1) - lse
    return lp - torch.logsumexp(lp, dim=-1, keepdim=True)


def topk_divergence_per_token(z: torch.Tensor, t_lp: torch.Tensor, t_ids: torch.Tensor, kind: str = "forward_kl",
                              beta: float = 0.5, temperature: float = 1.0) -> torch.Tensor:
    """Per-row k+1-bucket divergence: z (N, V) student logits, t_lp / t_ids (N, k) teacher top-k -> (N,)."""
    with_other = t_ids.shape[-1] < z.shape[-1]
    s_b = student_topk_buckets(z, t_ids, temperature, with_other)
    t_b = teacher_topk_buckets(t_lp, with_other)
    return divergence_from_logprobs(s_b, t_b, kind, beta)


def topk_divergence(student_logits: torch.Tensor, teacher_topk_logprobs: torch.Tensor,
                    teacher_topk_ids: torch.Tensor, mask: torch.Tensor | None = None, kind: str = "forward_kl",
                    beta: float = 0.5, temperature: float = 1.0, chunk_size: int = 1024) -> torch.Tensor:
    """Mean over masked tokens of D(p_T || p_S) on k + 1 buckets (teacher's top-k tokens + one "other" bucket).

    student_logits (..., V); teacher_topk_logprobs / teacher_topk_ids (..., k) (log p_T at `temperature`, any
    float dtype / any int dtype). Only the masked rows are gathered and processed, `chunk_size` rows at a time, so
    at most one fp32 (chunk, V) copy of the student logits exists per chunk (never a full-vocab fp32 copy of the
    whole batch). Differentiable w.r.t. student_logits.
    """
    V = student_logits.shape[-1]
    z = student_logits.reshape(-1, V)
    lp = teacher_topk_logprobs.reshape(-1, teacher_topk_logprobs.shape[-1])
    ids = teacher_topk_ids.reshape(-1, teacher_topk_ids.shape[-1])
    if mask is not None:
        sel = mask.reshape(-1).to(torch.bool)
        z, lp, ids = z[sel], lp[sel], ids[sel]
    if z.shape[0] == 0:
        return student_logits.sum() * 0.0
    total = z.new_zeros((), dtype=torch.float32)
    for s in range(0, z.shape[0], chunk_size):
        total = total + topk_divergence_per_token(z[s:s + chunk_size], lp[s:s + chunk_size], ids[s:s + chunk_size],
                                        kind, beta, temperature).sum()
    return total / z.shape[0]


# ---------------------------------------------------------------------------------------------------------------
# Fused LM head: CE + divergence from one chunked projection (used by the trainer; still a pure tensor function)
# ---------------------------------------------------------------------------------------------------------------

def default_chunk_rows(vocab_size: int) -> int:
    """Rows per chunk so one fp32 (rows, V) copy is ~256 MB (2**26 floats)."""
    return max(32, (1 << 26) // max(1, vocab_size))


def _analytic_chunk(z: torch.Tensor, targets: torch.Tensor, ce_w: torch.Tensor, div_w: torch.Tensor | None,
                    t_lp: torch.Tensor | None, t_ids: torch.Tensor | None, kind: str, beta: float, tau: float):
    """CE (+ top-k bucket divergence) of one chunk of fp32 logits z (C, V) and its gradient dL/dz, in closed form.

    Overwrites z (its storage becomes the gradient). With e_v = exp(z_v - max z), S = sum_v e_v and, for the
    divergence at temperature tau, e'_v = exp((z_v - max z) / tau), S' = S'_rest + sum_k e'_{id_k} where S'_rest is
    summed directly over the ids outside the top-k (no 1 - sum cancellation):
        CE = log S + max z - z_t,                    dCE/dz_v = p_v - [v = t]
        log q_k = z_{id_k}/tau - log S' - max/tau,   log q_o = log S'_rest - log S'
        dD/dz_v = (1/tau) (sum_k g_k [v = id_k] + g_o e'_v [v not in ids] / S'_rest - G e'_v / S'),
    with g_b = dD/d(log q_b) from a tiny (C, k+1) autograd pass and G = sum_b g_b. A handful of passes over (C, V)
    instead of the ~20 of autograd through three logsumexps. Returns (grad_z, ce, div)."""
    tgt = targets.long().unsqueeze(-1)
    z_t = z.gather(-1, tgt).squeeze(-1)
    use_div = t_lp is not None
    m = z.amax(-1, keepdim=True)
    if use_div:
        ids = t_ids.long()
        z_ids = z.gather(-1, ids)
        e_tau = ((z - m) / tau).exp_() if tau != 1.0 else None
    e = z.sub_(m).exp_()                          # z's storage now holds e
    if use_div:
        if e_tau is None:
            e_tau = e
        e_ids = e_tau.gather(-1, ids)
        e_tau.scatter_(-1, ids, 0.0)
        s_rest = e_tau.sum(-1)
        s_tau = s_rest + e_ids.sum(-1)
        S = s_tau if e_tau is e else e.sum(-1)
    else:
        S = e.sum(-1)
    lse = m.squeeze(-1) + S.log()
    ce = lse - z_t
    coef = ce_w / S
    div = None
    if use_div:
        s_rest_c = s_rest.clamp(min=1e-38)
        lq = torch.cat([z_ids / tau - (m / tau + s_tau.log().unsqueeze(-1)),
                        (s_rest_c.log() - s_tau.log()).unsqueeze(-1)], dim=-1)
        P = teacher_topk_buckets(t_lp, with_other=True)
        with torch.enable_grad():
            lq = lq.detach().requires_grad_()
            d = divergence_from_logprobs(lq, P, kind, beta)
            (g,) = torch.autograd.grad((d * div_w).sum(), lq)
        div = d.detach()
        g_k, g_o, G = g[:, :-1], g[:, -1], g.sum(-1)
        coef_rest = (g_o / s_rest_c - G / s_tau) / tau            # times e'_v, v outside the top-k
        at_ids = (g_k - G.unsqueeze(-1) * e_ids / s_tau.unsqueeze(-1)) / tau
        if e_tau is e:
            grad = e.mul_((coef + coef_rest).unsqueeze(-1))       # e is 0 at the ids
            grad.scatter_(-1, ids, coef.unsqueeze(-1) * e_ids + at_ids)
        else:
            grad = e.mul_(coef.unsqueeze(-1))
            grad.add_(e_tau.mul_(coef_rest.unsqueeze(-1)))
            grad.scatter_add_(-1, ids, at_ids)
    else:
        grad = e.mul_(coef.unsqueeze(-1))
    grad.scatter_add_(-1, tgt, -ce_w.unsqueeze(-1))
    return grad, ce, div


class _FusedHeadLoss(torch.autograd.Function):
    """Projects `hidden` through the LM head chunk by chunk and computes, per chunk,
    loss_c = sum_t ce_w[t] * CE_t + sum_t div_w[t] * D_t, back-propagating each chunk at once (gradients w.r.t.
    hidden and the head weight are accumulated during the forward), so the (N, V) logits never exist in full and
    are never kept for the backward. Backward only rescales the stored gradients by the incoming scalar grad."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, ce_w, div_w, t_lp, t_ids, t_hidden, opts):
        kind, beta, tau, chunk, logit_scale, softcap = opts
        need_h = hidden.requires_grad
        need_w = weight.requires_grad
        need_b = bias is not None and bias.requires_grad
        N = hidden.shape[0]
        grad_h = torch.zeros_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_b else None
        ce_all = hidden.new_zeros(N, dtype=torch.float32)
        div_all = hidden.new_zeros(N, dtype=torch.float32)
        total = hidden.new_zeros((), dtype=torch.float32)
        use_div = div_w is not None and (t_lp is not None or t_hidden is not None)
        w_leaf = weight.detach().requires_grad_(need_w)
        b_leaf = bias.detach().requires_grad_(need_b) if bias is not None else None

        def project(h, w, b):
            z = F.linear(h, w, b).float()
            if logit_scale != 1.0:
                z = z * logit_scale
            if softcap:
                z = torch.tanh(z / softcap) * softcap
            return z

        V = weight.shape[0]
        analytic = (logit_scale == 1.0 and not softcap and t_hidden is None
                    and (not use_div or t_ids.shape[-1] < V))
        for s in range(0, N, chunk):
            e = min(N, s + chunk)
            if analytic:
                h = hidden[s:e].detach()
                z = F.linear(h, weight.detach(), None if bias is None else bias.detach())
                grad_z, ce, div = _analytic_chunk(
                    z.float(), targets[s:e], ce_w[s:e],
                    div_w[s:e] if use_div else None, t_lp[s:e] if use_div else None,
                    t_ids[s:e] if use_div else None, kind, beta, tau)
                del z
                ce_all[s:e] = ce
                loss_c = (ce * ce_w[s:e]).sum()
                if use_div:
                    div_all[s:e] = div
                    loss_c = loss_c + (div * div_w[s:e]).sum()
                total += loss_c
                gz = grad_z.to(hidden.dtype)
                del grad_z
                if need_h:
                    grad_h[s:e] = gz @ weight.detach()
                if need_w:
                    grad_w += (gz.t() @ h).float()
                if need_b:
                    grad_b += gz.float().sum(0)
                del gz
                continue
            with torch.enable_grad():
                h = hidden[s:e].detach().requires_grad_(need_h)
                z = project(h, w_leaf, b_leaf)
                lse = torch.logsumexp(z, dim=-1)
                ce = lse - z.gather(-1, targets[s:e].long().unsqueeze(-1)).squeeze(-1)
                loss_c = (ce * ce_w[s:e]).sum()
                if use_div:
                    if t_lp is not None:
                        div = topk_divergence_per_token(z, t_lp[s:e], t_ids[s:e], kind, beta, tau)
                    else:
                        with torch.no_grad():
                            zt = project(t_hidden[s:e], weight.detach(), None if bias is None else bias.detach())
                            t_logp = F.log_softmax(zt / tau, dim=-1)
                            del zt
                        s_logp = F.log_softmax(z / tau, dim=-1) if tau != 1.0 else z - lse.unsqueeze(-1)
                        div = divergence_from_logprobs(s_logp, t_logp, kind, beta)
                    loss_c = loss_c + (div * div_w[s:e]).sum()
                    div_all[s:e] = div.detach()
                ce_all[s:e] = ce.detach()
                inputs = [x for x, need in ((h, need_h), (w_leaf, need_w), (b_leaf, need_b)) if need]
                if inputs:
                    grads = list(torch.autograd.grad(loss_c, inputs))
                    if need_h:
                        grad_h[s:e] = grads.pop(0)
                    if need_w:
                        grad_w += grads.pop(0).float()
                    if need_b:
                        grad_b += grads.pop(0).float()
            total += loss_c.detach()
            del z, lse, ce, loss_c
        ctx.save_for_backward(*(x for x in (grad_h, grad_w, grad_b) if x is not None))
        ctx.needs = (need_h, need_w, need_b)
        ctx.w_dtype = weight.dtype
        ctx.b_dtype = None if bias is None else bias.dtype
        ctx.mark_non_differentiable(ce_all, div_all)
        return total, ce_all, div_all

    @staticmethod
    def backward(ctx, g_total, _g_ce, _g_div):
        saved = list(ctx.saved_tensors)
        need_h, need_w, need_b = ctx.needs
        gh = None
        if need_h:
            gh = saved.pop(0)
            gh = gh * g_total.to(gh.dtype)
        gw = (saved.pop(0) * g_total).to(ctx.w_dtype) if need_w else None
        gb = (saved.pop(0) * g_total).to(ctx.b_dtype) if need_b else None
        return gh, gw, gb, None, None, None, None, None, None, None


def fused_head_loss(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, ce_weights: torch.Tensor, *,
                    bias: torch.Tensor | None = None, div_weights: torch.Tensor | None = None,
                    teacher_topk_logprobs: torch.Tensor | None = None, teacher_topk_ids: torch.Tensor | None = None,
                    teacher_hidden: torch.Tensor | None = None, kind: str = "forward_kl", beta: float = 0.5,
                    temperature: float = 1.0, chunk_size: int | None = None, logit_scale: float = 1.0,
                    softcap: float | None = None):
    """CE and seed divergence from ONE chunked pass through the LM head, over the selected (response) rows only.

        loss = sum_t ce_weights[t] * CE_t + sum_t div_weights[t] * D(p_T,t || p_S,t)
        CE_t = logsumexp(z_t) - z_t[target_t],   z_t = softcap(logit_scale * (W h_t + b))

    hidden (N, H) in the model dtype; weight (V, H); targets (N,) next-token ids; ce_weights / div_weights (N,)
    (per-token weights: e.g. w_d / n_d for the domain-weighted CE, alpha / N for a mean divergence).
    The teacher is either cached top-k (teacher_topk_logprobs / _ids, (N, k), at `temperature`) -> k+1-bucket
    divergence, or live `teacher_hidden` (N, H) projected through the same head -> exact full-vocabulary divergence.
    Each chunk makes one fp32 copy of its logits (plus the autograd temporaries of that chunk only).
    Returns (loss scalar, per-token CE (N,) detached, per-token divergence (N,) detached; zeros when unused).
    """
    _check_kind(kind, beta)
    if (teacher_topk_logprobs is None) != (teacher_topk_ids is None):
        raise ValueError("teacher_topk_logprobs and teacher_topk_ids go together")
    chunk = int(chunk_size or default_chunk_rows(weight.shape[0]))
    if div_weights is not None and teacher_topk_logprobs is None and teacher_hidden is None:
        raise ValueError("div_weights given but no teacher (top-k cache or hidden states)")
    opts = (kind, float(beta), float(temperature), chunk, float(logit_scale), softcap)
    return _FusedHeadLoss.apply(hidden, weight, bias, targets, ce_weights.float(),
                                None if div_weights is None else div_weights.float(),
                                teacher_topk_logprobs, teacher_topk_ids, teacher_hidden, opts)


# ---------------------------------------------------------------------------------------------------------------
# Domain invariance
# ---------------------------------------------------------------------------------------------------------------

def masked_mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, H) hidden states, (B, T) mask -> (B, H): mean of h_t over the positions where mask is true
    (a row with an empty mask pools to 0)."""
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


def _sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.unsqueeze(1) - b.unsqueeze(0)).pow(2).sum(-1)


def mmd(x: torch.Tensor, y: torch.Tensor, bandwidths: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0), *,
        relative: bool = True, unbiased: bool = False) -> torch.Tensor:
    """Squared MMD between samples x (n, d) and y (m, d) under a sum of Gaussian kernels.

        k(a, b) = (1/|S|) sum_{s in S} exp(-||a - b||^2 / (2 s^2 sigma0^2))
        MMD^2   = E[k(x, x')] + E[k(y, y')] - 2 E[k(x, y)]

    relative=True (default): sigma0^2 = mean squared distance over the pooled sample (detached), so `bandwidths`
    are multipliers of the data's own scale (hidden states of LLMs have norms in the tens to hundreds: fixed
    bandwidths would give a kernel of 0 everywhere); relative=False: sigma0 = 1 and bandwidths are absolute.
    Biased V-statistic by default (diagonals included): always >= 0 and exactly 0 for x == y, which suits the tiny
    per-domain samples of a batch. unbiased=True drops the diagonal terms (U-statistic; can be negative; needs
    n, m >= 2, falls back to the biased estimate otherwise).
    """
    x = x.float()
    y = y.float()
    n, m = x.shape[0], y.shape[0]
    if n == 0 or m == 0:
        return (x.sum() + y.sum()) * 0.0
    if relative:
        with torch.no_grad():
            pooled = torch.cat([x, y])
            d = _sq_dists(pooled, pooled)
            N = pooled.shape[0]
            scale = (d.sum() / max(1, N * N - N)).clamp(min=1e-6)
    else:
        scale = 1.0
    return mmd_fixed(x, y, scale, bandwidths, unbiased)


def coral(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """CORAL (Sun & Saenko 2016): ||C_x - C_y||_F^2 / (4 d^2), C = feature covariance (denominator n - 1, or 1
    for a single sample, whose covariance is then 0). x (n, d), y (m, d)."""
    x = x.float()
    y = y.float()
    d = x.shape[1]

    def cov(a):
        a = a - a.mean(0, keepdim=True)
        return a.t() @ a / max(1, a.shape[0] - 1)

    return (cov(x) - cov(y)).pow(2).sum() / (4.0 * d * d)


def _pairwise(fn, features: torch.Tensor, domain_ids: torch.Tensor, **kw) -> torch.Tensor:
    doms = torch.unique(domain_ids).tolist()
    if len(doms) < 2:
        return features.sum() * 0.0   # connected to the graph, value 0
    vals = [fn(features[domain_ids == a], features[domain_ids == b], **kw)
            for a, b in itertools.combinations(doms, 2)]
    return torch.stack(vals).mean()


def pairwise_mmd(features: torch.Tensor, domain_ids: torch.Tensor, **kw) -> torch.Tensor:
    """Mean of mmd(f[d == a], f[d == b]) over all pairs of domains present in the batch (0 if fewer than 2)."""
    return _pairwise(mmd, features, domain_ids, **kw)


def pairwise_coral(features: torch.Tensor, domain_ids: torch.Tensor) -> torch.Tensor:
    """Mean of coral(f[d == a], f[d == b]) over all pairs of domains present in the batch (0 if fewer than 2)."""
    return _pairwise(coral, features, domain_ids)


class GradientReversal(torch.autograd.Function):
    """Identity in the forward; multiplies the gradient by -lambda in the backward (Ganin & Lempitsky 2015)."""

    @staticmethod
    def forward(ctx, x, lambda_):
        ctx.lambda_ = float(lambda_)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.lambda_ * grad, None


def grad_reverse(x: torch.Tensor, lambda_: float = 1.0) -> torch.Tensor:
    """y = x; dL/dx = -lambda * dL/dy."""
    return GradientReversal.apply(x, lambda_)


class DomainClassifier(nn.Module):
    """Small MLP for DANN: pooled features (B, d) -> domain logits (B, n_domains). Runs in fp32."""

    def __init__(self, in_dim: int, n_domains: int, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.GELU(),
                                 nn.Linear(hidden, n_domains))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.to(self.net[1].weight.dtype))


def dann_loss(features: torch.Tensor, domain_ids: torch.Tensor, classifier: nn.Module,
              lambda_: float = 1.0) -> torch.Tensor:
    """CE(classifier(GRL_lambda(features)), domain_ids): minimising it trains the classifier to tell the domains
    apart while the reversed gradient (-lambda) pushes the features to make them indistinguishable."""
    logits = classifier(grad_reverse(features, lambda_))
    return F.cross_entropy(logits.float(), domain_ids.long())


# ---------------------------------------------------------------------------------------------------------------
# Invariance on distributions: per-domain feature queues
# ---------------------------------------------------------------------------------------------------------------
#
# A batch of 4 over 4 domains holds one or two examples per domain, and MMD / CORAL between single points is a
# constant / 0. The queue keeps each domain's last `size` pooled features (detached, fp32), so every domain is
# represented by queue + batch: the term compares distributions, and its gradient flows through the batch's rows.

class FeatureQueue:
    """Per-domain FIFO of recent pooled features (detached, fp32, on one device), owned by one run.

    `reset(run_key)` empties it (a new run: features of another run are never reused; a resumed run restores the
    queue its checkpoint saved, `state_dict` / `load_state_dict`, so it trains as if never interrupted). `push` stores the newest rows of each domain, dropping the oldest beyond `size`; a push from
    another device, or with another feature width, first empties the queue, so it never mixes devices or holds a
    stale run's features. Whatever the input dtype, rows are stored as fp32."""

    def __init__(self, n_domains: int, size: int, run_key: str | None = None):
        if size < 1:
            raise ValueError(f"queue size must be >= 1, got {size}")
        self.n_domains = int(n_domains)
        self.size = int(size)
        self.run_key = run_key
        self._q: list[torch.Tensor | None] = [None] * self.n_domains

    def reset(self, run_key: str | None = None) -> None:
        self.run_key = run_key
        self._q = [None] * self.n_domains

    @property
    def device(self) -> torch.device | None:
        return next((q.device for q in self._q if q is not None), None)

    @property
    def dim(self) -> int | None:
        return next((q.shape[1] for q in self._q if q is not None), None)

    def __len__(self) -> int:
        return sum(0 if q is None else q.shape[0] for q in self._q)

    def get(self, d: int) -> torch.Tensor | None:
        """Domain d's queued rows (k, dim) fp32, oldest first; None when empty."""
        return self._q[d]

    def push(self, features: torch.Tensor, domain_ids: torch.Tensor, run_key: str | None = None) -> None:
        """Append each domain's rows of `features` (B, dim), detached and in fp32. A different `run_key` (when
        given), device or width empties the queue first."""
        f = features.detach().float()
        if ((run_key is not None and run_key != self.run_key)
                or (self.device is not None and self.device != f.device)
                or (self.dim is not None and self.dim != f.shape[1])):
            self.reset(run_key if run_key is not None else self.run_key)
        dom = domain_ids.detach().cpu()
        for d in torch.unique(dom).tolist():
            if not 0 <= d < self.n_domains:
                raise ValueError(f"domain id {d} outside the queue's 0..{self.n_domains - 1}")
            rows = f.index_select(0, torch.nonzero(dom == d).flatten().to(f.device))
            q = rows if self._q[d] is None else torch.cat([self._q[d], rows])
            self._q[d] = q[-self.size:].clone()

    def state(self) -> dict:
        return {"run_key": self.run_key, "sizes": [0 if q is None else int(q.shape[0]) for q in self._q],
                "dtype": "float32", "device": None if self.device is None else str(self.device)}

    def state_dict(self) -> dict:
        """The queued rows (CPU, fp32) for a checkpoint: a resumed run continues with the queue it had."""
        return {"run_key": self.run_key, "size": self.size,
                "rows": [None if q is None else q.detach().cpu() for q in self._q]}

    def load_state_dict(self, state: dict, device: torch.device | str | None = None) -> None:
        """Restore `state_dict()` of the same run (same domains), its rows moved to `device`."""
        rows = state["rows"]
        if len(rows) != self.n_domains:
            raise ValueError(f"queue state has {len(rows)} domains, this queue {self.n_domains}")
        self.run_key = state.get("run_key", self.run_key)
        self._q = [None if q is None else q.float()[-self.size:].to(device or q.device).clone() for q in rows]


def median_sq_dist(x: torch.Tensor) -> torch.Tensor:
    """Median of the squared pairwise distances between distinct rows of x (n, d), detached (the median heuristic
    of the Gaussian kernel's bandwidth); 1 when there are fewer than 2 rows."""
    x = x.detach().float()
    n = x.shape[0]
    if n < 2:
        return torch.ones((), device=x.device)
    d = _sq_dists(x, x)
    iu = torch.triu_indices(n, n, offset=1, device=x.device)
    return d[iu[0], iu[1]].median().clamp(min=1e-6)


def mmd_fixed(x: torch.Tensor, y: torch.Tensor, scale: torch.Tensor | float,
              bandwidths: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0), unbiased: bool = False) -> torch.Tensor:
    """Squared MMD of x (n, d) and y (m, d) under the multi-scale Gaussian kernel of `mmd`, with the base scale
    sigma0^2 = `scale` given (e.g. `median_sq_dist` of the queues), not taken from x and y."""
    x, y = x.float(), y.float()
    if x.shape[0] == 0 or y.shape[0] == 0:
        return (x.sum() + y.sum()) * 0.0
    scale = torch.as_tensor(scale, dtype=torch.float32, device=x.device).detach()

    def k(d):
        return sum(torch.exp(-d / (2.0 * (s ** 2) * scale)) for s in bandwidths) / len(bandwidths)

    kxx, kyy, kxy = k(_sq_dists(x, x)), k(_sq_dists(y, y)), k(_sq_dists(x, y))
    n, m = x.shape[0], y.shape[0]
    if unbiased and n >= 2 and m >= 2:
        exx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
        eyy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    else:
        exx, eyy = kxx.mean(), kyy.mean()
    return exx + eyy - 2.0 * kxy.mean()


def _queue_samples(features: torch.Tensor, domain_ids: torch.Tensor, queue: FeatureQueue
                   ) -> tuple[dict[int, torch.Tensor], list[int]]:
    """{domain: cat(batch rows (with grad), queued rows (detached))} for every domain with any row, and the
    domains present in the batch."""
    feats = features.float()
    present = torch.unique(domain_ids).tolist()
    samples: dict[int, torch.Tensor] = {}
    for d in range(queue.n_domains):
        q = queue.get(d)
        parts = []
        if d in present:
            parts.append(feats[domain_ids == d])
        if q is not None:
            parts.append(q.to(feats.device))
        if parts:
            samples[d] = torch.cat(parts)
    return samples, present


def _queue_pairs(samples: dict[int, torch.Tensor], present: list[int]) -> list[tuple[int, int]]:
    """Pairs of domains with at least one side in the batch (a queue-only pair has no gradient)."""
    doms = sorted(samples)
    return [(a, b) for a, b in itertools.combinations(doms, 2) if a in present or b in present]


def queue_mmd(features: torch.Tensor, domain_ids: torch.Tensor, queue: FeatureQueue,
              bandwidths: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0)) -> torch.Tensor:
    """Mean over domain pairs (a, b), one of them in the batch, of MMD^2(batch_a + queue_a, batch_b + queue_b).

    The kernel's base scale is the median squared distance of the queued features of all domains (the batch's
    own when the queues are empty), detached: fixed for the step, so the term cannot shrink by inflating it.
    The gradient flows through the batch rows only; one example of a domain is compared with a whole queue."""
    samples, present = _queue_samples(features, domain_ids, queue)
    pairs = _queue_pairs(samples, present)
    if not pairs:
        return features.sum() * 0.0
    queued = [queue.get(d) for d in range(queue.n_domains) if queue.get(d) is not None]
    ref = torch.cat([q.to(features.device) for q in queued]) if queued else features
    scale = median_sq_dist(ref)
    return torch.stack([mmd_fixed(samples[a], samples[b], scale, bandwidths) for a, b in pairs]).mean()


def queue_coral(features: torch.Tensor, domain_ids: torch.Tensor, queue: FeatureQueue) -> torch.Tensor:
    """Mean over domain pairs (one in the batch) of coral(batch_a + queue_a, batch_b + queue_b): covariances of
    queue + batch, so a domain with one example in the batch still has a covariance and a gradient."""
    samples, present = _queue_samples(features, domain_ids, queue)
    pairs = _queue_pairs(samples, present)
    if not pairs:
        return features.sum() * 0.0
    return torch.stack([coral(samples[a], samples[b]) for a, b in pairs]).mean()


def queue_dann_loss(features: torch.Tensor, domain_ids: torch.Tensor, queue: FeatureQueue, classifier: nn.Module,
                    lambda_: float = 1.0) -> torch.Tensor:
    """DANN on queue + batch: CE of the domain classifier over the batch rows (behind gradient reversal with
    coefficient lambda) and the queued rows (detached inputs), so the classifier learns from every domain's
    recent features while only the batch's features are pushed to fool it."""
    x = [grad_reverse(features.float(), lambda_)]
    y = [domain_ids.long()]
    for d in range(queue.n_domains):
        q = queue.get(d)
        if q is not None:
            x.append(q.to(features.device))
            y.append(torch.full((q.shape[0],), d, dtype=torch.long, device=features.device))
    logits = classifier(torch.cat(x))
    return F.cross_entropy(logits.float(), torch.cat(y))


def domain_sized_grad(features: torch.Tensor, domain_ids: torch.Tensor, queue: FeatureQueue) -> torch.Tensor:
    """`features` with the same values and each row's gradient multiplied by (its domain's batch rows + queued rows)
    / (its domain's batch rows). Of a domain's N = n + q samples in the term only the n batch rows are live, so
    each gets 1/N of the pull: with a queue of 128 and one row per domain in a micro-batch, ~1/129 of what the
    term's value suggests, and the weight `beta` would buy less the longer the queue. Scaled, the batch rows carry
    the gradient the term would have if every queued feature were recomputed with the current weights (each of
    the domain's samples is equally likely to be in the batch, so the scaled sum estimates the full one; the
    queue is a few steps stale). The value, and so the logged `inv`, are unchanged."""
    scale = torch.ones(features.shape[0], 1, device=features.device, dtype=features.dtype)
    for d in torch.unique(domain_ids).tolist():
        rows = domain_ids == d
        q = queue.get(d)
        n = int(rows.sum())
        scale[rows] = (n + (0 if q is None else q.shape[0])) / n
    return features.detach() + (features - features.detach()) * scale


def invariance_term(kind: str, features: torch.Tensor, domain_ids: torch.Tensor, queue: FeatureQueue | None,
                    classifier: nn.Module | None = None, lambda_: float = 1.0, grad: str = "domain") -> torch.Tensor:
    """The L_inv of one step: `mmd` / `coral` / `dann` between the domains' pooled features, over queue + batch
    when a queue is given (batch only otherwise). Does not push the batch into the queue (the caller does, after).
    `grad`: "domain" scales each batch row's gradient to its domain's sample size (`domain_sized_grad`); "batch"
    leaves it at 1/N (how the term was before: its pull shrinks as the queue grows)."""
    if grad not in INV_GRADS:
        raise ValueError(f"unknown inv_grad '{grad}' (known: {', '.join(INV_GRADS)})")
    if queue is None:
        queue = FeatureQueue(int(domain_ids.max()) + 1 if domain_ids.numel() else 1, 1)
    if grad == "domain":
        features = domain_sized_grad(features, domain_ids, queue)
    if kind == "mmd":
        return queue_mmd(features, domain_ids, queue)
    if kind == "coral":
        return queue_coral(features, domain_ids, queue)
    if kind == "dann":
        if classifier is None:
            raise ValueError("dann needs a domain classifier")
        return queue_dann_loss(features, domain_ids, queue, classifier, lambda_)
    raise ValueError(f"unknown invariance kind '{kind}' (known: mmd, coral, dann)")
