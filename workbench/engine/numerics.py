"""Numbers that do not depend on the machine's thread count, and a record where they do.

On the CPU, PyTorch's kernels may split a computation over threads in a way that changes the
order of a floating-point sum, so the same computation at 1 and at 2 threads can differ in the
last bits. What we found on the pinned CPU build (MKL, x86-64; docs/numerics.md has the
measurements and the decision for every computation):

- full-sequence forward passes (every score: exact PCS, the validation study, the profile
  effect, the mean-ablation reference) are bit-equal at any thread count we tried;
- in a backward pass, the softmax's gradient kernel takes another summation order on one thread
  than on several, so attribution estimates differed by about 1e-7. `invariant_grad` runs those
  nodes of the graph on one thread (the rest keeps every thread); the gradients are then bit-equal
  at any thread count;
- a decoding step multiplies only a few rows, and MKL picks a different kernel for few rows on one
  thread than on several: step logits differ by about 2e-5 (of values around 10-30). Decoding is
  therefore *recorded*: every prediction carries the thread count it was decoded at
  (`numerics_record`), and a run, resume, merge or comparison that mixes thread counts says so
  (`mixed_threads_note`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

# Backward nodes whose CPU kernel sums in a thread-count-dependent order (checked on every model
# family by tests/test_numerics.py): they run on one thread inside `invariant_grad`.
SERIAL_BACKWARD_NODES = frozenset({"SoftmaxBackward0"})


def invariant_grad(
    output: torch.Tensor | Sequence[torch.Tensor],
    inputs: Sequence[torch.Tensor],
    *,
    grad_outputs: Sequence[torch.Tensor] | None = None,
    retain_graph: bool = False,
) -> tuple[torch.Tensor, ...]:
    """`torch.autograd.grad(output, inputs, grad_outputs, retain_graph)` with the same result at
    any CPU thread count: the graph's `SERIAL_BACKWARD_NODES` run on one thread (their share of
    the time is small). `output` may be several tensors (then with their `grad_outputs`)."""
    outputs = [output] if isinstance(output, torch.Tensor) else list(output)
    handles = []
    saved: list[int] = []

    def serial(grad_outputs: Any) -> None:
        saved.append(torch.get_num_threads())
        torch.set_num_threads(1)

    def restore(grad_inputs: Any, grad_outputs: Any) -> None:
        torch.set_num_threads(saved.pop())

    if outputs[0].device.type == "cpu":
        for node in _graph_nodes([tensor.grad_fn for tensor in outputs]):
            if type(node).__name__ in SERIAL_BACKWARD_NODES:
                handles += [node.register_prehook(serial), node.register_hook(restore)]
    try:
        return torch.autograd.grad(outputs, list(inputs), grad_outputs=grad_outputs, retain_graph=retain_graph)
    finally:
        for handle in handles:
            handle.remove()
        if saved:  # an exception inside a serial node: give the threads back
            torch.set_num_threads(saved[0])


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the block on one CPU thread, then restore the thread count: for forwards of few rows
    (KV-cached steps), whose products take another summation order on one thread than on several,
    so that what they compute is the same at any thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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
