"""Reference solution: the hand-derived LoRA backward pass with dropout on the LoRA branch."""


def lora_backward(x, W0, A, B, scaling, g, mask, keep_prob):
    """Reference solution of the `lora_backward` exercise (see stubs/lora_backward.py)."""
    xt = x * mask / keep_prob           # (N, d_in)  the dropped-out input x~
    u = xt @ A.T                        # (N, r)
    gB = g @ B                          # (N, r)
    dB = scaling * (g.T @ u)            # (d_out, r)
    dA = scaling * (gB.T @ xt)          # (r, d_in)
    dx = g @ W0 + scaling * (gB @ A) * mask / keep_prob  # (N, d_in)
    return dx, dA, dB
