"""Unit tests of crossdistill.losses on fixed tensors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from crossdistill import losses as L

KINDS = ("forward_kl", "reverse_kl", "jsd")


def _logits(seed=0, shape=(2, 5, 11), scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * scale


def _mask(shape=(2, 5)):
    m = torch.ones(shape, dtype=torch.bool)
    m[0, :2] = False      # "prompt" positions
    m[1, -1] = False      # padding
    return m


@pytest.mark.parametrize("kind", KINDS)
def test_identical_distributions_give_zero(kind):
    z = _logits()
    for beta in (0.0, 0.3, 0.5, 1.0):
        d = L.token_divergence(z, z.clone(), _mask(), kind=kind, beta=beta)
        assert abs(d.item()) < 1e-6
    # seed given as log-probs instead of logits: same thing
    d = L.token_divergence(z, F.log_softmax(z, -1), _mask(), kind=kind, temperature=2.0)
    assert abs(d.item()) < 1e-6


def test_kl_nonnegative_and_directional():
    for seed in range(5):
        s, t = _logits(seed), _logits(seed + 100)
        fwd = L.token_divergence(s, t, _mask(), "forward_kl")
        rev = L.token_divergence(s, t, _mask(), "reverse_kl")
        assert fwd.item() > 0 and rev.item() > 0
        assert abs(fwd.item() - rev.item()) > 1e-4        # asymmetric inputs -> forward != reverse
        # reference formula
        ps, pt = F.log_softmax(s, -1), F.log_softmax(t, -1)
        ref = (pt.exp() * (pt - ps)).sum(-1)[_mask()].mean()
        assert torch.allclose(fwd, ref, atol=1e-6)


def test_jsd_symmetric_at_half_and_endpoints():
    s, t = _logits(1), _logits(2)
    a = L.token_divergence(s, t, _mask(), "jsd", beta=0.5)
    b = L.token_divergence(t, s, _mask(), "jsd", beta=0.5)
    assert a.item() > 0 and torch.allclose(a, b, atol=1e-6)
    assert a.item() <= torch.log(torch.tensor(2.0)).item() + 1e-6     # JSD <= log 2
    # GKD / TRL convention: beta=0 is forward KL, beta=1 reverse KL
    assert torch.allclose(L.token_divergence(s, t, None, "jsd", beta=0.0), L.token_divergence(s, t, None, "forward_kl"))
    assert torch.allclose(L.token_divergence(s, t, None, "jsd", beta=1.0), L.token_divergence(s, t, None, "reverse_kl"))
    # asymmetric for beta != 0.5
    c = L.token_divergence(s, t, None, "jsd", beta=0.2)
    d = L.token_divergence(t, s, None, "jsd", beta=0.2)
    assert abs(c.item() - d.item()) > 1e-5


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_topk_with_full_vocab_equals_full(kind, temperature):
    s, t = _logits(3), _logits(4)
    V = s.shape[-1]
    t_lp = F.log_softmax(t / temperature, -1)
    vals, ids = t_lp.topk(V, dim=-1)
    full = L.token_divergence(s, t, _mask(), kind, beta=0.4, temperature=temperature)
    top = L.topk_divergence(s, vals, ids.int(), _mask(), kind, beta=0.4, temperature=temperature, chunk_size=3)
    assert torch.allclose(full, top, atol=1e-5)
    # gradients agree as well
    s1 = s.clone().requires_grad_()
    s2 = s.clone().requires_grad_()
    L.token_divergence(s1, t, _mask(), kind, 0.4, temperature).backward()
    L.topk_divergence(s2, vals, ids, _mask(), kind, 0.4, temperature).backward()
    assert torch.allclose(s1.grad, s2.grad, atol=1e-6)


def test_topk_buckets_reference_and_zero():
    s, t = _logits(5), _logits(6)
    k = 3
    t_lp = F.log_softmax(t, -1)
    vals, ids = t_lp.topk(k, dim=-1)
    got = L.topk_divergence(s, vals.half(), ids.int(), None, "forward_kl")
    # reference: explicit k+1 buckets
    s_lp = F.log_softmax(s, -1)
    s_top = s_lp.gather(-1, ids).exp()
    p_s = torch.cat([s_top, 1 - s_top.sum(-1, keepdim=True)], -1)
    t_top = vals.exp()
    p_t = torch.cat([t_top, 1 - t_top.sum(-1, keepdim=True)], -1)
    ref = (p_t * (p_t.log() - p_s.log())).sum(-1).mean()
    assert torch.allclose(got, ref, atol=2e-3)   # fp16-rounded teacher
    # identical distributions -> 0 with a truncated teacher too
    same = L.topk_divergence(t, vals, ids, None, "forward_kl")
    assert abs(same.item()) < 1e-5


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("teacher,tau", [("topk", 1.0), ("topk", 1.5), ("live", 1.5)])
def test_fused_head_matches_naive(kind, teacher, tau):
    g = torch.Generator().manual_seed(0)
    N, H, V, k = 13, 8, 17, 4
    h = torch.randn(N, H, generator=g, requires_grad=True)
    W = torch.randn(V, H, generator=g, requires_grad=True)
    th = torch.randn(N, H, generator=g)
    tgt = torch.randint(0, V, (N,), generator=g)
    dom = torch.tensor([0] * 5 + [1] * 8)
    ce_w = torch.where(dom == 0, 0.5 / 5, 0.5 / 8)
    div_w = torch.full((N,), 0.7 / N)
    t_logits = th @ W.detach().t()
    t_lp, t_ids = F.log_softmax(t_logits / tau, -1).topk(k, -1)
    kw = dict(kind=kind, beta=0.3, temperature=tau, chunk_size=4)
    if teacher == "topk":
        kw.update(teacher_topk_logprobs=t_lp, teacher_topk_ids=t_ids)
    else:
        kw.update(teacher_hidden=th)
    loss, ce, div = L.fused_head_loss(h, W, tgt, ce_w, div_weights=div_w, **kw)
    loss.backward()
    gh, gW = h.grad.clone(), W.grad.clone()
    h.grad = W.grad = None
    z = h @ W.t()
    ce_ref = F.cross_entropy(z, tgt, reduction="none")
    if teacher == "topk":
        div_ref = torch.stack([L.topk_divergence(z[i:i + 1], t_lp[i:i + 1], t_ids[i:i + 1], None, kind, 0.3, tau)
                               for i in range(N)])
    else:
        div_ref = torch.stack([L.token_divergence(z[i], t_logits[i], None, kind, 0.3, tau) for i in range(N)])
    ref = (ce_ref * ce_w).sum() + (div_ref * div_w).sum()
    ref.backward()
    assert torch.allclose(loss, ref, atol=1e-5)
    assert torch.allclose(ce, ce_ref.detach(), atol=1e-5)
    assert torch.allclose(div, div_ref.detach(), atol=1e-5)
    assert torch.allclose(gh, h.grad, atol=1e-5)
    assert torch.allclose(gW, W.grad, atol=1e-5)


@pytest.mark.parametrize("softcap", [None, 5.0])
def test_fused_head_bias_softcap_and_bf16(softcap):
    g = torch.Generator().manual_seed(2)
    N, H, V, k = 9, 8, 23, 5
    h = torch.randn(N, H, generator=g, requires_grad=True)
    W = torch.randn(V, H, generator=g, requires_grad=True)
    b = torch.randn(V, generator=g, requires_grad=True)
    tgt = torch.randint(0, V, (N,), generator=g)
    t_lp, t_ids = F.log_softmax(torch.randn(N, V, generator=g), -1).topk(k, -1)
    w = torch.full((N,), 1.0 / N)
    loss, _, _ = L.fused_head_loss(h, W, tgt, w, bias=b, div_weights=0.5 * w, teacher_topk_logprobs=t_lp,
                                   teacher_topk_ids=t_ids, softcap=softcap, chunk_size=4)
    loss.backward()
    grads = [x.grad.clone() for x in (h, W, b)]
    for x in (h, W, b):
        x.grad = None
    z = h @ W.t() + b
    if softcap:
        z = torch.tanh(z / softcap) * softcap
    ref = F.cross_entropy(z, tgt) + 0.5 * L.topk_divergence(z, t_lp, t_ids)
    ref.backward()
    assert torch.allclose(loss, ref, atol=1e-5)
    for got, x in zip(grads, (h, W, b)):
        assert torch.allclose(got, x.grad, atol=1e-5)
    # bf16 activations/weights: close to the fp32 result, gradients in the input dtype
    hb = h.detach().bfloat16().requires_grad_()
    lb, _, _ = L.fused_head_loss(hb, W.detach().bfloat16(), tgt, w, bias=b.detach().bfloat16(), div_weights=0.5 * w,
                                 teacher_topk_logprobs=t_lp, teacher_topk_ids=t_ids, softcap=softcap)
    lb.backward()
    assert hb.grad.dtype == torch.bfloat16
    assert abs(lb.item() - loss.item()) < 0.05 * abs(loss.item())


def test_fused_head_frozen_weight_and_ce_only():
    g = torch.Generator().manual_seed(1)
    h = torch.randn(6, 4, generator=g, requires_grad=True)
    W = torch.randn(9, 4, generator=g)       # frozen head (LoRA)
    tgt = torch.randint(0, 9, (6,), generator=g)
    loss, ce, div = L.fused_head_loss(h, W, tgt, torch.full((6,), 1 / 6))
    assert torch.allclose(loss, F.cross_entropy(h @ W.t(), tgt), atol=1e-6)
    assert torch.count_nonzero(div) == 0
    loss.backward()
    assert h.grad is not None and W.grad is None


def test_mmd_zero_for_same_positive_for_shift():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 8, generator=g)
    assert abs(L.mmd(x, x).item()) < 1e-6
    y = torch.randn(16, 8, generator=g)
    same_dist = L.mmd(x, y).item()
    shifted = L.mmd(x, y + 3.0).item()
    assert shifted > 0.05 and shifted > 5 * same_dist
    assert L.mmd(x, y + 3.0, unbiased=True).item() > 0.05
    assert L.mmd(x, y + 3.0, relative=False, bandwidths=(1.0, 4.0)).item() > 0.05
    # scale invariance of the relative bandwidths
    assert abs(L.mmd(100 * x, 100 * (y + 3.0)).item() - shifted) < 1e-4


def test_coral_zero_for_same_positive_for_scaled():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 6, generator=g)
    assert abs(L.coral(x, x).item()) < 1e-8
    assert abs(L.coral(x, x + 5.0).item()) < 1e-6          # CORAL ignores means
    assert L.coral(x, 3.0 * x).item() > 0.01
    assert L.coral(x[:1], x[1:2]).item() == 0.0             # single samples: both covariances 0


def test_pairwise_three_domains_and_gradients():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(9, 5, generator=g)
    d = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    f = f + d.unsqueeze(1).float() * 2.0
    f.requires_grad_()
    pm = L.pairwise_mmd(f, d)
    ref = (L.mmd(f[:3], f[3:6]) + L.mmd(f[:3], f[6:]) + L.mmd(f[3:6], f[6:])) / 3
    assert torch.allclose(pm, ref) and pm.item() > 0
    pc = L.pairwise_coral(f, d)
    refc = (L.coral(f[:3], f[3:6]) + L.coral(f[:3], f[6:]) + L.coral(f[3:6], f[6:])) / 3
    assert torch.allclose(pc, refc)
    (pm + pc).backward()
    assert f.grad.abs().sum() > 0
    # one domain only: 0, still differentiable
    single = L.pairwise_mmd(f, torch.zeros(9, dtype=torch.long))
    assert single.item() == 0.0 and single.requires_grad


def test_gradient_reversal_flips_and_scales():
    x = torch.randn(4, 3, requires_grad=True)
    w = torch.randn(4, 3)
    (L.grad_reverse(x, 1.0) * w).sum().backward()
    assert torch.allclose(x.grad, -w)
    x.grad = None
    y = L.grad_reverse(x, 0.25)
    assert torch.equal(y, x)
    (y * w).sum().backward()
    assert torch.allclose(x.grad, -0.25 * w)


def test_dann_loss_trains_classifier_and_reverses_features():
    torch.manual_seed(0)
    feats = torch.randn(6, 8, requires_grad=True)
    dom = torch.tensor([0, 0, 1, 1, 2, 2])
    clf = L.DomainClassifier(8, 3, hidden=16)
    loss = L.dann_loss(feats, dom, clf, lambda_=0.5)
    loss.backward()
    g_rev = feats.grad.clone()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in clf.parameters())
    feats.grad = None
    clf.zero_grad()
    F.cross_entropy(clf(feats), dom).backward()
    assert torch.allclose(g_rev, -0.5 * feats.grad, atol=1e-6)


def test_masked_mean_pool():
    h = torch.arange(2 * 3 * 2, dtype=torch.float32).view(2, 3, 2)
    m = torch.tensor([[1, 1, 0], [0, 0, 0]], dtype=torch.bool)
    out = L.masked_mean_pool(h, m)
    assert torch.allclose(out[0], h[0, :2].mean(0))
    assert torch.equal(out[1], torch.zeros(2))


def test_bad_kind_raises():
    with pytest.raises(ValueError):
        L.token_divergence(_logits(), _logits(1), None, kind="kl")
