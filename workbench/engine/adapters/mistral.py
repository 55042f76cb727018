"""Mistral (Mistral-7B v0.1-v0.3 and their instruct models): sliding-window attention on every
layer when the config sets a window."""

from workbench.engine.adapters.base import ModelAdapter

ADAPTER = ModelAdapter(
    family="mistral",
    hf_classes=("MistralForCausalLM",),
    gguf_architectures=("mistral",),
    # A turn ends with EOS `</s>`; the instruct template has no other end-of-turn token.
    end_of_turn_tokens=("</s>",),
    requires_bos=True,
)
