"""Run-time checks of the jaxtyping shape annotations, for the test suite only.

`conftest.py` installs jaxtyping's import hook on the `workbench` package with `check_shapes` as its
type checker, so every call made by the tests checks the arguments and return values annotated with
jaxtyping array types (`Float[Tensor, "batch pos vocab"]`, ...), with one binding of every named
dimension per call. Plain Python annotations are documentation here and are not checked.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any

import jaxtyping


def _array_types(annotation: Any) -> tuple[type, ...] | None:
    """The jaxtyping array types an annotation admits, or None when it is not (only) such types."""
    if isinstance(annotation, type) and issubclass(annotation, jaxtyping.AbstractArray):
        return (annotation,)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = typing.get_args(annotation)
        arrays = [m for m in members if isinstance(m, type) and issubclass(m, jaxtyping.AbstractArray)]
        if arrays and all(m in arrays or m is type(None) for m in members):
            return tuple(arrays) + ((type(None),) if type(None) in members else ())
    return None


def _resolved(function: Callable[..., Any]) -> dict[str, tuple[type, ...]]:
    """Parameter (and "return") names whose annotation is a jaxtyping array type."""
    found = {}
    for name, annotation in getattr(function, "__annotations__", {}).items():
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, function.__globals__)  # our own annotations, from our own modules
            except Exception:  # names imported only for type checkers
                continue
        admitted = _array_types(annotation)
        if admitted is not None:
            found[name] = admitted
    return found


def check_shapes(function: Callable[..., Any]) -> Callable[..., Any]:
    if function.__name__ == "__init__":
        # Dataclass constructors validate (and coerce) their own fields in `__post_init__`, raising
        # the `InputError` a user should see for bad input; their methods are checked.
        return function
    checked = _resolved(function)
    if not checked:
        return function
    signature = inspect.signature(function)
    returns = checked.pop("return", None)

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        for name, allowed in checked.items():
            if name in bound.arguments and not isinstance(bound.arguments[name], allowed):
                value = bound.arguments[name]
                shape = getattr(value, "shape", None)
                raise TypeError(
                    f"{function.__qualname__}: argument {name!r} of shape {tuple(shape) if shape is not None else type(value).__name__} does not match {allowed}"
                )
        result = function(*args, **kwargs)
        if returns is not None and not isinstance(result, returns):
            shape = getattr(result, "shape", None)
            raise TypeError(
                f"{function.__qualname__}: return value of shape {tuple(shape) if shape is not None else type(result).__name__} does not match {returns}"
            )
        return result

    return wrapper
