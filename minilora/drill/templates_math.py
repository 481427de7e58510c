"""Drill templates on the arithmetic of LoRA: FLOPs, scaling, merging, gradients at init, rank, latency.

Answers come from `minilora.costs` (FLOP counts of `minilora.lora.functional`'s GEMMs), from the
LoRA config (`LoraConfig(...).scaling`), from `minilora.lora.lora_merge_delta`, `lora_forward` /
`lora_backward` and from `minilora.rank`.
"""
from __future__ import annotations

import numpy as np

from .. import costs
from .registry import Question, choice_question, fmt, template
from .templates_memory import GPT2, LLAMA, RANKS, _pick, _shape

ALPHAS = (1, 2, 4, 8, 16, 32, 64)


def _mat(a) -> str:
    a = np.asarray(a)
    return "[" + "; ".join(" ".join(fmt(v) for v in row) for row in np.atleast_2d(a)) + "]"


# ---------------------------------------------------------------------------------------------- flops


def _layer(rng):
    key = _pick(rng, GPT2 + LLAMA)
    a = costs.ARCHS[key]
    name = _pick(rng, tuple(costs.block_linears(a)))
    d_in, d_out = costs.block_linears(a)[name]
    b, t = _pick(rng, (1, 4, 8, 16)), _pick(rng, (128, 512, 1024))
    return key, a, name, d_in, d_out, b, t


@template("flops_linear_full", "flops", "forward + backward FLOPs of one fully trained Linear")
def _flops_linear_full(rng):
    key, a, name, d_in, d_out, b, t = _layer(rng)
    f = costs.linear_flops(b * t, d_in, d_out)["total"]
    text = (f"{a.name}, layer {name} ({d_in} -> {d_out}), batch {b} x sequence {t}. With full fine-tuning, how "
            f"many GFLOP (10^9) do its forward and backward GEMMs take per step (2·m·n·k per GEMM)? (within 1%)")
    sol = (f"forward X W0ᵀ, backward dX = G W0 and dW = Gᵀ X: 3 · 2·N·d_in·d_out with N = {b}·{t} = {b * t}\n"
           f"6 · {b * t} · {d_in} · {d_out} = {fmt(f)} FLOP = {f / 1e9:.4f} GFLOP\n"
           f"minilora.costs.linear_flops({b * t}, {d_in}, {d_out})['total'].")
    return Question("", "", text, "number", f / 1e9, sol, rtol=0.01, unit="GFLOP",
                    params={"N": b * t, "d_in": d_in, "d_out": d_out})


@template("flops_lora_saved", "flops", "FLOPs LoRA's hand-derived backward skips per layer (dW0)")
def _flops_lora_saved(rng):
    key, a, name, d_in, d_out, b, t = _layer(rng)
    r = _pick(rng, RANKS)
    f = costs.lora_linear_flops(b * t, d_in, d_out, r)["saved"]
    text = (f"{a.name}, layer {name} ({d_in} -> {d_out}) with LoRA r = {r}, batch {b} x sequence {t}. How many "
            f"GFLOP per step does the LoRA backward save on this layer compared with full fine-tuning? "
            f"(the GEMM it skips; within 1%)")
    sol = (f"LoRA never forms dW0 = Gᵀ X (W0 is frozen): 2·N·d_in·d_out = 2 · {b * t} · {d_in} · {d_out} "
           f"= {fmt(f)} FLOP = {f / 1e9:.4f} GFLOP\n"
           f"minilora.costs.lora_linear_flops(N, d_in, d_out, r)['saved']; minilora.lora.lora_backward is the "
           f"code that skips it (its docstring counts the GEMMs).")
    return Question("", "", text, "number", f / 1e9, sol, rtol=0.01, unit="GFLOP",
                    params={"N": b * t, "d_in": d_in, "d_out": d_out})


