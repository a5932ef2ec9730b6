"""`one_blas_thread()`: hold BLAS to one thread while a selection kernel (K-Center passes, pool K-Means, ball graph) runs.

The pool kernels make many small fixed-shape products; on a shared or busy machine a
multi-threaded BLAS spends more time waking threads than computing (measured: 10x
slower under load), and one actor per core already uses the cores. A no-op without
threadpoolctl.
"""
from __future__ import annotations

import functools
from contextlib import nullcontext
from typing import Any, Callable, TypeVar

try:
    from threadpoolctl import ThreadpoolController
except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
    ThreadpoolController = None

_controller = None
Function = TypeVar("Function", bound=Callable[..., Any])


def one_blas_thread():
    """A context holding BLAS to one thread."""
    global _controller
    if ThreadpoolController is None:
        return nullcontext()
    if _controller is None:
        _controller = ThreadpoolController()  # inspecting the loaded libraries is the slow part: once
    return _controller.limit(limits=1, user_api="blas")


def single_threaded(function: Function) -> Function:
    """Decorator: run `function` under `one_blas_thread()`."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with one_blas_thread():
            return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
