"""Exercise: block-wise absmax quantization to a 4-bit code (QLoRA §3, block size 64)."""


def blockwise_absmax_quantize(x, levels, block_size):
    """Quantize x block by block to the nearest of `levels`, each block scaled by its own absmax.

    Arguments:
        x (n,) float64, n a multiple of block_size, finite.
        levels (L,) float64, ascending, in [-1, 1], containing 0.0 (e.g. the 16 NF4 levels).
        block_size: int >= 1.
    Result: (codes, absmax)
        codes (n,) int: index into levels of the level nearest to x_i / absmax of its block
            (on an exact tie, the lower index);
        absmax (n // block_size,) float64: max |x| over each block.
        A block of zeros has absmax 0: its codes are the index of the level 0.0.
    Dequantization (for checking yourself): x_hat = levels[codes] * repeat(absmax, block_size).

    Hints:
      1. Reshape x to (n_blocks, block_size) and take the max of |x| along axis 1; keepdims helps.
      2. One absmax for the whole array is "tensor-wise" quantization: a single outlier then
         squashes every other block onto a few levels. That is what the blocks are for.
      3. The nearest level: argmin over |x/absmax - levels| (broadcast to (n, L)).
    """
    raise NotImplementedError("blockwise_absmax_quantize: fill me in")
