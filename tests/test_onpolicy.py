"""Method switches (presets resolved in one place) and on-policy self-distillation on the tiny random Llama."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from crossdistill.config import Config, DomainConfig, LoraConfig, TrainConfig, load_config
from crossdistill.domains import get_domain
from crossdistill.errors import UserError
from crossdistill.models import build_tiny_model
from crossdistill.training import (CrossDistillCollator, CrossDistillConfig, CrossDistillTrainer, ExampleDataset,
                                   build_examples, read_distilled, train)

DOMAINS = ("math", "code", "text")


pytestmark = pytest.mark.usefixtures("one_thread")


def _rows(n_per_domain=4):
    return [{"id": f"{d}-{i}", "domain": d,
             "prompt": [{"role": "user", "content": f"Task {i} of {d}: say something."}],
             "original_response": f"REFERENCE ANSWER zebra quokka {d} {i}", "response": f"rewrite {d} {i}"}
            for i in range(n_per_domain) for d in DOMAINS]


@pytest.fixture(scope="module")
def distilled(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("data") / "distilled.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in _rows()), encoding="utf-8")
    return p


def _cfg(methods=None, **train_kw) -> Config:
    base = dict(max_steps=3, batch_size=4, max_length=160, lr=5e-3, save_steps=1000, logging_steps=1,
                onpolicy_max_new_tokens=8, lora=LoraConfig(r=4, alpha=8))
    base.update(train_kw)
    kw = {} if methods is None else {"methods": methods}
    return Config(seed=0, domains={d: DomainConfig() for d in DOMAINS}, train=TrainConfig(**base), **kw)


def _log(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines() if x.strip()]


# --- switches ---------------------------------------------------------------------------------------------------

def test_presets_keep_their_meaning_and_switches_override():
    cfg = _cfg(methods={"sft": {"method": "sft"}, "sdft": {"method": "sdft"}, "cdsdft": {"method": "cdsdft"},
                        "sdft+kl": {"method": "sdft", "alpha": 0.3},
                        "sdft+bal": {"method": "sdft", "ce_weighting": "domain", "sampler": "balanced"},
                        "cd-on": {"method": "cdsdft-onpolicy"}},
               alpha=0.5, beta=0.1, invariance="coral")
    t = {m: cfg.train_config_for(m).terms for m in cfg.methods}
    assert (t["sft"].targets, t["sft"].ce, t["sft"].domain_weighted, t["sft"].balanced, t["sft"].seed_kl,
            t["sft"].invariance) == ("original", True, False, False, False, None)
    assert t["sft"].target_field == "original_response"
    assert (t["sdft"].targets, t["sdft"].seed_kl, t["sdft"].invariance) == ("rewrite", False, None)
    assert t["sdft"].target_field == "response"
    assert (t["cdsdft"].domain_weighted, t["cdsdft"].balanced, t["cdsdft"].seed_kl,
            t["cdsdft"].invariance) == (True, True, True, "coral")
    assert t["sdft+kl"].seed_kl and not t["sdft+kl"].balanced and cfg.train_config_for("sdft+kl").alpha == 0.3
    assert t["sdft+bal"].balanced and t["sdft+bal"].domain_weighted and not t["sdft+bal"].seed_kl
    assert t["cd-on"].onpolicy and not t["cd-on"].ce and not t["cd-on"].seed_kl and t["cd-on"].invariance == "coral"
    assert t["cd-on"].target_field == "original_response"
    # the older spelling of the sampler switch still works
    assert not _cfg(balanced_batches=False).train_config_for("cdsdft").terms.balanced


@pytest.mark.parametrize("override,match", [
    ("methods.x.method=sdft-onpolcy", "did you mean 'sdft-onpolicy'"),
    ("methods.x.targets=rewrit", "did you mean 'rewrite'"),
    ("methods.x.sampler=balance", "did you mean 'balanced'"),
    ("methods.x.ce_weightin=domain", "did you mean 'methods.x.ce_weighting'"),
])
def test_bad_switches_name_the_field_and_suggest(override, match):
    with pytest.raises(UserError, match=match):
        load_config(None, [override])


def test_onpolicy_rejects_a_second_kl_and_full_finetune():
    with pytest.raises(UserError, match="train.alpha"):
        load_config(None, ["methods.x.method=sdft-onpolicy", "methods.x.alpha=0.5"])
    with pytest.raises(UserError, match="full_finetune"):
        load_config(None, ["methods.x.method=sdft-onpolicy", "methods.x.full_finetune=true"])


# --- on-policy data -----------------------------------------------------------------------------------------------

def test_demonstration_only_in_the_teacher_prompt(distilled, tiny):
    _, tok = tiny
    rows = read_distilled(distilled, "original_response")
    teacher = lambda d, msgs, ref: get_domain(d).teacher_messages(msgs, ref)   # noqa: E731
    examples, _ = build_examples(rows, tok, 160, teacher)
    for r, e in zip(rows, examples):
        student = tok.decode(e["input_ids"])
        teacher_text = tok.decode(e["teacher_prompt_ids"])
        assert "zebra quokka" not in student and r["messages"][-1]["content"] in student
        assert r["target"] in teacher_text and r["messages"][-1]["content"] in teacher_text
        assert all(x == -100 for x in e["labels"])      # nothing fixed to train on: the student samples
    # each plug-in has a template that shows the demonstration
    for d in ("math", "code", "text", "tools"):
        msgs = get_domain(d).teacher_messages([{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}],
                                              "DEMO")
        assert msgs[0] == {"role": "system", "content": "S"} and "DEMO" in msgs[1]["content"]


# --- on-policy loss -----------------------------------------------------------------------------------------------

def _trainer(tmp_path, model, tok, dataset, **kw):
    args = CrossDistillConfig(output_dir=str(tmp_path / "ck"), report_to="none", use_cpu=True, targets="onpolicy",
                              ce_weighting="token", sampler="random", alpha=0.0, inv_beta=0.0, invariance="none",
                              onpolicy_max_new_tokens=6, per_device_train_batch_size=4, **kw)
    return CrossDistillTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok,
                               data_collator=CrossDistillCollator(tok.pad_token_id),
                               domain_names=list(dataset.domain_names))


@pytest.mark.parametrize("topk", [0, 5])
def test_onpolicy_loss_is_forward_kl_with_gradient_through_the_student_only(tmp_path, distilled, topk):
    from peft import LoraConfig as PeftLora, get_peft_model

    model, tok = build_tiny_model(seed=0)
    model = get_peft_model(model, PeftLora(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    torch.manual_seed(1)
    with torch.no_grad():       # a student that differs from the seed
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    rows = read_distilled(distilled, "original_response")
    teacher = lambda d, msgs, ref: get_domain(d).teacher_messages(msgs, ref)   # noqa: E731
    examples, _ = build_examples(rows[:4], tok, 160, teacher)
    ds = ExampleDataset(examples, sorted({e["domain"] for e in examples}))
    tr = _trainer(tmp_path, model, tok, ds, topk=topk)
    batch = CrossDistillCollator(tok.pad_token_id)([ds[i] for i in range(4)])
    torch.manual_seed(0)
    inputs = tr.rollout(model, batch)
    out = tr._loss_forward(model, inputs)
    out["loss"].backward()
    lora_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None for g in lora_grads.values())
    assert all(p.grad is None for n, p in model.named_parameters() if not p.requires_grad)
    model.zero_grad()

    # reference: token-mean KL(teacher || student) on the sampled tokens, the teacher as a constant
    sel = inputs["labels"][:, 1:] != -100
    z_s = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits[:, :-1][sel].float()
    with torch.no_grad(), model.disable_adapter():
        z_t = model(input_ids=inputs["teacher_input_ids"],
                    attention_mask=inputs["teacher_attention_mask"]).logits[:, :-1][
            inputs["teacher_labels"][:, 1:] != -100].float()
    lp_s, lp_t = torch.log_softmax(z_s, -1), torch.log_softmax(z_t, -1)
    if topk:    # teacher's top-k + one tail bucket, the student on the same buckets
        v, ids = lp_t.topk(topk, -1)
        tail = lambda lp: torch.log1p(-lp.exp().sum(-1, keepdim=True).clamp(max=1 - 1e-6))   # noqa: E731
        s_b = torch.cat([lp_s.gather(-1, ids), tail(lp_s.gather(-1, ids))], -1)
        t_b = torch.cat([v, tail(v)], -1)
        ref = (t_b.exp() * (t_b - s_b)).sum(-1).mean()
    else:
        ref = (lp_t.exp() * (lp_t - lp_s)).sum(-1).mean()
    assert ref.item() > 1e-4
    assert torch.allclose(out["loss"].detach(), ref.detach(), rtol=1e-3, atol=1e-6), (out["loss"], ref)
    ref.backward()
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert torch.allclose(lora_grads[n], p.grad, rtol=1e-3, atol=1e-6), n


class Snapshot(TrainerCallback):
    def on_train_begin(self, args, state, control, model=None, **kw):
        self.before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    def on_train_end(self, args, state, control, model=None, **kw):
        self.after = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("method,kw", [("sdft-onpolicy", {"topk": 0}), ("cdsdft-onpolicy", {"invariance": "mmd"})])
def test_onpolicy_trains_every_parameter_and_logs(tmp_path, distilled, method, kw):
    model, tok = build_tiny_model(seed=0)
    snap = Snapshot()
    out = tmp_path / method
    cfg = _cfg(methods={method: {"method": method, **kw}})
    stats = train(cfg, method, str(distilled), str(out), model=model, tokenizer=tok, callbacks=[snap])
    unchanged = [n for n, p in snap.before.items() if torch.equal(p, snap.after[n])]
    assert snap.before and not unchanged, unchanged
    rows = _log(out)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(r["ce"] == 0 and r["div"] >= 0 and 1 <= r["sample_len"] <= 8 for r in rows)
    assert rows[0]["div"] > 0          # the teacher sees the demonstration, the student does not
    assert stats["terms"]["targets"] == "onpolicy"
    if method == "cdsdft-onpolicy":
        assert all(r["inv"] > 0 for r in rows)
        for r in rows:   # balanced batches: >= 2 domains in every batch
            assert sum(1 for k, v in r.items() if k.startswith("tokens/") and v > 0) >= 2
    assert (out / "adapter" / "adapter_config.json").exists() and (out / "adapter" / ".complete").exists()


def test_onpolicy_loss_is_zero_when_teacher_equals_student(tmp_path, distilled, monkeypatch):
    """Teacher template without the demonstration + a fresh LoRA (B = 0): teacher and student are the same
    distribution on the same input, so the divergence at the first step is 0 (top-k with tail and full vocab)."""
    for d in DOMAINS:
        monkeypatch.setattr(type(get_domain(d)), "teacher_template", "{prompt}")
    for k in (0, 20):
        model, tok = build_tiny_model(seed=0)
        out = tmp_path / f"k{k}"
        cfg = _cfg(max_steps=1, methods={"on": {"method": "sdft-onpolicy", "topk": k}})
        train(cfg, "on", str(distilled), str(out), model=model, tokenizer=tok)
        assert abs(_log(out)[0]["div"]) < 1e-6


def test_trl_sdft_baseline_writes_a_peft_adapter(tmp_path, distilled):
    from peft import PeftModel

    model, tok = build_tiny_model(seed=0)
    out = tmp_path / "trl"
    stats = train(_cfg(max_steps=2), "trl-sdft", str(distilled), str(out), model=model, tokenizer=tok)
    assert stats["steps"] == 2 and stats["trainer"] == "trl.SDFTTrainer"
    assert (out / "adapter" / ".complete").exists()
    base, _ = build_tiny_model(seed=0)
    PeftModel.from_pretrained(base, out / "adapter")
    assert [r["step"] for r in _log(out)] == [1, 2]
    assert train(_cfg(max_steps=2), "trl-sdft", str(distilled), str(out), model=model, tokenizer=tok)["skipped"]


def test_ablation_chain_adds_one_ingredient_per_method():
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "ablation-chain.yaml"
    cfg = load_config(recipe)
    names = [m for m, o in cfg.methods.items() if o is not None]
    terms = [cfg.train_config_for(m).terms for m in names]
    changed = []
    for a, b in zip(terms, terms[1:]):
        diff = [k for k in ("targets", "domain_weighted", "balanced", "seed_kl", "invariance")
                if getattr(a, k) != getattr(b, k)]
        changed.append(diff)
    assert names[0] == "sdft" and terms[0] == cfg.train_config_for("sdft").terms
    assert changed == [["domain_weighted"], ["balanced"], ["seed_kl"], ["invariance"]]
    assert terms[-1] == cfg.train_config_for("cdsdft").terms     # the end of the chain is CD-SDFT


def test_onpolicy_samples_a_whole_accumulation_window_in_one_call(tmp_path, distilled, monkeypatch):
    """grad_accum 2: one sampling call of 2 x 4 prompts per optimizer step (the weights do not change within the
    window), and each micro-batch gets exactly its own prompts' samples, as per-micro-batch rollouts would."""
    import crossdistill.training as T

    calls: list[int] = []
    real = T.sample_completions

    def spy(model, prompts, **kw):
        calls.append(len(prompts))
        return real(model, prompts, **kw)

    monkeypatch.setattr(T, "sample_completions", spy)
    model, tok = build_tiny_model(seed=0)
    out = tmp_path / "w"
    train(_cfg(max_steps=2, grad_accum=2, methods={"on": {"method": "sdft-onpolicy"}}), "on", str(distilled),
          str(out), model=model, tokenizer=tok)
    # 12 records = 3 micro-batches of 4 per epoch: the first window holds two, the epoch's last one only one
    assert calls == [8, 4]
    assert [r["step"] for r in _log(out)] == [1, 2]

    # the window's rows equal per-micro-batch rollouts given the same samples
    rows = read_distilled(distilled, "original_response")
    teacher = lambda d, msgs, ref: get_domain(d).teacher_messages(msgs, ref)   # noqa: E731
    examples, _ = build_examples(rows[:8], tok, 160, teacher)
    ds = ExampleDataset(examples, sorted({e["domain"] for e in examples}))
    tr = _trainer(tmp_path, model, tok, ds)
    b1, b2 = (CrossDistillCollator(tok.pad_token_id)([ds[i] for i in r]) for r in (range(4), range(4, 8)))
    fake = {tuple(p): [7 + i, 9, tok.eos_token_id][: 1 + i % 3] for i, p in
            enumerate(b1["prompt_ids_list"] + b2["prompt_ids_list"])}
    monkeypatch.setattr(T, "sample_completions", lambda model, prompts, **kw: [fake[tuple(p)] for p in prompts])
    together = tr.rollout_window(model, [b1, b2])
    alone = [tr.rollout(model, b) for b in (b1, b2)]
    for w, a in zip(together, alone):
        assert w.keys() == a.keys() and all(torch.equal(w[k], a[k]) for k in w)
