"""Qwen2 and Qwen2.5: ChatML, no BOS token, biases on q/k/v, sliding windows on the layers from
`max_window_layers` on when the config enables them."""

from workbench.engine.adapters.base import ModelAdapter

ADAPTER = ModelAdapter(
    family="qwen2",
    hf_classes=("Qwen2ForCausalLM",),
    gguf_architectures=("qwen2",),
    end_of_turn_tokens=("<|im_end|>", "<|endoftext|>"),
    has_bos=False,
)
