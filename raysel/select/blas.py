"""`one_blas_thread()`: hold BLAS to one thread while a selection kernel (K-Center passes, pool K-Means, ball graph) runs;
`over_row_chunks()`: spread a kernel's fixed-size row blocks over threads instead.

The pool kernels make many small fixed-shape products; on a shared or busy machine a
multi-threaded BLAS spends more time waking threads than computing (measured: 10x
slower under load), and one actor per core already uses the cores. A no-op without
threadpoolctl.
"""
from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import Any, Callable, Sequence, TypeVar

try:
    from threadpoolctl import ThreadpoolController
except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
    ThreadpoolController = None

_controller = None
Function = TypeVar("Function", bound=Callable[..., Any])
Item = TypeVar("Item")
Result = TypeVar("Result")


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


def map_threads(function: Callable[[Item], Result], items: Sequence[Item], threads: int) -> list[Result]:
    """[function(item) for item in items] on up to `threads` threads, BLAS held to one thread, results in order.

    numpy releases the GIL in its products and array loops, so the threads use the cores;
    each item's numbers are what one thread alone would compute.
    """
    with one_blas_thread():
        if int(threads) <= 1 or len(items) <= 1:
            return [function(item) for item in items]
        with ThreadPoolExecutor(min(int(threads), len(items))) as pool:
            return list(pool.map(function, items))


def over_row_chunks(rows: int, block: int, threads: int, work: Callable[[int, int], Any]) -> None:
    """Run work(start, stop) over contiguous chunks of whole `block`-row blocks, one chunk per thread.

    BLAS is held to one thread inside: small fixed-shape products run fastest that way,
    and since every block has the same shape wherever it runs, threads cannot change any
    result bit.
    """
    blocks = -(-rows // block)
    workers = max(1, min(int(threads), blocks))
    bounds = [min(rows, block * (blocks * part // workers)) for part in range(workers + 1)]
    chunks = [(start, stop) for start, stop in zip(bounds[:-1], bounds[1:]) if stop > start]
    map_threads(lambda chunk: work(*chunk), chunks, workers)
