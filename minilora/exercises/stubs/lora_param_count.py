"""Exercise: count the trainable parameters that LoRA adds."""


def lora_param_count(d_in, d_out, r, n_matrices):
    """Number of trainable LoRA parameters when n_matrices weights, each (d_out, d_in), get rank-r adapters.

    Arguments: d_in, d_out, r, n_matrices are Python ints >= 1.
    Result: an int (exact; not a float).

    Each adapted weight W0 (d_out, d_in) is frozen and gets two trainable factors
    A (r, d_in) and B (d_out, r), so that ΔW = scaling * B @ A. Formula:

        count = n_matrices * r * (d_in + d_out)

    Hints:
      1. Count A and B separately: A has r*d_in entries, B has d_out*r.
      2. W0 is frozen: it adds nothing to the trainable count.
      3. Check yourself with the LoRA paper (Sec. 5.1): GPT-3, q and v adapted in 96 layers
         (n_matrices=192), d_in = d_out = 12288, r = 4 gives 18,874,368.
    """
    raise NotImplementedError("lora_param_count: fill me in")
