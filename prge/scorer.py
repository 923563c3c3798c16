"""The batched P-RGE forward: label-word logits of a Llama-family LM under C adapter copies.

We run our own decoder loop over the Hugging Face model's modules (embeddings, norms, rotary
embedding, LoRA-FA-wrapped projections) instead of the Hugging Face `forward`, for three reasons:
  * layers before the first adapted layer are identical for every copy, so they run once on the N
    examples and only the adapted layers run on all C * N rows (the "shared frozen prefix");
  * only the last real token's hidden state goes through the final norm and the label-word rows of
    the LM head, never the full vocabulary head over every position;
  * the graph is small and export-friendly (right padding + plain causal attention: no mask ops).
`tests/prge/test_scorer.py` checks its logits against the Hugging Face forward.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from prge.lora_fa import (
    HEAD_TARGET,
    LAYER_TARGETS,
    AdapterError,
    AdapterLayout,
    LabelHead,
    LoRAFALinear,
    normalize_targets,
    select_layers,
)

SUPPORTED_MODEL_TYPES = ("llama",)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: (rows, heads, T, head_dim); cos/sin: (1, 1, T, head_dim)
    return x * cos + _rotate_half(x) * sin


class LabelScorer(nn.Module):
    """Injects LoRA-FA into a Hugging Face Llama-family causal LM and scores label words.

    forward(input_ids (N, T), last_index (N,), thetas (C, D) or None) -> logits (C, N, L)
    Inputs are right-padded; `last_index[n]` is the position of example n's last real token.
    """

    def __init__(self, hf_model: nn.Module, label_ids: Sequence[int], *,
                 targets: Sequence[str], rank: int, layers: str = "all", adapter_seed: int = 0):
        super().__init__()
        model_type = getattr(hf_model.config, "model_type", "?")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise AdapterError(
                f"model type {model_type!r} is not supported yet "
                f"(supported: {', '.join(SUPPORTED_MODEL_TYPES)})")
        if rank < 1:
            raise AdapterError(f"rank must be >= 1, got {rank}")
        hf_model.eval()
        for p in hf_model.parameters():
            p.requires_grad_(False)
        decoder = hf_model.model
        self.embed = decoder.embed_tokens
        self.layers = decoder.layers
        self.norm = decoder.norm
        self.rotary = decoder.rotary_emb
        self.targets = normalize_targets(targets)
        self.label_ids = list(label_ids)

        # One generator for all A matrices, consumed in a fixed module order: same seed, same A.
        generator = torch.Generator().manual_seed(int(adapter_seed))
        adapted: list[tuple[str, nn.Module]] = []
        layer_targets = [t for t in self.targets if t in LAYER_TARGETS]
        layer_ids = select_layers(layers, len(self.layers)) if layer_targets else []
        for i in layer_ids:
            for t in layer_targets:
                parent_name, attr = LAYER_TARGETS[t].split(".")
                parent = getattr(self.layers[i], parent_name)
                wrapped = LoRAFALinear(getattr(parent, attr), rank, generator)
                setattr(parent, attr, wrapped)
                adapted.append((f"layers.{i}.{LAYER_TARGETS[t]}", wrapped))
        self.head = LabelHead(hf_model.lm_head, self.label_ids, rank,
                              generator if HEAD_TARGET in self.targets else None)
        if self.head.A is not None:
            adapted.append((HEAD_TARGET, self.head))
        self.layout = AdapterLayout(adapted)
        # Layers before this one see no adapter: they run once, not once per copy.
        self.first_adapted = layer_ids[0] if layer_ids else len(self.layers)

    @property
    def dim(self) -> int:
        return self.layout.dim

    def _decoder_layer(self, layer: nn.Module, h: torch.Tensor, cos: torch.Tensor,
                       sin: torch.Tensor) -> torch.Tensor:
        attn, mlp = layer.self_attn, layer.mlp
        rows, T, _ = h.shape
        x = layer.input_layernorm(h)
        q = attn.q_proj(x).view(rows, T, -1, attn.head_dim).transpose(1, 2)
        k = attn.k_proj(x).view(rows, T, -1, attn.head_dim).transpose(1, 2)
        v = attn.v_proj(x).view(rows, T, -1, attn.head_dim).transpose(1, 2)
        q, k = _apply_rotary(q, cos, sin), _apply_rotary(k, cos, sin)
        if attn.num_key_value_groups > 1:  # grouped-query attention: share each k/v head
            k = k.repeat_interleave(attn.num_key_value_groups, dim=1)
            v = v.repeat_interleave(attn.num_key_value_groups, dim=1)
        # Right padding: a real token never attends to a later (padded) position, so the causal
        # mask alone is exact for every position we read.
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=attn.scaling)
        h = h + attn.o_proj(a.transpose(1, 2).reshape(rows, T, -1))
        x = layer.post_attention_layernorm(h)
        return h + mlp.down_proj(mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x))

    def forward(self, input_ids: torch.Tensor, last_index: torch.Tensor,
                thetas: torch.Tensor | None = None) -> torch.Tensor:
        N, T = input_ids.shape
        C = 1 if thetas is None else thetas.shape[0]
        self.layout.set_copies(thetas)
        try:
            h = self.embed(input_ids)  # (N, T, hidden)
            position_ids = torch.arange(T).unsqueeze(0)
            cos, sin = self.rotary(h, position_ids)  # (1, T, head_dim)
            cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
            for i, layer in enumerate(self.layers):
                if i == self.first_adapted:
                    h = h.repeat(C, 1, 1)  # (C*N, T, hidden), copy-major
                h = self._decoder_layer(layer, h, cos, sin)
            rows = torch.arange(N)
            hidden = h.shape[-1]
            h_last = h.view(-1, N, T, hidden)[:, rows, last_index]  # (C or 1, N, hidden)
            h_last = h_last.reshape(-1, hidden)  # (C*N or N, hidden)
            if self.first_adapted == len(self.layers):  # only the head is adapted
                h_last = h_last.repeat(C, 1)
            logits = self.head(self.norm(h_last))  # (C*N, L)
        finally:
            self.layout.set_copies(None)  # never keep views of thetas (or autograd graphs) alive
        return logits.view(C, N, -1)
