"""The train stage on the tiny random Llama (fast: a few optimizer steps per case)."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from crossdistill.config import Config, DomainConfig, TrainConfig
from crossdistill.errors import UserError
from crossdistill.models import build_tiny_model
from crossdistill.training import (CLASSIFIER_FILE, CrossDistillCollator, DomainBalancedSampler, ExampleDataset,
                                   build_examples, compute_seed_cache, domain_weights, read_distilled, train)

DOMAINS = ("math", "code", "text")


def _rows(n_per_domain=4):
    rows = []
    for i in range(n_per_domain):
        for d in DOMAINS:
            rows.append({
                "id": f"{d}-{i}", "domain": d,
                "prompt": (f"Solve {i} + {i}." if d == "math" else
                           [{"role": "user", "content": f"Write a function f{i}."}] if d == "code" else
                           f"Describe colour number {i}."),
                "original_response": f"The original answer for {d} {i}.",
                "response": f"My own answer for {d} {i}!" + (" x" * 200 if (d == "text" and i == 0) else ""),
                "accepted": True, "copied": False, "reason": "ok", "generated": "",
            })
    return rows


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def distilled(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("data") / "distilled.jsonl"
    with open(p, "w", encoding="utf-8") as f:
        for r in _rows():
            f.write(json.dumps(r) + "\n")
    return p


class Snapshot(TrainerCallback):
    """Records the trainable parameters at the start, the trained model at the end, and the steps seen."""

    def __init__(self):
        self.before: dict[str, torch.Tensor] = {}
        self.model = None
        self.steps: list[int] = []

    def on_train_begin(self, args, state, control, model=None, **kw):
        self.before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    def on_step_end(self, args, state, control, **kw):
        self.steps.append(state.global_step)

    def on_train_end(self, args, state, control, model=None, **kw):
        self.model = model


class CrashAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == self.step:
            raise KeyboardInterrupt("simulated kill")


def _cfg(**train_kw) -> Config:
    base = dict(max_steps=3, batch_size=4, max_length=160, lr=5e-3, save_steps=1000, logging_steps=1,
                lora={"r": 4, "alpha": 8})
    base.update(train_kw)
    from crossdistill.config import LoraConfig
    base["lora"] = LoraConfig(**base["lora"]) if isinstance(base["lora"], dict) else base["lora"]
    return Config(seed=0, domains={d: DomainConfig() for d in DOMAINS}, train=TrainConfig(**base))


def _rows_of(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


CASES = [
    ("sft", {}),
    ("sdft", {"domain_weighting": "size"}),
    ("cdsdft", {"invariance": "mmd", "divergence": "forward_kl", "seed_logprobs": "cached",
                "beta_warmup_steps": 2, "domain_weighting": "temperature"}),
    ("cdsdft", {"invariance": "coral", "divergence": "reverse_kl", "seed_logprobs": "live", "inv_layer": 1}),
    ("cdsdft", {"invariance": "dann", "divergence": "jsd", "seed_logprobs": "cached", "topk": 8,
                "kd_temperature": 2.0}),
    ("cdsdft", {"invariance": "mmd", "divergence": "jsd", "jsd_beta": 0.3, "seed_logprobs": "cached",
                "full_finetune": True}),
]


@pytest.mark.parametrize("method,kw", CASES, ids=lambda x: x if isinstance(x, str) else
                         "-".join(f"{k}={v}" for k, v in x.items() if k in ("invariance", "divergence",
                                                                             "seed_logprobs", "full_finetune")))
def test_train_updates_saves_and_logs(tmp_path, distilled, method, kw):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model, tok = build_tiny_model(seed=0)
    snap = Snapshot()
    out = tmp_path / "run"
    cfg = _cfg(**kw)
    stats = train(cfg, method, str(distilled), str(out), model=model, tokenizer=tok, callbacks=[snap])

    # every trainable parameter moved (LoRA A and B, the DANN classifier, every tensor in full FT)
    assert snap.before, "no trainable parameters recorded"
    trained = dict(snap.model.named_parameters())
    unchanged = [n for n, p0 in snap.before.items() if torch.equal(p0, trained[n].detach())]
    assert not unchanged, f"parameters that did not change: {unchanged}"
    if kw.get("invariance") == "dann":
        assert any("cd_domain_classifier" in n for n in snap.before)
        assert (out / "adapter" / CLASSIFIER_FILE).exists()

    # the saved adapter / model reloads and gives the same logits
    adapter = out / "adapter"
    assert (adapter / ".complete").exists()
    live = snap.model.eval()
    if kw.get("full_finetune"):
        reloaded = AutoModelForCausalLM.from_pretrained(adapter).eval()
    else:
        assert (adapter / "adapter_config.json").exists()
        base, _ = build_tiny_model(seed=0)
        reloaded = PeftModel.from_pretrained(base, adapter).eval()
    ids = torch.tensor([tok("<|im_start|>user\nhello there<|im_end|>")["input_ids"]])
    with torch.no_grad():
        a, b = live(input_ids=ids).logits, reloaded(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()

    # logs: every step, each term, per-domain CE
    rows = _rows_of(out / "log.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        for key in ("loss", "ce", "div", "inv", "lr", "beta_t"):
            assert key in r
        assert any(k.startswith("ce/") for k in r)
    if method == "cdsdft":
        # LoRA starts as the identity (B = 0) and the full-FT seed is the model itself: divergence 0 at step 1
        assert abs(rows[0]["div"]) < 1e-4
        assert rows[-1]["div"] > 0
        for r in rows:   # balanced batches: >= 2 domains in every batch
            assert sum(1 for k, v in r.items() if k.startswith("tokens/") and v > 0) >= 2
        if kw.get("beta_warmup_steps") == 2:
            assert [round(r["beta_t"], 6) for r in rows] == [0.0, 0.05, 0.1]
            assert rows[0]["inv"] == 0 and rows[-1]["inv"] > 0
        else:
            assert rows[-1]["inv"] > 0
    else:
        assert all(r["div"] == 0 and r["inv"] == 0 for r in rows)

    # bookkeeping
    assert stats["steps"] == 3
    assert stats["examples_per_domain"] == {"code": 4, "math": 4, "text": 4}
    assert stats["truncated"] == (1 if method != "sft" else 0)   # text-0's long rewrite
    assert json.loads((out / "train_stats.json").read_text())["truncated"] == stats["truncated"]
    assert "train:" in (out / "config.yaml").read_text()
    # idempotent
    again = train(cfg, method, str(distilled), str(out), model=model, tokenizer=tok)
    assert again.get("skipped") is True


def test_resume_after_kill(tmp_path, distilled):
    out = tmp_path / "run"
    cfg = _cfg(max_steps=4, save_steps=1, invariance="mmd", seed_logprobs="cached")
    model, tok = build_tiny_model(seed=0)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, "cdsdft", str(distilled), str(out), model=model, tokenizer=tok, callbacks=[CrashAt(3)])
    assert not (out / "adapter").exists()
    assert (out / "checkpoints" / "checkpoint-2" / "trainer_state.json").exists()
    assert not (out / "checkpoints" / "checkpoint-3").exists()

    model, tok = build_tiny_model(seed=0)
    snap = Snapshot()
    stats = train(cfg, "cdsdft", str(distilled), str(out), model=model, tokenizer=tok, callbacks=[snap])
    assert stats["resumed_from"].endswith("checkpoint-2")
    assert snap.steps == [3, 4]                       # continued from step 2, did not redo 1-2
    assert stats["steps"] == 4
    assert stats["seed_cache"]["reused"] is True       # the seed pass was not redone
    assert [r["step"] for r in _rows_of(out / "log.jsonl")] == [1, 2, 3, 4]
    assert (out / "adapter" / ".complete").exists()


def test_resume_refuses_a_different_config(tmp_path, distilled):
    out = tmp_path / "run"
    model, tok = build_tiny_model(seed=0)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(max_steps=3, save_steps=1), "sdft", str(distilled), str(out), model=model, tokenizer=tok,
              callbacks=[CrashAt(2)])
    model, tok = build_tiny_model(seed=0)
    with pytest.raises(UserError, match="different configuration"):
        train(_cfg(max_steps=3, save_steps=1, lr=1e-3), "sdft", str(distilled), str(out), model=model,
              tokenizer=tok)


def test_sampler_two_domains_per_batch_and_weights():
    dom = [0] * 50 + [1] * 10 + [2] * 40
    probs = [0.5, 0.2, 0.3]
    s = DomainBalancedSampler(dom, probs, batch_size=4, seed=3, min_domains=2)
    idx = list(s)
    assert len(idx) == len(s) == 100
    batches = [idx[i:i + 4] for i in range(0, len(idx), 4)]
    assert all(len({dom[i] for i in b}) >= 2 for b in batches)
    assert idx == list(DomainBalancedSampler(dom, probs, batch_size=4, seed=3, min_domains=2))   # deterministic
    s.set_epoch(1)
    assert list(s) != idx
    # frequencies follow the weights
    big = DomainBalancedSampler(dom, probs, batch_size=8, seed=0, min_domains=1)
    big.num_batches = 1000
    c = Counter(dom[i] for i in big)
    for d, p in enumerate(probs):
        assert abs(c[d] / 8000 - p) < 0.03
    with pytest.raises(UserError):
        DomainBalancedSampler(dom, probs, batch_size=1, min_domains=2)


def test_domain_weights():
    n = {"a": 100, "b": 25}
    assert domain_weights(n, "uniform") == {"a": 0.5, "b": 0.5}
    assert domain_weights(n, "size") == {"a": 0.8, "b": 0.2}
    w = domain_weights(n, "temperature", 2.0)
    assert abs(w["a"] - 10 / 15) < 1e-9
    assert domain_weights(n, "uniform", base={"a": 3.0, "b": 1.0}) == {"a": 0.75, "b": 0.25}


def test_examples_truncation_and_targets(distilled):
    _, tok = build_tiny_model()
    rows = read_distilled(distilled, "response")
    ex, st = build_examples(rows, tok, 160)
    assert st["truncated"] == 1 and st["dropped_total"] == 0
    assert all(len(e["input_ids"]) <= 160 for e in ex)
    e = ex[0]
    n_prompt = sum(1 for x in e["labels"] if x == -100)
    assert e["labels"][n_prompt:] == e["input_ids"][n_prompt:]
    assert e["input_ids"][-1] == tok.eos_token_id
    assert tok.decode(e["input_ids"][:n_prompt]).endswith("<|im_start|>assistant\n")
    # a prompt longer than max_length is dropped and counted
    from crossdistill.training import _chat_prompt_ids
    lens = sorted(len(_chat_prompt_ids(tok, r["messages"])) for r in rows)
    assert lens[0] < lens[-1]
    _, st2 = build_examples(rows, tok, lens[-1])
    assert st2["dropped"]["prompt_too_long"] == sum(1 for n in lens if n >= lens[-1]) > 0
    with pytest.raises(UserError, match="every example was dropped"):
        build_examples(rows, tok, lens[0])
    # sft trains on the original responses
    orig = read_distilled(distilled, "original_response", ["math"])
    assert {r["domain"] for r in orig} == {"math"} and orig[0]["target"].startswith("The original")
    with pytest.raises(UserError, match="absent"):
        read_distilled(distilled, "response", ["nope"])


def test_seed_cache_matches_model_topk(distilled):
    model, tok = build_tiny_model(seed=1)
    rows = read_distilled(distilled, "response")
    ex, _ = build_examples(rows[:4], tok, 160)
    ds = ExampleDataset(ex, sorted({e["domain"] for e in ex}))
    cache = compute_seed_cache(model, ds, k=5, temperature=1.0, key="k", batch_size=3)
    batch = CrossDistillCollator(tok.pad_token_id, cache)([ds[i] for i in range(len(ds))])
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    sel = batch["labels"][:, 1:] != -100
    ref_lp, ref_ids = torch.log_softmax(logits[:, :-1][sel].float(), -1).topk(5, -1)
    assert batch["seed_topk_logprobs"].shape == ref_lp.shape
    assert torch.equal(batch["seed_topk_ids"].long(), ref_ids)
    assert torch.allclose(batch["seed_topk_logprobs"].float(), ref_lp, atol=5e-3)


def test_trainer_args_reach_the_training_arguments(tmp_path, distilled):
    """train.trainer_args adds TrainingArguments fields and overrides the stage's own defaults (save_total_limit)."""
    seen = {}

    class Args(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            seen.update(max_grad_norm=args.max_grad_norm, save_total_limit=args.save_total_limit,
                        report_to=args.report_to)

    model, tok = build_tiny_model(seed=0)
    cfg = _cfg(max_steps=1, method="sft", report_to="none",
               trainer_args={"max_grad_norm": 0.25, "save_total_limit": 1})
    train(cfg, "sft", str(distilled), str(tmp_path / "run"), model=model, tokenizer=tok, callbacks=[Args()])
    assert seen["max_grad_norm"] == 0.25 and seen["save_total_limit"] == 1 and seen["report_to"] in ([], "none", ["none"])


def test_from_recipe_is_the_one_recipe_to_trainer_mapping(tmp_path):
    """Every objective knob of CrossDistillConfig comes from the resolved recipe key of its name (the recipe's
    `beta` is `inv_beta`), the method presets are resolved by the recipe, and both agree on the loss terms."""
    from crossdistill.config import load_config
    from crossdistill.training import CrossDistillConfig

    cfg = load_config(None, ["train.beta=0.3", "train.jsd_beta=0.2", "train.kd_temperature=2.0", "train.lr=3e-4",
                             "train.divergence=jsd", "methods.abl={method: sdft, alpha: 0.4}"])
    tc = cfg.train_config_for("cdsdft")
    args = CrossDistillConfig.from_recipe(cfg, tc, tmp_path, mixed_bf16=False, mixed_fp16=False)
    assert (args.inv_beta, args.jsd_beta, args.kd_temperature, args.divergence) == (0.3, 0.2, 2.0, "jsd")
    assert args.learning_rate == 3e-4 and args.output_dir == str(tmp_path) and args.label_names == ["labels"]
    assert args.terms == tc.terms and tc.terms.invariance == "mmd" and tc.terms.seed_kl
    # a preset decides the switches (sdft: token CE, random sampler, no L_inv), the entry adds the KL to the seed
    abl = cfg.train_config_for("abl")
    a2 = CrossDistillConfig.from_recipe(cfg, abl, tmp_path, mixed_bf16=False, mixed_fp16=False)
    assert (a2.method, a2.targets, a2.sampler, a2.alpha, a2.inv_beta) == ("sdft", "rewrite", "random", 0.4, 0.0)
    assert a2.terms == abl.terms and a2.terms.seed_kl and a2.terms.invariance is None
