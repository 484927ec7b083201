"""Batched text generation for the distill and eval stages.

``generate`` / ``generate_iter`` run their own decode loop with *continuous batching*: up to ``batch_size`` rows
decode together; when rows finish (EOS, a stop string or ``max_new_tokens``) they leave the batch and new prompts are
prefilled in a small wave and join it, so the batch stays full and no step is spent on rows that are already done.

What makes it fast on a CPU (each measured on SmolLM2-135M, bf16, 1-2 cores; see benchmarks/bench_generate.py)
--------------------------------------------------------------------------------------------------------------
* Paged KV cache (:class:`_PagedStore`): each row's keys/values live in pages of 64 tokens; rows carry no padding,
  and admitting or dropping a row copies nothing of the others. Decoding here is bound by memory traffic and the KV
  cache is most of it; a left-padded batch reads every row at the longest row's length.
* Shared prefix: prompts that start with the same tokens (chat template, system prompt, instruction) have that
  prefix prefilled once and stored once; each wave prefills only its suffixes, and the decode attention reads the
  prefix once per step for all rows instead of once per row.
* Decode attention as batched GEMMs over the pages (:func:`_decode_attention`, registered as an HF attention
  function for the duration of a step): torch's CPU SDPA kernel is several times slower for one query token, and a
  strided cache makes ``bmm`` copy it.
* Linear layers run decode steps on weights packed once by oneDNN (:class:`_PackedLinears`): ``F.linear`` re-packs
  the weight on every call, which at a few rows costs as much as the math.
* Prompts are admitted longest first and prefilled in chunks of similar length (little padding).

Where it runs (:func:`_engine_route`): the engine is kept only where benchmarks/bench_generate.py measured it at
least 1.3x the best library path in the same run. On a CPU it is (2026-12-03, 32 GSM8K rewrite prompts, 160 new
tokens, batch 16: 1.80x length-sorted padded ``model.generate`` on SmolLM2-135M, 1.79x on Qwen2.5-Coder-0.5B;
transformers' ``generate_batch`` was slower than both). Everywhere else -- a GPU (no measured figure: the GPU
benchmark script measures it), a model whose attention the paged path cannot serve, a model with non-full attention
layers (sliding windows, linear attention) -- generation goes to length-sorted static batches of ``model.generate``
(:func:`_generate_static_hf`); at scale on GPUs, ``backend="vllm"``.

Greedy decoding gives the same tokens as one-at-a-time ``model.generate`` (checked in fp32 by the tests; in bf16 the
batch composition changes the rounding, so a near-tie can flip and the texts part from there on, as they do for HF's
own batched generate). Sampling uses one ``torch.Generator`` per prompt, seeded from ``(cfg.seed, prompt text,
occurrence)``, so a prompt's sample does not depend on the other prompts in the call, their order or
``batch_size`` (up to the same batch numerics). The library path samples with one seeded generator per call.
"""

from __future__ import annotations

import hashlib
import heapq
import inspect
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = [
    "Generation",
    "SamplingConfig",
    "generate",
    "generate_iter",
    "render_chat",
]


# --------------------------------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class SamplingConfig:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 -> greedy
    top_p: float = 1.0
    top_k: int = 0
    batch_size: int = 32  # max concurrent rows
    seed: int = 0
    stop: list[str] = field(default_factory=list)  # extra stop strings (besides EOS)

    @property
    def greedy(self) -> bool:
        return self.temperature is None or self.temperature <= 0.0


@dataclass
class Generation:
    text: str  # decoded completion (without the prompt, without EOS / special tokens)
    n_tokens: int  # generated tokens (an EOS token that ended the row counts)
    finished: bool  # True if EOS/stop reached, False if cut by max_new_tokens (= truncated)


# counters of the latest HF-backend run (decode steps, batch occupancy, prefill and merge time), for benchmarks
last_stats: dict[str, float] = {}

_FALLBACK_USER = "User: "
_FALLBACK_ASSISTANT = "Assistant:"


def render_chat(
    tokenizer,
    messages: list[dict] | str,
    *,
    system: str | None = None,
    prefill: str = "",
) -> str:
    """Render a conversation as the prompt text for generation.

    ``messages`` is a list of ``{"role", "content"}`` dicts or a single user turn as a string. ``system`` (if given)
    is put first as a system turn (replacing one already in ``messages``). The tokenizer's chat template is applied with
    ``add_generation_prompt=True`` and ``prefill`` is appended to the opened assistant turn (e.g. "Let's solve step by
    step:"); the model continues from there. Tokenizers without a chat template get a plain
    ``"System: ...\\n\\nUser: ...\\nAssistant:"`` transcript.
    """
    if isinstance(messages, str):
        msgs = [{"role": "user", "content": messages}]
    else:
        msgs = [dict(m) for m in messages]
    if system is not None:
        msgs = [m for m in msgs if m.get("role") != "system"]
        msgs.insert(0, {"role": "system", "content": system})

    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        if not isinstance(text, str):  # some versions return a list for a single conversation
            text = text[0]
        return text + prefill

    parts = []
    for m in msgs:
        role, content = m.get("role", "user"), m.get("content", "")
        if role == "system":
            parts.append(f"System: {content}\n\n")
        elif role == "assistant":
            parts.append(f"{_FALLBACK_ASSISTANT} {content}\n")
        else:
            parts.append(f"{_FALLBACK_USER}{content}\n")
    text = "".join(parts) + _FALLBACK_ASSISTANT
    if prefill:
        text += " " + prefill.lstrip(" ")
    return text


def generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    cfg: SamplingConfig | Sequence[SamplingConfig] | None = None,
    *,
    progress: str | None = None,
    backend: str = "hf",
) -> list[Generation]:
    """Generate one completion per prompt; outputs are in input order.

    ``prompts`` are already-rendered texts (see :func:`render_chat`). ``cfg`` is one SamplingConfig for every prompt,
    or a list with one per prompt (token budget, stop strings, temperature and seed may differ by row; the engine
    decodes them in one continuously batched run, the other paths run one call per distinct setting; ``batch_size``
    is the first config's). ``progress`` names a tqdm bar (tokens/s in the
    postfix). ``backend="vllm"`` (or a ``vllm_backend.VllmModel`` as ``model``) hands the work to the model's vLLM
    engine (``model`` must then be a path or hub name, or that handle).
    """
    prompts = list(prompts)
    if backend == "vllm" or _is_vllm_model(model):
        out: list[Generation | None] = [None] * len(prompts)
        for idx, c in _config_groups(prompts, cfg):
            for i, g in zip(idx, _generate_vllm(model, tokenizer, [prompts[i] for i in idx], c, progress=progress),
                            strict=True):
                out[i] = g
        return out  # type: ignore[return-value]
    out = [None] * len(prompts)
    for i, g in generate_iter(model, tokenizer, prompts, cfg, progress=progress, backend=backend):
        out[i] = g
    assert all(g is not None for g in out)
    return out  # type: ignore[return-value]


