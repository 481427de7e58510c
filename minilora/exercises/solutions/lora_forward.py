"""Reference solution: the LoRA forward pass y = x W0^T + scaling * (x A^T) B^T."""


def lora_forward(x, W0, A, B, scaling):
    u = x @ A.T                         # (N, r)
    return x @ W0.T + scaling * (u @ B.T)  # (N, d_out)
