"""Process-level speed settings, applied only when asked for (the CLI and the benchmarks ask).

Where time goes (measured with benchmarks/bench_train.py and the process's page-fault counters): at
these model sizes most of the gap between NumPy and PyTorch is page faults. glibc hands large freed
temporaries back to the kernel (munmap, heap trimming), and every training step faults the same
memory in again, at 2-3 microseconds per 4 kB page. Telling glibc to keep freed memory removes the
faults. A library should not change a user's process behind their back, so this is an explicit call.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3


def configure_malloc(mmap_threshold: int = 32 * 1024 * 1024, trim_threshold: int = 2**40,
                     top_pad: int = 64 * 1024 * 1024) -> bool:
    """Ask glibc to keep freed memory (no munmap/trim), so big temporaries do not fault every step.

    Args:
        mmap_threshold: bytes; allocations below it come from the heap, not from fresh mmaps
            (glibc's maximum is 32 MiB on 64-bit).
        trim_threshold: bytes of free heap top glibc may keep before returning it to the kernel.
        top_pad: bytes of extra heap requested each time the heap grows.
    Returns:
        True if all settings were applied; False on non-glibc systems (macOS, Windows, musl), where
        it does nothing.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = all([mallopt(M_MMAP_THRESHOLD, int(mmap_threshold)) == 1,
              mallopt(M_TRIM_THRESHOLD, int(min(trim_threshold, 2**31 - 1))) == 1,
              mallopt(M_TOP_PAD, int(top_pad)) == 1])
    return ok
