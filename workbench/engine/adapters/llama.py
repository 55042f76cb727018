"""Llama (Llama-2/3, SmolLM2 and other Llama-architecture fine-tunes)."""

from workbench.engine.adapters.base import ModelAdapter

ADAPTER = ModelAdapter(
    family="llama",
    hf_classes=("LlamaForCausalLM",),
    gguf_architectures=("llama",),
    # Llama-3 ends a turn with <|eot_id|> (<|eom_id|> after a tool call); Llama-architecture
    # fine-tunes such as SmolLM2 use ChatML's <|im_end|> and end documents with <|endoftext|>.
    end_of_turn_tokens=("<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "<|im_end|>", "<|endoftext|>"),
)
