"""Numbers that do not depend on the machine's thread count, and a record where they do.

On the CPU, PyTorch's kernels may split a computation over threads in a way that changes the
order of a floating-point sum, so the same computation at 1 and at 2 threads can differ in the
last bits. What we found on the pinned CPU build (MKL, x86-64; docs/numerics.md has the
measurements and the decision for every computation):

- a matrix product whose output is small next to its reduction (few rows: a short sequence, the
  few target positions that reach the unembedding, a restart of one layer's heads at those
  positions) is computed by MKL with its reduction shared out between the threads, so its sums
  depend on the thread count. Seen on the default model: the MLP's down projection (a reduction of
  1,536 into 576) for 57 to 192 rows in the forward pass; in the backward pass, the gradient
  through the up and gate projections for 1 and 17 to 192 rows, and through the unembedding (a
  reduction over the 49,152-token vocabulary) for 1 and 16 or more rows. Such products run on one
  thread (`serial_product`): in the forward pass through hooks on every linear layer of the model
  (`serialize_small_products`), in the backward pass inside `invariant_grad`. Products with a large
  output share out their rows, whose sums do not depend on the thread count;
- so full-sequence forward passes (every score: exact PCS, the validation study, the profile
  effect, the mean-ablation reference) are bit-equal at any thread count we tried;
- in a backward pass, the softmax's gradient kernel takes another summation order on one thread
  than on several, so attribution estimates differed by about 1e-7. `invariant_grad` runs those
  nodes of the graph on one thread too (the rest keeps every thread); the gradients are then
  bit-equal at any thread count;
- a decoding step multiplies only a few rows, and MKL picks a different kernel for few rows on one
  thread than on several: step logits differ by about 2e-5 (of values around 10-30). Running those
  products on one thread as well would cost decoding about 1.2x (`products_on_every_thread` keeps
  them on every thread), so decoding is *recorded*: every prediction carries the thread count it
  was decoded at (`numerics_record`), and a run, resume, merge or comparison that mixes thread
  counts says so (`mixed_threads_note`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

# Backward nodes whose CPU kernel sums in a thread-count-dependent order (checked on every model
# family by tests/test_numerics.py): they run on one thread inside `invariant_grad`.
SERIAL_BACKWARD_NODES = frozenset({"SoftmaxBackward0"})
# Backward nodes of a linear layer: their input gradient is a product, serial when `serial_product` says so.
PRODUCT_BACKWARD_NODES = frozenset({"MmBackward0", "AddmmBackward0"})
# A product runs on one thread when its output has fewer than this many elements per reduction step
# (on the default model: below 683 rows for the MLP's projections, below 21,845 for the unembedding's gradient).
SERIAL_OUTPUT_PER_REDUCTION = 256


class _ThreadState(threading.local):
    """Per Python thread: the thread counts to restore as serial sections end (None: nothing to
    restore), and whether linear layers keep every thread (`products_on_every_thread`)."""

    def __init__(self) -> None:
        self.saved: list[int | None] = []
        self.every_thread = False


_state = _ThreadState()


def serial_product(rows: int, reduction: int, width: int) -> bool:
    """Whether a `[rows, reduction] @ [reduction, width]` product runs on one CPU thread: when its
    output is small next to its reduction, MKL shares the reduction out between threads, which
    changes the order of its sums (module docstring)."""
    return rows * width < SERIAL_OUTPUT_PER_REDUCTION * reduction


def _serial_enter(serial: bool) -> None:
    """Go down to one thread when `serial` (and not there already); remember what to restore."""
    before = torch.get_num_threads()
    _state.saved.append(before if serial and before > 1 else None)
    if _state.saved[-1] is not None:
        torch.set_num_threads(1)


def _serial_exit() -> None:
    before = _state.saved.pop()
    if before is not None:
        torch.set_num_threads(before)


def serialize_small_products(model: torch.nn.Module) -> None:
    """Hooks on every linear layer of `model` that run its product on one thread when
    `serial_product` says so (on the CPU; a GPU kernel's order does not depend on it)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_pre_hook(_serial_linear(module.in_features, module.out_features))
            module.register_forward_hook(lambda *_: _serial_exit(), always_call=True)


def _serial_linear(reduction: int, width: int) -> Callable[[torch.nn.Module, tuple], None]:
    """A linear layer's pre-hook: one thread for the product when `serial_product` says so."""

    def enter(module: torch.nn.Module, args: tuple) -> None:
        x = args[0] if args else None  # (a layer called with its input by keyword is left as it is)
        if x is None or x.device.type != "cpu" or _state.every_thread:
            _serial_enter(False)
        else:
            _serial_enter(serial_product(x.numel() // max(1, x.shape[-1]), reduction, width))

    return enter


@contextmanager
def products_on_every_thread() -> Iterator[None]:
    """Inside, linear layers keep every thread whatever their size: for decoding, whose few-row
    steps would cost about 1.2x on one thread and which records its thread count instead
    (benchmarks/RESULTS.md, "Numerics")."""
    before, _state.every_thread = _state.every_thread, True
    try:
        yield
    finally:
        _state.every_thread = before


def invariant_grad(
    output: torch.Tensor | Sequence[torch.Tensor],
    inputs: Sequence[torch.Tensor],
    *,
    grad_outputs: Sequence[torch.Tensor] | None = None,
    retain_graph: bool = False,
) -> tuple[torch.Tensor, ...]:
    """`torch.autograd.grad(output, inputs, grad_outputs, retain_graph)` with the same result at
    any CPU thread count: the graph's `SERIAL_BACKWARD_NODES`, and the products of
    `PRODUCT_BACKWARD_NODES` that `serial_product` picks, run on one thread (their share of the
    time is small). `output` may be several tensors (then with their `grad_outputs`)."""
    outputs = [output] if isinstance(output, torch.Tensor) else list(output)
    handles = []
    depth = len(_state.saved)

    def serial(grad_outputs: Any) -> None:
        _serial_enter(True)

    def product(node: Any) -> Callable[[Any], None]:
        mat2 = node._saved_mat2  # the weight's transpose, [in, out]: the input gradient is grad @ mat2.T

        def maybe_serial(grad_outputs: Any) -> None:
            grad = grad_outputs[0]
            rows = grad.numel() // max(1, grad.shape[-1])
            _serial_enter(mat2 is not None and serial_product(rows, grad.shape[-1], mat2.shape[0]))

        return maybe_serial

    def restore(grad_inputs: Any, grad_outputs: Any) -> None:
        _serial_exit()

    if outputs[0].device.type == "cpu":
        for node in _graph_nodes([tensor.grad_fn for tensor in outputs]):
            name = type(node).__name__
            if name in SERIAL_BACKWARD_NODES:
                handles += [node.register_prehook(serial), node.register_hook(restore)]
            elif name in PRODUCT_BACKWARD_NODES:
                handles += [node.register_prehook(product(node)), node.register_hook(restore)]
    try:
        return torch.autograd.grad(outputs, list(inputs), grad_outputs=grad_outputs, retain_graph=retain_graph)
    finally:
        for handle in handles:
            handle.remove()
        while len(_state.saved) > depth:  # an exception inside a node: give the threads back
            _serial_exit()


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the block on one CPU thread, then restore the thread count: for forwards of few rows
    (KV-cached steps), whose products take another summation order on one thread than on several,
    so that what they compute is the same at any thread count."""
    _serial_enter(True)
    try:
        yield
    finally:
        _serial_exit()


def _graph_nodes(roots: Sequence[Any]) -> Iterable[Any]:
    """Every node of the autograd graph below `roots`, each once."""
    seen: set[Any] = set()
    stack = list(roots)
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        yield node
        stack.extend(child for child, _ in node.next_functions)


def numerics_record(device: torch.device | str) -> dict[str, Any]:
    """What a thread-dependent result records about how it was computed: the device type and,
    on the CPU, the number of torch threads (None elsewhere: a GPU kernel's order does not
    depend on it)."""
    kind = torch.device(device).type
    return {"device": kind, "threads": torch.get_num_threads() if kind == "cpu" else None}


def mixed_threads_note(threads: Iterable[int | None], what: str) -> str | None:
    """One line when `what` was computed at several CPU thread counts (None when at one)."""
    counts = sorted({count for count in threads if count is not None})
    if len(counts) < 2:
        return None
    listed = ", ".join(str(count) for count in counts)
    return (
        f"{what} mixes results decoded at {listed} torch threads: step logits can differ at float rounding "
        "(about 1e-5) between thread counts, so a token can differ only where the two best scores were that close "
        "(docs/numerics.md)"
    )
