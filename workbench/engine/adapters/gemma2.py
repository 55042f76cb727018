"""Gemma-2: alternating sliding-window and full-attention layers, attention and final-logit
soft-capping, a template without a system role, and text that must start with BOS."""

from workbench.engine.adapters.base import ModelAdapter

ADAPTER = ModelAdapter(
    family="gemma2",
    hf_classes=("Gemma2ForCausalLM",),
    gguf_architectures=("gemma2",),
    end_of_turn_tokens=("<end_of_turn>",),
    requires_bos=True,
    system_role=False,
    softcap_attribute="final_logit_softcapping",
)
