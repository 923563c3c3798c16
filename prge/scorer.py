"""The batched P-RGE forward: label-word logits of a Llama-family LM under C adapter copies.

We run our own decoder loop over the Hugging Face model's modules (embeddings, norms, rotary
embedding, LoRA-FA-wrapped projections) instead of the Hugging Face `forward`, for three reasons:
  * layers before the first adapted layer are identical for every copy, so they run once on the N
    examples and only the adapted layers run on all C * N rows (the "shared frozen prefix");
  * only the last real token's output is read, so the last layer computes keys and values for
    every position but its query, attention output, o_proj and MLP for that one token, and only
    that token goes through the final norm and the label-word rows of the LM head (never the full
    vocabulary head over every position);
  * `prefix` (the layers before `cache_layer`) never sees an adapter, so its output per example
    can be computed once and cached (`prge/prefix_cache.py`); `suffix` runs the rest per copy;
  * the graph is small and export-friendly (right padding + plain causal attention: no mask ops).
`tests/prge/test_scorer.py` checks its logits against the Hugging Face forward.
"""

from __future__ import annotations

import hashlib
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
from prge.packing import Packing, to_rows, to_slots

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

    @staticmethod
    def _project(linear: nn.Module, x: torch.Tensor, fan_out: int) -> torch.Tensor:
        """linear(x) for rows already laid out per copy (fan_out 1), or, for an input shared by
        `fan_out` copies, every copy's output (fan_out * rows, ...) with W x computed once."""
        if fan_out == 1:
            return linear(x)
        if isinstance(linear, LoRAFALinear):
            return linear.fan_out(x, fan_out)
        y = linear(x)  # not adapted: identical for every copy
        return y.repeat(fan_out, *([1] * (y.dim() - 1)))

    def _attention(self, attn: nn.Module, x: torch.Tensor, T: int, fan_out: int = 1,
                   pack: Packing | None = None) -> torch.Tensor:
        """Causal grouped-query attention of x (rows, T, hidden), right-padded; with `pack`, x
        is packed rows (R, P, hidden) and only attention itself runs in the padded layout.
        `fan_out` > 1: x is shared by that many copies."""
        q, k, v = (self._project(p, x, fan_out) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
        if pack is not None:
            q, k, v = (to_slots(t, pack) for t in (q, k, v))  # (R*fan_out*N, T, heads*hd)
        a = self._attend(attn, q, k, v, T)
        return attn.o_proj(a if pack is None else to_rows(a, pack))

    def _attend(self, attn: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                T: int) -> torch.Tensor:
        """Projections (rows, T, heads*head_dim) -> attention output (rows, T, heads*head_dim),
        without repeating k/v: the g query heads that share a k/v head are folded into its query
        axis, (rows, kv, g*T, head_dim), and one additive causal mask (g*T, T) serves them all."""
        rows, hd = q.shape[0], attn.head_dim
        g = attn.num_key_value_groups
        cos, sin = self.cos[:, :, :T], self.sin[:, :, :T]  # (1, 1, T, head_dim)
        q = _apply_rotary(q.view(rows, T, -1, hd).transpose(1, 2), cos, sin)
        k = _apply_rotary(k.view(rows, T, -1, hd).transpose(1, 2), cos, sin)
        v = v.view(rows, T, -1, hd).transpose(1, 2)
        kv = k.shape[1]  # v: (rows, kv, T, hd)
        # 3-D bmm (not a broadcasting matmul, which exports as expand + bmm)
        q = q.reshape(rows * kv, g * T, hd)  # query head j*g + r -> kv head j, block r
        k = k.reshape(rows * kv, T, hd)
        scores = torch.bmm(q, k.transpose(1, 2)) * attn.scaling  # (rows*kv, g*T, T)
        # Right padding: a real token never attends to a later (padded) position, so the causal
        # mask alone is exact for every position we read. It broadcasts over the g blocks.
        scores = (scores.view(rows * kv, g, T, T) + self.causal[:T, :T]).view(rows * kv, g * T, T)
        a = torch.bmm(torch.softmax(scores, dim=-1), v.reshape(rows * kv, T, hd))
        return a.view(rows, kv, g, T, hd).permute(0, 3, 1, 2, 4).reshape(rows, T, kv * g * hd)

    @staticmethod
    def _fan(h: torch.Tensor, fan_out: int) -> torch.Tensor:
        return h if fan_out == 1 else h.repeat(fan_out, *([1] * (h.dim() - 1)))

    def _decoder_layer(self, layer: nn.Module, h: torch.Tensor, fan_out: int = 1,
                       pack: Packing | None = None) -> torch.Tensor:
        """(rows, T, hidden) -> (fan_out * rows, T, hidden); packed: (R, P, ...) -> (fan_out * R, P, ...)."""
        mlp = layer.mlp
        T = h.shape[1] if pack is None else pack.scatter.shape[1]
        a = self._attention(layer.self_attn, self._rms_norm(layer.input_layernorm, h), T, fan_out,
                            pack)
        h = self._fan(h, fan_out) + a
        x = self._rms_norm(layer.post_attention_layernorm, h)
        return h + mlp.down_proj(mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x))

    def _last_layer(self, layer: nn.Module, h: torch.Tensor, last: torch.Tensor,
                    fan_out: int = 1, pack: Packing | None = None) -> torch.Tensor:
        """The final decoder layer, for the last real token only: (rows, T, hidden) ->
        (fan_out * rows, hidden); packed, (R, P, hidden) -> (fan_out * R * N, hidden). Keys and
        values need every position, but the query, the attention output, o_proj and the MLP only
        the one position whose output is read. Same math as `_decoder_layer` at that position;
        about 1/T of its cost beyond the k/v projections (and those run once for all copies when
        the layer's input is shared). `last` (rows_in,): each row's last real position."""
        attn, mlp = layer.self_attn, layer.mlp
        hd, g = attn.head_dim, attn.num_key_value_groups
        x = self._rms_norm(layer.input_layernorm, h)  # (rows_in, T, hidden) or (R, P, hidden)
        if pack is None:
            T, pick = h.shape[1], (torch.arange(h.shape[0]), last)
        else:
            T, pick = pack.scatter.shape[1], (slice(None), pack.last_rows)
        x_last = x[pick].reshape(-1, 1, x.shape[-1])  # (rows_in, 1, hidden)
        h_last = self._fan(h[pick].reshape(-1, h.shape[-1]), fan_out)  # (rows, hidden)
        last = self._fan(last, fan_out)
        rows = last.shape[0]
        k = self._project(attn.k_proj, x, fan_out)
        v = self._project(attn.v_proj, x, fan_out)
        if pack is not None:
            k, v = to_slots(k, pack), to_slots(v, pack)  # (rows, T, kv*hd)
        cos, sin = self.cos[:, :, :T], self.sin[:, :, :T]  # (1, 1, T, head_dim)
        k = _apply_rotary(k.view(rows, T, -1, hd).transpose(1, 2), cos, sin)
        v = v.view(rows, T, -1, hd).transpose(1, 2)
        kv = k.shape[1]  # v: (rows, kv, T, hd)
        cos_l = self.cos[0, 0][last].view(rows, 1, 1, hd)  # the query's own position
        sin_l = self.sin[0, 0][last].view(rows, 1, 1, hd)
        q = self._project(attn.q_proj, x_last, fan_out).view(rows, 1, -1, hd).transpose(1, 2)
        q = _apply_rotary(q, cos_l, sin_l).reshape(rows * kv, g, hd)  # head j*g + r -> kv j
        scores = torch.bmm(q, k.reshape(rows * kv, T, hd).transpose(1, 2)) * attn.scaling
        # Row `last` of the causal table: 0 up to the last real token, -inf after it (padding).
        mask = self.causal[:T, :T][last].view(rows, 1, T)  # (rows, 1, T)
        scores = (scores.view(rows, kv * g, T) + mask).view(rows * kv, g, T)
        a = torch.bmm(torch.softmax(scores, dim=-1), v.reshape(rows * kv, T, hd))  # (rows*kv, g, hd)
        a = a.reshape(rows, 1, kv * g * hd)
        h_last = h_last.unsqueeze(1) + attn.o_proj(a)  # (rows, 1, hidden)
        x = self._rms_norm(layer.post_attention_layernorm, h_last)
        out = h_last + mlp.down_proj(mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x))
        return out.squeeze(1)

    @property
    def cache_layer(self) -> int:
        """Index of the first layer the suffix runs: its input never depends on the adapter, so
        it can be computed once per example and cached. The last layer always belongs to the
        suffix (it is pruned to the last token there)."""
        return min(self.first_adapted, len(self.layers) - 1)

    def prefix(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Hidden states entering layer `cache_layer`: (N, T) token ids -> (N, T, hidden).
        Independent of every adapter copy: the frozen-prefix cache stores these."""
        h = self.embed(input_ids)
        for layer in self.layers[:self.cache_layer]:
            h = self._decoder_layer(layer, h)
        return h

    def suffix(self, h: torch.Tensor, last_index: torch.Tensor,
               thetas: torch.Tensor | None = None, pack: Packing | None = None) -> torch.Tensor:
        """Layers from `cache_layer` on, the norm and the label-word head, for C adapter copies:
        h (N, T, hidden) from `prefix`, last_index (N,), thetas (C, D) -> logits (C, N, L).
        With `pack` (prge/packing.py), h is the batch's real tokens packed, (P, hidden), and
        last_index is `pack.last_index`: the linear layers skip the padding."""
        if pack is None:
            N, T, hidden = h.shape
        else:
            (N, T), h = pack.scatter.shape, h.unsqueeze(0)  # (1, P, hidden): one shared input
        C = 1 if thetas is None else thetas.shape[0]
        if T > self.causal.shape[0]:
            raise ValueError(f"{T} tokens exceed the {self.causal.shape[0]} positions prepared")
        self.layout.set_copies(thetas)
        try:
            n_layers, expanded = len(self.layers), False
            last = last_index
            for i in range(self.cache_layer, n_layers):
                # The first adapted layer's input is the same for every copy: it fans out to C
                # copies inside the layer (copy-major rows, C*N), after its shared projections.
                fan_out = C if i == self.first_adapted else 1
                if i < n_layers - 1:
                    h = self._decoder_layer(self.layers[i], h, fan_out, pack)
                else:  # (C*N or N, hidden)
                    h = self._last_layer(self.layers[i], h, last, fan_out, pack)
                if fan_out > 1 or i == self.first_adapted:
                    last, expanded = last_index.repeat(C), True
            if not expanded:  # only the head is adapted: every copy shares the decoder's output
                h = h.repeat(C, 1)
            logits = self.head(self._rms_norm(self.norm, h))  # (C*N, L)
        finally:
            self.layout.set_copies(None)  # never keep views of thetas (or autograd graphs) alive
        return logits.view(C, N, -1)

    def forward(self, input_ids: torch.Tensor, last_index: torch.Tensor,
                thetas: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (N, T), last_index (N,), thetas (C, D) or None -> logits (C, N, L)."""
        return self.suffix(self.prefix(input_ids), last_index, thetas)


def model_fingerprint(scorer: LabelScorer) -> str:
    """A digest of every fixed tensor of the model: base weights, the frozen A matrices, the label
    rows, and the adapter's layout. Two processes agree on it only if they score with the same
    model and the same A; hashed once per scorer (about a second for 135M parameters)."""
    cached = getattr(scorer, "_fingerprint", None)
    if cached is not None:
        return cached
    h = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(scorer.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    h.update(repr([(s.name, s.out_features, s.rank) for s in scorer.layout.slots]).encode())
    scorer._fingerprint = h.hexdigest()
    return scorer._fingerprint