def generate_iter(
    model,
    tokenizer,
    prompts: Sequence[str],
    cfg: SamplingConfig | Sequence[SamplingConfig] | None = None,
    *,
    progress: str | None = None,
    backend: str = "hf",
) -> Iterator[tuple[int, Generation]]:
    """Yield ``(index into prompts, Generation)`` as rows finish (completion order, not input order).

    Lets a caller append each result to disk as soon as it exists and resume later with the prompts still missing.
    """
    prompts = list(prompts)
    cfgs = _row_configs(prompts, cfg)
    if backend == "vllm" or _is_vllm_model(model):
        for idx, c in _config_groups(prompts, cfg):
            gens = _generate_vllm(model, tokenizer, [prompts[i] for i in idx], c, progress=progress)
            yield from zip(idx, gens, strict=True)
        return
    if backend != "hf":
        raise ValueError(f"unknown generation backend {backend!r} (expected 'hf' or 'vllm')")
    if isinstance(model, str):
        model = _load_hf_model(model)
    if not prompts:
        return
    live = [i for i, c in enumerate(cfgs) if c.max_new_tokens > 0]
    for i in range(len(prompts)):
        if cfgs[i].max_new_tokens <= 0:
            yield i, Generation("", 0, False)
    if not live:
        return
    if len(live) < len(prompts):   # the rows with a budget, in their own run
        for j, g in generate_iter(model, tokenizer, [prompts[i] for i in live], [cfgs[i] for i in live],
                                  progress=progress, backend=backend):
            yield live[j], g
        return

    was_training = bool(getattr(model, "training", False))
    model.eval()
    bar = _Progress(progress, len(prompts))
    try:
        engine = None
        if _engine_route(model) == "engine":
            try:
                engine = _Engine(model, tokenizer, prompts, cfgs)
            except _PagedUnsupported:   # the paged decode path cannot serve this model's attention
                engine = None
        last_stats.clear()
        if engine is not None:
            last_stats.update(engine.stats)
            engine.stats = last_stats
            while not engine.done:
                for i, g in engine.step():
                    bar.update(g.n_tokens)
                    yield i, g
                bar.tick(engine.tokens_generated)
        else:
            last_stats.update(route="library", paged=0)
            for idx, c in _config_groups(prompts, cfgs):
                for j, g in _generate_static_hf(model, tokenizer, [prompts[i] for i in idx], c):
                    bar.update(g.n_tokens)
                    yield idx[j], g
    finally:
        bar.close()
        if was_training:
            model.train()


# --------------------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------------------


def _is_vllm_model(model) -> bool:
    from .vllm_backend import VllmModel

    return isinstance(model, VllmModel)


