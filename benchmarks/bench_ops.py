"""Engine overhead per op call: minilora (Function.apply / Tensor.backward) minus bare NumPy.

For each op at a representative GPT-2-small-ish shape we time, with `timeit`, the median of many
repeats of
    forward:  the op through minilora  vs  the same NumPy expression on plain arrays
    backward: y.backward(g) on a freshly built graph  vs  the hand-written NumPy gradient formulas
and print the difference in microseconds (the engine's overhead: wrapping, dtype checks, graph
nodes, the topological sort, shape/dtype assertions, copying leaf gradients).

A second table prices accurate float32 sums over the row axis (`minilora.function.reduce_sum`,
used by bias gradients, unbroadcast and sum/mean over leading axes; and the embedding gradient's
float64 per-index sums): time and relative error of NumPy's plain row-by-row float32 sum, of
reduce_sum (pairwise), and of float64 accumulation, at the training step's shapes and at 65536 rows.

Run: python benchmarks/bench_ops.py [--repeat N] [--only ops|reductions]
"""
from __future__ import annotations

import argparse
import statistics
import timeit

import numpy as np

from minilora import Tensor, ops
from minilora.function import reduce_sum

B, T, C, nh, V = 16, 64, 128, 4, 256      # batch, time, channels, heads, vocabulary
N = 16 * 64                               # rows of activations (B*T)


def _paired_us(bare, engine, setup=None, repeat=200):
    """Time `bare` and `engine` alternately (one call each per round, timeit's timer) so that load
    from other processes hits both alike; returns the medians of each and of the paired differences
    (microseconds). `setup` runs untimed before each engine call (e.g. to rebuild a graph)."""
    tb, te = [], []
    for _ in range(repeat):
        tb.append(timeit.timeit(bare, number=1))
        if setup is not None:
            setup()
        te.append(timeit.timeit(engine, number=1))
    def us(v):
        return statistics.median(v) * 1e6
    return us(tb), us(te), us([e - b for b, e in zip(tb, te, strict=False)])


def _unbroadcast_rows(g):
    return g.sum(axis=0)


