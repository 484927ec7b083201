"""Random-init model shapes and an offline tokenizer for the benchmarks (no download, no cache needed).

A model of a real shape with random weights times the same as the trained one (same matmuls, same KV cache), so a
machine without network access (the GPU box) can still measure speed and memory. `tiny-llama` is for smoke tests.
"""

from __future__ import annotations

import re
from collections import Counter

RANDOM_INIT = {
    # Llama-3.2-1B shape (random weights: for timing only)
    "llama-3.2-1b": dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                         num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=131072,
                         rope_theta=500000.0, tie_word_embeddings=True, rms_norm_eps=1e-5),
    # a few MB, for smoke tests of the benchmark scripts themselves
    "tiny-llama": dict(vocab_size=2048, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                       rope_theta=10000.0, tie_word_embeddings=True, rms_norm_eps=1e-5),
}

_SPECIALS = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>"]
_WORD = re.compile(r"\w+|[^\w\s]+")   # what tokenizers' `Whitespace` pre-tokenizer splits on


def build_random_model(name: str, dtype, device: str = "cpu", *, no_eos: bool = False):
    """A LlamaForCausalLM of shape RANDOM_INIT[name], seeded, built directly on `device` when it can be.

    `no_eos`: clear the generation config's EOS ids (random weights make EOS meaningless; the generation benchmark
    wants every row to run to max_new_tokens on both sides)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(**RANDOM_INIT[name])
    torch.manual_seed(0)
    model = None
    if str(device).startswith("cuda"):
        try:   # random init of ~1.2B parameters is seconds on the CPU, nothing on the GPU
            with torch.device(device):
                model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
        except Exception:   # noqa: BLE001 - any failure: build on the CPU and move it
            torch.manual_seed(0)
            model = None
    if model is None:
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    model.to(device)
    if no_eos:
        model.generation_config.eos_token_id = None
        for c in (model.config, getattr(model.config, "get_text_config", lambda: None)()):
            if c is not None and getattr(c, "eos_token_id", None) is not None:
                c.eos_token_id = None
    return model


def build_word_tokenizer(vocab_size: int, corpus: list[str], *, chat_template: str | None = None):
    """A word-level tokenizer with exactly `vocab_size` ids, built in code.

    Words and punctuation runs (`\\w+|[^\\w\\s]+`) of `corpus`, most frequent first, get their own ids; the rest of
    the vocabulary is filler (`w123`) so that every id a random model of that vocab size can emit decodes; unknown
    words map to <unk>. A word is about one BPE token of an English text, so prompt lengths stay realistic (a
    byte-level tokenizer would make them ~4x longer). It has no EOS token on purpose: random-init generation runs
    every row to max_new_tokens. Chat specials are single tokens.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < len(_SPECIALS) + 1:
        raise ValueError(f"vocab_size {vocab_size} too small")
    counts = Counter(w for text in corpus for w in _WORD.findall(text))
    for s in _SPECIALS:
        counts.pop(s, None)
    vocab = {s: i for i, s in enumerate(_SPECIALS)}
    for w, _ in counts.most_common(vocab_size - len(vocab)):
        vocab[w] = len(vocab)
    i = 0
    while len(vocab) < vocab_size:
        filler = f"w{i}"
        if filler not in vocab:
            vocab[filler] = len(vocab)
        i += 1
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>",
                                  additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    if chat_template is not None:
        tok.chat_template = chat_template
    assert len(tok) == vocab_size, (len(tok), vocab_size)
    return tok
