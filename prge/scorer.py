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
                 targets: Sequence[str], rank: int, layers: str = "all", adapter_seed: int = 0,
                 max_positions: int = 512):
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
        self._prepare_constants(hf_model.config, max_positions)
        # Layers before this one see no adapter: they run once, not once per copy.
        self.first_adapted = layer_ids[0] if layer_ids else len(self.layers)

    def _prepare_constants(self, config, max_positions: int) -> None:
        """Tables the forward slices instead of building: rotary cos/sin, the causal mask, and
        the averaging row of RMSNorm (constants of an exported program, not ops in it)."""
        P = min(max_positions, config.max_position_embeddings)
        dtype = self.embed.weight.dtype
        dummy = torch.zeros(1, dtype=dtype)
        with torch.no_grad():
            cos, sin = self.rotary(dummy, torch.arange(P).unsqueeze(0))  # (1, P, head_dim)
        self.register_buffer("cos", cos.unsqueeze(1).to(dtype), persistent=False)
        self.register_buffer("sin", sin.unsqueeze(1).to(dtype), persistent=False)
        causal = torch.full((P, P), float("-inf"), dtype=dtype).triu(1)  # 0 on and below diagonal
        self.register_buffer("causal", causal, persistent=False)
        hidden = self.embed.weight.shape[1]
        self.register_buffer("mean_row", torch.full((1, hidden), 1.0 / hidden), persistent=False)

    @property
    def dim(self) -> int:
        return self.layout.dim

    def _rms_norm(self, norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The Llama RMSNorm, with the mean over features written as a linear against a constant
        row (XNNPACK delegates a linear; it does not delegate `mean`). Same math as HF's."""
        x32 = x.float()
        variance = F.linear(x32 * x32, self.mean_row)  # (..., 1)
        return norm.weight * (x32 * torch.rsqrt(variance + norm.variance_epsilon)).to(x.dtype)

    def _attention(self, attn: nn.Module, x: torch.Tensor, T: int) -> torch.Tensor:
        """Causal grouped-query attention without repeating k/v: the g query heads that share a
        k/v head are folded into its query axis, (rows, kv, g*T, head_dim), and one additive
        causal mask (g*T, T) serves them all."""
        rows, hd = x.shape[0], attn.head_dim
        g = attn.num_key_value_groups
        cos, sin = self.cos[:, :, :T], self.sin[:, :, :T]  # (1, 1, T, head_dim)
        q = _apply_rotary(attn.q_proj(x).view(rows, T, -1, hd).transpose(1, 2), cos, sin)
        k = _apply_rotary(attn.k_proj(x).view(rows, T, -1, hd).transpose(1, 2), cos, sin)
        v = attn.v_proj(x).view(rows, T, -1, hd).transpose(1, 2)  # (rows, kv, T, hd)
        kv = k.shape[1]
        # 3-D bmm (not a broadcasting matmul, which exports as expand + bmm)
        q = q.reshape(rows * kv, g * T, hd)  # query head j*g + r -> kv head j, block r
        k = k.reshape(rows * kv, T, hd)
        scores = torch.bmm(q, k.transpose(1, 2)) * attn.scaling  # (rows*kv, g*T, T)
        # Right padding: a real token never attends to a later (padded) position, so the causal
        # mask alone is exact for every position we read. It broadcasts over the g blocks.
        scores = (scores.view(rows * kv, g, T, T) + self.causal[:T, :T]).view(rows * kv, g * T, T)
        a = torch.bmm(torch.softmax(scores, dim=-1), v.reshape(rows * kv, T, hd))
        a = a.view(rows, kv, g, T, hd).permute(0, 3, 1, 2, 4).reshape(rows, T, kv * g * hd)
        return attn.o_proj(a)

    def _decoder_layer(self, layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
        mlp, T = layer.mlp, h.shape[1]
        h = h + self._attention(layer.self_attn, self._rms_norm(layer.input_layernorm, h), T)
        x = self._rms_norm(layer.post_attention_layernorm, h)
        return h + mlp.down_proj(mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x))

    def forward(self, input_ids: torch.Tensor, last_index: torch.Tensor,
                thetas: torch.Tensor | None = None) -> torch.Tensor:
        N, T = input_ids.shape
        C = 1 if thetas is None else thetas.shape[0]
        self.layout.set_copies(thetas)
        try:
            if T > self.causal.shape[0]:
                raise ValueError(f"{T} tokens exceed the {self.causal.shape[0]} positions prepared")
            h = self.embed(input_ids)  # (N, T, hidden)
            for i, layer in enumerate(self.layers):
                if i == self.first_adapted:
                    h = h.repeat(C, 1, 1)  # (C*N, T, hidden), copy-major
                h = self._decoder_layer(layer, h)
            rows = torch.arange(N)
            hidden = h.shape[-1]
            h_last = h.view(-1, N, T, hidden)[:, rows, last_index]  # (C or 1, N, hidden)
            h_last = h_last.reshape(-1, hidden)  # (C*N or N, hidden)
            if self.first_adapted == len(self.layers):  # only the head is adapted
                h_last = h_last.repeat(C, 1)
            logits = self.head(self._rms_norm(self.norm, h_last))  # (C*N, L)
        finally:
            self.layout.set_copies(None)  # never keep views of thetas (or autograd graphs) alive
        return logits.view(C, N, -1)
