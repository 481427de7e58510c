"""Exercise: backward pass of single-head scaled dot-product attention."""


def attention_backward(q, k, v, g, causal=True):
    """Gradients of out = softmax(mask(q @ k.T * scale)) @ v for one head, given g = dL/dout.

    Arguments (float64):
      q, k, v (T, hs)  queries, keys, values
      g       (T, hs)  upstream gradient dL/dout
      causal  bool     if True, position t only attends to positions <= t (scores above the
                       diagonal are -inf before the softmax, so their weights are 0)
    Result: (dq, dk, dv), float64 arrays each of shape (T, hs).

    Forward: scale = 1 / sqrt(hs); S = q @ k.T * scale (T, T); P = softmax(S) row-wise; out = P @ v.
    Backward:
        dv = P.T @ g
        dP = g @ v.T
        dS = P * (dP - sum(dP * P, axis=-1, keepdims=True))      (softmax backward, per row)
        dq = dS @ k * scale
        dk = dS.T @ q * scale

    Hints:
      1. Recompute the forward pass (S, P) first; the backward needs P.
      2. Masked entries have P = 0, so they get dS = 0 automatically: no extra mask in the backward.
      3. Do not forget the scale in dq and dk (it is in the forward).
    """
    raise NotImplementedError("attention_backward: fill me in")
