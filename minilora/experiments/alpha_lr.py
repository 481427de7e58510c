"""Under Adam, scaling lora_alpha by c is NOT scaling the learning rate by c (except at step 1).

The LoRA paper (Hu et al. 2021, arXiv:2106.09685, §4.1) says that tuning α "is roughly the same as
tuning the learning rate if we scale the initialization appropriately". This experiment makes the
"roughly" and the "appropriately" exact. CLI: ``minilora analyze alpha-lr``.

Derivation
----------
A LoRA layer computes h = W0 x + s·B A x with s = α/r, B (d_out, r) starting at 0, A (r, d_in) random.
With G = ∂L/∂h the gradients are

    ∂L/∂B = s · G (A x)ᵀ,        ∂L/∂A = s · Bᵀ G xᵀ.

Adam moves a parameter by  −lr · m̂_t / (√v̂_t + ε),  m̂, v̂ the bias-corrected running means of g and
g². If every gradient of a parameter is multiplied by k > 0, m̂ is multiplied by k and √v̂ by k, so
the update is unchanged once ε is replaced by ε/k: Adam is invariant to a constant gradient scale,
exactly if ε scales with it, up to a relative ε/√v̂ otherwise. Compare, for a constant c > 0, the run

    P = (c·α, lr)                                                     (the reference)

with three others, all from the same A₀ and the same batches:

1. Q = (α, lr_A = lr, lr_B = c·lr, ε_B = ε/c). Claim: A_Q = A_P and B_Q = c·B_P at every step, so
   ΔW = s·B·A is the same. Induction: true at t = 0 (B = 0 = c·0). If true at t, the two models are
   the same function (s_Q·B_Q·A_Q = (α/r)·c·B_P·A_P = s_P·B_P·A_P), so G is the same; then
   ∂L/∂A_Q = (α/r)·c·B_Pᵀ G xᵀ = ∂L/∂A_P (same gradient, lr and ε: same step), and
   ∂L/∂B_Q = (α/r)·G (A x)ᵀ = ∂L/∂B_P / c, whose Adam step with lr_B = c·lr and ε/c is c times P's
   step of B. So the claim holds at t + 1.
2. S = (α, √c·lr, A₀ × √c, ε/√c). Claim: A_S = √c·A_P and B_S = √c·B_P. Same function (c·s·B·A);
   both gradients are P's divided by √c (∂L/∂B_S = s·G(√c A x)ᵀ = ∂L/∂B_P/√c, and likewise for A),
   so each Adam step with √c·lr and ε/√c is √c times P's step. This is the paper's "scale the
   initialization appropriately".
3. R = (α, c·lr, ε_B = ε/c), the naive reading "α is a learning-rate factor". At step 1, B = 0 so
   ∂L/∂A = 0 in both runs (A does not move) and B's first Adam step is lr·g/(|g| + ε) ≈ lr·sign(g)
   whatever the scale of g: P moves B by lr·sign(g) with scale c·s, R moves it by c·lr·sign(g) with
   scale s, and ΔW₁ agrees (exactly, with ε_B = ε/c). From step 2 on A has a gradient, equal in P and
   R, but R steps A with c·lr: A moves c times faster in R and the trajectories part.

What breaks the identities: (a) ε not rescaled: the runs differ by a relative ε/√v̂ per step, which
is large for the entries whose gradient is near ε (the extra run Q' = Q with one ε for both groups,
as PyTorch's single ``eps`` gives, differs by 1.3 % of max|ΔW| at step 1 on the shipped model); ε must stay
> 0 anyway, because ∂L/∂A = 0 at step 1 and m̂/(√v̂ + ε) would be 0/0 with ε = 0. (b) Decoupled
weight decay: B shrinks by lr_B·λ·B, which differs between P and Q (and A's between P and S); this
experiment uses weight_decay = 0. (c) Gradient clipping by the global norm: the clip factor depends
on the run's gradient norm and changes with t, unlike a constant scale; not used here. A
learning-rate schedule multiplies every group alike and would not break them (a constant lr is used).

With c = 4 every factor used (c, √c = 2, 1/c, 1/√c) is a power of two, so the scaled runs multiply
by them exactly in binary floating point and Q and S agree with P to the last bit; for another c
they agree to rounding (measured over 50 steps in float64: at most 7e-15 of max|ΔW| for c = 3,
1.5e-14 for c = 2, whose √c is not a power of two).

Setting: the shipped pretrained model (:func:`minilora.checkpoints.load_pretrained`, config S) in
float64, LoRA r = 4 on every ``c_attn`` (query, key and value), the stdlib corpus, AdamW with betas
(0.9, 0.95), weight decay 0, no clipping, constant lr, batch 4 x 64 tokens; 50 steps by default
(10 with quick). ``quick`` only shortens the run.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from .. import rank as R
from ..finetune import copy_model
from ..lora import LoraConfig, get_peft_model
from ..nn import GPT
from ..optim import AdamW
from ..plots import plot_lines
from ..tensor import no_grad
from .common import Log, c_attn, dataset, md_table, write_results

__all__ = ["alpha_lr_equivalence", "RUNS"]

RUNS = {                                  # name -> what it is; "c_alpha" is the reference
    "c_alpha": "(c·α, lr): the reference",
    "lr_B_x_c": "(α, lr_A = lr, lr_B = c·lr), ε_B = ε/c",
    "sqrt_c_lr_and_init": "(α, √c·lr), A₀ × √c, ε/√c",
    "lr_x_c": "(α, c·lr), ε_B = ε/c: the naive equivalence",
    "lr_B_x_c_same_eps": "(α, lr_A = lr, lr_B = c·lr), one ε for both",
}


def _factors(name: str, c: float) -> dict:
    """Multipliers of (lora_alpha, lr_A, lr_B, eps_A, eps_B, A₀) of run ``name`` for the factor c."""
    q = math.sqrt(c)
    return {"c_alpha": dict(alpha=c, lr_A=1.0, lr_B=1.0, eps_A=1.0, eps_B=1.0, init=1.0),
            "lr_B_x_c": dict(alpha=1.0, lr_A=1.0, lr_B=c, eps_A=1.0, eps_B=1.0 / c, init=1.0),
            "sqrt_c_lr_and_init": dict(alpha=1.0, lr_A=q, lr_B=q, eps_A=1.0 / q, eps_B=1.0 / q, init=q),
            "lr_x_c": dict(alpha=1.0, lr_A=c, lr_B=c, eps_A=1.0, eps_B=1.0 / c, init=1.0),
            "lr_B_x_c_same_eps": dict(alpha=1.0, lr_A=1.0, lr_B=c, eps_A=1.0, eps_B=1.0, init=1.0)}[name]


def _run(base, batches, probe, r, lora_alpha, lr, eps, seed, f):
    """One LoRA fine-tuning run with the multipliers ``f`` (:func:`_factors`); returns
    (ΔW after each step (steps, L·3C, C), probe loss after each step (steps,))."""
    model = copy_model(base, seed=seed)             # same seed: the same A₀ in every run
    model = get_peft_model(model, LoraConfig(r=r, lora_alpha=lora_alpha * f["alpha"], target_modules=["c_attn"]))
    L = model.base_model.config.n_layer
    layers = [c_attn(model, i) for i in range(L)]
    for layer in layers:
        layer.lora_A.weight.data *= f["init"]
    A = [layer.lora_A.weight for layer in layers]
    B = [layer.lora_B.weight for layer in layers]
    opt = AdamW([{"params": A, "lr": lr * f["lr_A"], "eps": eps * f["eps_A"]},
                 {"params": B, "lr": lr * f["lr_B"], "eps": eps * f["eps_B"]}],
                lr=lr, betas=(0.9, 0.95), eps=eps, weight_decay=0.0)
    dWs, losses = [], []
    for x, y in batches:
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with no_grad():
            losses.append(float(model(*probe)[1].data))
        dWs.append(np.concatenate([R.delta_weight(layer) for layer in layers]))   # (L·3C, C)
    return np.stack(dWs), np.asarray(losses)


def alpha_lr_equivalence(base: GPT | None = None, out_dir: str | Path | None = None, *, c: float = 4.0,
                         steps: int | None = None, quick: bool = False, r: int = 4, lora_alpha: float = 4.0,
                         lr: float = 1e-3, eps: float = 1e-8, batch_size: int = 4, dtype=np.float64, seed: int = 0,
                         tol: float | None = None, log: Log = print) -> dict:
    """Compare the trajectories of (c·α, lr), (α, lr_A = lr, lr_B = c·lr), (α, √c·lr, A₀ × √c) and
    (α, c·lr) under AdamW, step by step (derivation: this module's docstring).

    Args:
        base: a GPT (copied, untouched); None: the shipped pretrained model (config S). It is cast to
            ``dtype`` (np.float64 default, or np.float32).
        out_dir: None (nothing written) or a folder for alpha_lr.md, alpha_lr.json, alpha_lr.png.
        c: the factor, > 0 (default 4: its factors are powers of two, so the exact pairs agree bitwise).
        steps: AdamW steps (None: 50, or 10 with ``quick``). r, lora_alpha: LoRA of every c_attn
            (scaling = lora_alpha / r for the α runs). lr: constant learning rate. eps: Adam's ε of
            the reference run. batch_size: sequences of block_size tokens per step (stdlib corpus).
        seed: LoRA initialisation (the same A₀ in every run) and batch order.
        tol: relative ΔW difference counted as "agrees to rounding" (None: 1e-9 in float64, 1e-4 in float32).
    Returns: dict with keys
        "experiment" ("alpha_lr"), "c", "r", "lora_alpha", "lr", "eps", "steps", "batch_size",
        "dtype" (str), "seed", "tol", "seconds", "files" (paths written, [] without out_dir);
        "runs": {name: description} for the names of :data:`RUNS` ("c_alpha" is the reference);
        "factors": {name: {"alpha", "lr_A", "lr_B", "eps_A", "eps_B", "init"}}: each run's multipliers
        of lora_alpha, the two learning rates, the two ε and A₀;
        "loss": {name: list (steps,) of the loss on a fixed probe batch after step t = 1..steps};
        "dW_scale": list (steps,) of max|ΔW_t| of the reference (ΔW = s·B·A of every c_attn, stacked);
        "compare": {name: {"rel_dW_diff": list (steps,) of max|ΔW_t − ΔW_t(ref)| / max|ΔW_t(ref)|,
        "max_abs_dW_diff": list (steps,), "abs_loss_diff": list (steps,), "agree_steps": number of
        leading steps with rel_dW_diff <= tol, "agrees_every_step": bool}} for every run but the reference.
    Raises:
        ValueError: c <= 0 or not finite, steps < 1, dtype not float32/float64, eps <= 0.
    """
    t0 = time.perf_counter()
    c = float(c)
    if not (math.isfinite(c) and c > 0):
        raise ValueError(f"alpha_lr_equivalence: c must be a finite number > 0, got {c}")
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"alpha_lr_equivalence: eps must be > 0 (∂L/∂A = 0 at step 1 makes eps = 0 give 0/0), "
                         f"got {eps}")
    steps = (10 if quick else 50) if steps is None else int(steps)
    if steps < 1:
        raise ValueError(f"alpha_lr_equivalence: steps must be >= 1, got {steps}")
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"alpha_lr_equivalence: dtype must be float32 or float64, got {dtype}")
    tol = (1e-9 if dtype == np.float64 else 1e-4) if tol is None else float(tol)
    if base is None:
        from ..checkpoints import load_pretrained
        base = load_pretrained(dtype=dtype)
    elif base.dtype != dtype:
        base = copy_model(base).astype(dtype)       # astype casts in place: never the caller's model
    T = base.config.block_size
    code = dataset("stdlib")
    batches = code.fixed_batches("train", steps, batch_size, T, seed=seed + 1)
    probe = code.fixed_batches("val", 1, batch_size, T, seed=seed)[0]
    log(f"== alpha-lr: c={c:g}, r={r}, lora_alpha={lora_alpha:g}, lr={lr:g}, eps={eps:g}, {steps} AdamW steps, "
        f"{dtype.name}")
    traj = {}
    for name, what in RUNS.items():
        traj[name] = _run(base, batches, probe, r, lora_alpha, lr, eps, seed, _factors(name, c))
        log(f"   {name:<20} {what}: probe loss after step {steps} {traj[name][1][-1]:.6f}")
    ref_dW, ref_loss = traj["c_alpha"]
    scale = np.abs(ref_dW).reshape(steps, -1).max(axis=1)                         # (steps,)
    compare = {}
    for name, (dW, loss) in traj.items():
        if name == "c_alpha":
            continue
        abs_diff = np.abs(dW - ref_dW).reshape(steps, -1).max(axis=1)             # (steps,)
        rel = abs_diff / np.maximum(scale, np.finfo(dtype).tiny)
        ok = rel <= tol
        compare[name] = {"rel_dW_diff": rel, "max_abs_dW_diff": abs_diff, "abs_loss_diff": np.abs(loss - ref_loss),
                         "agree_steps": int(steps if ok.all() else np.argmin(ok)), "agrees_every_step": bool(ok.all())}
    res = {"experiment": "alpha_lr", "c": c, "r": r, "lora_alpha": lora_alpha, "lr": lr, "eps": eps, "steps": steps,
           "batch_size": batch_size, "dtype": dtype.name, "seed": seed, "tol": tol,
           "runs": dict(RUNS), "factors": {name: _factors(name, c) for name in RUNS},
           "loss": {name: loss for name, (_, loss) in traj.items()}, "dW_scale": scale, "compare": compare,
           "files": []}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        floor = 1e-18
        t = np.arange(1, steps + 1)
        res["files"].append(plot_lines(
            {f"{name}: {RUNS[name]}": (t, np.maximum(v["rel_dW_diff"], floor)) for name, v in compare.items()},
            out / "alpha_lr.png", f"ΔW of each run vs (c·α, lr), c = {c:g}",
            "step", f"max|ΔW − ΔW_ref| / max|ΔW_ref|  (0 drawn at {floor:g})", logy=True))
        res["seconds"] = time.perf_counter() - t0
        md = ["# alpha-lr: under Adam, lora_alpha × c is lr_B × c (or lr × √c with A₀ × √c), not lr × c\n",
              f"c = {c:g}; LoRA r = {r} on every c_attn of the {base.config.n_layer}-layer model, "
              f"lora_alpha = {lora_alpha:g} (reference: {c * lora_alpha:g}), lr {lr:g}, AdamW betas (0.9, 0.95), "
              f"ε = {eps:g}, weight decay 0, no clipping, {steps} steps of {batch_size} x {T} stdlib tokens, "
              f"{dtype.name}. Reference: (c·α, lr). Agreement to rounding: relative ΔW difference <= {tol:g}.\n",
              md_table(["run", "ΔW diff step 1", "ΔW diff step 2", f"max ΔW diff, steps 1-{steps}",
                        "max |loss diff|", "steps agreeing", "every step"],
                       [[f"{name}: {RUNS[name]}", v["rel_dW_diff"][0],
                         v["rel_dW_diff"][1] if steps > 1 else "-", float(v["rel_dW_diff"].max()),
                         float(v["abs_loss_diff"].max()), v["agree_steps"], "yes" if v["agrees_every_step"] else "no"]
                        for name, v in compare.items()]),
              f"\nProbe loss after step {steps}: "
              + ", ".join(f"{name} {loss[-1]:.6f}" for name, loss in res["loss"].items())]
        write_results(out, "alpha_lr", res, "\n".join(md))
    res["seconds"] = time.perf_counter() - t0
    return res