@template("flops_lora_layer", "flops", "forward + backward FLOPs of a LoRA layer")
def _flops_lora_layer(rng):
    key, a, name, d_in, d_out, b, t = _layer(rng)
    r = _pick(rng, RANKS)
    f = costs.lora_linear_flops(b * t, d_in, d_out, r)
    N = b * t
    text = (f"{a.name}, layer {name} ({d_in} -> {d_out}) with LoRA r = {r} (one group), batch {b} x sequence {t}. "
            f"How many GFLOP do its forward and backward GEMMs take per step, W0's and the adapter's? (within 1%)")
    sol = (f"forward: X W0ᵀ 2·N·d_in·d_out + X Aᵀ 2·N·d_in·r + U Bᵀ 2·N·d_out·r\n"
           f"backward: G W0 2·N·d_in·d_out + G B, dB 4·N·d_out·r + dA, GU·A 4·N·r·d_in (no dW0)\n"
           f"= 4·{N}·{d_in}·{d_out} + 6·{N}·{r}·({d_in} + {d_out}) = {fmt(f['total'])} FLOP "
           f"= {f['total'] / 1e9:.4f} GFLOP\nminilora.costs.lora_linear_flops({N}, {d_in}, {d_out}, {r})['total'].")
    return Question("", "", text, "number", f["total"] / 1e9, sol, rtol=0.01, unit="GFLOP",
                    params={"N": N, "d_in": d_in, "d_out": d_out, "r": r})


@template("flops_training_ratio", "flops", "LoRA / full training FLOPs of the block Linears")
def _flops_training_ratio(rng):
    key, r = _pick(rng, GPT2 + LLAMA), _pick(rng, RANKS)
    a = costs.ARCHS[key]
    targets = ("q", "v") if a.family == "gpt2" else ("q_proj", "v_proj")
    n = _pick(rng, (512, 2048, 8192))
    full, lora = costs.training_flops(a, n), costs.training_flops(a, n, r, targets)
    text = (f"{_shape(a)}.\nCounting only the GEMMs of the blocks' Linear layers, what is the ratio "
            f"(LoRA r = {r} on q and v) / (full fine-tuning) of training FLOPs per step of {n} tokens? "
            f"(within 1%)")
    sol = (f"full: 6·N·P_lin; LoRA: 4·N·P_lin (forward + dX, no dW0) + L·Σ 6·N·r·(d_in + d_out)\n"
           f"= {fmt(lora)} / {fmt(full)} = {lora / full:.5f}  (about 2/3: no weight gradients; LoRA §4.2 "
           f"measures a 25% training speed-up on GPT-3 175B)\n"
           f"minilora.costs.training_flops(arch, N, r, targets) / training_flops(arch, N).")
    return Question("", "", text, "number", lora / full, sol, rtol=0.01,
                    params={"arch": key, "r": r, "targets": list(targets), "N": n})


# -------------------------------------------------------------------------------------------- scaling


@template("scaling_alpha_over_r", "scaling", "the scaling s = alpha / r")
def _scaling_alpha_over_r(rng):
    alpha, r = _pick(rng, ALPHAS), _pick(rng, RANKS)
    s = costs.scaling(alpha, r)
    text = f"LoRA with lora_alpha = {alpha} and r = {r} (use_rslora=False). What is the scaling s? (within 0.1%)"
    sol = (f"s = lora_alpha / r = {alpha} / {r} = {s:.6g}\n"
           f"minilora.lora.LoraConfig(r={r}, lora_alpha={alpha}).scaling (via minilora.costs.scaling).")
    return Question("", "", text, "number", s, sol, rtol=0.001, params={"alpha": alpha, "r": r})


@template("scaling_rslora", "scaling", "the rsLoRA scaling s = alpha / sqrt(r)")
def _scaling_rslora(rng):
    alpha, r = _pick(rng, ALPHAS), _pick(rng, RANKS)
    s = costs.scaling(alpha, r, True)
    text = f"LoRA with lora_alpha = {alpha}, r = {r} and use_rslora=True. What is the scaling s? (within 0.1%)"
    sol = (f"s = lora_alpha / sqrt(r) = {alpha} / sqrt({r}) = {s:.6g}  (rsLoRA, arXiv:2312.03732)\n"
           f"minilora.lora.LoraConfig(r={r}, lora_alpha={alpha}, use_rslora=True).scaling.")
    return Question("", "", text, "number", s, sol, rtol=0.001, params={"alpha": alpha, "r": r})


