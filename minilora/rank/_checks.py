"""Argument checks shared by the rank tools (the conventions are in the package docstring)."""
from __future__ import annotations

import numbers

import numpy as np

# ----------------------------------------------------------------------------------------------
# validation helpers
# ----------------------------------------------------------------------------------------------

def _as_array(x, name: str, fn: str, ndims: tuple[int, ...]) -> np.ndarray:
    """Convert ``x`` to a finite real float ndarray with ndim in ``ndims``, or raise."""
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as e:  # ragged nested lists and the like
        raise ValueError(f"{fn}: {name} could not be converted to an array: {e}") from None
    kind = arr.dtype.kind
    if kind not in "iuf":
        raise TypeError(
            f"{fn}: {name} must be a real numeric array (int or float), got dtype {arr.dtype}"
        )
    if kind in "iu":
        arr = arr.astype(np.float64)
    elif arr.dtype not in (np.float32, np.float64):  # float16, longdouble: not in numpy.linalg
        arr = arr.astype(np.float32 if arr.dtype.itemsize < 4 else np.float64)
    if arr.ndim not in ndims:
        want = " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(f"{fn}: {name} must be {want}, got shape {arr.shape} (ndim {arr.ndim})")
    if arr.size == 0:
        raise ValueError(f"{fn}: {name} is empty (shape {arr.shape})")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{fn}: {name} contains NaN or inf values (shape {arr.shape})")
    return arr


def _as_matrix(x, name: str, fn: str) -> np.ndarray:
    return _as_array(x, name, fn, (2,))


def _spectrum(s, fn: str, name: str = "s") -> np.ndarray:
    """A 1-D spectrum (validated, sorted descending) or the singular values of a 2-D matrix."""
    arr = _as_array(s, name, fn, (1, 2))
    if arr.ndim == 2:
        return np.linalg.svd(arr, compute_uv=False)
    if np.any(arr < 0):
        raise ValueError(
            f"{fn}: singular values must be non-negative, got min {arr.min()} (shape {arr.shape})"
        )
    return np.sort(arr)[::-1]


def _check_int(k, name: str, fn: str, lo: int, hi: int, what: str = "") -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"{fn}: {name} must be an integer, got {type(k).__name__} {k!r}")
    k = int(k)
    if not lo <= k <= hi:
        raise ValueError(f"{fn}: {name}={k} is out of range [{lo}, {hi}]{what}")
    return k


def _check_real(x, name: str, fn: str) -> float:
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise TypeError(f"{fn}: {name} must be a real number, got {type(x).__name__} {x!r}")
    x = float(x)
    if not np.isfinite(x):
        raise ValueError(f"{fn}: {name} must be finite, got {x}")
    return x


def _same_dtype(a: np.ndarray, b: np.ndarray, fn: str, na: str, nb: str) -> None:
    if a.dtype != b.dtype:
        raise TypeError(
            f"{fn}: {na} and {nb} must have the same dtype (no silent upcast), got "
            f"{na} {a.dtype} {a.shape} and {nb} {b.dtype} {b.shape}"
        )


def _scaled_squares(s: np.ndarray) -> np.ndarray:
    """(s / s_max)**2: squares without overflow for huge s. Needs s_max > 0."""
    return (s / s[0]) ** 2


