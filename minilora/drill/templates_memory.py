"""Drill templates on sizes: parameter counts, optimizer state, activations, checkpoints, KV cache, NF4.

Every answer is computed by `minilora.costs` (whose closed forms the tests check against instantiated
minilora models); the shapes of the reference architectures are in `minilora.costs.ARCHS`.
"""
from __future__ import annotations

from .. import costs
from .registry import Question, choice_question, fmt, gib, mib, template

GPT2 = ("gpt2-small", "gpt2-medium", "gpt2-large", "gpt2-xl")
LLAMA = ("llama-7b", "llama-65b")
RANKS = (1, 2, 4, 8, 16, 32, 64)
DTYPES = ("float32", "bfloat16", "float16")


def _pick(rng, seq):
    return seq[int(rng.integers(len(seq)))]


def _shape(a: costs.Arch) -> str:
    return (f"{a.name}: {a.n_layer} layers, {a.n_head} heads, d_model {a.d_model}, d_ff {a.d_ff}, "
            f"vocab {a.vocab_size}, context {a.context}")


def _target_terms(a: costs.Arch, r: int, targets) -> str:
    tg = costs.lora_targets(a)
    return " + ".join(f"{r}·({tg[t][0]} + {tg[t][1]})" for t in targets)


def _lora_params_question(a_key, r, targets, where) -> Question:
    a = costs.ARCHS[a_key]
    n = costs.lora_param_count(a, r, targets)
    text = (f"{_shape(a)}.\nLoRA with r = {r} on {where} of every block. How many trainable parameters "
            f"does LoRA add? (within 0.5%)")
    sol = (f"Each target d_in -> d_out adds A (r, d_in) and B (d_out, r): r·(d_in + d_out) per block.\n"
           f"{a.n_layer} · [{_target_terms(a, r, targets)}] = {fmt(n)}\n"
           f"minilora.costs.lora_param_count(ARCHS[{a_key!r}], {r}, {list(targets)}); on small GPTs "
           f"the tests check it against get_peft_model(...).get_nb_trainable_parameters().")
    return Question("", "", text, "number", float(n), sol, rtol=0.005,
                    params={"arch": a_key, "r": r, "targets": list(targets)})


@template("lora_params_gpt2_qv", "params", "LoRA trainable parameters on q and v of a GPT-2")
def _lora_params_gpt2_qv(rng):
    return _lora_params_question(_pick(rng, GPT2), _pick(rng, RANKS), ("q", "v"),
                                 "the query and value slices (q, v) of the fused c_attn")


@template("lora_params_gpt2_modules", "params", "LoRA trainable parameters on chosen GPT-2 modules")
def _lora_params_gpt2_modules(rng):
    pool = ["c_attn", "attn.c_proj", "c_fc", "mlp.c_proj"]
    k = int(rng.integers(1, 4))
    targets = tuple(pool[i] for i in sorted(rng.choice(4, size=k, replace=False)))
    return _lora_params_question(_pick(rng, GPT2), _pick(rng, RANKS), targets,
                                 " and ".join(targets)
                                 + (" (c_attn: the whole fused d -> 3d projection)" if "c_attn" in targets else ""))


