"""`single_thread_blas()`: run a block of many small matrix products on one BLAS thread.

Why (measured, benchmarks/profile_step.py and docs/performance.md): the fused attention multiplies
one (T, hs) by one (hs, T) matrix per batch row and head, B*nh small GEMMs per product. With
OPENBLAS_NUM_THREADS=2, OpenBLAS hands each GEMM above ~0.26 MFLOP to its second thread. On a busy
machine that thread is often not running, and every hand-off waits for the scheduler: the attention
of one config-M step took 1.1 s on two threads against 0.16 s on one (one training step 10.9 s;
this is what made one inference call take 6.6 s). On a quiet machine the small products gain
little from a second thread. The large GEMMs of the linear layers keep both threads.

The thread count is OpenBLAS's process-wide setting, restored on exit. With another BLAS (MKL,
Accelerate) or when the symbols are not found, this does nothing.
"""
from __future__ import annotations

import contextlib
import ctypes
import glob
import os

import numpy as np

_FUNCS = None   # (get, set) or () when unavailable; found on first use


def _openblas_funcs():
    """(get_num_threads, set_num_threads) of the OpenBLAS numpy uses, or () if not found."""
    global _FUNCS
    if _FUNCS is not None:
        return _FUNCS
    _FUNCS = ()
    here = os.path.dirname(np.__file__)
    libs = glob.glob(os.path.join(here, "..", "numpy.libs", "*openblas*")) + \
        glob.glob(os.path.join(here, ".dylibs", "*openblas*"))
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_openblas_", "openblas_"):
            for suffix in ("64_", ""):
                try:
                    get = getattr(lib, f"{prefix}get_num_threads{suffix}")
                    put = getattr(lib, f"{prefix}set_num_threads{suffix}")
                except AttributeError:
                    continue
                get.restype, get.argtypes = ctypes.c_int, []
                put.restype, put.argtypes = None, [ctypes.c_int]
                _FUNCS = (get, put)
                return _FUNCS
    return _FUNCS


def blas_threads() -> int:
    """OpenBLAS's current thread count (1 when OpenBLAS is not found)."""
    funcs = _openblas_funcs()
    return funcs[0]() if funcs else 1


@contextlib.contextmanager
def single_thread_blas():
    """Context manager: OpenBLAS uses one thread inside the block (see the module docstring)."""
    funcs = _openblas_funcs()
    if not funcs:
        yield
        return
    get, put = funcs
    n = get()
    if n <= 1:
        yield
        return
    put(1)
    try:
        yield
    finally:
        put(n)
