"""Model families: what a decoder differs in, read from a Hugging Face model, for prge/scorer.py.

The scorer runs one decoder loop for every family (Llama's: pre-norm attention and a gated MLP,
rotary positions, grouped-query attention). A family is the handful of ways a model departs from
it, declared here and read by the loop, never a copy of the loop:

- `norm_offset`: RMSNorm scales by (offset + w): 0 for Llama, Qwen and Mistral, 1 for Gemma;
- `qk_norm`: an RMSNorm over each head's queries and keys before the rotary (Qwen3, Gemma 3);
- `sandwich_norms`: a norm after attention and around the MLP as well (Gemma 3: input, post-
  attention, pre- and post-feedforward);
- `fused`: Phi-3 fuses q, k, v into one projection and gate, up into another; `unfuse` splits
  them into Llama's layout once, when the scorer is built;
- per layer, read from the model: its attention window (`sliding_window` of sliding layers in
  Qwen2/3 and Gemma 3, of every layer in Mistral; None: full causal attention) and its rotary
  table (Gemma 3's local and global layers use different bases); the embedding scale (Gemma
  multiplies token embeddings by sqrt(hidden)); biases on projections (Qwen2's q, k, v) need
  nothing: a projection's bias is part of the frozen linear.

The activation of the gated MLP is the model's own `act_fn` (SiLU, or GELU-tanh for Gemma).
A partial rotary (a rotary table narrower than a head) rotates the head's leading dimensions only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from prge.lora_fa import AdapterError


@dataclass(frozen=True)
class Family:
    name: str  # the Hugging Face model_type
    norm_offset: float = 0.0
    qk_norm: bool = False
    sandwich_norms: bool = False
    fused: bool = False  # Phi-3's fused qkv_proj and gate_up_proj (split by `unfuse`)


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("llama"),
    Family("mistral"),
    Family("qwen2"),
    Family("qwen3", qk_norm=True),
    Family("gemma3_text", norm_offset=1.0, qk_norm=True, sandwich_norms=True),
    Family("phi3", fused=True),
)}


def _split(fused: nn.Linear, sizes: list[int]) -> list[nn.Linear]:
    """A fused linear as separate ones over consecutive output rows (the same numbers: each
    output is the same dot product, so a split projection gives the fused one's slice)."""
    out, start = [], 0
    for size in sizes:
        part = nn.Linear(fused.in_features, size, bias=fused.bias is not None,
                         dtype=fused.weight.dtype)
        with torch.no_grad():
            part.weight.copy_(fused.weight[start:start + size])
            if fused.bias is not None:
                part.bias.copy_(fused.bias[start:start + size])
        part.requires_grad_(False)
        out.append(part)
        start += size
    return out


def unfuse(layer: nn.Module, config) -> None:
    """Phi-3's layer in Llama's shape, in place: qkv_proj split into q_proj, k_proj, v_proj
    (query heads, then key heads, then value heads) and gate_up_proj into gate_proj and up_proj
    (the gate is the first half), so that every target (q ... down) names one projection and
    the loop stays one; the activation is exposed as `act_fn`."""
    attn, mlp = layer.self_attn, layer.mlp
    hd = attn.head_dim
    q, kv = config.num_attention_heads * hd, config.num_key_value_heads * hd
    attn.q_proj, attn.k_proj, attn.v_proj = _split(attn.qkv_proj, [q, kv, kv])
    del attn.qkv_proj
    half = mlp.gate_up_proj.out_features // 2
    mlp.gate_proj, mlp.up_proj = _split(mlp.gate_up_proj, [half, half])
    del mlp.gate_up_proj
    mlp.act_fn = mlp.activation_fn


class FamilyError(AdapterError):
    """A model of a family the scorer does not run, or a feature of it (one sentence)."""


def family_of(config) -> Family:
    model_type = getattr(config, "model_type", "?")
    if model_type not in FAMILIES:
        raise FamilyError(f"model type {model_type!r} is not supported yet "
                          f"(supported: {', '.join(FAMILIES)})")
    for key in ("attn_logit_softcapping", "final_logit_softcapping"):
        if getattr(config, key, None):
            raise FamilyError(f"{model_type}: {key} is not supported yet")
    return FAMILIES[model_type]


def layer_kind(config, index: int) -> str:
    """The layer's attention kind: its entry in `layer_types` (full_attention or
    sliding_attention), full_attention for models without the list."""
    kinds = getattr(config, "layer_types", None)
    return kinds[index] if kinds else "full_attention"


def attention_window(config, attn: nn.Module) -> int | None:
    """How many positions back a query sees (itself included), None for all: the attention
    module's own `sliding_window` where it has one (None on full layers), else the config's
    (Mistral applies it to every layer)."""
    if hasattr(attn, "sliding_window"):
        window = attn.sliding_window
    else:
        window = getattr(config, "sliding_window", None)
    return int(window) if window else None


def norm_eps(norm: nn.Module) -> float:
    """An RMSNorm's epsilon, under either name Hugging Face gives it."""
    return float(getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6)))