@template("lora_params_llama", "params", "LoRA trainable parameters on a LLaMA-7B/65B-shaped model")
def _lora_params_llama(rng):
    sets = (("q_proj", "v_proj"), ("q_proj", "k_proj", "v_proj", "o_proj"),
            ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"))
    targets = sets[int(rng.integers(3))]
    return _lora_params_question(_pick(rng, LLAMA), _pick(rng, RANKS), targets, ", ".join(targets))


@template("full_params_gpt", "params", "all parameters of a GPT-2-style model (tied head)")
def _full_params_gpt(rng):
    from ..nn import GPTConfig

    n_layer = int(rng.integers(2, 13))
    n_head = _pick(rng, (2, 4, 8))
    n_embd = n_head * _pick(rng, (16, 32, 64))
    vocab, ctx = _pick(rng, (256, 50257, 32000)), _pick(rng, (64, 256, 1024))
    cfg = GPTConfig(vocab_size=vocab, block_size=ctx, n_layer=n_layer, n_head=n_head, n_embd=n_embd)
    n = costs.full_param_count(costs.from_gpt_config(cfg))
    d = n_embd
    text = (f"A GPT-2-style model (minilora.nn.GPT): vocab {vocab}, context {ctx}, {n_layer} layers, d_model {d}, "
            f"biases on, LM head tied to the token embedding. How many parameters in all? (within 0.5%)")
    sol = (f"V·d + context·d + L·(12d² + 13d) + 2d  (per block: c_attn 3d²+3d, attn.c_proj d²+d, c_fc 4d²+4d, "
           f"mlp.c_proj 4d²+d, two LayerNorms 4d; final LayerNorm 2d)\n"
           f"= {vocab}·{d} + {ctx}·{d} + {n_layer}·(12·{d}² + 13·{d}) + 2·{d} = {fmt(n)}\n"
           f"minilora.costs.full_param_count(from_gpt_config(GPTConfig(...))) == GPT(cfg).num_parameters().")
    return Question("", "", text, "number", float(n), sol, rtol=0.005,
                    params={"vocab": vocab, "ctx": ctx, "n_layer": n_layer, "n_embd": d})


@template("trainable_percent", "params", "trainable% as PEFT prints it, LoRA on q and v")
def _trainable_percent(rng):
    key, r = _pick(rng, GPT2 + LLAMA), _pick(rng, RANKS)
    a = costs.ARCHS[key]
    targets = ("q", "v") if a.family == "gpt2" else ("q_proj", "v_proj")
    t, full = costs.lora_param_count(a, r, targets), costs.full_param_count(a)
    pct = 100.0 * t / (full + t)
    text = (f"{_shape(a)}.\nLoRA r = {r} on the query and value projections. What trainable% does "
            f"print_trainable_parameters() show (trainable / all, all including the LoRA parameters)? "
            f"In percent, within 1%.")
    sol = (f"trainable = {fmt(t)} (lora_param_count), all = {fmt(full)} + {fmt(t)}\n"
           f"100 · {fmt(t)} / {fmt(full + t)} = {pct:.6g} %\n"
           f"minilora.costs.lora_param_count and full_param_count; LoraModel.print_trainable_parameters "
           f"prints the same ratio for a real model.")
    return Question("", "", text, "number", pct, sol, rtol=0.01, unit="%",
                    params={"arch": key, "r": r, "targets": list(targets)})


@template("adamw_state_lora", "optimizer", "AdamW state bytes of a LoRA adapter")
def _adamw_state_lora(rng):
    key, r, dt = _pick(rng, GPT2 + LLAMA), _pick(rng, RANKS), _pick(rng, ("float32", "float64"))
    a = costs.ARCHS[key]
    targets = ("q", "v") if a.family == "gpt2" else ("q_proj", "v_proj")
    n = costs.lora_param_count(a, r, targets)
    b = costs.optimizer_state_bytes(n, "adamw", dt)
    text = (f"{_shape(a)}.\nLoRA r = {r} on the query and value projections, trained with AdamW keeping its "
            f"moments in {dt}. How many MiB (2^20 bytes) of optimizer state? (within 1%)")
    sol = (f"AdamW keeps m and v per trainable parameter: 2 · n · bytes\n"
           f"n = {fmt(n)} (lora_param_count); 2 · {fmt(n)} · {costs.dtype_bytes(dt)} = {fmt(b)} bytes "
           f"= {mib(b):.4f} MiB\n"
           f"minilora.costs.optimizer_state_bytes(n, 'adamw', {dt!r}) == minilora.optim.AdamW(...).state_bytes() "
           f"after a step.")
    return Question("", "", text, "number", mib(b), sol, rtol=0.01, unit="MiB",
                    params={"arch": key, "r": r, "targets": list(targets), "dtype": dt})


@template("full_ft_memory", "optimizer", "weights + gradients + AdamW state of full fine-tuning")
def _full_ft_memory(rng):
    key, dt = _pick(rng, GPT2 + LLAMA), _pick(rng, ("float32", "bfloat16"))
    a = costs.ARCHS[key]
    n = costs.full_param_count(a)
    b = costs.training_state_bytes(n, n, dt)
    text = (f"{_shape(a)}.\nFull fine-tuning with AdamW, weights, gradients and both moments in {dt}. "
            f"How many GiB for weights + gradients + optimizer state (activations excluded)? (within 1%)")
    sol = (f"(1 weight + 1 gradient + 2 moments) · n · bytes = 4 · {fmt(n)} · {costs.dtype_bytes(dt)} "
           f"= {fmt(b)} bytes = {gib(b):.4f} GiB\n"
           f"minilora.costs.training_state_bytes(n, n, {dt!r}) with n = full_param_count.")
    return Question("", "", text, "number", gib(b), sol, rtol=0.01, unit="GiB", params={"arch": key, "dtype": dt})


@template("lora_ft_memory", "optimizer", "weights + LoRA gradients + AdamW state of LoRA training")
def _lora_ft_memory(rng):
    key, r, dt = _pick(rng, GPT2 + LLAMA), _pick(rng, RANKS), _pick(rng, ("float32", "bfloat16"))
    a = costs.ARCHS[key]
    targets = ("q", "v") if a.family == "gpt2" else ("q_proj", "v_proj")
    n, t = costs.full_param_count(a), costs.lora_param_count(a, r, targets)
    b = costs.training_state_bytes(n + t, t, dt)
    text = (f"{_shape(a)}.\nLoRA r = {r} on the query and value projections, AdamW, everything in {dt}. "
            f"How many GiB for the (frozen) weights, the adapter, its gradients and its AdamW moments? "
            f"(within 1%)")
    sol = (f"(n + t) · bytes + 3 · t · bytes with n = {fmt(n)} frozen, t = {fmt(t)} LoRA parameters\n"
           f"= ({fmt(n + t)} + 3·{fmt(t)}) · {costs.dtype_bytes(dt)} = {fmt(b)} bytes = {gib(b):.4f} GiB\n"
           f"minilora.costs.training_state_bytes(n + t, t, {dt!r}). The frozen W0 needs no gradient and no "
           f"moments (LoRA §4.2).")
    return Question("", "", text, "number", gib(b), sol, rtol=0.01, unit="GiB",
                    params={"arch": key, "r": r, "targets": list(targets), "dtype": dt})


@template("activation_memory", "activation", "activation memory of a training step (Korthikanti et al.)")
def _activation_memory(rng):
    key = _pick(rng, GPT2 + LLAMA)
    a = costs.ARCHS[key]
    b, s = _pick(rng, (1, 2, 4, 8, 16)), _pick(rng, (256, 512, 1024))
    n = costs.activation_bytes(a, b, s)
    text = (f"{_shape(a)}.\nBatch {b}, sequence {s}, 16-bit activations, 1-byte dropout masks, no "
            f"recomputation. Using s·b·h·(34 + 5·a·s/h) bytes per block (Korthikanti et al. 2022, §4.1), how many "
            f"GiB of activations do the blocks keep for backward? (within 1%)")
    h, nh = a.d_model, a.n_head
    sol = (f"L · s·b·h·(34 + 5·a·s/h) = {a.n_layer} · {s}·{b}·{h}·(34 + 5·{nh}·{s}/{h}) = {fmt(n)} bytes "
           f"= {gib(n):.4f} GiB\nminilora.costs.activation_bytes(ARCHS[{key!r}], {b}, {s}). The 5·a·s² term "
           f"is the attention matrix: it grows with the square of the sequence."
           + (" (The formula is derived for GPT blocks; LLaMA's SwiGLU MLP keeps somewhat more.)"
              if a.family == "llama" else ""))
    return Question("", "", text, "number", gib(n), sol, rtol=0.01, unit="GiB",
                    params={"arch": key, "batch": b, "seq": s})


@template("activation_seq_ratio", "activation", "how activation memory grows with sequence length")
def _activation_seq_ratio(rng):
    key = _pick(rng, GPT2 + LLAMA)
    a = costs.ARCHS[key]
    s, k = _pick(rng, (128, 256, 512)), _pick(rng, (2, 4))
    ratio = costs.activation_bytes(a, 1, k * s) / costs.activation_bytes(a, 1, s)
    text = (f"{_shape(a)}.\nWith s·b·h·(34 + 5·a·s/h) bytes of activations per block, by what factor does "
            f"activation memory grow when the sequence goes from {s} to {k * s} tokens? (within 1%)")
    h, nh = a.d_model, a.n_head
    sol = (f"ratio = {k}·(34 + 5·a·{k}s/h) / (34 + 5·a·s/h) = {k}·(34 + 5·{nh}·{k * s}/{h}) / (34 + 5·{nh}·{s}/{h}) "
           f"= {ratio:.4f}\nminilora.costs.activation_bytes at both lengths. Between {k} (linear terms) "
           f"and {k * k} (the attention matrix).")
    return Question("", "", text, "number", ratio, sol, rtol=0.01, params={"arch": key, "seq": s, "k": k})


@template("checkpoint_full", "checkpoint", "size of a full checkpoint in a dtype")
def _checkpoint_full(rng):
    key, dt = _pick(rng, GPT2 + LLAMA), _pick(rng, DTYPES)
    a = costs.ARCHS[key]
    n = costs.full_param_count(a)
    b = costs.checkpoint_bytes(n, dt)
    text = (f"{_shape(a)}.\nHow many GB (10^9 bytes) does a checkpoint of all its weights take in {dt} "
            f"(tensor data only, tied matrices stored once)? (within 1%)")
    sol = (f"n · bytes = {fmt(n)} · {costs.dtype_bytes(dt)} = {fmt(b)} bytes = {b / 1e9:.4f} GB\n"
           f"minilora.costs.checkpoint_bytes(full_param_count(ARCHS[{key!r}]), {dt!r}).")
    return Question("", "", text, "number", b / 1e9, sol, rtol=0.01, unit="GB", params={"arch": key, "dtype": dt})


@template("checkpoint_adapter", "checkpoint", "size of a LoRA adapter file")
def _checkpoint_adapter(rng):
    key, r, dt = _pick(rng, GPT2 + LLAMA), _pick(rng, RANKS), _pick(rng, DTYPES)
    a = costs.ARCHS[key]
    targets = ("q", "v") if a.family == "gpt2" else ("q_proj", "v_proj")
    t = costs.lora_param_count(a, r, targets)
    b = costs.checkpoint_bytes(t, dt)
    text = (f"{_shape(a)}.\nA LoRA adapter with r = {r} on the query and value projections is saved in {dt}. "
            f"How many MiB (2^20 bytes) of tensor data does adapter_model hold? (within 1%)")
    sol = (f"t · bytes = {fmt(t)} · {costs.dtype_bytes(dt)} = {fmt(b)} bytes = {mib(b):.4f} MiB "
           f"(t from lora_param_count)\nminilora.costs.checkpoint_bytes(t, {dt!r}); LoraModel.save_adapter "
           f"writes only these tensors.")
    return Question("", "", text, "number", mib(b), sol, rtol=0.01, unit="MiB",
                    params={"arch": key, "r": r, "targets": list(targets), "dtype": dt})


@template("kv_cache_size", "kv_cache", "KV-cache bytes for a batch of sequences")
def _kv_cache_size(rng):
    key, dt = _pick(rng, GPT2 + LLAMA), _pick(rng, ("float16", "float32"))
    a = costs.ARCHS[key]
    b, s = _pick(rng, (1, 4, 8, 32)), _pick(rng, (512, 1024, 2048))
    s = min(s, a.context)
    n = costs.kv_cache_bytes(a, b, s, dt)
    seqs = "1 sequence" if b == 1 else f"{b} sequences"
    text = (f"{_shape(a)}.\nDecoding a batch of {seqs} of {s} tokens with the KV cache in {dt} "
            f"(multi-head attention). How many GiB does the cache hold when full? (within 1%)")
    sol = (f"2 (K and V) · L · batch · seq · d_model · bytes = 2 · {a.n_layer} · {b} · {s} · {a.d_model} · "
           f"{costs.dtype_bytes(dt)} = {fmt(n)} bytes = {gib(n):.4f} GiB\n"
           f"minilora.costs.kv_cache_bytes(ARCHS[{key!r}], {b}, {s}, {dt!r}). LoRA does not change it.")
    return Question("", "", text, "number", gib(n), sol, rtol=0.01, unit="GiB",
                    params={"arch": key, "batch": b, "seq": s, "dtype": dt})


@template("kv_cache_vs_weights", "kv_cache", "tokens of KV cache that weigh as much as the weights")
def _kv_cache_vs_weights(rng):
    key = _pick(rng, GPT2 + LLAMA)
    a = costs.ARCHS[key]
    n = costs.full_param_count(a)
    tokens = costs.checkpoint_bytes(n, "float16") / costs.kv_cache_bytes(a, 1, 1, "float16")
    text = (f"{_shape(a)}.\nWeights and KV cache both in float16. How many cached tokens (summed over the "
            f"batch) make the KV cache as large as the weights? (within 1%)")
    sol = (f"weights n·2 bytes; cache per token 2·L·d_model·2 bytes: n / (2·L·d) = {fmt(n)} / (2·{a.n_layer}·"
           f"{a.d_model}) = {tokens:,.1f} tokens\n"
           f"minilora.costs.checkpoint_bytes(n, 'float16') / minilora.costs.kv_cache_bytes(arch, 1, 1, 'float16').")
    return Question("", "", text, "number", tokens, sol, rtol=0.01, unit="tokens", params={"arch": key})


@template("nf4_bits", "nf4", "bits per parameter of NF4 with or without double quantization")
def _nf4_bits(rng):
    dq, block = bool(rng.integers(2)), _pick(rng, (32, 64, 64, 128))
    bits = costs.nf4_bits_per_param(dq, block)
    what = "with double quantization (absmaxes in 8 bits, one fp32 constant per 256 of them)" if dq else \
        "without double quantization (one fp32 absmax per block)"
    text = (f"QLoRA stores weights in 4-bit NF4 with blocks of {block} weights, {what}. How many bits per "
            f"parameter in all? (within 0.1%)")
    form = f"4 + 8/{block} + 32/({block}·256)" if dq else f"4 + 32/{block}"
    sol = (f"{form} = {bits:.6f} bits (QLoRA, arXiv:2305.14314, §3: 4.5 -> 4.127 at block 64)\n"
           f"minilora.costs.nf4_bits_per_param(double_quant={dq}, block_size={block}).")
    return Question("", "", text, "number", bits, sol, rtol=0.001, unit="bits", params={"dq": dq, "block": block})


@template("nf4_model_memory", "nf4", "memory of a base model stored in NF4")
def _nf4_model_memory(rng):
    key, dq = _pick(rng, ("gpt2-xl",) + LLAMA), bool(rng.integers(2))
    a = costs.ARCHS[key]
    n = costs.full_param_count(a)
    b = costs.quantized_model_bytes(n, dq)
    text = (f"{_shape(a)}.\nAll {fmt(n)} weights stored in NF4 with blocks of 64, "
            f"{'with' if dq else 'without'} double quantization. How many GiB? (within 1%)")
    bits = costs.nf4_bits_per_param(dq)
    sol = (f"n · bits / 8 = {fmt(n)} · {bits:.6f} / 8 = {b:,.0f} bytes = {gib(b):.4f} GiB\n"
           f"minilora.costs.quantized_model_bytes(n, double_quant={dq}). (QLoRA keeps embeddings and norms in "
           f"16 bits in practice; the question counts every weight in NF4.)")
    return Question("", "", text, "number", gib(b), sol, rtol=0.01, unit="GiB", params={"arch": key, "dq": dq})


@template("nf4_adapter_dtype", "nf4", "what precision QLoRA's adapters and compute use")
def _nf4_adapter_dtype(rng):
    return choice_question(
        rng, "In QLoRA, in which precision are the LoRA adapters A and B stored and trained?",
        "16-bit (BF16); the NF4 base is dequantized to BF16 for each matmul",
        ["4-bit NF4, like the base weights", "8-bit integers with a per-block scale",
         "always float64, for stable gradients"],
        "QLoRA §3: Y = X·doubleDequant(c1, c2, W_NF4) + X·L1·L2, with X, L1, L2 in BF16; only the frozen base "
        "is 4-bit. (minilora.costs.nf4_bits_per_param counts the base's storage.)")

