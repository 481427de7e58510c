"""Reference solution: take a merged LoRA update out again, W0 = W - scaling * B A."""


def unmerge(W, A, B, scaling):
    """Reference solution of the `unmerge` exercise (see stubs/unmerge.py)."""
    return W - scaling * (B @ A)        # (d_out, d_in), a new array
