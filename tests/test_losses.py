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


# --- invariance on distributions: per-domain feature queues ---------------------------------------------------------

def _gauss(n, d=6, shift=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    x[:, 0] += shift
    return x


def _filled_queue(shifts, n=128, d=6, size=128, seed=10):
    q = L.FeatureQueue(len(shifts), size, run_key="run-a")
    for k, s in enumerate(shifts):
        q.push(_gauss(n, d, s, seed + k), torch.full((n,), k), run_key="run-a")
    return q


def test_mmd_near_zero_for_one_distribution_and_grows_with_a_mean_shift():
    x = _gauss(200, seed=1)
    scale = L.median_sq_dist(torch.cat([x, _gauss(200, seed=2)]))
    same = L.mmd_fixed(x, _gauss(200, seed=2), scale, unbiased=True).item()
    vals = [L.mmd_fixed(x, _gauss(200, shift=s, seed=2), scale, unbiased=True).item() for s in (0.5, 1.0, 2.0, 4.0)]
    assert abs(same) < 0.01
    assert vals[0] > 5 * abs(same) and all(b > a for a, b in zip(vals, vals[1:]))
    # through the queues: a batch of domain 0 against domain 1's queue, same law vs shifted law
    batch, dom = _gauss(4, seed=3), torch.zeros(4, dtype=torch.long)
    near = L.queue_mmd(batch, dom, _filled_queue([0.0, 0.0])).item()
    far = [L.queue_mmd(batch, dom, _filled_queue([0.0, s])).item() for s in (1.0, 2.0, 4.0)]
    assert near < 0.02 and far[0] > 3 * near and far[0] < far[1] < far[2]


def test_queue_bandwidth_is_the_queues_median_distance_and_fixed():
    q = _filled_queue([0.0, 1.0])
    allq = torch.cat([q.get(0), q.get(1)])
    d = ((allq[:, None] - allq[None]) ** 2).sum(-1)
    iu = torch.triu_indices(len(allq), len(allq), 1)
    assert torch.allclose(L.median_sq_dist(allq), d[iu[0], iu[1]].median())
    batch = _gauss(2, seed=4).requires_grad_()
    dom = torch.tensor([0, 1])
    ref = torch.stack([L.mmd_fixed(torch.cat([batch[:1], q.get(0)]), torch.cat([batch[1:], q.get(1)]),
                                   L.median_sq_dist(allq))])
    assert torch.allclose(L.queue_mmd(batch, dom, q), ref.mean())


@pytest.mark.parametrize("kind", ["mmd", "coral"])
def test_one_example_of_a_domain_has_a_correct_nonzero_gradient_through_the_queue(kind):
    # batch: ONE example of domain 0, nothing of domain 1; domain 1 lives only in the queue. Batch-only terms
    # are 0 here (one domain) and constant / 0 for single points; with the queue the gradient is real.
    q = _filled_queue([0.0, 1.5], n=64, d=4, size=64)
    x0 = _gauss(1, d=4, shift=0.3, seed=7).double()
    dom = torch.zeros(1, dtype=torch.long)
    old = (L.pairwise_mmd if kind == "mmd" else L.pairwise_coral)(x0.float().requires_grad_(), dom)
    assert old.item() == 0.0

    def f(x):   # the plain gradient of the value (grad="domain" scales it: next test)
        return L.invariance_term(kind, x, dom, q, grad="batch").double()

    x = x0.clone().float().requires_grad_()
    (g,) = torch.autograd.grad(f(x), x)
    assert g.abs().max() > 1e-6
    eps = 1e-2
    fd = torch.zeros_like(x0)
    for j in range(x0.shape[1]):
        e = torch.zeros_like(x0)
        e[0, j] = eps
        fd[0, j] = (f((x0 + e).float()) - f((x0 - e).float())) / (2 * eps)
    assert torch.allclose(g.double(), fd, rtol=5e-2, atol=1e-6 * max(1.0, fd.abs().max().item()))
    # the gradient moves the point toward the other domain: a small step lowers the term
    assert f((x0 - 0.1 * g.double() / g.norm()).float()) < f(x0.float())


@pytest.mark.parametrize("kind", ["mmd", "coral", "dann"])
def test_domain_sized_grad_keeps_the_value_and_scales_each_row_to_its_domain(kind):
    q = L.FeatureQueue(3, 64, run_key="r")
    q.push(_gauss(10, d=4, seed=1), torch.zeros(10, dtype=torch.long), run_key="r")
    q.push(_gauss(5, d=4, shift=1.0, seed=2), torch.ones(5, dtype=torch.long), run_key="r")
    dom = torch.tensor([0, 0, 1, 2])                     # domain 2 has no queue yet: its rows keep scale 1
    x0 = _gauss(4, d=4, shift=0.5, seed=3)
    clf = torch.nn.Linear(4, 3) if kind == "dann" else None
    vals, grads = {}, {}
    for mode in ("batch", "domain"):
        x = x0.clone().requires_grad_()
        vals[mode] = L.invariance_term(kind, x, dom, q, clf, grad=mode)
        (grads[mode],) = torch.autograd.grad(vals[mode], x)
    assert torch.equal(vals["domain"], vals["batch"])
    scale = torch.tensor([12 / 2, 12 / 2, 6 / 1, 1.0])[:, None]      # (batch + queued rows) / batch rows
    assert grads["batch"].abs().max() > 0
    assert torch.allclose(grads["domain"], grads["batch"] * scale, rtol=1e-5, atol=1e-8)
    with pytest.raises(ValueError, match="inv_grad"):
        L.invariance_term(kind, x0, dom, q, clf, grad="rows")


@pytest.mark.parametrize("kind", ["coral", "dann"])
def test_domain_sized_grad_averages_to_the_gradient_with_every_sample_live(kind):
    """What the scaling claims: a domain's N samples, each in turn the one live batch row (the other N-1 queued,
    detached) with its gradient scaled by N, give on average the gradient the term has when all N are recomputed
    live. Exact for CORAL and DANN, whose value does not depend on which rows are queued (MMD's kernel scale is
    taken from the queue, so there it holds only approximately)."""
    x = _gauss(6, d=3, shift=0.4, seed=11)                 # domain 0's inputs; features = x @ W (W shared)
    other = _gauss(5, d=3, seed=12) @ torch.eye(3)         # domain 1: queued only
    W0 = torch.eye(3) + 0.1 * _gauss(3, d=3, seed=13)
    torch.manual_seed(0)
    clf = torch.nn.Linear(3, 2) if kind == "dann" else None

    def grad_of(live, grad):
        W = W0.clone().requires_grad_()
        q = L.FeatureQueue(2, 64, run_key="r")
        q.push(other, torch.ones(5, dtype=torch.long), run_key="r")
        queued = [i for i in range(6) if i not in live]
        if queued:
            q.push(x[queued] @ W0, torch.zeros(len(queued), dtype=torch.long), run_key="r")
        f = x[live] @ W
        (g,) = torch.autograd.grad(L.invariance_term(kind, f, torch.zeros(len(live), dtype=torch.long), q, clf,
                                                     grad=grad), W)
        return g

    full = grad_of(list(range(6)), "batch")                # all six live: no queue for domain 0, scale 1
    one_at_a_time = torch.stack([grad_of([i], "domain") for i in range(6)]).mean(0)
    unscaled = torch.stack([grad_of([i], "batch") for i in range(6)]).mean(0)
    assert full.abs().max() > 0
    assert torch.allclose(one_at_a_time, full, rtol=1e-4, atol=1e-6)
    assert torch.allclose(unscaled * 6, full, rtol=1e-4, atol=1e-6)   # unscaled: 1/N of it


def test_domain_sized_grad_makes_the_pull_independent_of_the_queue_length():
    """One row of domain 0 against a queue of domain 1: the plain gradient shrinks ~1/N as the queues grow (the
    term the experiment's first CD-SDFT run trained with: its held-out MMD did not move); scaled, it does not."""
    x0 = _gauss(1, d=4, shift=0.3, seed=7)
    dom = torch.zeros(1, dtype=torch.long)
    norms = {}
    for mode in ("batch", "domain"):
        for size in (16, 128):
            q = _filled_queue([0.0, 1.5], n=size, d=4, size=size)
            x = x0.clone().requires_grad_()
            (g,) = torch.autograd.grad(L.invariance_term("mmd", x, dom, q, grad=mode), x)
            norms[mode, size] = g.norm().item()
    assert norms["batch", 128] < norms["batch", 16] / 4
    assert 0.5 < norms["domain", 128] / norms["domain", 16] < 2


def test_queue_fifo_run_device_and_dtype():
    q = L.FeatureQueue(2, 3, run_key="a")
    q.push(torch.arange(10.0).reshape(5, 2), torch.tensor([0, 0, 0, 0, 1]), run_key="a")
    assert q.get(0).tolist() == [[2.0, 3.0], [4.0, 5.0], [6.0, 7.0]] and q.get(1).tolist() == [[8.0, 9.0]]
    # features are stored detached, in fp32, whatever came in
    h = torch.ones(2, 2, dtype=torch.float16, requires_grad=True)
    q.push(h, torch.tensor([1, 1]), run_key="a")
    assert q.get(1).dtype == torch.float32 and not q.get(1).requires_grad and q.get(1).shape == (3, 2)
    # another run: nothing of run "a" is left
    q.push(torch.full((1, 2), 5.0), torch.tensor([1]), run_key="b")
    assert q.get(0) is None and q.get(1).tolist() == [[5.0, 5.0]] and q.run_key == "b"
    # another device: the old rows are dropped, never mixed with the new ones
    q.push(torch.zeros(2, 2, device="meta"), torch.tensor([0, 1]), run_key="b")
    assert q.device == torch.device("meta") and q.state()["sizes"] == [1, 1]
    q.push(torch.ones(1, 2), torch.tensor([0]), run_key="b")
    assert q.device == torch.device("cpu") and q.get(1) is None and q.get(0).tolist() == [[1.0, 1.0]]
    # another width (a different layer or model): reset too
    q.push(torch.ones(1, 3), torch.tensor([1]), run_key="b")
    assert q.get(0) is None and q.dim == 3
    q.reset("c")
    assert len(q) == 0 and q.run_key == "c"
    with pytest.raises(ValueError):
        q.push(torch.ones(1, 3), torch.tensor([2]))


def test_dann_discriminator_trains_on_queue_and_batch():
    torch.manual_seed(0)
    d = 6
    q = L.FeatureQueue(2, 128, run_key="r")
    q.push(_gauss(64, d, -3.0, 1), torch.zeros(64, dtype=torch.long), run_key="r")
    q.push(_gauss(64, d, 3.0, 2), torch.ones(64, dtype=torch.long), run_key="r")
    clf = L.DomainClassifier(d, 2, hidden=16)
    before = [p.detach().clone() for p in clf.parameters()]
    test_x = torch.cat([_gauss(50, d, -3.0, 5), _gauss(50, d, 3.0, 6)])
    test_y = torch.cat([torch.zeros(50), torch.ones(50)]).long()

    def acc():
        with torch.no_grad():
            return (clf(test_x).argmax(1) == test_y).float().mean().item()

    acc0 = acc()
    opt = torch.optim.SGD(clf.parameters(), lr=0.1)
    for step in range(60):
        # every batch holds domain 0 only: domain 1 reaches the classifier through the queue alone
        batch = _gauss(2, d, -3.0, 100 + step).requires_grad_()
        loss = L.queue_dann_loss(batch, torch.zeros(2, dtype=torch.long), q, clf, lambda_=0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, clf.parameters()))
    assert acc() > 0.95 and acc() > acc0 + 0.2
    # the batch rows get the reversed, scaled gradient of the classifier's loss
    batch = _gauss(2, d, -3.0, 999).requires_grad_()
    (g_rev,) = torch.autograd.grad(L.queue_dann_loss(batch, torch.zeros(2, dtype=torch.long), q, clf, 0.5), batch)
    b2 = batch.detach().clone().requires_grad_()
    plain = F.cross_entropy(clf(torch.cat([b2, q.get(0), q.get(1)])),
                            torch.cat([torch.zeros(66), torch.ones(64)]).long())
    (g_plain,) = torch.autograd.grad(plain, b2)
    assert torch.allclose(g_rev, -0.5 * g_plain, atol=1e-6)


def test_queue_state_dict_round_trips_for_a_resumed_run():
    q = L.FeatureQueue(3, size=4, run_key="run-a")
    q.push(torch.arange(12.0).reshape(6, 2), torch.tensor([0, 0, 1, 0, 0, 0]), run_key="run-a")
    state = q.state_dict()
    assert [None if r is None else r.shape[0] for r in state["rows"]] == [4, 1, None]   # FIFO kept the last 4
    r = L.FeatureQueue(3, size=4)
    r.load_state_dict(state, device="cpu")
    assert r.run_key == "run-a" and len(r) == 5 and r.get(2) is None
    assert torch.equal(r.get(0), q.get(0)) and torch.equal(r.get(1), q.get(1))
    r.push(torch.ones(1, 2), torch.tensor([1]), run_key="run-a")           # the same run continues: rows kept
    assert r.get(1).shape[0] == 2
    with pytest.raises(ValueError, match="domains"):
        L.FeatureQueue(2, size=4).load_state_dict(state)
