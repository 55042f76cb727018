"""Phi-3 (and Phi-4, which uses the same architecture): fused query/key/value and gate/up
projections, a sliding window on every layer when the config sets one."""

from workbench.engine.adapters.base import ModelAdapter

ADAPTER = ModelAdapter(
    family="phi3",
    hf_classes=("Phi3ForCausalLM",),
    gguf_architectures=("phi3",),
    # Phi-3 ends a turn with <|end|>; Phi-4's ChatML-like template with <|im_end|>.
    end_of_turn_tokens=("<|end|>", "<|endoftext|>", "<|im_end|>"),
)
