"""Time the factor-based SVD of ΔW = s·B·A against the dense SVD of the formed product.

Analyses 24 random adapters (like q and v of a 12-layer model) with d_out = d_in = 192 for r = 8
and r = 64, and prints milliseconds for the whole set (best of several repeats):

* factors: minilora.rank.lowrank_singular_values(B, A, s): QR of B and A.T, SVD of the r x r core,
  O((d_in + d_out) r^2);
* dense:   np.linalg.svd(s * B @ A, full_matrices=False), O(d_out d_in min(d_out, d_in));
* dense S: np.linalg.svd(s * B @ A, compute_uv=False), singular values only.

Run: PYTHONPATH=. python benchmarks/bench_rank.py [--repeats 5] [--adapters 24] [--d 192]
Not part of the test suite.
"""
import argparse
import time

import numpy as np

from minilora.rank import lowrank_singular_values


def best_ms(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adapters", type=int, default=24)
    ap.add_argument("--d", type=int, default=192)
    ap.add_argument("--ranks", type=int, nargs="+", default=[8, 64])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    d = args.d
    print(f"{args.adapters} adapters, d_out = d_in = {d}, float64, best of {args.repeats}")
    print(f"{'r':>4} {'factors ms':>11} {'dense ms':>10} {'dense S ms':>11} {'speed-up':>9} "
          f"{'max |ΔS|/S_1':>13}")
    for r in args.ranks:
        adapters = [(rng.standard_normal((d, r)), rng.standard_normal((r, d)), 16.0 / r)
                    for _ in range(args.adapters)]                    # B (d, r), A (r, d), s

        def run_factors():
            return [lowrank_singular_values(B, A, s)[1] for B, A, s in adapters]

        def run_dense():
            return [np.linalg.svd(s * B @ A, full_matrices=False)[1] for B, A, s in adapters]

        def run_dense_s():
            return [np.linalg.svd(s * B @ A, compute_uv=False) for B, A, s in adapters]

        err = max(float(np.max(np.abs(f - g[:r])) / g[0])
                  for f, g in zip(run_factors(), run_dense_s(), strict=False))
        t_f = best_ms(run_factors, args.repeats)
        t_d = best_ms(run_dense, args.repeats)
        t_s = best_ms(run_dense_s, args.repeats)
        print(f"{r:>4} {t_f:>11.2f} {t_d:>10.2f} {t_s:>11.2f} {t_d / t_f:>8.1f}x {err:>13.1e}")


if __name__ == "__main__":
    main()