@template("scaling_rank_change", "scaling", "how s changes when r changes at fixed alpha")
def _scaling_rank_change(rng):
    alpha, rs = _pick(rng, ALPHAS), bool(rng.integers(2))
    r1, r2 = (int(x) for x in rng.choice(RANKS, size=2, replace=False))
    ratio = costs.scaling(alpha, r2, rs) / costs.scaling(alpha, r1, rs)
    rule = "alpha/sqrt(r) (rsLoRA)" if rs else "alpha/r"
    text = (f"lora_alpha = {alpha} is kept fixed and r goes from {r1} to {r2}, with the scaling {rule}. "
            f"By what factor does s change (new / old)? (within 0.1%)")
    form = f"sqrt({r1}/{r2})" if rs else f"{r1}/{r2}"
    sol = (f"s(r2)/s(r1) = {form} = {ratio:.6g}\n"
           f"minilora.costs.scaling({alpha}, {r2}, {rs}) / minilora.costs.scaling({alpha}, {r1}, {rs}).")
    return Question("", "", text, "number", ratio, sol, rtol=0.001,
                    params={"alpha": alpha, "r1": r1, "r2": r2, "rslora": rs})


@template("rslora_what_changes", "scaling", "what rsLoRA changes (multiple choice)")
def _rslora_what_changes(rng):
    return choice_question(
        rng, "What does rsLoRA (Kalajdzievski 2023, arXiv:2312.03732) change compared with LoRA?",
        "the scaling: alpha/sqrt(r) instead of alpha/r, so the update does not shrink as r grows",
        ["A is initialised from W0's top singular vectors (that is PiSSA)",
         "the rank is reallocated between layers during training (that is AdaLoRA)",
         "the frozen base is stored in 4-bit NF4 (that is QLoRA)"],
        "With alpha/r, learning with large r is slowed (the update shrinks like 1/r); rsLoRA shows "
        "alpha/sqrt(r) keeps it rank-stable. minilora.lora.LoraConfig(use_rslora=True).scaling computes it.")


# ---------------------------------------------------------------------------------------------- merge


@template("merge_entry", "merge", "an entry of W0 + s·B·A after merging")
def _merge_entry(rng):
    r, alpha = _pick(rng, (1, 2)), _pick(rng, (1, 2, 4, 8))
    W0 = rng.integers(-3, 4, (2, 3))
    A, B = rng.integers(-2, 3, (r, 3)), rng.integers(-2, 3, (2, r))
    i, j = int(rng.integers(2)), int(rng.integers(3))
    W = costs.merged_weight(W0, A, B, alpha, r)
    s = costs.scaling(alpha, r)
    text = (f"W0 = {_mat(W0)}, A = {_mat(A)} (r = {r}, d_in = 3), B = {_mat(B)} (d_out = 2), lora_alpha = {alpha}. "
            f"After merging (W = W0 + s·B·A, s = alpha/r), what is W[{i},{j}] (0-based)? (within 0.1%, "
            f"or 1e-9 if 0)")
    terms = " + ".join(f"({fmt(B[i, k])})·({fmt(A[k, j])})" for k in range(r))
    sol = (f"W[{i},{j}] = W0[{i},{j}] + s·Σ_k B[{i},k]·A[k,{j}] = {fmt(W0[i, j])} + {s:.6g}·({terms}) "
           f"= {fmt(W[i, j])}\nminilora.costs.merged_weight (ΔW from minilora.lora.lora_merge_delta, s from "
           f"LoraConfig.scaling); LoRALinear.merge does the same in place.")
    return Question("", "", text, "number", float(W[i, j]), sol, rtol=0.001, atol=1e-9,
                    params={"W0": W0.tolist(), "A": A.tolist(), "B": B.tolist(), "alpha": alpha, "r": r,
                            "i": i, "j": j})


