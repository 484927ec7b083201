"""What crossdistill assumes about a model's architecture, in one place.

The train stage (fused LM head, invariance hooks, seed cache) and the probe reach inside a transformers CausalLM.
They do it only through these functions, so a new architecture is supported (or refused with a clear error) here:

* `causal_lm(model)`: the transformers CausalLM inside a PEFT wrapper (or the model itself);
* `backbone(causal)`: the decoder stack under `causal.base_model_prefix` (Llama: `.model`), called with
  input_ids / attention_mask and returning `last_hidden_state` (final norm applied);
* `lm_head(causal)`: the output embedding (`get_output_embeddings()`), its weight and bias;
* `logit_transform(causal)`: the config's logit scale and final soft-capping (Cohere, Gemma 2);
* `decoder_layers(backbone)` / `embeddings(backbone)`: the `.layers` list and the `.embed_tokens` module whose
  outputs are HF's `hidden_states[i]` (i >= 1) and `hidden_states[0]`; `capture_layer` hooks them.

Llama-style decoders (Llama, Qwen2/3, Mistral, Gemma, Phi3, SmolLM, OLMo2, ...) have these attributes; a model without
them gets a UserError naming what is missing.
"""
from __future__ import annotations

import torch.nn as nn

from .errors import UserError


def causal_lm(model: nn.Module) -> nn.Module:
    """The transformers CausalLM inside a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") and hasattr(model, "peft_config") else model


def _unsupported(module: nn.Module, missing: str) -> UserError:
    return UserError(f"model architecture '{type(module).__name__}' is not supported: crossdistill needs {missing} "
                     "(a Llama-style decoder: `.layers`, `.embed_tokens`, a final norm, `get_output_embeddings()`; "
                     "see crossdistill/arch.py)", field="model")


def backbone(causal: nn.Module) -> nn.Module:
    """The decoder stack that returns `last_hidden_state` (the input of the LM head)."""
    prefix = getattr(causal, "base_model_prefix", None)
    inner = getattr(causal, prefix, None) if prefix else None
    if not isinstance(inner, nn.Module):
        raise _unsupported(causal, f"its decoder stack as attribute `base_model_prefix` ('{prefix}')")
    return inner


def lm_head(causal: nn.Module) -> tuple[nn.Module, "nn.Parameter", "nn.Parameter | None"]:
    """(head module, weight (V, H), bias or None)."""
    head = causal.get_output_embeddings() if hasattr(causal, "get_output_embeddings") else None
    if head is None or getattr(head, "weight", None) is None:
        raise _unsupported(causal, "an output embedding (`get_output_embeddings()`) with a weight")
    return head, head.weight, getattr(head, "bias", None)


def head_is_plain(head: nn.Module) -> bool:
    """A bare nn.Linear (projected by the fused loss); otherwise (LoRA on lm_head) it is called as a module."""
    return type(head) is nn.Linear


def logit_transform(causal: nn.Module) -> tuple[float, float | None]:
    """(logit scale, final logit soft-cap or None) that the model applies after its LM head."""
    c = causal.config.get_text_config() if hasattr(causal.config, "get_text_config") else causal.config
    scale = getattr(c, "logit_scale", None)
    return (1.0 if scale is None else float(scale)), getattr(c, "final_logit_softcapping", None)


def decoder_layers(stack: nn.Module) -> nn.ModuleList:
    """The decoder layers, in order: layer i's output is HF's `hidden_states[i + 1]`."""
    layers = getattr(stack, "layers", None)
    if not isinstance(layers, (nn.ModuleList, list, tuple)) or len(layers) == 0:
        raise _unsupported(stack, "its decoder layers as `.layers`")
    return layers


def embeddings(stack: nn.Module) -> nn.Module:
    """The token embedding, whose output is HF's `hidden_states[0]`."""
    emb = getattr(stack, "embed_tokens", None)
    if not isinstance(emb, nn.Module):
        raise _unsupported(stack, "its token embedding as `.embed_tokens`")
    return emb


def resolve_layer(stack: nn.Module, inv_layer: int | None) -> int:
    """The `hidden_states` index pooled for L_inv and the probe: 0 = embeddings, i = output of decoder layer i,
    L = the final normed state (`last_hidden_state`); negative counts from L (-1 = L); None = the middle layer."""
    n_layers = len(decoder_layers(stack))
    if inv_layer is None:
        return n_layers // 2
    if not -(n_layers + 1) <= inv_layer <= n_layers:
        raise UserError(f"inv_layer {inv_layer} is out of range for a model with {n_layers} layers "
                        f"(-{n_layers + 1}..{n_layers})", field="train.inv_layer")
    return inv_layer % (n_layers + 1)


def capture_layer(stack: nn.Module, inv_layer: int | None, captured: dict):
    """Forward hook that stores the chosen layer's output in captured["h"] (the same tensor as
    `hidden_states[i]` of output_hidden_states); None for the final state, which the forward returns anyway."""
    li = resolve_layer(stack, inv_layer)
    layers = decoder_layers(stack)
    if li == len(layers):
        return None
    mod = embeddings(stack) if li == 0 else layers[li - 1]
    return mod.register_forward_hook(lambda m, i, o: captured.__setitem__("h", o[0] if isinstance(o, tuple) else o))
