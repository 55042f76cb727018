"""Model adapters: one module per supported family, and the registry that picks one.

`adapter_for(hf_model)` chooses by the Hugging Face class (or `config.architectures`), and
`adapter_for_gguf(architecture)` by a GGUF file's `general.architecture`; an unsupported family
is refused at load with a one-line error naming the supported ones.
"""

from __future__ import annotations

from workbench.engine.adapters import gemma2, gemma3, llama, mistral, phi3, qwen2, qwen3
from workbench.engine.adapters.base import HOOKS, OPTIONAL_HOOKS, ModelAdapter
from workbench.errors import ModelLoadError

ADAPTERS: dict[str, ModelAdapter] = {
    module.ADAPTER.family: module.ADAPTER for module in (llama, mistral, qwen2, qwen3, gemma2, gemma3, phi3)
}
FAMILIES: tuple[str, ...] = tuple(ADAPTERS)


def supported() -> str:
    return ", ".join(FAMILIES)


def adapter_for(hf_model) -> ModelAdapter:
    """The adapter of a Hugging Face causal LM, by its class or its config's `architectures`."""
    names = [type(hf_model).__name__, *(getattr(hf_model.config, "architectures", None) or [])]
    return adapter_for_names(names, getattr(hf_model.config, "model_type", "?"))


def adapter_for_names(names: list[str], model_type: str) -> ModelAdapter:
    """The adapter of the first Hugging Face class name in `names` that a family covers."""
    for adapter in ADAPTERS.values():
        if any(name in adapter.hf_classes for name in names):
            return adapter
    raise ModelLoadError(f"unsupported model family {names[0]} (model_type {model_type!r}); supported families: {supported()}")


def adapter_for_family(family: str) -> ModelAdapter:
    if family not in ADAPTERS:
        raise ModelLoadError(f"unknown model family {family!r}; supported families: {supported()}")
    return ADAPTERS[family]


def adapter_for_gguf(architecture: str, file: str) -> ModelAdapter:
    for adapter in ADAPTERS.values():
        if architecture in adapter.gguf_architectures:
            return adapter
    raise ModelLoadError(f"{file}: GGUF architecture {architecture!r} is not supported; supported families: {supported()}")


__all__ = [
    "ADAPTERS",
    "FAMILIES",
    "HOOKS",
    "OPTIONAL_HOOKS",
    "ModelAdapter",
    "adapter_for",
    "adapter_for_family",
    "adapter_for_gguf",
    "adapter_for_names",
]