@template("merge_serving_bytes", "merge", "K merged copies vs one base plus K adapters")
def _merge_serving_bytes(rng):
    key, r, k = _pick(rng, GPT2 + LLAMA), _pick(rng, RANKS), _pick(rng, (2, 5, 10, 100))
    a = costs.ARCHS[key]
    targets = ("q", "v") if a.family == "gpt2" else ("q_proj", "v_proj")
    n, t = costs.full_param_count(a), costs.lora_param_count(a, r, targets)
    ratio = (k * n) / (n + k * t)
    text = (f"{_shape(a)}.\nYou serve {k} tasks, each a LoRA r = {r} on q and v. What is the memory ratio "
            f"({k} merged full copies) / (one base + {k} unmerged adapters), same dtype? (within 1%)")
    sol = (f"{k}·n / (n + {k}·t) with n = {fmt(n)}, t = {fmt(t)} = {fmt(k * n)} / {fmt(n + k * t)} = {ratio:.4f}\n"
           f"minilora.costs.full_param_count and lora_param_count. Unmerged adapters cost a little latency "
           f"but let one base serve every task (S-LoRA, Punica).")
    return Question("", "", text, "number", ratio, sol, rtol=0.01,
                    params={"arch": key, "r": r, "k": k, "targets": list(targets)})


@template("merge_roundtrip", "merge", "what merge then unmerge gives back (multiple choice)")
def _merge_roundtrip(rng):
    return choice_question(
        rng, "A float32 LoRALinear is merged (W0 += s·B·A) and then unmerged (W0 -= s·B·A). What is W0 now?",
        "W0 up to float32 rounding (differences of about one ulp), not always bit-identical",
        ["exactly the original W0, bit for bit, always", "W0 + s·B·A: unmerging is not possible",
         "W0 scaled by (1 - s)"],
        "(W0 + ΔW) - ΔW rounds twice. minilora.lora.LoRALinear.merge / unmerge do exactly this; LoraModel "
        "fingerprints the base when it is built, not after a merge round trip, for this reason.")


# ----------------------------------------------------------------------------------------------- init


def _init_arrays(rng):
    n, d_in, d_out, r = 2, 3, 2, _pick(rng, (1, 2))
    alpha = _pick(rng, (1, 2, 4, 8))
    x = rng.integers(-2, 3, (n, d_in))
    W0 = rng.integers(-2, 3, (d_out, d_in))
    A = rng.integers(-2, 3, (r, d_in))
    G = rng.integers(-2, 3, (n, d_out))
    return x, W0, A, np.zeros((d_out, r)), G, alpha, r


@template("init_dB_entry", "init", "an entry of dB at step 0 (B = 0)")
def _init_dB_entry(rng):
    x, W0, A, B, G, alpha, r = _init_arrays(rng)
    s = costs.scaling(alpha, r)
    dA, dB = costs.lora_init_grads(x, W0, A, B, G, s)
    i, k = int(rng.integers(2)), int(rng.integers(r))
    U = x @ A.T
    text = (f"At initialisation B = 0. X = {_mat(x)} (N = 2, d_in = 3), A = {_mat(A)} (r = {r}), "
            f"upstream gradient G = {_mat(G)} (d_out = 2), lora_alpha = {alpha}. What is dB[{i},{k}]? "
            f"(within 0.1%, or 1e-9 if 0)")
    sol = (f"dB = s·Gᵀ U with U = X Aᵀ = {_mat(U)}, s = {alpha}/{r} = {s:.6g}\n"
           f"dB[{i},{k}] = s·Σ_n G[n,{i}]·U[n,{k}] = {s:.6g}·(({fmt(G[0, i])})·({fmt(U[0, k])}) + "
           f"({fmt(G[1, i])})·({fmt(U[1, k])})) = {fmt(dB[i, k])}\n"
           f"minilora.lora.lora_forward + lora_backward (via minilora.costs.lora_init_grads).")
    return Question("", "", text, "number", float(dB[i, k]), sol, rtol=0.001, atol=1e-9,
                    params={"x": x.tolist(), "A": A.tolist(), "G": G.tolist(), "alpha": alpha, "r": r,
                            "i": i, "k": k})


