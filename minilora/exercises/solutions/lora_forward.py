"""Reference solution: the LoRA forward pass y = x W0^T + scaling * (x A^T) B^T."""


def lora_forward(x, W0, A, B, scaling):
    """Reference solution of the `lora_forward` exercise (see stubs/lora_forward.py)."""
    u = x @ A.T                         # (N, r)
    return x @ W0.T + scaling * (u @ B.T)  # (N, d_out)
