"""The train stage: SFT / SDFT / CD-SDFT fine-tuning with one student forward per step.

    stats = train(cfg, "cdsdft", "runs/demo/distill/distilled.jsonl", "runs/demo/train/cdsdft")

Objective (method `cdsdft`; `sft` and `sdft` are the plain token-mean CE, on original / distilled responses):

    L = sum_d w_d CE_d  +  alpha * D(p_seed || p_theta)  +  beta_t * L_inv

* CE_d is the token-mean CE of domain d in the micro-batch; w_d (uniform | size | temperature n_d^(1/T), times the
  recipe's `domains.<d>.weight`) is renormalised over the domains present in the micro-batch.
* D is forward KL / reverse KL / generalised JSD (see `losses`), averaged over response tokens. The seed
  distribution is either *cached* (before training, one pass of the seed model stores its top-k log-probs on every
  response token: fp16 log-probs + int32 ids, on disk under OUT/seed_cache, reused on resume; the step then needs
  no extra forward) or *live* (the same PEFT model under `disable_adapter()` in no_grad: no second copy; exact full
  vocabulary). Full fine-tuning supports `cached` only (the cache is computed from the untouched seed weights before
  any step, so no frozen copy is needed).
* L_inv: MMD / CORAL between the domains' pooled hidden states (mean over the positions that predict response
  tokens, in fp32), each domain represented by its batch rows + a per-domain FIFO queue of its recent pooled
  features (`inv_queue_size`; see `_invariance` and `losses.FeatureQueue`), averaged over the domain pairs with one
  side in the micro-batch; with `inv_grad: domain` each batch row's gradient is scaled by its domain's
  (batch + queued) / batch rows (`losses.domain_sized_grad`), else the queue dilutes the pull. `inv_layer` indexes like HF's `hidden_states` tuple: 0 = embeddings, i = output of
  decoder layer i, -1 (= L) = the final, normed hidden state that feeds the LM head (no hook needed), None = the
  middle layer; other layers are captured by a forward hook, not output_hidden_states; or DANN: a domain
  classifier (trained on queue + batch) behind a gradient reversal layer with coefficient beta_t (the classifier
  itself learns at unit weight). beta_t ramps linearly from
  0 to beta over `beta_warmup_steps`.

Why `transformers.Trainer` and not `trl.SFTTrainer`: SFTTrainer (TRL 1.x) patches the model's forward with a fused
LM head that returns only the log-prob of each label (never the distribution a divergence needs), tokenises the
data itself (dropping the per-example domain and seed-cache index we need, and without counting truncations), and
collates for padding-free/packing. A subclass would override its __init__ data path, collator and compute_loss,
i.e. everything. So CrossDistillTrainer subclasses `transformers.Trainer` and keeps TRL's conventions: a
`CrossDistillConfig(TrainingArguments)` with the extra knobs, completion-only loss, chat-template prompts, a loss
computed inside the wrapped model's forward (forward redirection, as TRL's distillation trainer does) so DDP /
FSDP / DeepSpeed see it, and ZeRO-3 gathering of the LM head for the fused projection.

On-policy targets (`targets: onpolicy`, Shenfeld et al. 2026): per step the student (LoRA on) samples a response to
each prompt; the teacher is the same model with the adapter disabled, given the domain plug-in's teacher prompt
(prompt + reference as a demonstration); the loss is sum_tokens w * D(p_teacher || p_theta) on the sampled tokens,
over the teacher's top-k + one tail bucket (or the full vocabulary, topk 0), with the same per-domain weights,
sampler and invariance term as fixed targets. Why not `trl.experimental.sdft.SDFTTrainer` (which the `trl-sdft`
baseline arm runs unmodified): a subclass would replace its dataset format (prompt / privileged_context, no domain),
its sampler (the domain-balanced one), its collator and compute_loss (domain weights, invariance on the student's
hidden states), i.e. everything but generation; and its loss utilities (`compute_topk_self_distillation_loss`) take
full (B, T, V) student and teacher logits, which the fused head below never materialises. The tail-bucket top-k
divergence is the same construction (`losses.teacher_topk_buckets`, like TRL's `add_tail_bucket`), on the
teacher's top-k support (TRL: the student's) so the teacher's top-k can be computed without keeping its logits.

Cost: the LM head is projected only at response positions, chunk by chunk, with the CE and the divergence taken
from the same fp32 chunk and back-propagated at once (`losses.fused_head_loss`); the (B, T, V) logits never exist.
The `sft`/`sdft` path runs the same backbone forward + fused CE head and nothing else.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import yaml
from transformers import Trainer, TrainerCallback, TrainingArguments

from . import arch as A
from . import losses as L
from .config import Config, LossTerms, TrainConfig, loss_terms, model_settings, stable_hash
from .errors import UserError
from .io import iter_jsonl, read_complete_rows, write_json, write_jsonl, write_text

logger = logging.getLogger("crossdistill.train")

CLASSIFIER_ATTR = "cd_domain_classifier"
CLASSIFIER_FILE = "domain_classifier.pt"
QUEUE_FILE = "inv_queue.pt"                 # the invariance feature queue, in each checkpoint (resume)
COMPLETE_MARKER = ".complete"


# =================================================================================================================
# Data: distilled.jsonl -> tokenised examples
# =================================================================================================================

def read_distilled(path: str | os.PathLike, target_field: str, domains: list[str] | None = None) -> list[dict]:
    """Rows of distilled.jsonl that train (id, domain, prompt, target). Bad lines are UserErrors with the line."""
    p = Path(path)
    rows = []
    for n, r in iter_jsonl(p, missing="distilled data not found (run the distill stage first)"):
        if not isinstance(r, dict):
            raise UserError("expected a JSON object", file=str(p), line=n)
        for key in ("domain", "prompt", target_field):
            if key not in r:
                raise UserError(f"missing field '{key}'", file=str(p), line=n)
        if not isinstance(r[target_field], str):
            raise UserError(f"field '{target_field}' must be a string", file=str(p), line=n)
        prompt = r["prompt"]
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        elif not (isinstance(prompt, list) and all(isinstance(m, dict) and "role" in m and "content" in m
                                                    for m in prompt)):
            raise UserError("field 'prompt' must be a string or a list of {role, content} messages",
                            file=str(p), line=n)
        rows.append({"id": r.get("id", f"line{n}"), "domain": str(r["domain"]), "messages": prompt,
                     "target": r[target_field], "line": n})
    present = sorted({r["domain"] for r in rows})
    if domains is not None:
        unknown = [d for d in domains if d not in present]
        if unknown:
            raise UserError(f"train.domains names {unknown}, absent from the distilled data (present: {present})",
                            field="train.domains")
        rows = [r for r in rows if r["domain"] in set(domains)]
    if not rows:
        raise UserError("no training examples (empty distilled data after the domain filter)", file=str(p))
    return rows


def _chat_prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    if getattr(tokenizer, "chat_template", None) is None:
        from .models import CHAT_TEMPLATE

        tokenizer.chat_template = CHAT_TEMPLATE
        logger.warning("the tokenizer has no chat template; using ChatML")
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def build_examples(rows: list[dict], tokenizer, max_length: int, teacher_messages=None) -> tuple[list[dict], dict]:
    """Tokenise: prompt through the chat template (add_generation_prompt=True), response + eos appended, labels
    -100 on the prompt. Longer than max_length: the response is cut (counted as `truncated`); a prompt that leaves
    no room for one response token is dropped (counted in `dropped`). Nothing is skipped silently.

    On-policy targets (`teacher_messages(domain, messages, reference) -> messages` given): the example is the
    student's prompt only (the student samples its response at train time) plus `teacher_prompt_ids`, the teacher's
    prompt that shows the reference as a demonstration; the reference never enters the student's input."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise UserError("the tokenizer has no eos token", field="model")
    examples, truncated = [], 0
    dropped = {"prompt_too_long": 0, "empty_response": 0}
    truncated_ids: list[str] = []
    for r in rows:
        if not r["target"].strip():
            dropped["empty_response"] += 1
            continue
        p_ids = _chat_prompt_ids(tokenizer, r["messages"])
        r_ids = list(tokenizer(r["target"], add_special_tokens=False)["input_ids"]) + [eos]
        if len(p_ids) >= max_length:
            dropped["prompt_too_long"] += 1
            continue
        if len(p_ids) + len(r_ids) > max_length:
            r_ids = r_ids[: max_length - len(p_ids)]
            truncated += 1
            truncated_ids.append(str(r["id"]))
        if teacher_messages is not None:
            t_ids = _chat_prompt_ids(tokenizer, teacher_messages(r["domain"], r["messages"], r["target"]))
            examples.append({"input_ids": p_ids, "labels": [-100] * len(p_ids), "teacher_prompt_ids": t_ids,
                             "domain": r["domain"], "id": str(r["id"])})
            continue
        examples.append({"input_ids": p_ids + r_ids, "labels": [-100] * len(p_ids) + r_ids,
                         "domain": r["domain"], "id": str(r["id"])})
    stats = {"truncated": truncated, "dropped": dropped, "dropped_total": sum(dropped.values()),
             "truncated_ids_sample": truncated_ids[:20]}
    if truncated or stats["dropped_total"]:
        logger.warning("train data: %d of %d examples truncated to max_length=%d; dropped %s",
                       truncated, len(rows), max_length, dropped)
    if not examples:
        raise UserError(f"every example was dropped ({dropped}); raise train.max_length", field="train.max_length")
    return examples, stats