@template("init_dA_sum", "init", "dA at step 0 (B = 0)")
def _init_dA_sum(rng):
    x, W0, A, B, G, alpha, r = _init_arrays(rng)
    dA, _ = costs.lora_init_grads(x, W0, A, B, G, costs.scaling(alpha, r))
    total = float(np.abs(dA).sum())
    text = (f"At initialisation B = 0. X = {_mat(x)}, A = {_mat(A)} (r = {r}), G = {_mat(G)}, "
            f"lora_alpha = {alpha}. What is the sum of |dA| over all entries? (within 1e-9)")
    sol = (f"dA = s·(G B)ᵀ X̃ and G B = 0 because B = 0, so dA = 0 exactly: sum = {fmt(total)}\n"
           f"minilora.lora.lora_backward (via minilora.costs.lora_init_grads); only B moves at step 0.")
    return Question("", "", text, "number", total, sol, rtol=0.0, atol=1e-9,
                    params={"x": x.tolist(), "A": A.tolist(), "G": G.tolist(), "alpha": alpha, "r": r})


@template("init_which_grads", "init", "which weights get a gradient at step 0 (multiple choice)")
def _init_which_grads(rng):
    return choice_question(
        rng, "Standard LoRA init (A random, B = 0). At the first backward pass, which weights get a "
             "NON-ZERO gradient?",
        "B only",
        ["A only", "A and B", "W0, A and B"],
        "dB = s·Gᵀ(X̃Aᵀ) != 0; dA = s·(GB)ᵀX̃ = 0 since B = 0; W0 is frozen and dW0 is never computed. "
        "minilora.lora.lora_backward; lesson 5 shows it.")


# ----------------------------------------------------------------------------------------------- rank


@template("rank_effective_rank", "rank", "effective rank of a given spectrum")
def _rank_effective_rank(rng):
    k = int(rng.integers(3, 7))
    s = np.sort(rng.integers(1, 11, k))[::-1].astype(float)
    er = costs.effective_rank(s)
    p = s / s.sum()
    text = (f"A ΔW has singular values {', '.join(fmt(v) for v in s)}. What is its effective rank "
            f"exp(-Σ p_k ln p_k), p = s/Σs? (within 1%)")
    sol = (f"p = {', '.join(f'{v:.4f}' for v in p)}; H = {-(p * np.log(p)).sum():.5f} nats; erank = e^H = {er:.5f}\n"
           f"minilora.rank.effective_rank(s) (Roy & Vetterli 2007).")
    return Question("", "", text, "number", er, sol, rtol=0.01, params={"s": s.tolist()})


@template("rank_phi_random_baseline", "rank", "expected φ of random subspaces")
def _rank_phi_random_baseline(rng):
    d = _pick(rng, (768, 1024, 4096))
    i, j = (int(v) for v in rng.choice((1, 2, 4, 8, 16, 32, 64), size=2))
    phi = costs.random_subspace_baseline(i, j, d)
    text = (f"Two independent uniformly random subspaces of R^{d}, of dimensions {i} and {j}. What is the "
            f"expected normalised subspace similarity φ = ||U1ᵀU2||_F² / min(i, j)? (within 1%)")
    sol = (f"E||U1ᵀU2||_F² = i·j/d, so E φ = max(i, j)/d = {max(i, j)}/{d} = {phi:.6g}\n"
           f"minilora.rank.random_subspace_baseline({i}, {j}, {d}); LoRA §7.2 compares its φ against it.")
    return Question("", "", text, "number", phi, sol, rtol=0.01, params={"i": i, "j": j, "d": d})


@template("rank_phi_given", "rank", "φ between two given coordinate subspaces")
def _rank_phi_given(rng):
    d = int(rng.integers(8, 13))
    i, j = int(rng.integers(2, 5)), int(rng.integers(2, 6))
    off = int(rng.integers(0, i + 1))
    A1 = np.zeros((i, d))
    A1[np.arange(i), np.arange(i)] = np.arange(i, 0, -1) + 1.0
    A2 = np.zeros((j, d))
    A2[np.arange(j), off + np.arange(j)] = np.arange(j, 0, -1) + 1.0
    phi = costs.subspace_similarity(A1, A2, i, j)
    text = (f"In R^{d}, A1 ({i} x {d}) has rows spanning e_0..e_{i - 1} and A2 ({j} x {d}) rows spanning "
            f"e_{off}..e_{off + j - 1} (distinct singular values). What is φ(A1, A2, {i}, {j}) "
            f"= ||U1ᵀU2||_F² / min(i, j) with the top right-singular vectors? (within 1%)")
    shared = max(0, min(i, off + j) - off)
    sol = (f"The right-singular vectors are the coordinate vectors; {shared} of them are shared, each "
           f"adding 1 to ||U1ᵀU2||_F²: φ = {shared}/min({i}, {j}) = {phi:.6g}\n"
           f"minilora.rank.subspace_similarity(A1, A2, {i}, {j}) (LoRA Eq. 4).")
    return Question("", "", text, "number", phi, sol, rtol=0.01, atol=1e-9,
                    params={"d": d, "i": i, "j": j, "off": off})


