"""Exercise: the storage cost of NF4 with and without double quantization (QLoRA §3)."""


def double_quant_bits_per_param(block_size, dq_block_size, double_quant):
    """Bits of storage per weight of block-wise 4-bit quantization.

    Arguments: block_size (weights per absmax constant, 64 in QLoRA), dq_block_size (constants per
        second-level constant, 256), double_quant (bool).
    Result: a float, bits per weight.

    Storage: every weight has a 4-bit code. Every block of `block_size` weights has one absmax:
        without double quantization a float32 (32 bits);
        with double quantization an 8-bit code, plus one float32 per `dq_block_size` of those codes.
    (The one float32 mean per tensor and the shared code tables are not counted.)

    Hints:
      1. Spread each constant over the weights it serves: 32 bits / 64 weights = 0.5 bit.
      2. The second-level constant serves dq_block_size * block_size weights.
      3. Check: QLoRA's figures are 4.5 without and about 4.127 with double quantization.
    """
    raise NotImplementedError("double_quant_bits_per_param: fill me in")