class ExampleDataset(torch.utils.data.Dataset):
    """Tokenised examples; item i carries its index (for the seed cache) and its domain id."""

    def __init__(self, examples: list[dict], domain_names: list[str]):
        self.examples = examples
        self.domain_names = list(domain_names)
        index = {d: i for i, d in enumerate(self.domain_names)}
        self.domain_ids = [index[e["domain"]] for e in examples]

    def __len__(self):
        return len(self.examples)

    def __getitem__(self, i):
        e = self.examples[i]
        item = {"input_ids": e["input_ids"], "labels": e["labels"], "domain_id": self.domain_ids[i], "idx": i}
        if "teacher_prompt_ids" in e:
            item["teacher_prompt_ids"] = e["teacher_prompt_ids"]
        return item

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for e in self.examples:
            h.update(torch.tensor(e["input_ids"], dtype=torch.int64).numpy().tobytes())
            h.update(torch.tensor(e["labels"], dtype=torch.int64).numpy().tobytes())
            if "teacher_prompt_ids" in e:
                h.update(torch.tensor(e["teacher_prompt_ids"], dtype=torch.int64).numpy().tobytes())
        return h.hexdigest()[:16]


def domain_weights(counts: dict[str, int], scheme: str = "uniform", temperature: float = 2.0,
                   base: dict[str, float] | None = None) -> dict[str, float]:
    """w_d, normalised to sum 1: uniform (1), size (n_d) or temperature (n_d^(1/T)), times base[d] (recipe weight)."""
    raw = {}
    for d, n in counts.items():
        s = {"uniform": 1.0, "size": float(n), "temperature": float(n) ** (1.0 / temperature)}[scheme]
        raw[d] = s * (1.0 if base is None else float(base.get(d, 1.0)))
    total = sum(raw.values())
    if total <= 0:
        raise UserError("all domain weights are 0", field="domains")
    return {d: v / total for d, v in raw.items()}


# =================================================================================================================
# Seed top-k cache
# =================================================================================================================

@dataclass
class SeedCache:
    """The seed model's top-k log-probs on every response token of every example (flat, with offsets).

    Example i owns rows offsets[i]:offsets[i+1] (one per response token, in order); logprobs fp16 (N, k), ids
    int32 (N, k), log-probs of softmax(z / temperature)."""

    offsets: torch.Tensor
    logprobs: torch.Tensor
    ids: torch.Tensor
    key: str

    def get(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.logprobs[a:b], self.ids[a:b]

    @property
    def num_tokens(self) -> int:
        return int(self.offsets[-1])

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save({"offsets": self.offsets, "logprobs": self.logprobs, "ids": self.ids, "key": self.key}, tmp)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, key: str) -> "SeedCache | None":
        if not path.exists():
            return None
        try:
            d = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:   # torn or foreign file: recompute
            return None
        if d.get("key") != key:
            return None
        return cls(d["offsets"], d["logprobs"], d["ids"], d["key"])


def _maybe_gather(*params):
    try:
        from trl.trainer.utils import maybe_gather_lm_head_ctx
    except Exception:   # pragma: no cover - trl missing or moved
        return contextlib.nullcontext()
    return maybe_gather_lm_head_ctx(*params)


def _full(t):
    """FSDP2 shards parameters as DTensors; the fused head needs the whole matrix."""
    return t.full_tensor() if t is not None and hasattr(t, "full_tensor") else t


def _adapter_disabled(model: nn.Module):
    return model.disable_adapter() if hasattr(model, "disable_adapter") and hasattr(model, "peft_config") \
        else contextlib.nullcontext()


def model_fingerprint(model: nn.Module) -> str:
    causal = A.causal_lm(model)
    _, w, _ = A.lm_head(causal)
    with torch.no_grad():
        first = next(A.backbone(causal).parameters())
        vals = [float(w.float().sum()), float(w.float().abs().sum()), float(first.float().sum())]
    n = sum(p.numel() for p in causal.parameters())
    return stable_hash({"n": n, "vals": [round(v, 3) for v in vals], "V": list(w.shape),
                        "cls": type(causal).__name__})


