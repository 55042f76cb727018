"""Shape-annotated tensor aliases used across the workbench (jaxtyping)."""

from __future__ import annotations

from jaxtyping import Bool, Float, Int
from torch import Tensor

TokenIds = Int[Tensor, "batch pos"]
AttentionMask = Int[Tensor, "batch pos"]
# A KV-cached step's mask spans the cached positions and the new ones, not only the new tokens.
ContextMask = Int[Tensor, "batch context"]
Logits = Float[Tensor, "batch pos vocab"]
StepLogits = Float[Tensor, "batch vocab"]
Residual = Float[Tensor, "batch pos d_model"]
HeadOutputs = Float[Tensor, "batch pos head d_head"]
HeadScale = Float[Tensor, "rows layer head"]
HeadReference = Float[Tensor, "layer head d_head"]
# a reference per position (resample ablation: another sequence's head outputs)
PositionalHeadReference = Float[Tensor, "layer pos head d_head"]
HeadGrid = Float[Tensor, "layer head"]
HeadSelection = Bool[Tensor, "layer head"]

__all__ = [
    "AttentionMask",
    "ContextMask",
    "HeadGrid",
    "HeadOutputs",
    "HeadReference",
    "HeadScale",
    "HeadSelection",
    "Logits",
    "PositionalHeadReference",
    "Residual",
    "StepLogits",
    "TokenIds",
]
