"""Operator application into a reused output buffer.

On CPU, writing a large result into freshly allocated memory costs more than
the stencil itself: every new page faults on first touch (measured here at
about 2.7 GB/s against 43 GB/s for a copy into existing memory). Inside
`simulate`'s compiled loop XLA reuses buffers by itself; for one-off
applications outside a loop, `buffered` lets the caller hand the previous
result back so XLA writes the new one into the same memory.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax

__all__ = ["buffered"]


def buffered(fn: Callable) -> Callable:
    """Jit `fn` so its result is written into a donated buffer passed as `out=`.

    `f = fd.buffered(fn)`; then `y = f(*args, out=y)` computes `fn(*args)` and
    stores it in the memory of the old `y` (which must have the result's
    shape, dtype and pytree structure, and must not be used afterwards: it
    is donated). With `out=None` a fresh result is allocated, as with
    `jax.jit(fn)`.

    Arguments:
        fn: a function of arrays (an operator application, a time step...).

    Returns:
        The jitted function taking an extra keyword argument `out`.
    """

    def with_out(args, out):
        del out  # only its memory is wanted
        return fn(*args)

    # keep_unused: otherwise jit drops the unused argument and the donation with it
    donated = jax.jit(with_out, donate_argnums=1, keep_unused=True)
    plain = jax.jit(fn)

    @functools.wraps(fn)
    def call(*args, out=None):
        if out is None:
            return plain(*args)
        return donated(args, out)

    return call
