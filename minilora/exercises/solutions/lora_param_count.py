"""Reference solution: trainable parameters of LoRA on n_matrices weights of shape (d_out, d_in)."""


def lora_param_count(d_in, d_out, r, n_matrices):
    """Reference solution of the `lora_param_count` exercise (see stubs/lora_param_count.py)."""
    return int(n_matrices) * int(r) * (int(d_in) + int(d_out))  # A: r*d_in, B: d_out*r
