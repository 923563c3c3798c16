"""Quantized base weights for the exported program (the adapters stay fp32).

The base model is frozen, and SmolLM2's shipped weights are already 4-bit values, so storing them
in 8 or 4 bits costs little accuracy while shrinking the program and, on XNNPACK, speeding up the
large matmuls (int8 x int8 dot products with dynamically quantized activations):

  * `int8`: every decoder linear int8 per output channel, activations int8 per token (dynamic);
  * `int4`: the same with int4 weights in groups of 32 input features;
  * both store the token embedding int8 per row (ExecuTorch's `embedding_byte` kernel): at
    49152 x 576 it is a fifth of SmolLM2's weights, and XNNPACK does not delegate lookups.

LoRA-FA A matrices, the label-word head and the norms stay fp32: they are small, and A and the head
carry the trained signal. Quantization changes the math (that is its point): the equivalence
checks compare a quantized program with fp32 in accuracy, not logits.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

QUANT_SCHEMES = ("none", "int8", "int4")


class QuantError(ValueError):
    """An unknown quantization scheme."""


class Int8Embedding(nn.Module):
    """Row-wise symmetric int8 embedding: row v = weight_q[v] * scale[v]. Exported as ExecuTorch's
    `quantized_decomposed.embedding_byte`, which gathers and dequantizes only the looked-up rows."""

    def __init__(self, embedding: nn.Embedding):
        super().__init__()
        w = embedding.weight.detach().float()  # (V, H)
        scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12)  # (V,)
        self.register_buffer("weight_q", torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized_decomposed.embedding_byte(
            self.weight_q, self.scale, None, -127, 127, ids)


def _register_embedding_op() -> None:
    # Defines quantized_decomposed::embedding_byte for torch (eager and export) ...
    import executorch.exir.passes._quant_patterns_and_replacements  # noqa: F401

    # ... and loads its out-variant kernel into ExecuTorch's Python runtime.
    import executorch.kernels.quantized  # noqa: F401


def check_scheme(scheme: str) -> str:
    if scheme not in QUANT_SCHEMES:
        raise QuantError(f"unknown quantization {scheme!r}; choose from {', '.join(QUANT_SCHEMES)}")
    return scheme


def quantized_copy(scorer: nn.Module, scheme: str) -> nn.Module:
    """A copy of the scorer with its base weights quantized (the scorer itself is untouched, so
    the eager engine keeps serving fp32 from it). `none` returns the scorer as it is."""
    if check_scheme(scheme) == "none":
        return scorer
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, quantize_
    from torchao.quantization.granularity import PerAxis, PerGroup

    _register_embedding_op()
    weights = {"int8": (torch.int8, PerAxis(0)), "int4": (torch.int4, PerGroup(32))}[scheme]
    config = Int8DynamicActivationIntxWeightConfig(weight_dtype=weights[0],
                                                   weight_granularity=weights[1])
    q = copy.deepcopy(scorer)
    # Only the frozen decoder linears (inside LoRA-FA wrappers, the `.base`); not A, not the head.
    quantize_(q, config, filter_fn=lambda m, fqn: type(m) is nn.Linear and fqn.startswith("layers."))
    q.embed = Int8Embedding(q.embed)
    return q


def ensure_runtime_kernels(scheme: str) -> None:
    """Programs with a quantized embedding need its kernel registered before they load."""
    if check_scheme(scheme) != "none":
        _register_embedding_op()
