"""Qwen3: Qwen2's layout plus per-head query/key norms; its chat template opens a "thinking"
block unless told not to, which would put reasoning before every answer."""

from workbench.engine.adapters.base import ModelAdapter

ADAPTER = ModelAdapter(
    family="qwen3",
    hf_classes=("Qwen3ForCausalLM",),
    gguf_architectures=("qwen3",),
    end_of_turn_tokens=("<|im_end|>", "<|endoftext|>"),
    has_bos=False,
    chat_template_kwargs=(("enable_thinking", False),),
    query_hook="q_normed",
    query_head_axis=1,
    hf_q_norm_head_axis=2,
)