class _Progress:
    def __init__(self, desc: str | None, total: int):
        self.bar = None
        self.t0 = time.perf_counter()
        self.tokens_done = 0
        self.last = 0.0
        if desc:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="prompt", dynamic_ncols=True)

    def update(self, n_tokens: int) -> None:
        self.tokens_done += n_tokens
        if self.bar is not None:
            self.bar.update(1)

    def tick(self, tokens_generated: int) -> None:
        if self.bar is None:
            return
        now = time.perf_counter()
        if now - self.last >= 1.0:
            self.last = now
            self.bar.set_postfix_str(f"{tokens_generated / max(now - self.t0, 1e-9):.1f} tok/s", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _load_hf_model(name: str):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(name, dtype="auto")


def _model_device(model) -> torch.device:
    dev = getattr(model, "device", None)
    if isinstance(dev, torch.device):
        return dev
    return next(model.parameters()).device


def _text_config(model):
    cfg = getattr(model, "config", None)
    if cfg is None:
        return None
    get = getattr(cfg, "get_text_config", None)
    return get(decoder=True) if get else cfg


def _cache_kwarg(model) -> str:
    """Name of the KV-cache argument of the model's forward: ``cache`` (transformers >= 5.2x) or ``past_key_values``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # unwrap a PeftModel
    try:
        params = inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def _supports_engine(model) -> bool:
    """True when every decoder layer is plain full attention (what the engine's KV stores implement)."""
    cfg = _text_config(model)
    if cfg is None or not getattr(cfg, "num_hidden_layers", None):
        return False
    if getattr(cfg, "is_encoder_decoder", False):
        return False
    layer_types = getattr(cfg, "layer_types", None)
    if layer_types is not None:
        return all(t == "full_attention" for t in layer_types)
    if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True):
        return False
    return True


def _engine_route(model) -> str:
    """'engine' (ours) or 'library' (length-sorted batched ``model.generate``). Ours only on CPUs, where it measured
    >= 1.3x the best library path (see the module docstring); on other devices no measured figure says it wins."""
    if not _supports_engine(model) or _model_device(model).type != "cpu":
        return "library"
    return "engine"


def _eos_ids(model, tokenizer) -> set[int]:
    ids: set[int] = set()

    def add(x):
        if x is None:
            return
        if isinstance(x, (list, tuple, set)):
            for y in x:
                add(y)
        else:
            ids.add(int(x))

    add(getattr(tokenizer, "eos_token_id", None))
    gc = getattr(model, "generation_config", None)
    if gc is not None:
        add(getattr(gc, "eos_token_id", None))
    return ids


def _pad_id(model, tokenizer) -> int:
    for x in (getattr(tokenizer, "pad_token_id", None), getattr(tokenizer, "eos_token_id", None)):
        if x is not None:
            return int(x)
    return 0


def _tokenize(tokenizer, prompts: Sequence[str]) -> list[list[int]]:
    """Token ids as ``tokenizer(prompt)`` gives them, without doubling a BOS that the template already wrote."""
    bos = getattr(tokenizer, "bos_token", None)
    out = []
    for p in prompts:
        add_special = not (bos and p.startswith(bos))
        ids = tokenizer(p, add_special_tokens=add_special)["input_ids"]
        if not ids:
            fallback = getattr(tokenizer, "bos_token_id", None)
            if fallback is None:
                fallback = getattr(tokenizer, "eos_token_id", None)
            if fallback is None:
                raise ValueError("empty prompt and the tokenizer has neither a BOS nor an EOS token")
            ids = [int(fallback)]
        out.append(list(ids))
    return out


def _row_configs(prompts: list[str], cfg) -> list[SamplingConfig]:
    """One SamplingConfig per prompt (a single config applies to all)."""
    if cfg is None or isinstance(cfg, SamplingConfig):
        return [cfg or SamplingConfig()] * len(prompts)
    cfgs = list(cfg)
    if len(cfgs) != len(prompts):
        raise ValueError(f"{len(cfgs)} sampling configs for {len(prompts)} prompts (give one, or one per prompt)")
    return cfgs


def _config_groups(prompts: list[str], cfg) -> list[tuple[list[int], SamplingConfig]]:
    """(prompt indices, config) per distinct config, in order of first use: the paths that take one config per
    call run one call per group."""
    groups: dict[str, tuple[list[int], SamplingConfig]] = {}
    for i, c in enumerate(_row_configs(prompts, cfg)):
        groups.setdefault(repr(c), ([], c))[0].append(i)
    return list(groups.values())


def _sampling_key(cfg: SamplingConfig) -> tuple:
    """The settings that decide how a row's next token is picked from its logits."""
    return (True,) if cfg.greedy else (False, float(cfg.temperature), cfg.top_p, cfg.top_k)


def _row_seed(seed: int, prompt: str, occurrence: int) -> int:
    h = hashlib.blake2b(f"{seed}\x00{occurrence}\x00{prompt}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


def _filter_logits(logits: torch.Tensor, cfg: SamplingConfig) -> torch.Tensor:
    """Temperature, top-k and top-p (nucleus) on fp32 logits ``[rows, vocab]``; removed entries become -inf."""
    logits = logits / float(cfg.temperature)
    vocab = logits.shape[-1]
    if cfg.top_k and 0 < cfg.top_k < vocab:
        kth = torch.topk(logits, cfg.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p is not None and cfg.top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        before = torch.cumsum(probs, dim=-1) - probs  # mass strictly above each token
        remove_sorted = before > cfg.top_p
        remove_sorted[:, 0] = False  # always keep the most likely token
        remove = torch.zeros_like(remove_sorted).scatter(-1, sorted_idx, remove_sorted)
        logits = logits.masked_fill(remove, float("-inf"))
    return logits


def _pick_tokens(
    logits: torch.Tensor, cfg: SamplingConfig, generators: Sequence[torch.Generator | None] | None
) -> torch.Tensor:
    """Next token per row: argmax (greedy) or inverse-CDF sampling with one uniform draw per row's own generator."""
    if cfg.greedy:
        return logits.float().argmax(dim=-1)  # argmax on bf16 is ~5x slower than the cast + fp32 argmax on a CPU
    probs = torch.softmax(_filter_logits(logits.float(), cfg), dim=-1)
    cdf = torch.cumsum(probs, dim=-1)
    assert generators is not None
    # rows without a generator (finished rows still in the batch) take no draw
    u = torch.tensor(
        [float(torch.rand(1, generator=g)) if g is not None else 0.5 for g in generators], dtype=cdf.dtype
    ).to(cdf.device)
    u = (u * cdf[:, -1]).unsqueeze(-1)
    idx = torch.searchsorted(cdf, u, right=True).squeeze(-1)
    return idx.clamp_(max=cdf.shape[-1] - 1)


class _RowState:
    """Bookkeeping for one prompt while it decodes."""

    __slots__ = ("index", "tokens", "generator", "text")

    def __init__(self, index: int, generator: torch.Generator | None):
        self.index = index
        self.tokens: list[int] = []
        self.generator = generator
        self.text: str | None = None  # set when a stop string cut the text


class _Finisher:
    """EOS / stop-string / length checks and the final decode, shared by both HF paths."""

    def __init__(self, tokenizer, cfg: SamplingConfig, eos: set[int]):
        self.tok = tokenizer
        self.cfg = cfg
        self.eos = eos
        self.stops = [s for s in (cfg.stop or []) if s]
        # tokens to decode when looking for a stop string that the newest token may have completed
        self.tail = max((len(s) for s in self.stops), default=0) + 8

    def check(self, row: _RowState) -> bool | None:
        """After a token was appended: True = finished (EOS/stop), False = truncated, None = keep going."""
        last = row.tokens[-1]
        if last in self.eos:
            return True
        if self.stops:
            tail = self.tok.decode(row.tokens[-self.tail :], skip_special_tokens=True)
            if any(s in tail for s in self.stops):
                full = self.tok.decode(row.tokens, skip_special_tokens=True)
                cut = min((full.find(s) for s in self.stops if s in full), default=-1)
                if cut >= 0:
                    row.text = full[:cut]
                    return True
        if len(row.tokens) >= self.cfg.max_new_tokens:
            return False
        return None

    def result(self, row: _RowState, finished: bool) -> Generation:
        if row.text is not None:
            text = row.text
        else:
            toks = row.tokens
            if toks and toks[-1] in self.eos:
                toks = toks[:-1]
            text = self.tok.decode(toks, skip_special_tokens=True)
        return Generation(text=text, n_tokens=len(row.tokens), finished=finished)


# --------------------------------------------------------------------------------------------------------------------
# KV stores for the running batch
# --------------------------------------------------------------------------------------------------------------------
#
# The engine keeps the running batch in a paged store that takes rows in (a prefilled wave) and lets rows go
# (finished), keeping row order: kept rows first, then the new ones.
#
# * _PagedStore: vLLM-style pages of `block` tokens, one pool per layer (K^T pages [n, kv_heads, head_dim,
#   block], V pages [n, kv_heads, block, head_dim]), a page table shared by all layers, and the prompts' common
#   prefix stored once. Rows carry no padding, letting a row go or taking one in copies nothing of the others, and
#   :func:`_decode_attention` reads the pages in place with batched GEMMs. Decoding on a CPU is bound by memory
#   traffic, and the KV cache is most of it: a left-padded batch reads every row at the longest row's length and the
#   shared prefix once per row.


class _PagedUnsupported(RuntimeError):
    """The model's attention asked for something the paged decode path does not do (softcap, sinks, windows...)."""


def _make_layer_classes():
    from transformers.cache_utils import DynamicLayer

    class _PagedLayer(DynamicLayer):
        """One layer's view of a :class:`_PagedStore`: ``update`` writes each row's new K/V column into its page and
        returns the whole page pools, tagged so that :func:`_decode_attention` finds the page table."""

        def __init__(self, store: _PagedStore, index: int):
            super().__init__()
            self.store, self.index = store, index
            self.is_initialized = True

        def lazy_initialization(self, key_states, value_states) -> None:
            pass

        def update(self, key_states, value_states, *args, **kwargs):
            s, li = self.store, self.index
            if key_states.shape[-2] != 1:
                raise _PagedUnsupported("the paged KV store only decodes one token per row per step")
            kp, vp = s.k[li], s.v[li]
            kp[s.wp, :, :, s.wo] = key_states[:, :, 0, :]
            vp[s.wp, :, s.wo, :] = value_states[:, :, 0, :]
            kp._cd_paged = (s, li)
            self.keys, self.values = kp, vp
            return kp, vp

        # the attention function masks by itself: HF sees a 1-token cache, so it builds no mask at all
        def get_seq_length(self) -> int:
            return 0

        def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
            return query_length, 0

        def get_max_length(self) -> int:
            return -1

    return _PagedLayer


_LAYER_CLASSES = None


def _layer_classes():
    global _LAYER_CLASSES
    if _LAYER_CLASSES is None:
        _LAYER_CLASSES = _make_layer_classes()
    return _LAYER_CLASSES


@dataclass
class _Wave:
    """A prefilled group of prompts, as the stores take it in."""

    kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer [b, kv_heads, cols, head_dim], rows right-aligned
    mask: torch.Tensor  # [b, cols] 1 = real token (the shared prefix included)
    own: list[int]  # tokens of each row after the shared prefix (its last `own` columns)


class _PagedStore:
    block = 64

    def __init__(self, n_layers: int, like: torch.Tensor, heads: int, head_dim: int, prefix_kv):
        from transformers.cache_utils import Cache

        bs = self.block
        self.heads, self.head_dim = heads, head_dim
        self.k = [like.new_zeros((0, heads, head_dim, bs)) for _ in range(n_layers)]
        self.v = [like.new_zeros((0, heads, bs, head_dim)) for _ in range(n_layers)]
        self.cap = 0
        self.owner: list[int] = []  # page -> batch row (-1: free)
        self.fill: list[int] = []  # page -> tokens written
        self.free: list[int] = []  # heap of free page ids (lowest first keeps the used range short)
        self.n_used = 0  # pages [0, n_used) take part in the attention
        self.row_pages: list[list[int]] = []
        # the shared prefix once, as K^T [heads, head_dim, P] and V [heads, P, head_dim] per layer
        self.pk = self.pv = None
        if prefix_kv:
            self.pk = [k[0].transpose(-1, -2).contiguous() for k, _ in prefix_kv]
            self.pv = [v[0].contiguous() for _, v in prefix_kv]
        PagedLayer = _layer_classes()
        self.cache = Cache(layers=[PagedLayer(self, li) for li in range(n_layers)])
        self.device = like.device
        self._cols = torch.arange(bs, device=like.device)
        # per-step tensors, set by begin_step()
        self.wp = self.wo = self.owner_t = self.bias = None
        self.n_rows = 0

    # ------------------------------------------------------------ pages
    def _grow(self, need: int) -> None:
        extra = max(need, 16, self.cap // 2)
        for li in range(len(self.k)):
            self.k[li] = torch.cat([self.k[li], self.k[li].new_zeros((extra, *self.k[li].shape[1:]))])
            self.v[li] = torch.cat([self.v[li], self.v[li].new_zeros((extra, *self.v[li].shape[1:]))])
        for p in range(self.cap, self.cap + extra):
            heapq.heappush(self.free, p)
        self.owner += [-1] * extra
        self.fill += [0] * extra
        self.cap += extra

    def _alloc(self, row: int) -> int:
        if not self.free:
            self._grow(1)
        p = heapq.heappop(self.free)
        self.owner[p], self.fill[p] = row, 0
        self.n_used = max(self.n_used, p + 1)
        return p

    def _release(self, p: int) -> None:
        self.owner[p], self.fill[p] = -1, 0
        heapq.heappush(self.free, p)

    def _defragment(self) -> None:
        """Move the highest pages into the free slots below so that [0, n_used) holds only live pages."""
        live = sorted(p for pages in self.row_pages for p in pages)
        n = len(live)
        holes = [p for p in range(n) if self.owner[p] < 0]
        movers = [p for p in live if p >= n]
        if movers:
            src = torch.tensor(movers, device=self.device)
            dst = torch.tensor(holes, device=self.device)
            for li in range(len(self.k)):
                self.k[li][dst] = self.k[li][src]
                self.v[li][dst] = self.v[li][src]
            moved = dict(zip(movers, holes))
            for d, sp in zip(holes, movers):
                self.owner[d], self.fill[d] = self.owner[sp], self.fill[sp]
                self.owner[sp], self.fill[sp] = -1, 0
            self.row_pages = [[moved.get(p, p) for p in pages] for pages in self.row_pages]
        self.free = list(range(n, self.cap))
        heapq.heapify(self.free)
        self.n_used = n

    # ------------------------------------------------------------ rows
    def update(self, keep: list[int], waves: list[_Wave]) -> None:
        """Keep rows ``keep`` (in that order), then append the rows of ``waves``."""
        keep_set = set(keep)
        for r, pages in enumerate(self.row_pages):
            if r not in keep_set:
                for p in pages:
                    self._release(p)
        self.row_pages = [self.row_pages[r] for r in keep]
        for i, pages in enumerate(self.row_pages):
            for p in pages:
                self.owner[p] = i
        for w in waves:
            self._add_wave(w)
        used = sum(len(p) for p in self.row_pages)
        if self.n_used - used > max(8, self.n_used // 4):
            self._defragment()
        self.n_rows = len(self.row_pages)

    def _add_wave(self, w: _Wave) -> None:
        bs = self.block
        b = len(w.own)
        cols = w.kv[0][0].shape[2]
        n_pages = [-(-n // bs) for n in w.own]
        maxp = max(n_pages)
        width = maxp * bs
        dst, sel = [], []
        for r, (n, np_) in enumerate(zip(w.own, n_pages)):
            row = len(self.row_pages)
            pages = [self._alloc(row) for _ in range(np_)]
            for j, p in enumerate(pages):
                self.fill[p] = min(bs, n - j * bs)
            self.row_pages.append(pages)
            dst += pages
            sel += [r * maxp + j for j in range(np_)]
        # each row's own tokens (its last `own` columns), left-aligned in a [b, heads, width, head_dim] staging tensor
        src = torch.zeros((b, width), dtype=torch.long)
        for r, n in enumerate(w.own):
            src[r, :n] = torch.arange(cols - n, cols)
        src = src.to(self.device)
        dst_t = torch.tensor(dst, device=self.device)
        sel_t = torch.tensor(sel, device=self.device)
        h, d = self.heads, self.head_dim
        gather_idx = src.view(b, 1, width, 1).expand(b, h, width, d)
        for li, (k, v) in enumerate(w.kv):
            ks = torch.gather(k, 2, gather_idx).view(b, h, maxp, bs, d)
            vs = torch.gather(v, 2, gather_idx).view(b, h, maxp, bs, d)
            self.k[li][dst_t] = ks.permute(0, 2, 1, 4, 3).reshape(b * maxp, h, d, bs).index_select(0, sel_t)
            self.v[li][dst_t] = vs.permute(0, 2, 1, 3, 4).reshape(b * maxp, h, bs, d).index_select(0, sel_t)

    def begin_step(self) -> None:
        """Reserve each row's next column (a new page when its last is full); build the page owner/bias tensors."""
        bs = self.block
        wp, wo = [], []
        for r, pages in enumerate(self.row_pages):
            if not pages or self.fill[pages[-1]] >= bs:
                pages.append(self._alloc(r))
            p = pages[-1]
            wp.append(p)
            wo.append(self.fill[p])
            self.fill[p] += 1
        n = self.n_used
        dev = self.device
        self.wp = torch.tensor(wp, device=dev)
        self.wo = torch.tensor(wo, device=dev)
        self.owner_t = torch.tensor([max(o, 0) for o in self.owner[:n]], device=dev)
        fill_t = torch.tensor(self.fill[:n], device=dev)
        bias = torch.zeros((n, bs), dtype=torch.float32, device=dev)
        bias.masked_fill_(self._cols[None, :] >= fill_t[:, None], float("-inf"))
        self.bias = bias.view(n, 1, 1, bs)
        self.n_rows = len(self.row_pages)


# --------------------------------------------------------------------------------------------------------------------
# decode attention for CPUs
# --------------------------------------------------------------------------------------------------------------------

_ATTN_NAME = "crossdistill_decode"
_attn_registered = False


def _decode_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """One-token decode attention over the paged KV store (:class:`_PagedStore`); everything else goes to SDPA.

    Per layer: the query of each page's row times the page's K^T (one batched GEMM over pages x kv heads, GQA by
    reshaping the query), the shared prefix as one more GEMM for all rows at once, a softmax across each row's
    pages and prefix (max and sum reduced per row with scatter_reduce/index_add), then the same for V. Scores come
    out of the GEMM in the model dtype and probabilities go into it in the model dtype, as in HF's eager attention;
    the softmax and the accumulation run in fp32. Raises :class:`_PagedUnsupported` for anything it does not do,
    which the engine's probe turns into the library path (length-sorted batched `model.generate`).
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    paged = getattr(key, "_cd_paged", None)
    if paged is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    if (
        query.shape[2] != 1
        or (dropout and module.training)
        or kwargs.get("softcap") is not None
        or kwargs.get("s_aux") is not None
        or kwargs.get("sliding_window") is not None
        or kwargs.get("position_bias") is not None
        or kwargs.get("output_attentions")
    ):
        raise _PagedUnsupported("attention options the paged decode path does not implement")
    store, li = paged
    n = store.n_used
    rows, hq, _, d = query.shape
    h = key.shape[1]
    if hq % h:
        raise _PagedUnsupported("query heads are not a multiple of the KV heads")
    g = hq // h
    bs = key.shape[-1]
    dtype = value.dtype
    scale = float(scaling) if scaling is not None else d**-0.5
    owner = store.owner_t
    q = query.reshape(rows, h, g, d)

    scores = torch.bmm(q.index_select(0, owner).view(n * h, g, d), key[:n].view(n * h, d, bs))
    scores = scores.view(n, h, g, bs).float().mul_(scale).add_(store.bias)
    page_max = scores.amax(dim=-1)  # [n, h, g]
    row_max = torch.full((rows, h, g), float("-inf"), device=q.device).scatter_reduce_(
        0, owner.view(n, 1, 1).expand(n, h, g), page_max, "amax"
    )
    if store.pk is not None:
        qh = q.permute(1, 0, 2, 3).reshape(h, rows * g, d)
        pscores = torch.bmm(qh, store.pk[li]).float().mul_(scale).view(h, rows, g, -1)
        row_max = torch.maximum(row_max, pscores.amax(dim=-1).permute(1, 0, 2))
    e = torch.exp(scores.sub_(row_max.index_select(0, owner).unsqueeze(-1)))
    denom = torch.zeros((rows, h, g), device=q.device).index_add_(0, owner, e.sum(dim=-1))
    part = torch.bmm(e.to(dtype).view(n * h, g, bs), value[:n].view(n * h, bs, d))
    out = torch.zeros((rows, h, g, d), device=q.device).index_add_(0, owner, part.view(n, h, g, d).float())
    if store.pk is not None:
        pe = torch.exp(pscores.sub_(row_max.permute(1, 0, 2).unsqueeze(-1)))
        denom += pe.sum(dim=-1).permute(1, 0, 2)
        ppart = torch.bmm(pe.to(dtype).view(h, rows * g, -1), store.pv[li]).view(h, rows, g, d)
        out += ppart.permute(1, 0, 2, 3)
    out = out.div_(denom.unsqueeze(-1)).to(dtype)
    return out.view(rows, 1, hq, d), None


def _register_attention() -> None:
    global _attn_registered
    if _attn_registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(_ATTN_NAME, _decode_attention)
    AttentionMaskInterface.register(_ATTN_NAME, sdpa_mask)
    _attn_registered = True


class _AttentionSwitch:
    """Point the model's attention at :func:`_decode_attention` for the duration of a ``with`` block.

    Only configs using ``sdpa`` or ``eager`` are switched (for anything but the paged decode the function is SDPA);
    flash attention on a GPU, flex or custom kernels are left alone.
    """

    def __init__(self, model, enabled: bool):
        self.configs = []
        if not enabled:
            return
        seen = set()
        for m in model.modules():
            c = getattr(m, "config", None)
            if c is None or id(c) in seen:
                continue
            seen.add(id(c))
            if getattr(c, "_attn_implementation", None) in ("sdpa", "eager"):
                self.configs.append((c, c._attn_implementation))
        if self.configs:
            _register_attention()

    @staticmethod
    def _set(config, value: str) -> None:
        # the property setter of recent versions also rewrites every sub-config: set this config only
        if isinstance(getattr(type(config), "_attn_implementation", None), property) and hasattr(
            config, "_attn_implementation_internal"
        ):
            config._attn_implementation_internal = value
        else:
            config._attn_implementation = value

    def __enter__(self):
        for c, _ in self.configs:
            self._set(c, _ATTN_NAME)
        return self

    def __exit__(self, *exc):
        for c, old in self.configs:
            self._set(c, old)
        return False


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return 8 << 30


_PACK_LINEARS = True  # tests switch these to compare the paths


class _PackedLinears:
    """While active, bf16 ``nn.Linear`` layers on a CPU run small-batch inputs (decode steps) against weights that
    oneDNN has packed once, ahead of time.

    ``F.linear`` re-packs the weight on every call, which costs as much as the math when only a few rows go through:
    decode steps got 10-25% faster (more at lower occupancy), prefill (many rows) keeps ``F.linear``. The weights
    are packed per generation call, so weights updated between calls (training) are always seen. Uses
    ``torch.ops.mkldnn._reorder_linear_weight`` / ``_linear_pointwise`` (what inductor's CPU backend calls); when
    they are missing or disagree with ``F.linear`` on a probe, this is a no-op.
    """

    max_rows = 128

    def __init__(self, model, enabled: bool, rows_hint: int):
        self.items: list[tuple[torch.nn.Module, Any]] = []
        if not enabled:
            return
        try:
            ops = torch.ops.mkldnn
            reorder, run = ops._reorder_linear_weight, ops._linear_pointwise
        except (AttributeError, RuntimeError):
            return
        linears = [
            m for m in model.modules()
            if type(m) is torch.nn.Linear and m.weight.dtype == torch.bfloat16 and m.weight.device.type == "cpu"
            and "forward" not in m.__dict__  # someone (accelerate's hooks, ...) already wraps this forward
        ]
        # the packed copies double the weights' memory while generating: only when that stays small
        if sum(m.weight.numel() * m.weight.element_size() for m in linears) > 0.2 * _physical_memory():
            return
        checked = False
        for m in linears:
            w = m.weight
            try:
                with torch.inference_mode():
                    packed = reorder(w.detach(), int(rows_hint))
                    if not checked:
                        x = torch.linspace(-2, 2, 3 * w.shape[1]).view(3, w.shape[1]).to(w.dtype)  # no RNG use
                        b = m.bias.detach() if m.bias is not None else None
                        if not torch.equal(run(x, packed, b, "none", [], ""), torch.nn.functional.linear(x, w, b)):
                            self.items = []
                            return
                        checked = True
            except RuntimeError:
                self.items = []
                return
            self.items.append((m, self._forward(m, packed, run)))

    @classmethod
    def _forward(cls, m: torch.nn.Module, packed: torch.Tensor, run):
        linear = torch.nn.functional.linear

        def forward(x: torch.Tensor) -> torch.Tensor:
            if x.dtype == packed.dtype and x.numel() <= cls.max_rows * x.shape[-1]:
                return run(x, packed, m.bias, "none", [], "")
            return linear(x, m.weight, m.bias)

        return forward

    def __enter__(self):
        for m, fwd in self.items:
            m.forward = fwd
        return self

    def __exit__(self, *exc):
        for m, _ in self.items:
            m.__dict__.pop("forward", None)
        return False


# --------------------------------------------------------------------------------------------------------------------
# continuous-batching engine
# --------------------------------------------------------------------------------------------------------------------


class _Engine:
    """Continuous batching. ``step()`` admits a wave of prompts when enough rows are free, then decodes one token."""

    # a prompt prefix shared by all prompts is prefilled once when it is at least this long
    min_shared_prefix = 8
    # tokens (rows x padded length) per prefill forward
    prefill_tokens = 4096

    def __init__(self, model, tokenizer, prompts: Sequence[str], cfg: SamplingConfig | Sequence[SamplingConfig]):
        from transformers.cache_utils import DynamicCache

        self._DynamicCache = DynamicCache
        self.model = model
        self.tok = tokenizer
        prompts = list(prompts)
        self.cfgs = _row_configs(prompts, cfg)   # one per prompt: budget, stops, sampling and seed may differ
        self.cfg = self.cfgs[0] if self.cfgs else SamplingConfig()
        self.device = _model_device(model)
        self.batch_size = max(1, int(self.cfg.batch_size))
        self.n_layers = int(_text_config(model).num_hidden_layers)
        self.pad_id = _pad_id(model, tokenizer)
        eos = _eos_ids(model, tokenizer)
        fins: dict[str, _Finisher] = {}
        self.fins = [fins.setdefault(repr(c), _Finisher(tokenizer, c, eos)) for c in self.cfgs]
        self.pick_keys = [_sampling_key(c) for c in self.cfgs]
        self.one_picker = len(set(self.pick_keys)) <= 1
        self.logits_to_keep_ok = True
        self.cache_kwarg = _cache_kwarg(model)
        # paged KV + the GEMM-based decode attention (see _PagedStore, _decode_attention)
        self.attention = _AttentionSwitch(model, enabled=True)
        if not self.attention.configs:
            raise _PagedUnsupported("the model's attention implementation is neither sdpa nor eager")
        self.packed = _PackedLinears(
            model, enabled=self.device.type == "cpu" and _PACK_LINEARS, rows_hint=self.batch_size
        )

        self.ids = _tokenize(tokenizer, prompts)
        # a sampled row's generator is seeded from (its seed, its prompt, the how-manieth such row it is), so a row
        # draws the same tokens whatever else shares the run
        self.generators: list[torch.Generator | None] = [None] * len(prompts)
        seen: dict[tuple[str, str], int] = {}
        for i, (p, c) in enumerate(zip(prompts, self.cfgs, strict=True)):
            if c.greedy:
                continue
            k = seen.get((repr(c), p), 0)
            seen[(repr(c), p)] = k + 1
            g = torch.Generator(device="cpu")
            g.manual_seed(_row_seed(int(c.seed), p, k))
            self.generators[i] = g

        # longest first: waves of similar lengths, and the long ones do not end up alone at the tail
        self.pending = sorted(range(len(prompts)), key=lambda i: len(self.ids[i]))  # pop() = longest
        self.n_total = len(prompts)
        self.n_done = 0
        self.tokens_generated = 0
        # admit a wave once this many rows are free (or the batch is empty)
        self.admit_min = max(1, self.batch_size // 8)

        # where the time goes (decode steps, batch occupancy, prefill/merge time); cheap to keep
        self.stats = dict(steps=0, rows=0, decode_s=0.0, admit_s=0.0, prefill_s=0.0, prefill_tokens=0,
                          shared_prefix=0, paged=0, packed_linears=len(self.packed.items))
        self.prefix_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.prefix_len = 0
        self._prepare_shared_prefix()
        if not self._paged_probe():
            raise _PagedUnsupported("the paged decode path does not reproduce this model's attention")
        self.stats["paged"] = 1
        self.stats["route"] = "engine"

        self.store: _PagedStore | None = None
        self.rows: list[_RowState | None] = []  # None = a row that finished this step (dropped at the next)
        self.pos: torch.Tensor | None = None  # [rows] next position id
        self.next_tok: torch.Tensor | None = None  # [rows] token to feed next
        self._finished: list[tuple[int, Generation]] = []  # rows finished during the current step()

    # ---------------------------------------------------------------- state
    @property
    def done(self) -> bool:
        return self.n_done >= self.n_total

    @property
    def n_alive(self) -> int:
        return sum(r is not None for r in self.rows)

    # ---------------------------------------------------------------- model call
    def _forward(self, input_ids, attention_mask, position_ids, cache) -> torch.Tensor:
        kwargs: dict[str, Any] = dict(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
        )
        kwargs[self.cache_kwarg] = cache
        if self.logits_to_keep_ok:
            try:
                out = self.model(**kwargs, logits_to_keep=1)
            except TypeError as e:
                if "logits_to_keep" not in str(e):
                    raise
                self.logits_to_keep_ok = False
                out = self.model(**kwargs)
        else:
            out = self.model(**kwargs)
        return out.logits[:, -1, :]

    def _new_store(self, like: torch.Tensor):
        heads, head_dim = like.shape[1], like.shape[3]
        return _PagedStore(self.n_layers, like, heads, head_dim, self.prefix_kv)

    # ---------------------------------------------------------------- shared prefix
    def _prepare_shared_prefix(self) -> None:
        if self.n_total < 2:
            return
        first = self.ids[0]
        lcp = len(first)
        for ids in self.ids[1:]:
            n = min(lcp, len(ids))
            k = 0
            while k < n and ids[k] == first[k]:
                k += 1
            lcp = k
            if lcp < self.min_shared_prefix:
                return
        # every prompt keeps at least one token of its own: its last position gives the first logits
        lcp = min(lcp, min(len(x) for x in self.ids) - 1)
        if lcp < self.min_shared_prefix:
            return
        with torch.inference_mode(), self.attention:
            cache = self._DynamicCache()
            ids = torch.tensor([first[:lcp]], device=self.device)
            self._forward(ids, torch.ones_like(ids), torch.arange(lcp, device=self.device)[None], cache)
            self.prefix_kv = [(layer.keys, layer.values) for layer in cache.layers]
        self.prefix_len = lcp
        self.stats["shared_prefix"] = lcp

    def _paged_probe(self) -> bool:
        """Decode two tokens of the first prompt through the paged path and through a plain DynamicCache; use the
        paged path only if it runs and agrees (a model whose attention needs softcap, sinks, ... fails here)."""
        # any tokens do: a prefix-sharing probe needs >= 1 own token to prefill and 1 to decode
        ids = list(max(self.ids, key=len)[: self.prefix_len + 3])
        while len(ids) < self.prefix_len + 2:
            ids.append(ids[-1])
        try:
            with torch.inference_mode(), self.attention:
                wave, logits = self._prefill_ids([ids[:-1]])
                store = self._new_store(wave.kv[0][1])
                store.update([], [wave])
                store.begin_step()
                pos = torch.tensor([[len(ids) - 1]], device=self.device)
                got = self._forward(torch.tensor([[ids[-1]]], device=self.device), None, pos, store.cache)
                ref_cache = self._DynamicCache()
                t = torch.tensor([ids], device=self.device)
                ref = self._forward(t, torch.ones_like(t), torch.arange(len(ids), device=self.device)[None], ref_cache)
        except _PagedUnsupported:
            return False
        cos = torch.nn.functional.cosine_similarity(got.float(), ref.float(), dim=-1)
        return bool((cos > 0.995).all())

    # ---------------------------------------------------------------- prefill
    def _prefill_ids(self, prompts: list[list[int]]) -> tuple[_Wave, torch.Tensor]:
        """Prefill token lists (left-padded; the shared prefix comes from its own KV); returns the wave and the
        last-position logits."""
        P = self.prefix_len
        suffixes = [p[P:] for p in prompts]
        Ls = max(len(s) for s in suffixes)
        b = len(prompts)
        dev = self.device
        inp = torch.full((b, Ls), self.pad_id, dtype=torch.long)
        smask = torch.zeros((b, Ls), dtype=torch.long)
        spos = torch.zeros((b, Ls), dtype=torch.long)
        for r, s in enumerate(suffixes):
            n = len(s)
            inp[r, Ls - n :] = torch.tensor(s, dtype=torch.long)
            smask[r, Ls - n :] = 1
            spos[r, Ls - n :] = torch.arange(P, P + n)
        cache = self._DynamicCache()
        if P:
            for li, (k, v) in enumerate(self.prefix_kv):
                cache.update(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1), li)
            mask = torch.cat([torch.ones((b, P), dtype=torch.long), smask], dim=1)
        else:
            mask = smask
        mask = mask.to(dev)
        t0 = time.perf_counter()
        logits = self._forward(inp.to(dev), mask, spos.to(dev), cache)
        self.stats["prefill_s"] += time.perf_counter() - t0
        self.stats["prefill_tokens"] += b * Ls
        kv = [(layer.keys, layer.values) for layer in cache.layers]
        return _Wave(kv=kv, mask=mask, own=[len(s) for s in suffixes]), logits

    # ---------------------------------------------------------------- admit / drop rows
    def _update_rows(self, new_idxs: list[int]) -> None:
        """Drop finished rows, prefill prompts ``new_idxs`` (in chunks of ~prefill_tokens) and append them."""
        keep = [r for r, row in enumerate(self.rows) if row is not None]
        chunks: list[list[int]] = []
        cur: list[int] = []
        real = 0
        for i in new_idxs:  # longest first: a chunk is padded to its first prompt
            n = len(self.ids[i]) - self.prefix_len
            padded = max([len(self.ids[j]) - self.prefix_len for j in cur] + [n]) * (len(cur) + 1)
            if cur and (padded > self.prefill_tokens or (padded > 1.1 * (real + n) and real >= 512)):
                chunks.append(cur)
                cur, real = [], 0
            cur.append(i)
            real += n
        if cur:
            chunks.append(cur)
        waves, first_logits, new_rows = [], [], []
        for chunk in chunks:
            wave, logits = self._prefill_ids([self.ids[i] for i in chunk])
            waves.append(wave)
            first_logits.append(logits)
            new_rows.extend(_RowState(i, self.generators[i]) for i in chunk)
        if self.store is None:
            if not waves:
                return
            self.store = self._new_store(waves[0].kv[0][1])
        self.store.update(keep, waves)

        kt = torch.tensor(keep, dtype=torch.long, device=self.device)
        poss = [self.pos.index_select(0, kt)] if keep else []
        toks = [self.next_tok.index_select(0, kt)] if keep else []
        poss += [torch.tensor([len(self.ids[i]) for i in chunk], device=self.device) for chunk in chunks]
        self.rows = [self.rows[r] for r in keep] + new_rows
        self.pos = torch.cat(poss) if poss else torch.zeros(0, dtype=torch.long, device=self.device)
        if new_rows:
            # first generated token of each new row comes from its prefill logits
            new_tok = self._pick(torch.cat(first_logits, dim=0), new_rows)
            toks.append(new_tok)
        self.next_tok = torch.cat(toks) if toks else torch.zeros(0, dtype=torch.long, device=self.device)
        if new_rows:
            base = len(keep)
            for j, t in enumerate(new_tok.tolist()):
                self._append(base + j, t)

    # ---------------------------------------------------------------- per-token bookkeeping
    def _pick(self, logits: torch.Tensor, rows: list[_RowState | None]) -> torch.Tensor:
        """Next token of each row (finished rows still in the batch take a greedy one that is never used), by the
        row's own sampling settings: one pick over the batch when all rows share them, else one per setting."""
        if self.one_picker:
            cfg = self.cfg
            gens = None if cfg.greedy else [r.generator if r is not None else None for r in rows]
            return _pick_tokens(logits, cfg, gens)
        keys = [self.pick_keys[r.index] if r is not None else (True,) for r in rows]
        out = torch.empty(len(rows), dtype=torch.long, device=logits.device)
        for key in dict.fromkeys(keys):
            sel = [j for j, k in enumerate(keys) if k == key]
            cfg = next((self.cfgs[rows[j].index] for j in sel if rows[j] is not None), SamplingConfig())
            gens = None if cfg.greedy else [rows[j].generator if rows[j] is not None else None for j in sel]
            st = torch.tensor(sel, dtype=torch.long, device=logits.device)
            out[st] = _pick_tokens(logits.index_select(0, st), cfg, gens)
        return out

    def _append(self, r: int, t: int) -> None:
        row = self.rows[r]
        row.tokens.append(t)
        self.tokens_generated += 1
        fin = self.fins[row.index]
        status = fin.check(row)
        if status is not None:
            self._finished.append((row.index, fin.result(row, status)))
            self.rows[r] = None
            self.n_done += 1

    # ---------------------------------------------------------------- one scheduler step
    def step(self) -> list[tuple[int, Generation]]:
        with torch.inference_mode(), self.attention, self.packed:
            return self._step()

    def _step(self) -> list[tuple[int, Generation]]:
        self._finished = []
        st = self.stats
        t0 = time.perf_counter()
        alive = self.n_alive
        dead = len(self.rows) - alive
        free = self.batch_size - alive
        if self.pending and (alive == 0 or free >= min(self.admit_min, len(self.pending))):
            wave = [self.pending.pop() for _ in range(min(free, len(self.pending)))]
            self._update_rows(wave)
        elif dead:   # dropping rows from the pages copies nothing: do it at once
            self._update_rows([])
        st["admit_s"] += time.perf_counter() - t0
        if self.n_alive == 0:
            return self._finished
        if self.n_alive < len(self.rows):  # rows that ended on their first token
            self._update_rows([])

        t0 = time.perf_counter()
        st["steps"] += 1
        st["rows"] += len(self.rows)
        mask = self.store.begin_step()
        logits = self._forward(self.next_tok[:, None], mask, self.pos[:, None], self.store.cache)
        self.pos = self.pos + 1
        nxt = self._pick(logits, self.rows)
        self.next_tok = nxt
        for r, t in enumerate(nxt.tolist()):
            if self.rows[r] is not None:
                self._append(r, t)
        st["decode_s"] += time.perf_counter() - t0
        return self._finished


# --------------------------------------------------------------------------------------------------------------------
# the library path: length-sorted static batches through model.generate
# --------------------------------------------------------------------------------------------------------------------


def left_pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token lists -> (input_ids, attention_mask), right-aligned in one [rows, longest] batch (decoder-only
    batching for ``model.generate``)."""
    L = max(len(r) for r in rows)
    inp = torch.full((len(rows), L), pad, dtype=torch.long)
    att = torch.zeros((len(rows), L), dtype=torch.long)
    for i, r in enumerate(rows):
        inp[i, L - len(r) :] = torch.tensor(r, dtype=torch.long)
        att[i, L - len(r) :] = 1
    return inp, att


def _generate_static_hf(model, tokenizer, prompts: list[str], cfg: SamplingConfig):
    from transformers import GenerationConfig

    eos = _eos_ids(model, tokenizer)
    fin = _Finisher(tokenizer, cfg, eos)
    pad = _pad_id(model, tokenizer)
    ids = _tokenize(tokenizer, prompts)
    order = sorted(range(len(prompts)), key=lambda i: -len(ids[i]))
    dev = _model_device(model)
    bs = max(1, int(cfg.batch_size))
    gc_kwargs: dict[str, Any] = dict(
        max_new_tokens=cfg.max_new_tokens,
        eos_token_id=sorted(eos) or None,
        pad_token_id=pad,
        do_sample=not cfg.greedy,
    )
    if not cfg.greedy:
        gc_kwargs.update(temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k or None)
    if fin.stops:
        gc_kwargs["stop_strings"] = fin.stops
    gen_cfg = GenerationConfig(**gc_kwargs)
    if not cfg.greedy:
        torch.manual_seed(int(cfg.seed))
    for b0 in range(0, len(order), bs):
        chunk = order[b0 : b0 + bs]
        inp, att = left_pad([ids[i] for i in chunk], pad)
        L = inp.shape[1]
        with torch.inference_mode():
            kw = dict(input_ids=inp.to(dev), attention_mask=att.to(dev), generation_config=gen_cfg)
            if fin.stops:
                kw["tokenizer"] = tokenizer
            out = model.generate(**kw)
        for r, i in enumerate(chunk):
            row = _RowState(i, None)
            status = None
            for t in out[r, L:].tolist():
                row.tokens.append(int(t))
                status = fin.check(row)
                if status is not None:
                    break
            yield i, fin.result(row, bool(status))


# --------------------------------------------------------------------------------------------------------------------
# vLLM backend (crossdistill.vllm_backend: one engine per model, LoRAs as requests, freed before training)
# --------------------------------------------------------------------------------------------------------------------


def _generate_vllm(model, tokenizer, prompts: list[str], cfg: SamplingConfig, *, progress: str | None):
    from .vllm_backend import VllmModel
    from .vllm_backend import generate as vllm_generate

    if isinstance(model, VllmModel):
        return model.generate(prompts, cfg, progress)
    if not isinstance(model, (str, bytes)) and not hasattr(model, "__fspath__"):
        raise TypeError("backend='vllm' takes the model as a path or hub name (or a vllm_backend.VllmModel), not a "
                        "loaded torch module")
    return vllm_generate(str(model), prompts, cfg, progress=progress)
