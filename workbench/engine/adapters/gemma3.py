"""Gemma-3 (text): five sliding-window layers per full-attention layer, each layer type with its
own RoPE base (so its own position embeddings), per-head query/key norms, a template without a
system role, and text that must start with BOS."""

from workbench.engine.adapters.base import ModelAdapter

ADAPTER = ModelAdapter(
    family="gemma3",
    hf_classes=("Gemma3ForCausalLM",),
    gguf_architectures=("gemma3",),
    end_of_turn_tokens=("<end_of_turn>",),
    requires_bos=True,
    system_role=False,
    softcap_attribute="final_logit_softcapping",
    query_hook="q_normed",
    query_head_axis=1,
    hf_q_norm_head_axis=1,
)
