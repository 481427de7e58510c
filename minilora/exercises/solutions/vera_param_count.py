"""Reference solution: trainable parameters of VeRA on n_matrices weights of shape (d_out, d_in)."""


def vera_param_count(d_in, d_out, r, n_matrices):
    """Reference solution of the `vera_param_count` exercise (see stubs/vera_param_count.py)."""
    return int(n_matrices) * (int(r) + int(d_out))  # d: r entries, b: d_out entries; A, B frozen and shared
