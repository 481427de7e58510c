"""Exercise: serve a batch whose rows use different LoRA adapters (S-LoRA / Punica style)."""


def mixed_batch_forward(x, W0, A, B, scaling, adapter_ids):
    """y for a batch where row n uses adapter adapter_ids[n] (or none when it is -1).

    Arguments:
        x: float64 (N, d_in), one request per row.
        W0: float64 (d_out, d_in), the frozen base weight shared by every adapter.
        A: float64 (K, r, d_in), the A factor of each of the K adapters.
        B: float64 (K, d_out, r), the B factor of each adapter.
        scaling: float64 (K,), each adapter's lora_alpha / r.
        adapter_ids: int64 (N,), values in -1 .. K-1; -1 means "base model only" (PEFT's "__base__").
    Result: float64 (N, d_out).

    Formula (LoRA, Hu et al. 2021, eq. 3, one adapter per row):

        y[n] = W0 x[n] + scaling[k] * B[k] A[k] x[n]      with k = adapter_ids[n]   (k = -1: no LoRA term)

    The serving trick (S-LoRA arXiv:2311.03285, Punica's SGMV arXiv:2310.18547): compute x @ W0.T once
    for all rows, then for each adapter gather its rows, apply its two thin factors, add back.

    Hints:
      1. Start from y = x @ W0.T: every row needs it, whatever its adapter.
      2. For each adapter k, rows = np.flatnonzero(adapter_ids == k); y[rows] += ... (x[rows] @ A[k].T) @ B[k].T.
      3. Careful with -1: A[-1] is the LAST adapter in NumPy indexing, not "no adapter".
    """
    raise NotImplementedError("mixed_batch_forward: fill me in")