# -------------------------------------------------------------------------------------------- latency


@template("latency_merged", "latency", "inference latency of merged LoRA (multiple choice)")
def _latency_merged(rng):
    return choice_question(
        rng, "After merge_and_unload(), how much inference latency does LoRA add over the base model?",
        "none: W = W0 + s·B·A has W0's shape, so the forward is the same GEMM",
        ["one extra GEMM per adapted layer", "a fraction r/d_model of the base latency",
         "it grows with lora_alpha"],
        "LoRA §4.1 (No Additional Inference Latency). minilora.lora.LoraModel.merge_and_unload returns a plain GPT.")


@template("latency_adapter_layers", "latency", "why adapter layers add latency (multiple choice)")
def _latency_adapter_layers(rng):
    return choice_question(
        rng, "Why do adapter layers (Houlsby et al. 2019) slow down batch-size-1 inference while merged LoRA "
             "does not?",
        "adapters are extra layers run in sequence that cannot be folded into the existing weights; "
        "LoRA's B·A is added to W0",
        ["adapters have more parameters than LoRA at every rank", "adapters need a KV cache of their own",
         "LoRA skips the attention softmax"],
        "LoRA §3 (Adapter Layers Introduce Inference Latency, Table 1): small batches are latency-bound "
        "by depth, and adapters add depth. minilora.lora.LoRALinear.merge folds s·B·A into W0.")


@template("latency_multi_tenant", "latency", "serving many adapters in one batch (multiple choice)")
def _latency_multi_tenant(rng):
    return choice_question(
        rng, "One GPU serves requests for many different LoRA adapters in the same batch. What do current "
             "systems do?",
        "keep the base unmerged and add each row's own B·A (S-LoRA, Punica, vLLM multi-LoRA)",
        ["merge every adapter into the base weights at once", "keep one merged copy of the model per adapter",
         "average the adapters into one"],
        "LoRA §4.2: merged weights make mixed-task batches hard; unmerged per-row adapters cost a little "
        "latency (the extra GEMMs: minilora.costs.lora_linear_flops) but serve every task from one base.")


@template("latency_unmerged_flops", "latency", "extra forward FLOPs per token of an unmerged adapter")
def _latency_unmerged_flops(rng):
    key, r = _pick(rng, GPT2 + LLAMA), _pick(rng, RANKS)
    a = costs.ARCHS[key]
    d = a.d_model
    if a.family == "gpt2":
        per = costs.lora_linear_flops(1, d, 3 * d, r, groups=2, width=2 * d)["forward"] - 2 * d * 3 * d
        where = "the q and v slices of c_attn"
    else:
        per = 2 * (costs.lora_linear_flops(1, d, d, r)["forward"] - costs.linear_flops(1, d, d)["forward"])
        where = "q_proj and v_proj"
    extra = a.n_layer * per
    text = (f"{_shape(a)}.\nAn UNMERGED LoRA r = {r} on {where}. How many extra forward FLOPs per generated "
            f"token does it add (2·m·n·k per GEMM)? Give the number (within 1%).")
    sol = (f"Per adapted projection d -> d: X Aᵀ 2·d·r + U Bᵀ 2·d·r = 4·d·r; two per block:\n"
           f"{a.n_layer} · 2 · 4 · {d} · {r} = {fmt(extra)} FLOP per token (merged: 0)\n"
           f"minilora.costs.lora_linear_flops(1, ...)['forward'] minus the frozen GEMM.")
    return Question("", "", text, "number", float(extra), sol, rtol=0.01, params={"arch": key, "r": r})
