"""Tests for crossdistill.generation on tiny random models (CPU, fp32, a few seconds)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from crossdistill import generation as gen_mod
from crossdistill.generation import Generation, SamplingConfig, generate, generate_iter, render_chat

SMOL_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

QUESTIONS = [
    "What is 2+2?",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "Hi",
    "Write a haiku about the sea and the wind and the long grey evening.",
    "Weng earns $12 an hour for babysitting. Yesterday she did 50 minutes. How much did she earn?",
    "x",
    "Betty is saving money for a new wallet which costs $100.",
]


# ---------------------------------------------------------------------------------------------------------------------
# fixtures: a byte-level tokenizer and tiny random causal LMs built in code (no hub access)
# ---------------------------------------------------------------------------------------------------------------------


def _make_tokenizer(chat_template: str | None = SMOL_TEMPLATE):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    specials = ["<|im_start|>", "<|im_end|>", "<pad>"]
    for s in specials:
        vocab[s] = len(vocab)
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.add_special_tokens(specials)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<pad>"
    )
    if chat_template is not None:
        tok.chat_template = chat_template
    return tok


def _make_model(family: str, tok, eos_id: int | None = None):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    common = dict(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        initializer_range=0.2,  # spread the logits: no near-ties between batched and single runs
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id if eos_id is None else eos_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    if family == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common))
    else:
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    model.eval()
    if eos_id is not None:
        model.generation_config.eos_token_id = eos_id
    return model


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models gain nothing from threads, and OpenMP threads on a shared machine can slow them 10x."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tok():
    return _make_tokenizer()


@pytest.fixture(scope="module")
def prompts(tok):
    return [render_chat(tok, q) for q in QUESTIONS]


def _frequent_token(model, tok, prompts, n_new=24) -> int:
    """A token that greedy decoding emits early for most prompts: used as EOS so rows end at different steps."""
    counts: dict[int, int] = {}
    for p in prompts:
        ids = tok(p, return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=n_new, do_sample=False, eos_token_id=None, pad_token_id=0)
        for t in set(out[0, ids.input_ids.shape[1] : ids.input_ids.shape[1] + 12].tolist()):
            counts[t] = counts.get(t, 0) + 1
    return max(counts, key=lambda t: (counts[t], -t))


def _hf_one_at_a_time(model, tok, prompts, max_new_tokens, eos):
    """Reference: plain ``model.generate`` per prompt, greedy; returns (token ids incl. EOS, finished).

    Rows end at the model's EOS or at the tokenizer's (``<|im_end|>``), like ours."""
    stops = [eos, tok.eos_token_id]
    out = []
    for p in prompts:
        ids = tok(p, return_tensors="pt")
        with torch.inference_mode():
            o = model.generate(
                **ids, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stops, pad_token_id=tok.pad_token_id
            )
        new = o[0, ids.input_ids.shape[1] :].tolist()
        finished = bool(new) and new[-1] in stops
        out.append((new, finished))
    return out


def _as_text(tok, ids, eos):
    if ids and ids[-1] in (eos, tok.eos_token_id):
        ids = ids[:-1]
    return tok.decode(ids, skip_special_tokens=True)


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def model_with_eos(request, tok, prompts):
    base = _make_model(request.param, tok)
    eos = _frequent_token(base, tok, prompts)
    return _make_model(request.param, tok, eos_id=eos), eos


# ---------------------------------------------------------------------------------------------------------------------
# greedy equivalence
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_batched_greedy_equals_one_at_a_time(model_with_eos, tok, prompts, batch_size):
    model, eos = model_with_eos
    max_new = 20
    ref = _hf_one_at_a_time(model, tok, prompts, max_new, eos)
    # rows must end at different steps, some by EOS, some by length, for the refill path to be exercised
    assert any(f for _, f in ref) and not all(f for _, f in ref)
    assert len({len(ids) for ids, _ in ref}) > 2

    outs = generate(model, tok, prompts, SamplingConfig(max_new_tokens=max_new, batch_size=batch_size))
    assert len(outs) == len(prompts)
    for (ids, finished), g in zip(ref, outs):
        assert isinstance(g, Generation)
        assert g.text == _as_text(tok, ids, eos)
        assert g.n_tokens == len(ids)
        assert g.finished == finished


def test_cpu_uses_paged_store_and_restores_the_model(model_with_eos, tok, prompts):
    model, _ = model_with_eos
    generate(model, tok, prompts, SamplingConfig(max_new_tokens=8, batch_size=4))
    assert gen_mod.last_stats["paged"] == 1
    assert gen_mod.last_stats["shared_prefix"] > 8
    assert model.config._attn_implementation == "sdpa"
    assert not any("forward" in m.__dict__ for m in model.modules())


def test_small_pages_match(model_with_eos, tok, prompts, monkeypatch):
    """Pages of 4 tokens (page growth, freeing, defragmentation) give the same greedy tokens as one-at-a-time HF
    generate."""
    model, eos = model_with_eos
    monkeypatch.setattr(gen_mod._PagedStore, "block", 4)
    many = prompts + [render_chat(tok, q[::-1] + " " + q) for q in QUESTIONS]
    ref = _hf_one_at_a_time(model, tok, many, 20, eos)
    outs = generate(model, tok, many, SamplingConfig(max_new_tokens=20, batch_size=3))
    assert gen_mod.last_stats["paged"] == 1 and gen_mod.last_stats["route"] == "engine"
    for (ids, finished), g in zip(ref, outs):
        assert g.text == _as_text(tok, ids, eos)
        assert g.finished == finished


def test_engine_route_follows_the_measured_rule(model_with_eos, tok, prompts, monkeypatch):
    """Our engine only on CPUs (where bench_generate measured >= 1.3x the best library path); any other device,
    and a model the paged path cannot serve, go to batched model.generate with the same greedy outputs."""
    model, _ = model_with_eos
    assert gen_mod._engine_route(model) == "engine"
    monkeypatch.setattr(gen_mod, "_model_device", lambda m: torch.device("cuda"))
    assert gen_mod._engine_route(model) == "library"
    monkeypatch.undo()
    cfg = SamplingConfig(max_new_tokens=14, batch_size=3)
    fast = generate(model, tok, prompts, cfg)
    assert gen_mod.last_stats["route"] == "engine"
    monkeypatch.setattr(gen_mod._Engine, "_paged_probe", lambda self: False)   # e.g. softcapped attention
    lib = generate(model, tok, prompts, cfg)
    assert gen_mod.last_stats["route"] == "library"
    assert lib == fast
    assert model.config._attn_implementation == "sdpa"      # the failed engine left the model as it was


def test_packed_linears_bf16(tok, prompts, monkeypatch):
    """bf16 decode steps on prepacked weights give exactly what F.linear gives."""
    model = _make_model("llama", tok).to(torch.bfloat16)
    cfg = SamplingConfig(max_new_tokens=16, batch_size=4)
    packed = generate(model, tok, prompts, cfg)
    n_packed = gen_mod.last_stats["packed_linears"]
    monkeypatch.setattr(gen_mod, "_PACK_LINEARS", False)
    plain = generate(model, tok, prompts, cfg)
    assert gen_mod.last_stats["packed_linears"] == 0
    assert packed == plain
    if n_packed == 0:
        pytest.skip("this torch build has no oneDNN linear packing")


def test_greedy_without_shared_prefix(model_with_eos, tok):
    """Raw prompts with no common token prefix take the plain left-padded prefill path."""
    model, eos = model_with_eos
    raw = ["abc", "Zebra crossing at noon", "1 2 3 4 5 6 7 8 9 10 11 12", "?"]
    ref = _hf_one_at_a_time(model, tok, raw, 16, eos)
    outs = generate(model, tok, raw, SamplingConfig(max_new_tokens=16, batch_size=2))
    for (ids, finished), g in zip(ref, outs):
        assert g.text == _as_text(tok, ids, eos)
        assert g.finished == finished


def test_outputs_in_input_order_and_iter_yields_each_once(model_with_eos, tok, prompts):
    model, _ = model_with_eos
    cfg = SamplingConfig(max_new_tokens=12, batch_size=2)
    single = [generate(model, tok, [p], cfg)[0] for p in prompts]
    batched = generate(model, tok, prompts, cfg)
    assert batched == single

    seen = {}
    for i, g in generate_iter(model, tok, prompts, cfg):
        assert i not in seen
        seen[i] = g
    assert sorted(seen) == list(range(len(prompts)))
    assert [seen[i] for i in range(len(prompts))] == batched


def test_one_run_serves_rows_with_their_own_budgets_stops_and_seeds(model_with_eos, tok, prompts):
    """A mixed run (greedy and sampled rows, different budgets, stops and seeds) gives each row what a run with only
    its own setting gives: the distill stage decodes a round of every domain together."""
    model, _ = model_with_eos
    ps = (prompts * 2)[:6]
    greedy = SamplingConfig(max_new_tokens=7, batch_size=4)
    hot = SamplingConfig(max_new_tokens=11, temperature=0.9, seed=5, batch_size=4, stop=["e"])
    hot2 = SamplingConfig(max_new_tokens=5, temperature=0.6, top_k=20, seed=9, batch_size=4)
    cfgs = [greedy, hot, hot2, greedy, hot, hot2]
    mixed = generate(model, tok, ps, cfgs)
    for c in (greedy, hot, hot2):
        idx = [i for i, x in enumerate(cfgs) if x is c]
        alone = generate(model, tok, [ps[i] for i in idx], c)
        assert [mixed[i] for i in idx] == alone
        assert all(mixed[i].n_tokens <= c.max_new_tokens for i in idx)
    # a row stops at EOS / its own stop string, or at its own budget (never at another row's)
    assert all(g.finished or g.n_tokens == c.max_new_tokens for g, c in zip(mixed, cfgs))
    assert [g for _, g in sorted(generate_iter(model, tok, ps, cfgs))] == mixed
    with pytest.raises(ValueError, match="one per prompt"):
        generate(model, tok, ps, cfgs[:2])


def test_duplicate_prompts_and_single_prompt(model_with_eos, tok, prompts):
    model, _ = model_with_eos
    cfg = SamplingConfig(max_new_tokens=10, batch_size=4)
    outs = generate(model, tok, [prompts[0]] * 3 + [prompts[1]], cfg)
    assert outs[0] == outs[1] == outs[2]
    assert generate(model, tok, [prompts[1]], cfg)[0] == outs[3]


# ---------------------------------------------------------------------------------------------------------------------
# lengths, stop strings
# ---------------------------------------------------------------------------------------------------------------------


def test_max_new_tokens_and_truncation_flag(tok, prompts):
    model = _make_model("llama", tok, eos_id=len(tok) + 10)  # an EOS the model can never emit
    for n in (1, 7):
        outs = generate(model, tok, prompts, SamplingConfig(max_new_tokens=n, batch_size=4))
        for g in outs:
            assert g.n_tokens == n
            assert g.finished is False
    none = generate(model, tok, prompts[:2], SamplingConfig(max_new_tokens=0))
    assert none == [Generation("", 0, False)] * 2
    assert generate(model, tok, [], SamplingConfig()) == []


def test_stop_strings(model_with_eos, tok, prompts):
    model, _ = model_with_eos
    plain = generate(model, tok, prompts, SamplingConfig(max_new_tokens=30, batch_size=3))
    # a stop string (printable ASCII, so no half-decoded UTF-8) from the middle of the longest output
    j = max(range(len(plain)), key=lambda i: len(plain[i].text))
    text = plain[j].text
    stop = next(
        text[k : k + 2] for k in range(2, len(text) - 1) if text[k : k + 2].isascii() and text[k : k + 2].isprintable()
    )
    cut = text.find(stop)
    outs = generate(model, tok, prompts, SamplingConfig(max_new_tokens=30, batch_size=3, stop=[stop, "@@never@@"]))
    assert outs[j].text == text[:cut]
    assert outs[j].finished is True
    assert outs[j].n_tokens < plain[j].n_tokens
    for p, o in zip(plain, outs):
        if stop in p.text:
            assert o.text == p.text[: p.text.find(stop)] and o.finished
        else:
            assert o == p


# ---------------------------------------------------------------------------------------------------------------------
# sampling
# ---------------------------------------------------------------------------------------------------------------------


def test_sampling_reproducible_and_batch_invariant(model_with_eos, tok, prompts):
    model, _ = model_with_eos
    cfg = SamplingConfig(max_new_tokens=16, temperature=1.0, top_p=0.9, top_k=50, batch_size=3, seed=123)
    a = generate(model, tok, prompts, cfg)
    b = generate(model, tok, prompts, cfg)
    assert a == b
    # a prompt's sample does not depend on batch size or on the other prompts
    one_by_one = [generate(model, tok, [p], SamplingConfig(**{**cfg.__dict__, "batch_size": 1}))[0] for p in prompts]
    assert one_by_one == a
    c = generate(model, tok, prompts, SamplingConfig(**{**cfg.__dict__, "seed": 124}))
    assert c != a
    # greedy differs from sampling at temperature 1 on a random model
    assert generate(model, tok, prompts, SamplingConfig(max_new_tokens=16)) != a
    # duplicated prompts get different samples (n samples per prompt)
    dup = generate(model, tok, [prompts[1]] * 4, cfg)
    assert len({g.text for g in dup}) > 1


def test_top_k_1_is_greedy(model_with_eos, tok, prompts):
    model, _ = model_with_eos
    greedy = generate(model, tok, prompts, SamplingConfig(max_new_tokens=12, batch_size=4))
    k1 = generate(model, tok, prompts, SamplingConfig(max_new_tokens=12, batch_size=4, temperature=0.7, top_k=1))
    assert k1 == greedy


def test_filter_logits_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    out = gen_mod._filter_logits(logits, SamplingConfig(temperature=1.0, top_p=0.7))
    assert torch.isfinite(out[0, :2]).all() and torch.isinf(out[0, 2:]).all()
    out = gen_mod._filter_logits(logits, SamplingConfig(temperature=1.0, top_k=3))
    assert torch.isfinite(out[0, :3]).all() and torch.isinf(out[0, 3])


# ---------------------------------------------------------------------------------------------------------------------
# PEFT, fallback path, other backends
# ---------------------------------------------------------------------------------------------------------------------


def test_peft_lora_model(tok, prompts):
    peft = pytest.importorskip("peft")
    base = _make_model("llama", tok)
    eos = _frequent_token(base, tok, prompts)
    base = _make_model("llama", tok, eos_id=eos)
    before = generate(base, tok, prompts, SamplingConfig(max_new_tokens=12))
    torch.manual_seed(1)
    lcfg = peft.LoraConfig(
        r=4, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False
    )
    model = peft.get_peft_model(base, lcfg)
    model.train()  # generation must switch to eval and restore the mode
    ref = _hf_one_at_a_time(model, tok, prompts, 12, eos)
    model.train()
    outs = generate(model, tok, prompts, SamplingConfig(max_new_tokens=12, batch_size=3))
    assert model.training
    for (ids, finished), g in zip(ref, outs):
        assert g.text == _as_text(tok, ids, eos)
        assert g.finished == finished
    assert outs != before  # the adapter is active


def test_static_fallback_matches(model_with_eos, tok, prompts, monkeypatch):
    """Models with non-full attention layers use length-sorted model.generate batches; same greedy outputs."""
    model, _ = model_with_eos
    cfg = SamplingConfig(max_new_tokens=14, batch_size=3)
    fast = generate(model, tok, prompts, cfg)
    monkeypatch.setattr(gen_mod, "_supports_engine", lambda m: False)
    slow = generate(model, tok, prompts, cfg)
    assert slow == fast


def test_progress_bar(model_with_eos, tok, prompts, capsys):
    model, _ = model_with_eos
    outs = generate(model, tok, prompts[:3], SamplingConfig(max_new_tokens=4), progress="gen")
    assert len(outs) == 3
    assert "gen" in capsys.readouterr().err


def test_unknown_backend_and_vllm_missing(model_with_eos, tok, prompts):
    model, _ = model_with_eos
    with pytest.raises(ValueError, match="backend"):
        generate(model, tok, prompts[:1], SamplingConfig(max_new_tokens=2), backend="nope")
    if importlib.util.find_spec("vllm") is None:
        from crossdistill.errors import UserError

        with pytest.raises(UserError, match="vllm"):
            generate("some/model", tok, prompts[:1], SamplingConfig(max_new_tokens=2), backend="vllm")


def test_does_not_leak_inference_mode(model_with_eos, tok, prompts):
    model, _ = model_with_eos
    it = generate_iter(model, tok, prompts, SamplingConfig(max_new_tokens=6, batch_size=2))
    next(it)
    assert not torch.is_inference_mode_enabled()
    list(it)


# ---------------------------------------------------------------------------------------------------------------------
# render_chat
# ---------------------------------------------------------------------------------------------------------------------


def test_render_chat_template_and_prefill(tok):
    s = render_chat(tok, "What is 2+2?", prefill="Let's solve step by step:")
    assert s == (
        "<|im_start|>system\nYou are a helpful AI assistant<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\nLet's solve step by step:"
    )
    s = render_chat(tok, [{"role": "user", "content": "hi"}], system="Be brief.")
    assert s == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    msgs = [
        {"role": "system", "content": "old"},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]
    s = render_chat(tok, msgs, system="new")
    assert "old" not in s and s.startswith("<|im_start|>system\nnew<|im_end|>")
    assert s.endswith("<|im_start|>user\nc<|im_end|>\n<|im_start|>assistant\n")
    assert msgs[0]["content"] == "old"  # input not mutated


def test_render_chat_without_template():
    tok = _make_tokenizer(chat_template=None)
    assert render_chat(tok, "hi") == "User: hi\nAssistant:"
    assert render_chat(tok, "hi", system="S", prefill="Sure") == "System: S\n\nUser: hi\nAssistant: Sure"