@torch.no_grad()
def head_topk_logprobs(causal: nn.Module, h: torch.Tensor, k: int, temperature: float,
                       chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of log softmax(z / tau) for hidden rows h (N, H) through the LM head, chunk by chunk (the (N, V)
    logits never exist at once): fp32 log-probs (clamped at -1e4) and int32 ids, each (N, k)."""
    head, weight, bias = A.lm_head(causal)
    scale, softcap = A.logit_transform(causal)
    chunk = chunk or L.default_chunk_rows(weight.shape[0])
    lps, tids = [], []
    for c in range(0, h.shape[0], chunk):
        z = torch.nn.functional.linear(h[c:c + chunk], weight, bias) if A.head_is_plain(head) else head(h[c:c + chunk])
        z = z.float() * scale
        if softcap:
            z = torch.tanh(z / softcap) * softcap
        lp = torch.log_softmax(z / temperature, dim=-1)
        v, t = lp.topk(min(k, lp.shape[-1]), dim=-1)
        lps.append(v.float().clamp(min=-1.0e4))
        tids.append(t.to(torch.int32))
    if not lps:
        return h.new_zeros((0, k), dtype=torch.float32), torch.zeros((0, k), dtype=torch.int32, device=h.device)
    return torch.cat(lps), torch.cat(tids)


@torch.no_grad()
def compute_seed_cache(model: nn.Module, dataset: ExampleDataset, k: int, temperature: float, key: str,
                       batch_size: int = 8, device: torch.device | str | None = None,
                       autocast_dtype: torch.dtype | None = None) -> SeedCache:
    """One pass of the seed model (PEFT adapter disabled) over every example: top-k of log softmax(z / tau) at each
    response position. Length-sorted batches; the head is projected only at response positions, in chunks."""
    causal = A.causal_lm(model)
    backbone = A.backbone(causal)
    _, weight, _ = A.lm_head(causal)
    device = torch.device(device) if device is not None else weight.device
    was_training = model.training
    model.eval()
    n = len(dataset)
    lengths = [len(dataset.examples[i]["input_ids"]) for i in range(n)]
    order = sorted(range(n), key=lambda i: -lengths[i])
    per_ex: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    pad = 0
    chunk = L.default_chunk_rows(weight.shape[0])
    amp = (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None
           else contextlib.nullcontext())
    try:
        from tqdm.auto import tqdm
        bar = tqdm(total=n, desc="seed top-k cache", disable=n < 2 * batch_size)
    except Exception:   # pragma: no cover
        bar = None
    with _adapter_disabled(model):
        for s in range(0, n, batch_size):
            idx = order[s:s + batch_size]
            T = max(lengths[i] for i in idx)
            ids = torch.full((len(idx), T), pad, dtype=torch.long)
            lab = torch.full((len(idx), T), -100, dtype=torch.long)
            att = torch.zeros((len(idx), T), dtype=torch.long)
            for b, i in enumerate(idx):
                e = dataset.examples[i]
                ids[b, :lengths[i]] = torch.tensor(e["input_ids"])
                lab[b, :lengths[i]] = torch.tensor(e["labels"])
                att[b, :lengths[i]] = 1
            ids, lab, att = ids.to(device), lab.to(device), att.to(device)
            sel = lab[:, 1:] != -100
            with amp:
                hidden = backbone(input_ids=ids, attention_mask=att, use_cache=False).last_hidden_state
                v, t = head_topk_logprobs(causal, hidden[:, :-1][sel], k, temperature, chunk)
            lp_all, id_all = v.cpu().to(torch.float16), t.cpu()
            counts = sel.sum(1).tolist()
            off = 0
            for b, i in enumerate(idx):
                per_ex[i] = (lp_all[off:off + counts[b]], id_all[off:off + counts[b]])
                off += counts[b]
            if bar is not None:
                bar.update(len(idx))
    if bar is not None:
        bar.close()
    model.train(was_training)
    sizes = torch.tensor([0] + [per_ex[i][0].shape[0] for i in range(n)], dtype=torch.int64)
    offsets = torch.cumsum(sizes, 0)
    return SeedCache(offsets, torch.cat([per_ex[i][0] for i in range(n)]),
                     torch.cat([per_ex[i][1] for i in range(n)]), key)


# =================================================================================================================
# Batching
# =================================================================================================================

class CrossDistillCollator:
    """Right-pads a list of examples; adds domain ids and, with a seed cache, the flat (N_resp, k) top-k tensors
    in the same row-major order in which the trainer selects response positions."""

    def __init__(self, pad_token_id: int, seed_cache: SeedCache | None = None, pad_to_multiple_of: int | None = None):
        self.pad = int(pad_token_id)
        self.cache = seed_cache
        self.multiple = pad_to_multiple_of

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        T = max(len(f["input_ids"]) for f in features)
        if self.multiple:
            T = int(math.ceil(T / self.multiple) * self.multiple)
        B = len(features)
        ids = torch.full((B, T), self.pad, dtype=torch.long)
        lab = torch.full((B, T), -100, dtype=torch.long)
        att = torch.zeros((B, T), dtype=torch.long)
        for b, f in enumerate(features):
            n = len(f["input_ids"])
            ids[b, :n] = torch.tensor(f["input_ids"], dtype=torch.long)
            lab[b, :n] = torch.tensor(f["labels"], dtype=torch.long)
            att[b, :n] = 1
        out = {"input_ids": ids, "attention_mask": att, "labels": lab,
               "domain_ids": torch.tensor([f["domain_id"] for f in features], dtype=torch.long)}
        if "teacher_prompt_ids" in features[0]:   # on-policy: prompts only, the trainer samples the responses
            out["prompt_ids_list"] = [list(f["input_ids"]) for f in features]
            out["teacher_prompt_ids_list"] = [list(f["teacher_prompt_ids"]) for f in features]
        if self.cache is not None:
            parts = [self.cache.get(f["idx"]) for f in features]
            out["seed_topk_logprobs"] = torch.cat([p[0] for p in parts])
            out["seed_topk_ids"] = torch.cat([p[1] for p in parts])
        return out


class DomainBalancedSampler(torch.utils.data.Sampler):
    """Yields indices in batches of `batch_size` (consecutive chunks = batches, as the DataLoader cuts them).

    Per batch slot a domain is drawn with probability p_d, then the next example of that domain (each domain's
    examples are walked in a fresh permutation, reshuffled when used up). With `min_domains=2` a batch that drew a
    single domain has its last slot redrawn among the other domains (per their p_d), so every batch holds >= 2
    domains. One epoch = ceil(N / batch_size) full batches. Deterministic for (seed, epoch)."""

    def __init__(self, domain_ids: list[int], probs: list[float], batch_size: int, seed: int = 0,
                 min_domains: int = 1):
        self.domain_ids = list(domain_ids)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.epoch = 0
        self.pools = {}
        for i, d in enumerate(self.domain_ids):
            self.pools.setdefault(d, []).append(i)
        p = torch.zeros(max(self.pools) + 1, dtype=torch.float64)
        for d in self.pools:
            p[d] = float(probs[d])
        if p.sum() <= 0:
            raise ValueError("domain sampling probabilities are all 0")
        self.probs = p / p.sum()
        active = int((self.probs > 0).sum())
        self.min_domains = min(int(min_domains), active)
        if self.min_domains >= 2 and self.batch_size < 2:
            raise UserError("a batch cannot hold 2 domains with batch_size 1 (invariance needs >= 2)",
                            field="train.batch_size")
        self.num_batches = max(1, math.ceil(len(self.domain_ids) / self.batch_size))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_batches * self.batch_size

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perms = {d: torch.randperm(len(v), generator=g).tolist() for d, v in self.pools.items()}
        ptr = {d: 0 for d in self.pools}

        def take(d):
            if ptr[d] >= len(perms[d]):
                perms[d] = torch.randperm(len(self.pools[d]), generator=g).tolist()
                ptr[d] = 0
            i = self.pools[d][perms[d][ptr[d]]]
            ptr[d] += 1
            return i

        for _ in range(self.num_batches):
            doms = torch.multinomial(self.probs, self.batch_size, replacement=True, generator=g).tolist()
            if self.min_domains >= 2 and len(set(doms)) < 2:
                others = self.probs.clone()
                others[doms[0]] = 0
                doms[-1] = int(torch.multinomial(others / others.sum(), 1, generator=g))
            for d in doms:
                yield take(d)


# =================================================================================================================
# On-policy targets (Shenfeld et al. 2026): the student samples, the demonstration-shown seed teaches
# =================================================================================================================

@torch.no_grad()
def sample_completions(model: nn.Module, prompts: list[list[int]], *, pad_id: int, eos_ids: set[int],
                       max_new_tokens: int, temperature: float) -> list[list[int]]:
    """One sampled completion per prompt from `model` as it is (LoRA active), cut after its first eos (kept).

    `model.generate` and not `generation.generate`: the project's generator returns decoded text, and the on-policy
    loss must score exactly the sampled token ids (re-tokenising the text is not the student's own sequence). Nor
    would it be faster here: at the on-policy batch (4 prompts x 64 tokens, LoRA active) the engine took 6.2-7.0 s
    against `generate`'s 6.2-6.6 s on this project's CPU (2026-12-03); with 4 rows a decode step is bound by the
    per-layer overhead, which continuous batching does not remove. The same overhead is why the trainer samples a
    whole gradient-accumulation window in one call (`CrossDistillTrainer.get_batch_samples`)."""
    device = next(model.parameters()).device
    T = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), T), pad_id, dtype=torch.long)
    att = torch.zeros((len(prompts), T), dtype=torch.long)
    for b, p in enumerate(prompts):          # left padding: every row continues from its last prompt token
        ids[b, T - len(p):] = torch.tensor(p, dtype=torch.long)
        att[b, T - len(p):] = 1
    was_training = model.training
    model.eval()
    try:
        out = model.generate(input_ids=ids.to(device), attention_mask=att.to(device), do_sample=True,
                             temperature=temperature, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens,
                             pad_token_id=pad_id, eos_token_id=sorted(eos_ids))
    finally:
        model.train(was_training)
    completions = []
    for row in out[:, T:].tolist():
        cut = next((j + 1 for j, t in enumerate(row) if t in eos_ids), len(row))
        completions.append(row[:cut])
    return completions


def onpolicy_rows(prompts: list[list[int]], completions: list[list[int]], pad_id: int,
                  device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """prompt_i + completion_i, right-padded, labels on the completion only (the layout the loss forward reads)."""
    T = max(len(p) + len(c) for p, c in zip(prompts, completions))
    ids = torch.full((len(prompts), T), pad_id, dtype=torch.long)
    lab = torch.full((len(prompts), T), -100, dtype=torch.long)
    att = torch.zeros((len(prompts), T), dtype=torch.long)
    for b, (p, c) in enumerate(zip(prompts, completions)):
        n = len(p) + len(c)
        ids[b, :n] = torch.tensor(p + c, dtype=torch.long)
        lab[b, len(p):n] = torch.tensor(c, dtype=torch.long)
        att[b, :n] = 1
    return {"input_ids": ids.to(device), "attention_mask": att.to(device), "labels": lab.to(device)}


def generation_eos_ids(model: nn.Module, tokenizer) -> set[int]:
    """Every id that ends a completion: the tokenizer's eos and the generation config's (e.g. <|im_end|>)."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    gc = getattr(A.causal_lm(model), "generation_config", None)
    e = getattr(gc, "eos_token_id", None)
    ids.update([e] if isinstance(e, int) else list(e or []))
    return ids


# =================================================================================================================
# Trainer
# =================================================================================================================

@dataclass
class CrossDistillConfig(TrainingArguments):
    """TrainingArguments + the CD-SDFT knobs (TRL style: `XConfig(TrainingArguments)`).

    A run builds it from the recipe with `CrossDistillConfig.from_recipe(cfg, tc, ...)`, the one place a recipe's
    `TrainConfig` becomes the trainer's config; the knobs below mean what the recipe keys of the same name mean
    (defined in config.TrainConfig), except `inv_beta`, which is the recipe's `beta` (see there)."""

    method: str = field(default="cdsdft", metadata={"help": "the preset of the switches (config.METHOD_PRESETS)"})
    targets: str = field(default="rewrite", metadata={"help": "original | rewrite | onpolicy"})
    ce_weighting: str = field(default="domain", metadata={"help": "token | domain"})
    sampler: str = field(default="balanced", metadata={"help": "random | balanced"})
    onpolicy_max_new_tokens: int = field(default=128, metadata={"help": "on-policy: tokens the student samples"})
    onpolicy_temperature: float = field(default=1.0, metadata={"help": "on-policy: sampling temperature"})
    alpha: float = field(default=0.5, metadata={"help": "weight of the seed divergence"})
    divergence: str = field(default="forward_kl", metadata={"help": "forward_kl | reverse_kl | jsd"})
    jsd_beta: float = field(default=0.5, metadata={"help": "mixture weight of the generalised JSD (not L_inv's)"})
    kd_temperature: float = field(default=1.0, metadata={"help": "softmax temperature of the divergence"})
    seed_logprobs: str = field(default="cached", metadata={"help": "cached (top-k, precomputed) | live"})
    topk: int = field(default=20, metadata={"help": "k of the teacher's top-k (seed cache, on-policy teacher); "
                                                    "0 = full vocabulary (live / on-policy)"})
    inv_beta: float = field(default=0.1, metadata={"help": "weight of L_inv after warm-up: the recipe's `beta`"})
    invariance: str = field(default="mmd", metadata={"help": "none | mmd | coral | dann"})
    inv_layer: int | None = field(default=None, metadata={"help": "hidden_states index pooled for L_inv (-1: final, "
                                                            "normed; None: the middle layer)"})
    inv_queue_size: int = field(default=128, metadata={"help": "per-domain FIFO of pooled features for L_inv"})
    inv_grad: str = field(default="domain", metadata={"help": "domain: a batch row's L_inv gradient scaled to its "
                                                            "domain's batch + queue size; batch: unscaled"})
    inv_probe_every: int = field(default=5, metadata={"help": "log the held-out probe batch's MMD every K steps"})
    beta_warmup_steps: int = field(default=0, metadata={"help": "linear warm-up of beta over this many steps"})
    head_chunk_size: int | None = field(default=None, metadata={"help": "rows per LM-head chunk (None: auto)"})

    @property
    def terms(self) -> LossTerms:
        """Which loss terms are on: decided by `config.loss_terms`, the same function TrainConfig.terms asks."""
        return loss_terms(self.targets, self.ce_weighting, self.sampler, self.alpha, self.inv_beta, self.invariance)

    @classmethod
    def from_recipe(cls, cfg: Config, tc: TrainConfig, ckpt_dir: Path, *, mixed_bf16: bool, mixed_fp16: bool,
                    **extra) -> "CrossDistillConfig":
        """The trainer's config of one method: `tc` is the method's resolved TrainConfig
        (`cfg.train_config_for(method)`, whose switches `config.resolve_method` took from the preset), turned into
        the shared transformers fields (`recipe_training_args`) and every knob above, each from the recipe key of
        its name (`_RECIPE_KEY` lists the renamed one). `extra` sets further fields (tests)."""
        return cls(**recipe_training_args(cfg, tc, ckpt_dir, mixed_bf16, mixed_fp16), label_names=["labels"],
                   **{**cls.knobs_of(tc), **extra})

    @classmethod
    def knobs_of(cls, tc: TrainConfig) -> dict:
        """The CD-SDFT knobs of a resolved TrainConfig (without the transformers fields): `from_recipe`, and
        benchmarks that bring their own TrainingArguments."""
        own = {f.name for f in dataclasses.fields(cls)} - _TRAINING_ARGS_FIELDS - _NOT_IN_RECIPE
        return {name: getattr(tc, _RECIPE_KEY.get(name, name)) for name in sorted(own)}


_TRAINING_ARGS_FIELDS = {f.name for f in dataclasses.fields(TrainingArguments)}
_RECIPE_KEY = {"inv_beta": "beta"}          # CrossDistillConfig knob -> recipe `train` key, where the names differ
_NOT_IN_RECIPE = {"head_chunk_size"}        # knobs a recipe does not set (their default: automatic)


def _call_through(wrapper: nn.Module, inner: nn.Module, fn, *args, **kwargs):
    """Run `fn(*args)` *as the forward* of `wrapper` (DDP / FSDP / DeepSpeed / PEFT): the wrapper's pre-forward
    machinery (gradient-sync bookkeeping, parameter gathering) runs around the whole loss computation."""
    had = "forward" in inner.__dict__
    original = inner.__dict__.get("forward")

    def patched(*a, **k):
        _restore()
        return fn(*a, **k)

    def _restore():
        if had:
            inner.forward = original
        else:
            inner.__dict__.pop("forward", None)

    inner.forward = patched
    try:
        return wrapper(*args, **kwargs)
    finally:
        _restore()


class CrossDistillTrainer(Trainer):
    """transformers.Trainer whose loss is the CD-SDFT objective computed from ONE student forward.

    Extra inputs of each batch (from CrossDistillCollator): `domain_ids` (B,), and with a cached seed
    `seed_topk_logprobs` / `seed_topk_ids` (N_resp, k). The domain classifier for DANN, when used, is a submodule
    of the CausalLM (attribute `cd_domain_classifier`) so optimizers, DDP and checkpoints see it."""

    loss_is_scaled_for_ga = False   # compute_loss returns a per-micro-batch mean; Trainer divides by GA steps

    def __init__(self, *args, domain_names: list[str], domain_weights: list[float] | None = None,
                 sampling_probs: list[float] | None = None, eos_ids: set[int] | None = None,
                 probe_examples: list[dict] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.eos_ids = set(eos_ids) if eos_ids else {self.processing_class.eos_token_id}
        self.domain_names = list(domain_names)
        D = len(self.domain_names)
        w = domain_weights or [1.0 / D] * D
        self._w = torch.tensor(w, dtype=torch.float32)
        self.sampling_probs = list(sampling_probs or w)
        self._acc: torch.Tensor | None = None
        self._acc_len = 7 + 2 * D     # n, loss, ce, div, inv, beta_t, ce_sum_d (D), count_d (D), sample_len
        self._init_invariance(probe_examples)

    # -- knobs ----------------------------------------------------------------------------------------------------
    @property
    def use_div(self) -> bool:
        """A divergence to a teacher: the seed on fixed targets (alpha), or the demonstration-shown seed on-policy."""
        t = self.args.terms
        return t.seed_kl or t.onpolicy

    @property
    def use_inv(self) -> bool:
        return self.args.terms.invariance is not None

    def current_beta(self) -> float:
        a = self.args
        if a.beta_warmup_steps and a.beta_warmup_steps > 0:
            return a.inv_beta * min(1.0, self.state.global_step / a.beta_warmup_steps)
        return a.inv_beta

    # -- sampler --------------------------------------------------------------------------------------------------
    def _get_train_sampler(self, train_dataset=None):
        ds = train_dataset if train_dataset is not None else self.train_dataset
        a = self.args
        if (a.terms.balanced and isinstance(ds, ExampleDataset)
                and len(set(ds.domain_ids)) >= 2):
            return DomainBalancedSampler(ds.domain_ids, self.sampling_probs, self._train_batch_size,
                                         seed=a.data_seed if a.data_seed is not None else a.seed,
                                         min_domains=2 if self.use_inv else 1)
        return super()._get_train_sampler(train_dataset)

    # -- loss -----------------------------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        unwrapped = self.accelerator.unwrap_model(model)
        if self.args.terms.onpolicy and "prompt_ids_list" in inputs:   # not rolled out with its window
            inputs = self.rollout(unwrapped, inputs)
        out = _call_through(model, unwrapped, self._loss_forward, unwrapped, inputs)
        self._accumulate(out)
        return (out["loss"], out) if return_outputs else out["loss"]

    rollout_per_window = True   # False: one sampling call per micro-batch (benchmarks/bench_train.py compares)

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """The micro-batches of one optimizer step (transformers fetches the whole gradient-accumulation window
        before the first of them runs). On-policy, they are rolled out here in ONE sampling call: the weights do not
        change within the window, so every sample comes from the same policy a per-micro-batch call would sample
        (other draws, the same distribution), and on a CPU one call of 8 rows samples 1.67x faster than two of 4
        (benchmarks/README.md, bench_train --grad-accum 2)."""
        batches, n_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        if self.args.terms.onpolicy and self.rollout_per_window and len(batches) > 1 \
                and all("prompt_ids_list" in b for b in batches):
            batches = self.rollout_window(self.accelerator.unwrap_model(self.model), batches)
            n_items = self._get_num_items_in_batch(batches, device)
        return batches, n_items

    def rollout(self, unwrapped: nn.Module, inputs: dict) -> dict:
        """On-policy batch: the student (LoRA active) samples a response to each prompt; the student rows are
        prompt + sample, the teacher rows are the teacher prompt (with the demonstration) + the same sample."""
        return self.rollout_window(unwrapped, [inputs])[0]

    def rollout_window(self, unwrapped: nn.Module, batches: list[dict]) -> list[dict]:
        """`rollout` for several micro-batches with one sampling call over all their prompts."""
        a: CrossDistillConfig = self.args
        pad = self.processing_class.pad_token_id
        prompts = [p for b in batches for p in b["prompt_ids_list"]]
        comps = sample_completions(unwrapped, prompts, pad_id=pad, eos_ids=self.eos_ids,
                                   max_new_tokens=a.onpolicy_max_new_tokens, temperature=a.onpolicy_temperature)
        outs, k = [], 0
        for inputs in batches:
            c = comps[k:k + len(inputs["prompt_ids_list"])]
            k += len(c)
            dev = inputs["input_ids"].device
            out = {key: v for key, v in inputs.items() if key not in ("prompt_ids_list", "teacher_prompt_ids_list")}
            out.update(onpolicy_rows(inputs["prompt_ids_list"], c, pad, dev))
            t = onpolicy_rows(inputs["teacher_prompt_ids_list"], c, pad, dev)
            out.update({"teacher_input_ids": t["input_ids"], "teacher_attention_mask": t["attention_mask"],
                        "teacher_labels": t["labels"]})
            out["sample_len"] = torch.tensor([float(len(x)) for x in c], device=dev).mean()
            outs.append(out)
        return outs

    def _loss_forward(self, unwrapped: nn.Module, inputs: dict) -> dict:
        a: CrossDistillConfig = self.args
        causal = A.causal_lm(unwrapped)
        backbone = A.backbone(causal)
        head, weight, bias = A.lm_head(causal)
        scale, softcap = A.logit_transform(causal)
        input_ids, attn, labels = inputs["input_ids"], inputs["attention_mask"], inputs["labels"]
        dom = inputs["domain_ids"]
        sel = labels[:, 1:] != -100                                  # positions t predicting a response token
        use_div, use_inv = self.use_div, self.use_inv
        beta_t = self.current_beta() if use_inv else 0.0
        if use_inv and a.invariance in ("mmd", "coral") and beta_t == 0.0:
            use_inv = False                                           # warm-up start: nothing to add

        # student forward (one), with a hook on the pooled layer when it is not the final hidden state
        captured: dict[str, torch.Tensor] = {}
        handle = A.capture_layer(backbone, a.inv_layer, captured) if use_inv else None
        try:
            hidden = backbone(input_ids=input_ids, attention_mask=attn, use_cache=False).last_hidden_state
        finally:
            if handle is not None:
                handle.remove()
        h_sel = hidden[:, :-1][sel]
        targets = labels[:, 1:][sel]
        tok_dom = dom.unsqueeze(1).expand_as(sel)[sel]
        N = h_sel.shape[0]
        D = len(self.domain_names)

        # per-token weights of the main term: token-mean, or sum_d w_d * (mean over domain d's tokens)
        terms = a.terms
        counts = torch.bincount(tok_dom, minlength=D).to(torch.float32)
        if terms.domain_weighted:
            w = self._w.to(h_sel.device)
            present_w = (w * (counts > 0)).sum().clamp(min=1e-12)
            tok_w = w[tok_dom] / (counts[tok_dom].clamp(min=1) * present_w)
        else:
            tok_w = torch.full((N,), 1.0 / max(N, 1), device=h_sel.device)
        # fixed targets: CE is the main term (+ alpha * KL to the seed); on-policy: the divergence to the teacher is
        ce_w = torch.zeros_like(tok_w) if terms.onpolicy else tok_w

        # teacher distribution: the seed on these tokens (cached top-k or live), or on-policy the seed shown the
        # demonstration, on the student's sampled tokens (adapter disabled, no_grad: no gradient reaches it)
        t_lp = t_ids = t_hidden = None
        div_w = None
        if use_div:
            div_w = tok_w if terms.onpolicy else torch.full((N,), a.alpha / max(N, 1), device=h_sel.device)
            if not terms.onpolicy and a.seed_logprobs == "cached":
                t_lp, t_ids = inputs["seed_topk_logprobs"], inputs["seed_topk_ids"]
                if t_lp.shape[0] != N:
                    raise RuntimeError(f"seed cache misaligned: {t_lp.shape[0]} cached rows for {N} response tokens")
            else:
                t_hidden = self.teacher_hidden(unwrapped, inputs)
                if t_hidden.shape[0] != N:
                    raise RuntimeError(f"teacher misaligned: {t_hidden.shape[0]} teacher rows for {N} tokens")
                if terms.onpolicy and a.topk > 0:
                    t_lp, t_ids = head_topk_logprobs(causal, t_hidden, a.topk, a.kd_temperature,
                                                     a.head_chunk_size)
                    t_hidden = None

        if A.head_is_plain(head):
            with _maybe_gather(weight, bias):
                loss, ce_tok, div_tok = L.fused_head_loss(
                    h_sel, _full(weight), targets, ce_w, bias=_full(bias), div_weights=div_w,
                    teacher_topk_logprobs=t_lp, teacher_topk_ids=t_ids, teacher_hidden=t_hidden,
                    kind=a.divergence, beta=a.jsd_beta, temperature=a.kd_temperature,
                    chunk_size=a.head_chunk_size, logit_scale=scale, softcap=softcap)
        else:   # the head itself is adapted (LoRA on lm_head / modules_to_save): call it as a module
            loss, ce_tok, div_tok = self._unfused_head(unwrapped, head, h_sel, targets, ce_w, div_w, t_lp, t_ids,
                                                       t_hidden, scale, softcap)

        inv = torch.zeros((), device=h_sel.device)
        if use_inv:
            add, inv = self._invariance(causal, captured.get("h", hidden), sel, dom, beta_t)
            loss = loss + add
        ce_sum_d = torch.zeros(D, device=h_sel.device).index_add_(0, tok_dom, ce_tok.float())
        ce_term = (ce_tok * ce_w).sum()
        div_mean = div_tok.mean() if N else torch.zeros((), device=h_sel.device)
        return {"loss": loss, "ce": ce_term.detach(), "div": div_mean.detach(), "inv": inv.detach(),
                "beta_t": torch.tensor(beta_t, device=h_sel.device), "ce_sum_d": ce_sum_d, "count_d": counts,
                "sample_len": inputs.get("sample_len", torch.zeros((), device=h_sel.device))}

    @torch.no_grad()
    def teacher_hidden(self, unwrapped: nn.Module, inputs: dict) -> torch.Tensor:
        """Final hidden states of the teacher (the model with its adapter disabled) at the positions that predict
        the trained tokens, in the student's row-major order: on-policy its own rows (teacher prompt + sample),
        otherwise the student's rows."""
        if self.args.terms.onpolicy:
            ids, att, lab = inputs["teacher_input_ids"], inputs["teacher_attention_mask"], inputs["teacher_labels"]
        else:
            ids, att, lab = inputs["input_ids"], inputs["attention_mask"], inputs["labels"]
        backbone = A.backbone(A.causal_lm(unwrapped))
        with _adapter_disabled(unwrapped):
            hidden = backbone(input_ids=ids, attention_mask=att, use_cache=False).last_hidden_state
        return hidden[:, :-1][lab[:, 1:] != -100]

    def _unfused_head(self, unwrapped, head, h_sel, targets, ce_w, div_w, t_lp, t_ids, t_hidden, scale, softcap):
        a = self.args

        def project(h):
            z = head(h).float() * scale
            return torch.tanh(z / softcap) * softcap if softcap else z

        z = project(h_sel)
        ce = torch.nn.functional.cross_entropy(z, targets, reduction="none")
        loss = (ce * ce_w).sum()
        div = torch.zeros_like(ce)
        if div_w is not None:
            if t_lp is not None:
                div = L.topk_divergence_per_token(z, t_lp, t_ids, a.divergence, a.jsd_beta, a.kd_temperature)
            else:
                with torch.no_grad(), _adapter_disabled(unwrapped):
                    zt = project(t_hidden)
                div = L.divergence_from_logprobs(torch.log_softmax(z / a.kd_temperature, -1),
                                                 torch.log_softmax(zt / a.kd_temperature, -1),
                                                 a.divergence, a.jsd_beta)
            loss = loss + (div * div_w).sum()
        return loss, ce.detach(), div.detach()

    # -- invariance: queues, the chosen layer, the held-out probe batch ------------------------------------------------
    def _init_invariance(self, probe_examples: list[dict] | None) -> None:
        """A fresh per-domain feature queue for this run (never carried over from another trainer; a resume restores
        the queue its checkpoint saved) and the fixed held-out probe batch whose between-domain MMD is logged every
        K steps."""
        a: CrossDistillConfig = self.args
        self._inv_run_key = f"{a.output_dir}:{id(self)}:{time.time_ns()}"
        self.inv_queue = L.FeatureQueue(len(self.domain_names), a.inv_queue_size, run_key=self._inv_run_key)
        self._inv_pending: list[tuple[torch.Tensor, torch.Tensor]] = []   # this step's rows, queued at its end
        self.add_callback(_FlushFeatureQueue(self))
        self.probe_examples = list(probe_examples or [])
        self._inv_probe_logged = -1

    def _invariance(self, causal: nn.Module, layer_out: torch.Tensor, sel: torch.Tensor, dom: torch.Tensor,
                    beta_t: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(term added to the loss, L_inv value) for one micro-batch: pool the chosen layer over the positions
        that predict response tokens and compare with the other domains' queues. The rows (detached) join the queue
        at the end of the optimizer step (`flush_feature_queue`), so every micro-batch of a step sees the same queue."""
        a: CrossDistillConfig = self.args
        feats = L.masked_mean_pool(layer_out[:, :-1].float(), sel)
        clf = getattr(causal, CLASSIFIER_ATTR, None) if a.invariance == "dann" else None
        inv = L.invariance_term(a.invariance, feats, dom, self.inv_queue, clf, lambda_=beta_t, grad=a.inv_grad)
        self._inv_pending.append((feats.detach(), dom.detach()))
        return (inv if a.invariance == "dann" else beta_t * inv), inv

    def flush_feature_queue(self) -> None:
        """Push this optimizer step's pooled rows into the queue: every rank's, in rank order (all ranks then hold
        the same queue, and data-parallel training queues exactly what gradient accumulation over the same batches
        does in one process)."""
        pending, self._inv_pending = self._inv_pending, []
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            mine = [(f.cpu(), d.cpu()) for f, d in pending]
            per_rank: list = [None] * dist.get_world_size()
            dist.all_gather_object(per_rank, mine)
            pending = [(f.to(self.args.device), d) for rows in per_rank for f, d in rows]
        for f, d in pending:
            self.inv_queue.push(f, d, run_key=self._inv_run_key)

    @torch.no_grad()
    def _probe_mmd(self) -> float | None:
        """Mean pairwise MMD^2 (median-heuristic bandwidth, unbiased) between the domains' pooled features of the
        fixed held-out probe batch, at the invariance layer; None without a probe batch."""
        if not self.probe_examples:
            return None
        from .probe import pairwise_mmd_median, pooled_features

        model = self.accelerator.unwrap_model(self.model)
        was = model.training
        model.eval()
        try:
            li = A.resolve_layer(A.backbone(A.causal_lm(model)), self.args.inv_layer)
            feats, dom = pooled_features(model, self.probe_examples, layers=[li], batch_size=8)
        finally:
            model.train(was)
        return float(pairwise_mmd_median(feats[li], dom))

    def _invariance_logs(self) -> dict:
        a: CrossDistillConfig = self.args
        out: dict[str, float] = {}
        if not self.use_inv:
            return out
        out["inv_queue"] = float(len(self.inv_queue))
        step = self.state.global_step
        if (a.inv_probe_every and self.probe_examples and step != self._inv_probe_logged
                and (step % a.inv_probe_every == 0 or step == 1) and self.accelerator.is_main_process):
            v = self._probe_mmd()
            if v is not None:
                out["inv_probe_mmd"] = v
            self._inv_probe_logged = step
        return out

    # -- metrics --------------------------------------------------------------------------------------------------
    def _accumulate(self, out: dict) -> None:
        dev = out["loss"].device
        if self._acc is None or self._acc.device != dev:
            self._acc = torch.zeros(self._acc_len, device=dev, dtype=torch.float64)
        D = len(self.domain_names)
        vec = torch.cat([torch.stack([torch.ones((), device=dev), out["loss"].detach().float(), out["ce"].float(),
                                      out["div"].float(), out["inv"].float(), out["beta_t"].float()]),
                         out["ce_sum_d"].float(), out["count_d"].float(),
                         out["sample_len"].float().reshape(1)]).to(torch.float64)
        assert vec.numel() == 7 + 2 * D
        self._acc += vec

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._acc is not None:
            acc = self._acc
            if self.accelerator.num_processes > 1:
                acc = self.accelerator.reduce(acc.clone(), reduction="sum")
            acc = acc.cpu().tolist()
            n = max(acc[0], 1.0)
            logs["ce"] = acc[2] / n
            logs["div"] = acc[3] / n
            logs["inv"] = acc[4] / n
            D = len(self.domain_names)
            for i, d in enumerate(self.domain_names):
                s, c = acc[6 + i], acc[6 + D + i]
                if c > 0:
                    logs[f"ce/{d}"] = s / c
            logs["beta_t"] = acc[5] / n
            for i, d in enumerate(self.domain_names):
                logs[f"tokens/{d}"] = acc[6 + D + i]
            if self.args.terms.onpolicy:
                logs["sample_len"] = acc[6 + 2 * D] / n
            self._acc.zero_()
            logs.update(self._invariance_logs())
        super().log(logs, start_time)

    # -- DANN classifier in checkpoints ---------------------------------------------------------------------------
    def _classifier(self) -> nn.Module | None:
        return getattr(A.causal_lm(self.accelerator.unwrap_model(self.model)), CLASSIFIER_ATTR, None)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        super().save_model(output_dir, _internal_call)
        clf = self._classifier()
        out = output_dir or self.args.output_dir
        if clf is not None and self.args.should_save:
            os.makedirs(out, exist_ok=True)
            torch.save({k: v.detach().cpu() for k, v in clf.state_dict().items()}, os.path.join(out, CLASSIFIER_FILE))
        if _internal_call and self.use_inv and self.args.should_save:   # checkpoints only, not the final adapter
            os.makedirs(out, exist_ok=True)
            torch.save(self.inv_queue.state_dict(), os.path.join(out, QUEUE_FILE))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        clf = self._classifier()
        f = os.path.join(resume_from_checkpoint, CLASSIFIER_FILE)
        if clf is not None and os.path.exists(f):
            clf.load_state_dict(torch.load(f, map_location="cpu", weights_only=True))
        q = os.path.join(resume_from_checkpoint, QUEUE_FILE)
        if self.use_inv and os.path.exists(q):
            state = torch.load(q, map_location="cpu", weights_only=True)
            state["run_key"] = self._inv_run_key    # this run's queue now, continued
            self.inv_queue.load_state_dict(state, device=self.args.device)


class _FlushFeatureQueue(TrainerCallback):
    """At the end of every optimizer step (before logging and checkpointing), the step's features join the queue."""

    def __init__(self, trainer: "CrossDistillTrainer"):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer.flush_feature_queue()


class _JsonlLogCallback(TrainerCallback):
    """Appends every training log to OUT/log.jsonl: {"step", "loss", "ce", "div", "inv", "ce/<domain>", "lr", ...}."""

    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or "loss" not in logs:
            return
        row: dict[str, Any] = {"step": state.global_step}
        for k, v in logs.items():
            key = {"learning_rate": "lr"}.get(k, k)
            row[key] = v.item() if hasattr(v, "item") else v
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


# =================================================================================================================
# The stage: train() and its steps, in the order they run
# =================================================================================================================

def train(cfg: Config, method_name: str, distilled_path: str, out_dir: str, *, model=None, tokenizer=None,
          callbacks: list | None = None) -> dict:
    """Train one method; write OUT/adapter (PEFT folder, or the full model for full fine-tuning), OUT/log.jsonl,
    OUT/config.yaml, OUT/train_stats.json; checkpoints in OUT/checkpoints. Returns the train stats.

    Idempotent (a complete OUT/adapter returns at once) and resumable (re-running after a kill continues from the
    newest complete checkpoint). `model`/`tokenizer` pass an in-memory model (tests); otherwise `cfg.model` is
    loaded. `callbacks` are extra transformers TrainerCallbacks.

    The steps, in order: the method's resolved TrainConfig (`cfg.train_config_for`: config.resolve_method decides
    the loss terms) -> `_setup` (model, data, resume point, trainer config) -> `_seed_cache` -> `_trainer` ->
    `Trainer.train` -> `_save` (atomic)."""
    t_start = time.time()
    tc = cfg.train_config_for(method_name)
    out = Path(out_dir)
    done = _finished(out)
    if done is not None:
        return done
    if tc.method == "trl-sdft":
        from .trl_baseline import train_trl_sdft

        return train_trl_sdft(cfg, method_name, tc, distilled_path, out, model=model, tokenizer=tokenizer,
                              callbacks=callbacks)
    run = _setup(cfg, method_name, tc, distilled_path, out, model, tokenizer)
    cache, cache_info = _seed_cache(cfg, tc, run.model, run.dataset, out, run.args, run.mixed_bf16)
    trainer = _trainer(cfg, tc, run, cache, out, callbacks)
    result = trainer.train(resume_from_checkpoint=str(run.resume) if run.resume is not None else None)
    stats = {
        "method_name": method_name, "method": tc.method, "model": cfg.model, "terms": dataclasses.asdict(tc.terms),
        "examples": len(run.dataset), "examples_per_domain": run.counts, "domain_weights": run.weights,
        "records_read": run.records_read, "truncated": run.data_stats["truncated"],
        "dropped": run.data_stats["dropped"], "max_length": tc.max_length, "steps": trainer.state.global_step,
        "train_loss": getattr(result, "training_loss", None),
        "resumed_from": str(run.resume) if run.resume is not None else None,
        "wall_s": round(time.time() - t_start, 2), "seed_cache": cache_info,
        "full_finetune": tc.full_finetune, "adapter_dir": str(out / "adapter"),
        "precision": "bf16" if run.mixed_bf16 else ("fp16" if run.mixed_fp16 else "fp32"),
    }
    _save(trainer, out, stats)
    return stats


def _finished(out: Path) -> dict | None:
    """The stats of a run whose OUT/adapter is complete (marked `skipped`), or None when there is work to do."""
    adapter_dir, stats_path = out / "adapter", out / "train_stats.json"
    if not _is_complete(adapter_dir):
        return None
    stats = json.loads(stats_path.read_text(encoding="utf-8")) if stats_path.exists() else \
        {"adapter_dir": str(adapter_dir)}
    stats["skipped"] = True
    return stats


@dataclass
class _Run:
    """What `_setup` prepared for one run: the model (adapter attached), its data, weights and trainer config."""

    model: nn.Module
    tokenizer: Any
    mixed_bf16: bool
    mixed_fp16: bool
    records_read: int
    data_stats: dict
    dataset: ExampleDataset
    counts: dict[str, int]
    weights: dict[str, float]
    resume: Path | None
    args: CrossDistillConfig


def _setup(cfg: Config, method_name: str, tc: TrainConfig, distilled_path: str, out: Path, model, tokenizer) -> _Run:
    """Everything before the first step: the model, the tokenised data and its per-domain weights, the resume point
    (OUT/config.yaml written), the adapter, and the trainer's config (`CrossDistillConfig.from_recipe`)."""
    terms = tc.terms
    if tc.full_finetune and terms.seed_kl and tc.seed_logprobs == "live":
        raise UserError("seed_logprobs 'live' needs a LoRA adapter to disable; with full fine-tuning use 'cached' "
                        "(computed from the seed weights before the first step)", field="train.seed_logprobs")
    _report_to(tc.report_to)   # a missing reporter package fails here, before any work
    from .vllm_backend import free_engines

    free_engines()   # a vLLM engine of this process (distill/eval with backend vllm) gives its GPU memory back
    rows = read_distilled(distilled_path, terms.target_field, tc.domains)
    model, tokenizer, model_desc, resolved = _load_model(cfg, tc, model, tokenizer)
    mixed_bf16, mixed_fp16 = resolved == torch.bfloat16, resolved == torch.float16

    examples, data_stats = build_examples(rows, tokenizer, tc.max_length,
                                          _teacher_messages(cfg) if terms.onpolicy else None)
    domain_names = sorted({e["domain"] for e in examples})
    counts = {d: sum(1 for e in examples if e["domain"] == d) for d in domain_names}
    base_w = {d: (cfg.domains[d].weight if d in cfg.domains else 1.0) for d in domain_names}
    weights = domain_weights(counts, tc.domain_weighting, tc.domain_temperature, base_w)

    is_main = int(os.environ.get("RANK", "0")) == 0
    resume = _resume_point(out, _run_config(cfg, method_name, tc, model_desc, distilled_path, weights), is_main)
    model = _attach_adapter(cfg, tc, model, domain_names)
    args = CrossDistillConfig.from_recipe(cfg, tc, out / "checkpoints", mixed_bf16=mixed_bf16, mixed_fp16=mixed_fp16)
    return _Run(model=model, tokenizer=tokenizer, mixed_bf16=mixed_bf16, mixed_fp16=mixed_fp16,
                records_read=len(rows), data_stats=data_stats, dataset=ExampleDataset(examples, domain_names),
                counts=counts, weights=weights, resume=resume, args=args)


def _resume_point(out: Path, run_cfg: dict, is_main: bool) -> Path | None:
    """The newest complete checkpoint under OUT/checkpoints (after checking that it was made by the same run
    config), or None; the main process writes OUT/config.yaml and cuts OUT/log.jsonl back to that step."""
    resume = _last_valid_checkpoint(out / "checkpoints", is_main)
    if resume is not None:
        _check_resumable(out, run_cfg)
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / "config.yaml", yaml.safe_dump(run_cfg, sort_keys=False))
        _truncate_log(out / "log.jsonl", int(resume.name.split("-")[-1]) if resume is not None else 0)
    return resume


def _load_model(cfg: Config, tc: TrainConfig, model, tokenizer):
    """(model, tokenizer, description, compute dtype): `cfg.model` loaded, or the in-memory model of a test."""
    from transformers import AutoModelForCausalLM

    from .models import load_tokenizer, resolve_dtype, resolve_model_path

    resolved = resolve_dtype(tc.dtype)
    if model is None:
        path = resolve_model_path(cfg.model)
        if tokenizer is None:
            tokenizer = load_tokenizer(path)
        # LoRA: frozen base in the compute dtype. Full FT: fp32 master weights + autocast.
        load_dtype = torch.float32 if tc.full_finetune else resolved
        try:
            model = AutoModelForCausalLM.from_pretrained(path, dtype=load_dtype)
        except OSError as e:
            raise UserError(f"could not load model '{cfg.model}': {str(e).splitlines()[0]}", field="model") from None
        model_desc = path
    else:
        if tokenizer is None:
            raise UserError("an in-memory model needs its tokenizer", field="model")
        model_desc = f"<in-memory {type(model).__name__}>"
        if tc.dtype == "auto":   # follow the given model's own dtype
            resolved = next(model.parameters()).dtype
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer, model_desc, resolved


def _teacher_messages(cfg: Config):
    """(domain, messages, reference) -> the teacher's messages, from each domain plug-in's teacher template."""
    from .domains import get_domain

    def build(domain: str, messages: list[dict], reference: str) -> list[dict]:
        dc = cfg.domains.get(domain)
        return get_domain((dc.plugin if dc is not None else None) or domain).teacher_messages(messages, reference)

    return build


def _attach_adapter(cfg: Config, tc: TrainConfig, model: nn.Module, domain_names: list[str]) -> nn.Module:
    """The LoRA adapter (unless full fine-tuning) and, for DANN, the domain classifier as a submodule."""
    from transformers import set_seed

    set_seed(cfg.seed)
    if not tc.full_finetune:
        from peft import get_peft_model

        model = get_peft_model(model, _peft_lora_config(tc))
    model.train()
    inv = tc.terms.invariance
    if inv == "dann":
        causal = A.causal_lm(model)
        hidden_size = causal.config.get_text_config().hidden_size
        clf = L.DomainClassifier(hidden_size, max(2, len(domain_names)))
        clf.to(next(model.parameters()).device)
        causal.add_module(CLASSIFIER_ATTR, clf)
    if inv is not None and len(domain_names) < 2:
        logger.warning("invariance '%s' needs >= 2 domains; the data has %s, so L_inv is 0", inv, domain_names)
    return model


def _peft_lora_config(tc: TrainConfig):
    from peft import LoraConfig

    return LoraConfig(r=tc.lora.r, lora_alpha=tc.lora.alpha, lora_dropout=tc.lora.dropout,
                      target_modules=tc.lora.target_modules, task_type="CAUSAL_LM")


def _on_cpu() -> bool:
    return not (torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available()))


def recipe_training_args(cfg: Config, tc: TrainConfig, ckpt_dir: Path, mixed_bf16: bool, mixed_fp16: bool) -> dict:
    """The transformers TrainingArguments fields of a run, from the recipe (then `train.trainer_args` over them):
    shared by `CrossDistillConfig.from_recipe` and the trl-sdft arm's SDFTConfig."""
    on_cpu = _on_cpu()
    common = dict(
        output_dir=str(ckpt_dir),
        per_device_train_batch_size=tc.batch_size, gradient_accumulation_steps=tc.grad_accum,
        learning_rate=tc.lr, num_train_epochs=tc.epochs, max_steps=tc.max_steps or -1,
        lr_scheduler_type=tc.lr_scheduler, warmup_steps=float(min(max(tc.warmup_ratio, 0.0), 0.999)),
        weight_decay=tc.weight_decay, logging_strategy="steps", logging_steps=tc.logging_steps,
        save_strategy="steps", save_steps=tc.save_steps, save_total_limit=2, seed=cfg.seed,
        bf16=mixed_bf16, fp16=mixed_fp16 and not on_cpu,
        # use_cpu is what makes accelerate run data-parallel on CPUs (gloo); without it every launched process trains
        # alone on all the data (tests/test_multiprocess.py)
        use_cpu=on_cpu and (mixed_bf16 or int(os.environ.get("WORLD_SIZE", "1")) > 1),
        **_checkpointing_kwargs(tc.gradient_checkpointing),
        remove_unused_columns=False, report_to=_report_to(tc.report_to),
        dataloader_pin_memory=not on_cpu, ddp_find_unused_parameters=False, eval_strategy="no",
    )
    common.update(tc.trainer_args)   # train.trainer_args: more TrainingArguments, and over the defaults above
    return common


def _seed_cache(cfg: Config, tc: TrainConfig, model: nn.Module, dataset: ExampleDataset, out: Path, args,
                mixed_bf16: bool) -> tuple[SeedCache | None, dict]:
    """The seed's top-k on every response token, computed once (reused on resume) when the KL to the seed is on
    with `seed_logprobs: cached`."""
    if not (tc.terms.seed_kl and tc.seed_logprobs == "cached"):
        return None, {}
    key = stable_hash({"model": cfg.model, "fp": model_fingerprint(model), "data": dataset.fingerprint(),
                       "k": tc.topk, "tau": tc.kd_temperature})
    cache_path = out / "seed_cache" / f"seed_topk-{key}.pt"
    with args.main_process_first(local=False, desc="seed top-k cache"):
        t0 = time.time()
        cache = SeedCache.load(cache_path, key)
        reused = cache is not None
        if cache is None:
            model.to(args.device)
            cache = compute_seed_cache(model, dataset, tc.topk, tc.kd_temperature, key,
                                       batch_size=max(1, tc.batch_size * 2), device=args.device,
                                       autocast_dtype=torch.bfloat16 if mixed_bf16 else None)
            if args.process_index == 0:
                cache.save(cache_path)
    info = {"path": str(cache_path), "tokens": cache.num_tokens, "k": tc.topk, "reused": reused,
            "seconds": round(time.time() - t0, 2)}
    logger.info("seed cache: %s", info)
    return cache, info


def _trainer(cfg: Config, tc: TrainConfig, run: _Run, cache: SeedCache | None, out: Path,
             callbacks: list | None) -> CrossDistillTrainer:
    """The CrossDistillTrainer of a prepared run: its collator (with the seed cache), the per-domain weights, the
    log callback and, with the invariance term on, the held-out probe batch."""
    names = run.dataset.domain_names
    return CrossDistillTrainer(
        model=run.model, args=run.args, train_dataset=run.dataset, processing_class=run.tokenizer,
        data_collator=CrossDistillCollator(run.tokenizer.pad_token_id, cache),
        callbacks=[_JsonlLogCallback(out / "log.jsonl")] + list(callbacks or []),
        domain_names=names, domain_weights=[run.weights[d] for d in names],
        eos_ids=generation_eos_ids(run.model, run.tokenizer),
        probe_examples=_inv_probe_batch(cfg, tc, run.tokenizer, names) if tc.terms.invariance else None,
    )


def _save(trainer: Trainer, out: Path, stats: dict) -> None:
    """OUT/adapter written atomically (a .partial folder renamed at the end, with the .complete marker inside);
    the DANN classifier is kept out of the saved model and stored beside it."""
    adapter_dir = out / "adapter"
    tmp = out / ".adapter.partial"
    if trainer.accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    trainer.accelerator.wait_for_everyone()
    causal = A.causal_lm(trainer.accelerator.unwrap_model(trainer.model))
    clf = getattr(causal, CLASSIFIER_ATTR, None)
    if clf is not None:
        del causal._modules[CLASSIFIER_ATTR]     # keep it out of the saved model
    trainer.save_model(str(tmp))
    if clf is not None:
        causal.add_module(CLASSIFIER_ATTR, clf)
    if trainer.accelerator.is_main_process:
        if clf is not None:
            torch.save({k: v.detach().cpu() for k, v in clf.state_dict().items()}, tmp / CLASSIFIER_FILE)
        write_json(tmp / "train_stats.json", stats)
        (tmp / COMPLETE_MARKER).write_text("ok\n")
        write_json(out / "train_stats.json", stats)
        if adapter_dir.exists():
            shutil.rmtree(adapter_dir)
        os.replace(tmp, adapter_dir)
    trainer.accelerator.wait_for_everyone()

# =================================================================================================================
# Run bookkeeping: the probe batch, checkpoints, resume checks, log truncation, reporters
# =================================================================================================================

def _inv_probe_batch(cfg: Config, tc: TrainConfig, tokenizer, domain_names: list[str]) -> list[dict] | None:
    """`inv_probe_batch` held-out records per domain (the probe set's first ones, never trained on), tokenised, for
    the MMD logged every `inv_probe_every` steps; None when off or when the recipe's domains have no sources."""
    if not tc.inv_probe_every or not all(d.source for d in cfg.domains.values()) or not cfg.domains:
        return None
    from .probe import probe_examples, probe_records

    try:
        records, _ = probe_records(cfg, size=tc.inv_probe_batch)
    except UserError as e:
        logger.warning("no held-out probe batch for the invariance log: %s", e)
        return None
    records = {d: r for d, r in records.items() if d in domain_names}
    if len(records) < 2:
        return None
    return probe_examples(records, tokenizer, tc.max_length, domain_names)


_RESUME_NEUTRAL = ("max_steps", "epochs", "save_steps", "logging_steps")


def _last_valid_checkpoint(ckpt_dir: Path, is_main: bool) -> Path | None:
    """Newest checkpoint-N whose trainer_state.json exists (written last by the Trainer); torn ones are removed."""
    if not ckpt_dir.is_dir():
        return None
    cands = []
    for d in ckpt_dir.iterdir():
        if d.is_dir() and d.name.startswith("checkpoint-") and d.name.split("-")[-1].isdigit():
            cands.append((int(d.name.split("-")[-1]), d))
    for _, d in sorted(cands, reverse=True):
        if (d / "trainer_state.json").exists():
            return d
        if is_main:
            logger.warning("removing incomplete checkpoint %s (interrupted while saving)", d)
            shutil.rmtree(d, ignore_errors=True)
    return None


def _is_complete(folder: Path) -> bool:
    return (folder / COMPLETE_MARKER).exists()


def _run_config(cfg: Config, method_name: str, tc: TrainConfig, model_desc: str, distilled_path: str,
                weights: dict[str, float]) -> dict:
    return {"model": cfg.model, "model_path": model_desc, "method_name": method_name, "seed": cfg.seed,
            "distilled_path": str(distilled_path), "domain_weights": weights, "train": dataclasses.asdict(tc)}


def _check_resumable(out: Path, new: dict) -> None:
    f = out / "config.yaml"
    if not f.exists():
        return
    try:
        old = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        return

    def core(d):
        d = json.loads(json.dumps(d, default=str))
        for k in _RESUME_NEUTRAL:
            (d.get("train") or {}).pop(k, None)
        d.pop("distilled_path", None)
        d.pop("model_path", None)
        if isinstance(d.get("train"), dict):
            d["train"] = model_settings(d["train"])
        return d

    if core(old) != core(new):
        raise UserError(f"{out} holds checkpoints of a run with a different configuration; resuming would mix "
                        "them. Use a fresh output directory or delete this one", file=str(f))


def _truncate_log(path: Path, max_step: int) -> None:
    if not path.exists():
        return
    rows = [r for r in read_complete_rows(path) if int(r.get("step", 0)) <= max_step]
    write_jsonl(path, rows)


def _checkpointing_kwargs(enabled: bool) -> dict:
    """Activation checkpointing (non-reentrant: no input-grad hook needed for PEFT). transformers >= 5.2x renamed
    `gradient_checkpointing` to `activation_checkpointing`; pass whichever this version has, and only when on."""
    if not enabled:
        return {}
    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    if "activation_checkpointing" in names:
        return {"activation_checkpointing": True, "activation_checkpointing_kwargs": {"use_reentrant": False}}
    return {"gradient_checkpointing": True, "gradient_checkpointing_kwargs": {"use_reentrant": False}}


_REPORTER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "mlflow": ("mlflow",),
                      "trackio": ("trackio",)}


def _report_to(setting: str | list[str] = "auto") -> list[str] | str:
    """`train.report_to` -> TrainingArguments.report_to. auto: tensorboard when installed, else none. A named
    reporter whose package is missing is a UserError now, not a crash at the first logging step."""
    import importlib.util

    def installed(name):
        return any(importlib.util.find_spec(m) for m in _REPORTER_PACKAGES[name])

    if setting == "auto":
        return ["tensorboard"] if installed("tensorboard") else "none"
    if setting == "none":
        return "none"
    names = [setting] if isinstance(setting, str) else list(setting)
    for n in names:
        if not installed(n):
            raise UserError(f"'{n}' needs its package: pip install {_REPORTER_PACKAGES[n][0]}",
                            field="train.report_to")
    return names
