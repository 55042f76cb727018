"""Faster linear layers for inputs of few rows on the CPU (the decoding steps).

A KV-cached decoding step multiplies every weight matrix by only a few rows (one per batch row),
so it is bound by reading the weights from memory. On the CPUs we measured, PyTorch's default
path for `x @ Wᵀ` handles such skinny inputs badly: one row goes to a single-threaded
matrix-vector product (about 10 GB/s), two to sixteen rows to a GEMM that re-reads the weight
(5–10 GB/s). Computing the same product as `(W @ xᵀ)ᵀ`, with the weight as the left operand,
streams each weight once on all cores (about 30 GB/s for two rows); a single row is doubled to
two rows first because the two-row kernel is faster than the one-row one. The result is the same
product up to float rounding (summation order); figures in benchmarks/RESULTS.md, "Decoding".

`SkinnyLinear` is an `nn.Linear` with that forward; `use_skinny_linear` switches the linear
layers of a model to it in place (state dict, parameters and hooks are untouched). Inputs with
more than `MAX_SKINNY_ROWS` rows (prefills, PCS scans), non-CPU tensors and runs with a single torch
thread take the default path: with one thread there is no second core to stream the weight on, and
the doubled row made a batch-1 step about twice as slow as the default single-row product
(benchmarks/RESULTS.md, "Anchors").
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor, nn

MAX_SKINNY_ROWS = 32


class SkinnyLinear(nn.Linear):
    def forward(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_out"]:
        rows = x.numel() // x.shape[-1] if x.ndim > 0 and x.shape[-1] else 0
        if x.device.type != "cpu" or not 0 < rows <= MAX_SKINNY_ROWS or torch.get_num_threads() < 2:
            return super().forward(x)
        # Row-major rows, so that `flat.t()` is the column-major operand the fast kernel takes.
        flat = x.reshape(rows, x.shape[-1]).contiguous()
        if rows == 1:
            flat = flat.repeat(2, 1)
        if self.bias is None:
            out = self.weight @ flat.t()
        else:
            out = torch.addmm(self.bias[:, None], self.weight, flat.t())
        return out[:, :rows].t().reshape(*x.shape[:-1], self.out_features)


def use_skinny_linear(model: nn.Module) -> int:
    """Switch every plain `nn.Linear` of `model` to `SkinnyLinear` in place; returns how many."""
    switched = 0
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = SkinnyLinear
            switched += 1
    return switched
