"""The batched P-RGE forward: label-word logits of a decoder LM under C adapter copies.

One decoder loop serves every supported family (Llama, Mistral, Qwen2, Qwen3, Gemma 3, Phi-3):
what a family changes (norm form, q/k norms, extra norms, attention windows, rotary per layer
kind, a partial rotary, embedding scale, fused projections) is declared in prge/families.py and read here.

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
import inspect
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from prge.families import FAMILIES, attention_window, family_of, layer_kind, norm_eps, unfuse
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

SUPPORTED_MODEL_TYPES = tuple(FAMILIES)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: (rows, heads, T, head_dim); cos/sin: (1, 1, T, rotary_dim), rotary_dim <= head_dim
    rotary = cos.shape[-1]
    if rotary == x.shape[-1]:
        return x * cos + _rotate_half(x) * sin
    x_rot, x_pass = x[..., :rotary], x[..., rotary:]  # a partial rotary: the rest passes
    return torch.cat([x_rot * cos + _rotate_half(x_rot) * sin, x_pass], dim=-1)


class LabelScorer(nn.Module):
    """Injects LoRA-FA into a Hugging Face decoder LM (prge/families.py) and scores label words.

    forward(input_ids (N, T), last_index (N,), thetas (C, D) or None) -> logits (C, N, L)
    Inputs are right-padded; `last_index[n]` is the position of example n's last real token.
    """

    def __init__(self, hf_model: nn.Module, label_ids: Sequence[int], *,
                 targets: Sequence[str], rank: int, layers: str = "all", adapter_seed: int = 0,
                 max_positions: int = 512):
        super().__init__()
        self.family = family_of(hf_model.config)
        if rank < 1:
            raise AdapterError(f"rank must be >= 1, got {rank}")
        hf_model.eval()
        for p in hf_model.parameters():
            p.requires_grad_(False)
        decoder = hf_model.model
        if self.family.fused:
            for layer in decoder.layers:
                unfuse(layer, hf_model.config)
        self.embed, scale = _plain_embedding(decoder.embed_tokens)
        # in the state dict (part of the model's fingerprint) when the family scales; else None
        self.register_buffer("embed_scale", scale)
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
        """Tables the forward slices instead of building: rotary cos/sin (one pair per kind of
        layer whose rotary differs), the causal mask (one per attention window), and the
        averaging rows of RMSNorm (constants of an exported program, not ops in it). Each layer
        names its tables in `self._tables[i]`; a Llama has one of each: cos, sin, causal."""
        P = min(max_positions, config.max_position_embeddings)
        dtype = self.embed.weight.dtype
        dummy = torch.zeros(1, dtype=dtype)
        positions = torch.arange(P).unsqueeze(0)
        per_kind = "layer_type" in inspect.signature(self.rotary.forward).parameters
        self._tables: list[tuple[str, str, str]] = []
        for i, layer in enumerate(self.layers):
            kind = layer_kind(config, i) if per_kind else "full_attention"
            cos_name = "cos" if kind == "full_attention" else f"cos_{kind}"
            if not hasattr(self, cos_name):
                with torch.no_grad():  # (1, P, head_dim)
                    cos, sin = (self.rotary(dummy, positions, kind) if per_kind
                                else self.rotary(dummy, positions))
                self.register_buffer(cos_name, cos.unsqueeze(1).to(dtype), persistent=False)
                self.register_buffer("sin" + cos_name[3:], sin.unsqueeze(1).to(dtype),
                                     persistent=False)
            window = attention_window(config, layer.self_attn)
            mask_name = "causal" if window is None or window >= P else f"causal_w{window}"
            if not hasattr(self, mask_name):
                self.register_buffer(mask_name, _causal_table(P, None if mask_name == "causal"
                                                              else window, dtype),
                                     persistent=False)
            self._tables.append((cos_name, "sin" + cos_name[3:], mask_name))
        if not hasattr(self, "causal"):  # every layer windowed: the full table still bounds T
            self.register_buffer("causal", _causal_table(P, None, dtype), persistent=False)
        hidden = self.embed.weight.shape[1]
        self.register_buffer("mean_row", torch.full((1, hidden), 1.0 / hidden), persistent=False)
        if self.family.qk_norm:
            hd = self.layers[0].self_attn.head_dim
            self.register_buffer("mean_row_head", torch.full((1, hd), 1.0 / hd), persistent=False)

    def constant_tables(self) -> list[torch.Tensor]:
        """Every table the forward slices, in a fixed order (what a program bakes in)."""
        names = ["cos", "sin", "causal", "mean_row"]
        names += sorted(n for n, _ in self.named_buffers()
                        if n not in names and n.startswith(("cos_", "sin_", "causal_", "mean_row_")))
        return [getattr(self, n) for n in names if hasattr(self, n)]

    def embed_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings (N, T) -> (N, T, hidden), scaled where the family scales them."""
        h = self.embed(input_ids)
        return h if self.embed_scale is None else h * self.embed_scale

    @property
    def dim(self) -> int:
        return self.layout.dim

    def _rms_norm(self, norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """RMSNorm over the last axis (the hidden size, or a head's size for q/k norms), with the
        mean over features written as a linear against a constant row (XNNPACK delegates a
        linear; it does not delegate `mean`). Same math as HF's: Llama's w * x_hat, cast to the
        input's dtype before the weight; Gemma's (1 + w) * x_hat in float32, cast after."""
        x32 = x.float()
        row = self.mean_row if x.shape[-1] == self.mean_row.shape[1] else self.mean_row_head
        normed = x32 * torch.rsqrt(F.linear(x32 * x32, row) + norm_eps(norm))  # (..., 1) mean
        if self.family.norm_offset:
            return (normed * (self.family.norm_offset + norm.weight.float())).to(x.dtype)
        return norm.weight * normed.to(x.dtype)

    def _heads(self, norm_name: str, attn: nn.Module, x: torch.Tensor, rows: int,
               T: int) -> torch.Tensor:
        """Projections (rows, T, heads*head_dim) -> (rows, heads, T, head_dim), each head's
        vector normalized first where the family has q/k norms."""
        x = x.view(rows, T, -1, attn.head_dim)
        if self.family.qk_norm and norm_name:
            x = self._rms_norm(getattr(attn, norm_name), x)
        return x.transpose(1, 2)

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

    def _attention(self, i: int, x: torch.Tensor, T: int, fan_out: int = 1,
                   pack: Packing | None = None) -> torch.Tensor:
        """Causal grouped-query attention of layer i on x (rows, T, hidden), right-padded; with
        `pack`, x is packed rows (R, P, hidden) and only attention itself runs in the padded
        layout. `fan_out` > 1: x is shared by that many copies."""
        attn = self.layers[i].self_attn
        q, k, v = (self._project(p, x, fan_out) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
        if pack is not None:
            q, k, v = (to_slots(t, pack) for t in (q, k, v))  # (R*fan_out*N, T, heads*hd)
        a = self._attend(i, q, k, v, T)
        return attn.o_proj(a if pack is None else to_rows(a, pack))

    def _attend(self, i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                T: int) -> torch.Tensor:
        """Projections (rows, T, heads*head_dim) -> attention output (rows, T, heads*head_dim),
        without repeating k/v: the g query heads that share a k/v head are folded into its query
        axis, (rows, kv, g*T, head_dim), and one additive causal mask (g*T, T) serves them all."""
        attn = self.layers[i].self_attn
        rows, hd = q.shape[0], attn.head_dim
        g = attn.num_key_value_groups
        cos_name, sin_name, mask_name = self._tables[i]
        cos, sin = getattr(self, cos_name)[:, :, :T], getattr(self, sin_name)[:, :, :T]
        q = _apply_rotary(self._heads("q_norm", attn, q, rows, T), cos, sin)
        k = _apply_rotary(self._heads("k_norm", attn, k, rows, T), cos, sin)
        v = v.view(rows, T, -1, hd).transpose(1, 2)
        kv = k.shape[1]  # v: (rows, kv, T, hd)
        # 3-D bmm (not a broadcasting matmul, which exports as expand + bmm)
        q = q.reshape(rows * kv, g * T, hd)  # query head j*g + r -> kv head j, block r
        k = k.reshape(rows * kv, T, hd)
        scores = torch.bmm(q, k.transpose(1, 2)) * attn.scaling  # (rows*kv, g*T, T)
        # Right padding: a real token never attends to a later (padded) position, so the causal
        # mask alone is exact for every position we read. It broadcasts over the g blocks.
        mask = getattr(self, mask_name)[:T, :T]
        scores = (scores.view(rows * kv, g, T, T) + mask).view(rows * kv, g * T, T)
        a = torch.bmm(torch.softmax(scores, dim=-1), v.reshape(rows * kv, T, hd))
        return a.view(rows, kv, g, T, hd).permute(0, 3, 1, 2, 4).reshape(rows, T, kv * g * hd)

    @staticmethod
    def _fan(h: torch.Tensor, fan_out: int) -> torch.Tensor:
        return h if fan_out == 1 else h.repeat(fan_out, *([1] * (h.dim() - 1)))

    def _mlp_block(self, layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
        """h + the gated MLP of its norm (between norms, for sandwich-norm families)."""
        mlp = layer.mlp
        pre = layer.pre_feedforward_layernorm if self.family.sandwich_norms \
            else layer.post_attention_layernorm
        x = self._rms_norm(pre, h)
        y = mlp.down_proj(_activation(mlp.act_fn, mlp.gate_proj(x)) * mlp.up_proj(x))
        if self.family.sandwich_norms:
            y = self._rms_norm(layer.post_feedforward_layernorm, y)
        return h + y

    def _attention_out(self, layer: nn.Module, a: torch.Tensor) -> torch.Tensor:
        """The attention output as added to the residual (normed first by sandwich families)."""
        return self._rms_norm(layer.post_attention_layernorm, a) if self.family.sandwich_norms \
            else a

    def _decoder_layer(self, i: int, h: torch.Tensor, fan_out: int = 1,
                       pack: Packing | None = None) -> torch.Tensor:
        """Layer i: (rows, T, hidden) -> (fan_out * rows, T, hidden); packed: (R, P, ...) ->
        (fan_out * R, P, ...)."""
        layer = self.layers[i]
        T = h.shape[1] if pack is None else pack.scatter.shape[1]
        a = self._attention(i, self._rms_norm(layer.input_layernorm, h), T, fan_out, pack)
        return self._mlp_block(layer, self._fan(h, fan_out) + self._attention_out(layer, a))

    def _last_layer(self, i: int, h: torch.Tensor, last: torch.Tensor,
                    fan_out: int = 1, pack: Packing | None = None) -> torch.Tensor:
        """The final decoder layer, for the last real token only: (rows, T, hidden) ->
        (fan_out * rows, hidden); packed, (R, P, hidden) -> (fan_out * R * N, hidden). Keys and
        values need every position, but the query, the attention output, o_proj and the MLP only
        the one position whose output is read. Same math as `_decoder_layer` at that position;
        about 1/T of its cost beyond the k/v projections (and those run once for all copies when
        the layer's input is shared). `last` (rows_in,): each row's last real position."""
        layer = self.layers[i]
        attn = layer.self_attn
        hd, g = attn.head_dim, attn.num_key_value_groups
        cos_name, sin_name, mask_name = self._tables[i]
        cos_table, sin_table = getattr(self, cos_name), getattr(self, sin_name)
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
        cos, sin = cos_table[:, :, :T], sin_table[:, :, :T]  # (1, 1, T, head_dim)
        k = _apply_rotary(self._heads("k_norm", attn, k, rows, T), cos, sin)
        v = v.view(rows, T, -1, hd).transpose(1, 2)
        kv = k.shape[1]  # v: (rows, kv, T, hd)
        rotary = cos_table.shape[-1]  # head_dim, or less for a partial rotary
        cos_l = cos_table[0, 0][last].view(rows, 1, 1, rotary)  # the query's own position
        sin_l = sin_table[0, 0][last].view(rows, 1, 1, rotary)
        q = self._heads("q_norm", attn, self._project(attn.q_proj, x_last, fan_out), rows, 1)
        q = _apply_rotary(q, cos_l, sin_l).reshape(rows * kv, g, hd)  # head j*g + r -> kv j
        scores = torch.bmm(q, k.reshape(rows * kv, T, hd).transpose(1, 2)) * attn.scaling
        # Row `last` of the causal table: 0 up to the last real token (within the layer's
        # window), -inf after it (padding).
        mask = getattr(self, mask_name)[:T, :T][last].view(rows, 1, T)  # (rows, 1, T)
        scores = (scores.view(rows, kv * g, T) + mask).view(rows * kv, g, T)
        a = torch.bmm(torch.softmax(scores, dim=-1), v.reshape(rows * kv, T, hd))  # (rows*kv, g, hd)
        a = a.reshape(rows, 1, kv * g * hd)
        h_last = h_last.unsqueeze(1) + self._attention_out(layer, attn.o_proj(a))  # (rows, 1, hidden)
        return self._mlp_block(layer, h_last).squeeze(1)

    @property
    def cache_layer(self) -> int:
        """Index of the first layer the suffix runs: its input never depends on the adapter, so
        it can be computed once per example and cached. The last layer always belongs to the
        suffix (it is pruned to the last token there)."""
        return min(self.first_adapted, len(self.layers) - 1)

    def prefix(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Hidden states entering layer `cache_layer`: (N, T) token ids -> (N, T, hidden).
        Independent of every adapter copy: the frozen-prefix cache stores these."""
        h = self.embed_ids(input_ids)
        for i in range(self.cache_layer):
            h = self._decoder_layer(i, h)
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
                    h = self._decoder_layer(i, h, fan_out, pack)
                else:  # (C*N or N, hidden)
                    h = self._last_layer(i, h, last, fan_out, pack)
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


_TANH_GELU = ("GELUTanh", "PytorchGELUTanh", "NewGELUActivation", "FastGELUActivation")


def _activation(act_fn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The MLP's activation. The tanh approximation of GELU (Gemma's) is written out: XNNPACK
    lowers `gelu(approximate="tanh")` as the exact, erf-based GELU (3e-4 apart on a tiny Gemma),
    while tanh itself it runs as written."""
    if type(act_fn).__name__ in _TANH_GELU:
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))
    return act_fn(x)


def _causal_table(P: int, window: int | None, dtype: torch.dtype) -> torch.Tensor:
    """(P, P) additive mask: 0 where query i sees key j (j <= i, and i - j < window), else -inf."""
    table = torch.full((P, P), float("-inf"), dtype=dtype).triu(1)  # 0 on and below diagonal
    if window is not None:
        table = table + torch.full((P, P), float("-inf"), dtype=dtype).tril(-window)
    return table


def _plain_embedding(embed: nn.Module) -> tuple[nn.Module, torch.Tensor | None]:
    """(a plain lookup, the scale the model multiplies it by or None). Gemma's embedding scales
    inside its forward; the scorer applies the scale itself, so that a quantized or exported
    lookup (which replaces the module) keeps it. The weight is shared, not copied."""
    scale = getattr(embed, "embed_scale", None)
    if scale is None:
        return embed, None
    plain = nn.Embedding.from_pretrained(embed.weight, freeze=True, padding_idx=embed.padding_idx)
    return plain, torch.as_tensor(scale).to(embed.weight.dtype)


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
