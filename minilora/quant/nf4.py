r"""4-bit NormalFloat (NF4) from first principles: levels, block-wise absmax, packing, double quantization.

QLoRA (Dettmers et al. 2023, arXiv:2305.14314, §3) stores a frozen weight in 4 bits per value:

1. **The 16 NF4 levels** are quantiles of N(0, 1) rescaled to [-1, 1]. Eq. 4 estimates level i as
   q_i = ½ (Q_X(i / (2^k + 1)) + Q_X((i + 1) / (2^k + 1))), Q_X the normal quantile function. A
   symmetric 16-level type has no exact 0, so the paper builds an *asymmetric* one: 2^(k-1) = 8
   quantiles on the positive side and 2^(k-1) - 1 = 7 on the negative side, one shared exact 0,
   then divides by the largest so the ends are ±1. The quantiles are taken at probabilities
   linspace(δ, ½, 9)[:-1] (positive) and linspace(δ, ½, 8)[:-1] (negative, mirrored) with
   δ = 1 − ½ (1/32 + 1/30) = 0.96770833 (half-way between the end probabilities of a 16- and a
   15-level grid, so the outermost quantile is finite): `nf4_levels`.
   **Where the check comes from**: `NF4_BNB` below is the table that bitsandbytes hard-codes
   (csrc/kernels.cu, `dDequantizeNF4`; produced by `bitsandbytes.functional.create_normal_map`,
   offset 0.9677083, use_extra_value=True). Our float64 derivation agrees with it to 2e-7; the
   last float32 ulp differs because bitsandbytes rounds δ to 0.9677083 and runs linspace in
   float32 (tests/test_quant.py::test_nf4_levels_match_bitsandbytes checks both facts).
2. **Block-wise absmax** (block size 64): the flattened weight is cut into blocks of 64; each
   block stores its absmax c = max |w| as float32 and the 4-bit index of the level nearest to
   w / c. Dequantization: w ≈ level[code] · c. A block of zeros stores c = 0 and decodes to 0.
3. **Packing**: two 4-bit codes per uint8, the first in the high nibble (bitsandbytes' order).
4. **Double quantization** (§3 "Double Quantization"): the float32 absmaxes c2 (one per 64
   weights: 0.5 bit/param) are themselves quantized: subtract their mean (they are all positive;
   centring lets a symmetric code use both signs), then 8-bit block-wise quantization with block
   size 256 using bitsandbytes' signed dynamic 8-bit float map (`dynamic_map_8bit`, Dettmers 2015,
   arXiv:1511.04561). Storage per parameter: 4 + 8/64 + 32/(64·256) = 4.127 bits instead of
   4 + 32/64 = 4.5 (`minilora.costs.nf4_bits_per_param`, the closed form; `QuantState.bits_per_param`
   measures the arrays actually held).

For comparison the same block-wise machinery runs two other 4-bit codes (`LEVELS`): "int4", the
uniform symmetric code k/7, k = -7..7 (15 values), and "fp4", the E2M1 float (1 sign, 2 exponent
bits with bias 1, 1 mantissa bit: magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6, divided by 6; +0 and -0 make
15 distinct values). On normal weights NF4 has the smallest error because it puts its levels where
the probability mass is (equal mass per bin): see `quantization_error` and lesson 12.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

__all__ = ["NF4_OFFSET", "NF4_BNB", "nf4_levels", "int4_levels", "fp4_levels", "LEVELS", "dynamic_map_8bit",
           "pack_4bit", "unpack_4bit", "quantize_blockwise", "dequantize_blockwise", "QuantState", "quantize_4bit",
           "quantization_error"]

NF4_OFFSET = 1.0 - 0.5 * (1.0 / 32 + 1.0 / 30)      # δ = 0.96770833...: QLoRA's appendix / create_normal_map

# bitsandbytes' published NF4 table (csrc/kernels.cu dDequantizeNF4; functional.create_normal_map). A check only:
# minilora quantizes with the levels it derives itself (`nf4_levels`).
NF4_BNB = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0])


def nf4_levels(offset: float = NF4_OFFSET) -> np.ndarray:
    """The 16 NF4 levels, ascending, float64 (16,): 7 negative, an exact 0, 8 positive, ends ±1.

    QLoRA §3 eq. 4 with the asymmetric construction (module docstring): normal quantiles at
    linspace(offset, ½, 9)[:-1] and −(those at linspace(offset, ½, 8)[:-1]), plus 0, divided by
    the largest. The quantile function is `statistics.NormalDist().inv_cdf` (Wichura's AS241,
    double precision). Raises ValueError unless ½ < offset < 1.
    """
    if not 0.5 < float(offset) < 1.0:
        raise ValueError(f"nf4_levels: offset must be in (0.5, 1) (a probability above the median), got {offset!r}")
    q = NormalDist().inv_cdf
    pos = [q(float(p)) for p in np.linspace(offset, 0.5, 9)[:-1]]       # 8 values > 0
    neg = [-q(float(p)) for p in np.linspace(offset, 0.5, 8)[:-1]]      # 7 values < 0
    v = np.sort(np.array(pos + [0.0] + neg))
    return v / v.max()


def int4_levels() -> np.ndarray:
    """Uniform symmetric int4 (absmax): k/7 for k = -7..7, float64 (15,) (code -8 unused, keeps 0 exact)."""
    return np.arange(-7, 8) / 7.0


def fp4_levels() -> np.ndarray:
    """E2M1 4-bit float (sign, 2 exponent bits with bias 1, 1 mantissa bit) / 6: float64 (15,) ascending.

    Exponent 0 is subnormal (0, 0.5), exponents 1-3 give 1, 1.5, 2, 3, 4, 6; ±0 coincide (15 values).
    """
    mags = [m * 2.0 ** (e - 1) if e else m * 0.5 for e in range(4) for m in ((1.0, 1.5) if e else (0.0, 1.0))]
    v = np.unique(np.array(mags + [-m for m in mags]))
    return v / v.max()


LEVELS = {"nf4": nf4_levels, "int4": int4_levels, "fp4": fp4_levels}


def dynamic_map_8bit() -> np.ndarray:
    """bitsandbytes' signed dynamic 8-bit map (create_dynamic_map(signed=True)): float64 (256,) ascending.

    A dynamic-exponent float (Dettmers 2015, arXiv:1511.04561): for i = 0..6 the decade 10^(i-6)
    holds 2^i fraction values, the midpoints of linspace(0.1, 1, 2^i + 1), on each sign; plus 0 and
    1. 2·127 + 2 = 256 values in [-0.955, 1]. QLoRA uses it for the double-quantized constants.
    """
    data = []
    for i in range(7):
        b = np.linspace(0.1, 1.0, 2 ** i + 1)
        means = (b[:-1] + b[1:]) / 2.0
        data += list(10.0 ** (i - 6) * means) + list(-(10.0 ** (i - 6)) * means)
    return np.sort(np.array(data + [0.0, 1.0]))


# --------------------------------------------------------------------------- packing

def pack_4bit(codes: np.ndarray) -> np.ndarray:
    """Two 4-bit codes per byte, the first in the high nibble: uint8 (n,) with n even -> uint8 (n/2,).

    Raises ValueError for an odd length or a code outside 0..15.
    """
    codes = np.asarray(codes)
    if codes.ndim != 1 or codes.size % 2:
        raise ValueError(f"pack_4bit: codes must be 1-D of even length, got shape {codes.shape}")
    if codes.size and (codes.min() < 0 or codes.max() > 15):
        raise ValueError(f"pack_4bit: codes must be in 0..15, got range [{codes.min()}, {codes.max()}]")
    c = codes.astype(np.uint8)
    return (c[0::2] << 4) | c[1::2]


def unpack_4bit(packed: np.ndarray) -> np.ndarray:
    """Inverse of `pack_4bit`: uint8 (m,) -> uint8 (2m,) codes in 0..15."""
    packed = np.asarray(packed, dtype=np.uint8)
    out = np.empty(2 * packed.size, dtype=np.uint8)
    out[0::2] = packed >> 4
    out[1::2] = packed & 15
    return out


def _pair_table(levels: np.ndarray) -> np.ndarray:
    """(256, 2) float32: byte p -> (levels[p >> 4], levels[p & 15]); one gather decodes two codes."""
    lv = np.zeros(16, dtype=np.float32)
    lv[:len(levels)] = levels
    p = np.arange(256)
    return np.stack([lv[p >> 4], lv[p & 15]], axis=1)


# --------------------------------------------------------------------------- block-wise absmax

def _check_finite(x: np.ndarray, op: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise TypeError(f"{op}: expected a float array (float32 or float64), got dtype {x.dtype}")
    if x.size == 0:
        raise ValueError(f"{op}: the array is empty (shape {x.shape}); there is nothing to quantize")
    bad = ~np.isfinite(x)
    if bad.any():
        first = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), x.shape))
        raise ValueError(f"{op}: {int(bad.sum())} non-finite value(s) (NaN or inf), the first at index {first} "
                         f"= {x[first]}; quantization needs finite weights (an absmax of inf would zero the block)")
    return x


def quantize_blockwise(x: np.ndarray, levels: np.ndarray, block_size: int = 64,
                       op: str = "quantize_blockwise") -> tuple[np.ndarray, np.ndarray, int]:
    """Block-wise absmax quantization of x (any shape, finite floats) to the nearest of `levels`.

    Args: levels ascending (L,) in [-1, 1] with L <= 256; block_size >= 1.
    Returns: (codes uint8 (n + pad,), absmax float32 (n_blocks,), pad): the flattened x padded with
        `pad` zeros to a multiple of block_size (a UserWarning says so when pad > 0); code j of
        block b decodes to levels[code] * absmax[b].
    Raises: TypeError (not float), ValueError (empty, NaN/inf, bad block_size).
    """
    x = _check_finite(x, op)
    if not isinstance(block_size, (int, np.integer)) or isinstance(block_size, bool) or block_size < 1:
        raise ValueError(f"{op}: block_size must be an int >= 1, got {block_size!r}")
    flat = x.reshape(-1)
    pad = (-flat.size) % block_size
    if pad:
        warnings.warn(f"{op}: {flat.size} values are not a multiple of block_size {block_size}; padding the last "
                      f"block with {pad} zeros (stored, and dropped again by dequantization)", UserWarning,
                      stacklevel=3)
        flat = np.concatenate([flat, np.zeros(pad, dtype=flat.dtype)])
    blocks = flat.reshape(-1, block_size)                                  # (n_blocks, block)
    absmax = np.abs(blocks).max(axis=1).astype(np.float32)                 # (n_blocks,)
    scale = np.where(absmax > 0, absmax, np.float32(1.0))                  # a zero block stays zero
    normed = blocks / scale[:, None]                                       # in [-1, 1]
    levels = np.asarray(levels, dtype=np.float64)
    mid = (levels[1:] + levels[:-1]) / 2                                   # decision boundaries
    codes = np.searchsorted(mid, normed.reshape(-1)).astype(np.uint8)      # nearest level
    return codes, absmax, pad


def dequantize_blockwise(codes: np.ndarray, absmax: np.ndarray, levels: np.ndarray, block_size: int,
                         dtype=np.float32) -> np.ndarray:
    """levels[codes] * absmax per block: codes uint8 (n_blocks·block,), absmax (n_blocks,) -> dtype (same n)."""
    vals = np.asarray(levels, dtype=np.float32)[codes].reshape(-1, block_size)
    return (vals * np.asarray(absmax, dtype=np.float32)[:, None]).reshape(-1).astype(dtype, copy=False)


# --------------------------------------------------------------------------- the stored state

@dataclass
class QuantState:
    """A 4-bit block-wise quantized array: what a QLoRA base layer holds instead of its float weight.

    Attributes:
        shape, dtype: of the original array (dequantization returns this dtype).
        quant_type: "nf4", "fp4" or "int4"; block_size (64); pad: zeros appended to fill the last block.
        packed: uint8 ((n + pad)/2,), two codes per byte.
        absmax: float32 (n_blocks,) without double quantization, else None.
        Double quantization (dq_block_size 256): qabsmax uint8 (n_blocks,) codes of the dynamic
        8-bit map, absmax2 float32 (ceil(n_blocks/256),), absmax_mean float32 (the subtracted mean).
    """

    shape: tuple
    dtype: np.dtype
    quant_type: str
    block_size: int
    pad: int
    packed: np.ndarray
    absmax: np.ndarray | None = None
    qabsmax: np.ndarray | None = None
    absmax2: np.ndarray | None = None
    absmax_mean: np.float32 | None = None
    dq_block_size: int = 256

    @property
    def double_quant(self) -> bool:
        return self.absmax is None

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def absmax_float(self) -> np.ndarray:
        """The per-block constants as float32 (n_blocks,), dequantizing them if double-quantized."""
        if self.absmax is not None:
            return self.absmax
        n = self.qabsmax.size
        pad2 = (-n) % self.dq_block_size
        codes = np.concatenate([self.qabsmax, np.full(pad2, _DQ_ZERO, np.uint8)]) if pad2 else self.qabsmax
        c = dequantize_blockwise(codes, self.absmax2, _DQ_MAP, self.dq_block_size)[:n]
        return c + self.absmax_mean

    def dequantize_blocks(self, b0: int, b1: int, absmax: np.ndarray | None = None) -> np.ndarray:
        """Blocks b0..b1-1 decoded: float32 ((b1 - b0)·block_size,). `absmax`: precomputed `absmax_float()`."""
        c = self.absmax_float() if absmax is None else absmax
        half = self.block_size // 2
        pairs = _PAIR_TABLES[self.quant_type][self.packed[b0 * half:b1 * half]]      # ((b1-b0)·half, 2)
        return (pairs.reshape(b1 - b0, self.block_size) * c[b0:b1, None]).reshape(-1)

    def dequantize(self, dtype=None) -> np.ndarray:
        """The whole array decoded, in `dtype` (default the original dtype), of the original shape."""
        flat = self.dequantize_blocks(0, self.absmax_float().size)
        return flat[:self.size].reshape(self.shape).astype(dtype or self.dtype, copy=False)

    def nbytes(self) -> dict[str, int]:
        """Bytes actually held, by part: codes, constants (absmax, or qabsmax + absmax2), per-tensor (mean)."""
        if self.absmax is not None:
            return {"codes": self.packed.nbytes, "constants": self.absmax.nbytes, "per_tensor": 0}
        return {"codes": self.packed.nbytes, "constants": self.qabsmax.nbytes + self.absmax2.nbytes,
                "per_tensor": np.dtype(np.float32).itemsize}

    def bits_per_param(self, include_per_tensor: bool = False) -> float:
        """Measured storage bits per original value: 8 · (codes + block constants) / n.

        Equals `costs.nf4_bits_per_param(double_quant)` exactly when n is a multiple of block_size
        (· dq_block_size with double quantization); include_per_tensor adds the one float32 mean
        (32/n bits). The two shared code tables (16 and 256 values) belong to the format, not the tensor.
        """
        b = self.nbytes()
        return 8.0 * (b["codes"] + b["constants"] + (b["per_tensor"] if include_per_tensor else 0)) / self.size


_DQ_MAP = dynamic_map_8bit()
_DQ_ZERO = np.uint8(int(np.argmin(np.abs(_DQ_MAP))))
_PAIR_TABLES = {name: _pair_table(f()) for name, f in LEVELS.items()}


def quantize_4bit(x: np.ndarray, quant_type: str = "nf4", block_size: int = 64, double_quant: bool = False,
                  dq_block_size: int = 256) -> QuantState:
    """Quantize a float array (any shape) to 4 bits block-wise; QLoRA's storage (§3).

    Args:
        x: float32/float64, finite, non-empty. quant_type: "nf4" (QLoRA), "fp4" or "int4".
        block_size: weights per absmax (64; even, since codes are packed in pairs).
        double_quant: quantize the absmaxes too (mean subtracted, 8-bit dynamic map, blocks of dq_block_size).
    Returns: a `QuantState`; `.dequantize()` gives the approximation back.
    Raises: ValueError / TypeError naming the bad input (NaN, inf, empty, non-float, odd block_size,
        unknown quant_type). A size not divisible by block_size is padded (a UserWarning says so).
    """
    if quant_type not in LEVELS:
        raise ValueError(f"quantize_4bit: quant_type must be one of {sorted(LEVELS)}, got {quant_type!r}")
    if not isinstance(block_size, (int, np.integer)) or block_size < 2 or block_size % 2:
        raise ValueError(f"quantize_4bit: block_size must be an even int >= 2 (codes are packed in pairs), "
                         f"got {block_size!r}")
    x = np.asarray(x)
    codes, absmax, pad = quantize_blockwise(x, LEVELS[quant_type](), block_size, op="quantize_4bit")
    state = QuantState(shape=tuple(x.shape), dtype=x.dtype, quant_type=quant_type, block_size=int(block_size),
                       pad=pad, packed=pack_4bit(codes), dq_block_size=int(dq_block_size))
    if not double_quant:
        state.absmax = absmax
        return state
    mean = np.float32(absmax.mean())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the constants' own padding is internal: not the user's shape
        q2, absmax2, _ = quantize_blockwise(absmax - mean, _DQ_MAP, dq_block_size, op="quantize_4bit (constants)")
    state.qabsmax, state.absmax2, state.absmax_mean = q2[:absmax.size], absmax2, mean
    return state


def quantization_error(x: np.ndarray, quant_type: str = "nf4", block_size: int = 64,
                       double_quant: bool = False) -> dict[str, float]:
    """Round-trip error of `quantize_4bit` on x: dict(rmse, max_abs, rel_fro = ‖x − x̂‖_F / ‖x‖_F, code_entropy).

    code_entropy is the entropy in bits of the codes' histogram (4 bits = every code equally used).
    """
    st = quantize_4bit(x, quant_type, block_size, double_quant)
    x = np.asarray(x, dtype=np.float64)
    e = x - st.dequantize(np.float64)
    p = np.bincount(unpack_4bit(st.packed)[:st.size], minlength=16) / st.size
    p = p[p > 0]
    return {"rmse": float(np.sqrt(np.mean(e * e))), "max_abs": float(np.abs(e).max()),
            "rel_fro": float(np.linalg.norm(e) / max(np.linalg.norm(x), 1e-300)),
            "code_entropy": float(-(p * np.log2(p)).sum())}
