"""Reference solution: bits per weight of NF4 storage, with or without double quantization."""


def double_quant_bits_per_param(block_size, dq_block_size, double_quant):
    """Reference solution of the `double_quant_bits_per_param` exercise (see its stub)."""
    if double_quant:
        return 4 + 8 / block_size + 32 / (block_size * dq_block_size)
    return 4 + 32 / block_size
