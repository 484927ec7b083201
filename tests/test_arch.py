"""arch.py: the one place that knows a model's internals (decoder stack, layers, embeddings, LM head)."""
from __future__ import annotations

import pytest
import torch

from crossdistill import arch
from crossdistill.errors import UserError


def test_llama_layers_hooks_and_head(tiny):
    model, tok = tiny
    stack = arch.backbone(arch.causal_lm(model))
    assert len(arch.decoder_layers(stack)) == 2 and arch.embeddings(stack) is stack.embed_tokens
    head, weight, bias = arch.lm_head(model)
    assert head is model.lm_head and weight.shape[0] == len(tok) and bias is None and arch.head_is_plain(head)
    assert arch.logit_transform(model) == (1.0, None)
    # None = the middle layer, -1 = the final normed state; the hook captures exactly hidden_states[i]
    assert arch.resolve_layer(stack, None) == 1 and arch.resolve_layer(stack, -1) == 2
    ids = torch.tensor([[3, 4, 5, 6]])
    with torch.no_grad():
        hs = stack(input_ids=ids, output_hidden_states=True).hidden_states
        for li in (0, 1):
            captured: dict = {}
            handle = arch.capture_layer(stack, li, captured)
            stack(input_ids=ids)
            handle.remove()
            assert torch.equal(captured["h"], hs[li])
    assert arch.capture_layer(stack, -1, {}) is None
    with pytest.raises(UserError, match="inv_layer 5 is out of range"):
        arch.resolve_layer(stack, 5)


def test_peft_wrapper_is_seen_through():
    from peft import LoraConfig, get_peft_model

    from crossdistill.models import build_tiny_model

    model, _ = build_tiny_model()
    peft = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    assert arch.causal_lm(peft) is model and arch.backbone(arch.causal_lm(peft)) is model.model


def test_unsupported_architecture_is_a_clear_error():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=32, n_positions=16, n_embd=16, n_layer=1, n_head=2))
    stack = arch.backbone(gpt2)          # GPT-2 keeps its blocks in `.h` and its embedding in `.wte`
    with pytest.raises(UserError, match=r"'GPT2Model' is not supported: crossdistill needs its decoder layers as "
                                        r"`\.layers`") as e:
        arch.resolve_layer(stack, None)
    assert e.value.field == "model"
    with pytest.raises(UserError, match="token embedding as `.embed_tokens`"):
        arch.embeddings(stack)