def cases(rng):
    """name, shape label, inputs, engine fn (Tensors -> Tensor), numpy forward, numpy backward(g).

    The NumPy backward gets what the engine's forward saved (softmax y, LayerNorm xhat and rstd,
    shifted logits and log-sum-exp), so only the gradient formulas themselves are timed.
    """
    def f(*s):
        return rng.standard_normal(s)
    x, bias = f(N, C), f(C)
    a, w = f(N, C), f(C, 3 * C)
    s = f(B, nh, T, T)
    h, lw, lb = f(B, T, C), 1 + 0.1 * f(C), 0.1 * f(C)
    z, tgt = f(N, V), rng.integers(0, V, N)

    def sm_fwd(x):
        e = np.exp(x - x.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    y_sm = sm_fwd(s)                                       # what the engine saves in forward

    def sm_bwd(g):
        gy = g * y_sm
        return gy - y_sm * gy.sum(-1, keepdims=True)

    def ln_fwd(x, w, b):
        mu = x.mean(-1, keepdims=True)
        xc = x - mu
        rstd = 1 / np.sqrt((xc * xc).mean(-1, keepdims=True) + 1e-5)
        return xc * rstd * w + b

    mu = h.mean(-1, keepdims=True)
    rstd = 1 / np.sqrt(((h - mu) ** 2).mean(-1, keepdims=True) + 1e-5)
    xhat = (h - mu) * rstd                                 # saved: xhat, rstd

    def ln_bwd(g):
        gh = g * lw
        dx = rstd * (gh - gh.mean(-1, keepdims=True) - xhat * (gh * xhat).mean(-1, keepdims=True))
        return dx, np.einsum("nc,nc->c", g.reshape(-1, C), xhat.reshape(-1, C)), g.reshape(-1, C).sum(0)

    def ce_fwd(z):
        zs = z - z.max(1, keepdims=True)
        lse = np.log(np.exp(zs).sum(1))
        return (lse - zs[np.arange(N), tgt]).mean()

    zs = z - z.max(1, keepdims=True)
    lse = np.log(np.exp(zs).sum(1))                        # saved: shifted logits, log-sum-exp

    def ce_bwd(g):
        p = np.exp(zs - lse[:, None])
        p[np.arange(N), tgt] -= 1
        p *= g / N
        return p

    xs, bs = f(8, 8), f(8)
    return [
        ("add (tiny)", "(8, 8) + (8,)", [xs, bs], ops.add, np.add,   # pure bookkeeping cost
         lambda g: (g, _unbroadcast_rows(g))),
        ("add", f"({N}, {C}) + ({C},)", [x, bias], ops.add, np.add,
         lambda g: (g, _unbroadcast_rows(g))),
        ("matmul", f"({N}, {C}) @ ({C}, {3 * C})", [a, w], ops.matmul, np.matmul,
         lambda g: (g @ w.T, a.T @ g)),
        ("softmax", f"({B}, {nh}, {T}, {T})", [s], ops.softmax, sm_fwd, sm_bwd),
        ("layer_norm", f"({B}, {T}, {C})", [h, lw, lb], ops.layer_norm, ln_fwd, ln_bwd),
        ("cross_entropy", f"({N}, {V})", [z], lambda t: ops.cross_entropy(t, tgt), ce_fwd, ce_bwd),
    ]


def run(repeat=200):
    rng = np.random.default_rng(0)
    rows = []
    for name, label, arrays, fn, np_fwd, np_bwd in cases(rng):
        ts = [Tensor(a, requires_grad=True) for a in arrays]
        g = np.asarray(rng.standard_normal(fn(*ts).shape))
        bf, ef, of = _paired_us(lambda: np_fwd(*arrays), lambda: fn(*ts), repeat=repeat)
        state = {}

        def build():
            for t in ts:
                t.grad = None
            state["y"] = fn(*ts)

        bb, eb, ob = _paired_us(lambda: np_bwd(g), lambda: state["y"].backward(g), setup=build, repeat=repeat)
        rows.append((name, label, bf, ef, of, bb, eb, ob))
    print(f"engine overhead per call (median of {repeat} interleaved repeats, microseconds; "
          "overhead = median of paired (engine - bare NumPy))")
    print(f"{'op':<14} {'shape':<24} | {'fwd numpy':>10} {'fwd engine':>10} {'overhead':>9} | "
          f"{'bwd numpy':>10} {'bwd engine':>10} {'overhead':>9}")
    for name, label, bf, ef, of, bb, eb, ob in rows:
        print(f"{name:<14} {label:<24} | {bf:10.1f} {ef:10.1f} {of:9.1f} | {bb:10.1f} {eb:10.1f} {ob:9.1f}")
    return rows


def _embedding_grad_add_at(idx, g2, V):
    """The previous Embedding.backward: np.add.at, row by row in float32."""
    dw = np.zeros((V, g2.shape[1]), dtype=g2.dtype)
    np.add.at(dw, idx, g2)
    return dw


def _embedding_grad_now(idx, g2, V):
    """Embedding.backward as it is now (sorted indices, float64 sums per index)."""
    ctx = type("Ctx", (), {})()
    ctx.idx, ctx.shape = idx, (V, g2.shape[1])
    return ops.Embedding.backward(ctx, g2)[0]


def run_reductions(repeat=200):
    """Time and error of three float32 sums over the row axis (and of the embedding gradient)."""
    rng = np.random.default_rng(0)
    shapes = [(N, C), (N, 3 * C), (N, 4 * C), (65536, 64)]    # db of c_proj, c_attn, c_fc; a tall case
    print(f"\nfloat32 sum over the row axis (median of {repeat} interleaved repeats, microseconds; relative error "
          f"vs a float64 sum of the same float32 data; data 0.1 + 0.01 U(0, 1), all errors of one sign)")
    print(f"{'shape':<14} | {'np.sum f32':>10} {'err':>8} | {'reduce_sum':>10} {'err':>8} {'ratio':>6} | "
          f"{'f64 accum':>10} {'err':>8} {'ratio':>6}")
    rows = []
    for shape in shapes:
        g = (0.1 + 0.01 * rng.random(shape)).astype(np.float32)
        exact = g.astype(np.float64).sum(axis=0)
        fns = [lambda g=g: g.sum(axis=0), lambda g=g: reduce_sum(g, 0),
               lambda g=g: g.sum(axis=0, dtype=np.float64).astype(np.float32)]
        t_np, t_rs, _ = _paired_us(fns[0], fns[1], repeat=repeat)
        _, t_64, _ = _paired_us(fns[0], fns[2], repeat=repeat)
        errs = [float(np.max(np.abs(f() - exact)) / np.max(np.abs(exact))) for f in fns]
        rows.append((shape, t_np, t_rs, t_64, errs))
        print(f"{str(shape):<14} | {t_np:10.1f} {errs[0]:8.1e} | {t_rs:10.1f} {errs[1]:8.1e} {t_rs / t_np:6.2f} | "
              f"{t_64:10.1f} {errs[2]:8.1e} {t_64 / t_np:6.2f}")
    V = 256
    idx = rng.integers(0, V, N)
    g2 = (0.1 + 0.01 * rng.random((N, C))).astype(np.float32)
    t_old, t_new, _ = _paired_us(lambda: _embedding_grad_add_at(idx, g2, V), lambda: _embedding_grad_now(idx, g2, V),
                                 repeat=repeat)
    print(f"embedding dweight ({N} indices into {V} rows, C={C}): np.add.at {t_old:.1f} us, "
          f"sorted float64 sums {t_new:.1f} us (ratio {t_new / t_old:.2f})")
    return rows


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=200)
    p.add_argument("--only", choices=["ops", "reductions"], default=None)
    a = p.parse_args()
    if a.only != "reductions":
        run(a.repeat)
    if a.only != "ops":
        run_reductions(a.repeat)
