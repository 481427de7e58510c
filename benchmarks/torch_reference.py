"""The PyTorch side of the benchmarks: GPT-2 written the way nanoGPT writes it (Karpathy, nanoGPT
model.py): nn.Linear, nn.LayerNorm, F.scaled_dot_product_attention(is_causal=True), tanh GELU,
lm_head tied to wte, `torch.optim.AdamW` with its defaults. LoRA (Hu et al. 2021) on c_attn as PEFT
writes it: base frozen, y = base(x) + (x A^T B^T) * lora_alpha / r; the SAME attention as the full
model. Weights are copied from a minilora model (GPT-2 initialisation: N(0, 0.02), residual
projections N(0, 0.02/sqrt(2 n_layer)), zero biases), so both sides start from identical numbers
and compute the same loss, which the benchmarks check before timing.

torch is optional: only the benchmarks import this module, never minilora or the tests.
"""
from __future__ import annotations

import numpy as np


def build_torch_gpt(state: dict, n_layer: int, n_head: int, lora: dict | None = None, threads: int = 2):
    """A nanoGPT-style torch model holding minilora's weights.

    Args:
        state: minilora `named_parameters()` arrays by name (GPT-2 names, Linear weights (out, in)).
        n_layer, n_head: the config's.
        lora: None, or {"r": r, "alpha": alpha} for LoRA on c_attn (state then holds
            `...c_attn.lora_A.weight` (r, C) and `...lora_B.weight` (3C, r)).
        threads: torch.set_num_threads. Denormals are flushed (`torch.set_flush_denormal(True)`), so
            no slow path on this side either.
    Returns:
        (model, trainable parameters list).
    """
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    V, C = state["transformer.wte.weight"].shape
    T_max = state["transformer.wpe.weight"].shape[0]

    class LoRALinear(nn.Module):
        def __init__(self, d_in, d_out, r, alpha):
            super().__init__()
            self.base = nn.Linear(d_in, d_out)
            self.lora_A = nn.Parameter(torch.zeros(r, d_in))
            self.lora_B = nn.Parameter(torch.zeros(d_out, r))
            self.scaling = alpha / r

        def forward(self, x):
            return self.base(x) + (x @ self.lora_A.T @ self.lora_B.T) * self.scaling

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn = LoRALinear(C, 3 * C, lora["r"], lora["alpha"]) if lora else nn.Linear(C, 3 * C)
            self.c_proj = nn.Linear(C, C)

        def forward(self, x):
            B, T, _ = x.shape
            q, k, v = self.c_attn(x).split(C, dim=2)
            q, k, v = (t.view(B, T, n_head, C // n_head).transpose(1, 2) for t in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_fc, self.c_proj = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

        def forward(self, x):
            return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.attn, self.ln_2, self.mlp = nn.LayerNorm(C), Attention(), nn.LayerNorm(C), MLP()

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.transformer = nn.ModuleDict(dict(
                wte=nn.Embedding(V, C), wpe=nn.Embedding(T_max, C),
                h=nn.ModuleList([Block() for _ in range(n_layer)]), ln_f=nn.LayerNorm(C)))
            self.lm_head = nn.Linear(C, V, bias=False)
            self.lm_head.weight = self.transformer.wte.weight

        def forward(self, idx, targets=None):
            tr = self.transformer
            x = tr.wte(idx) + tr.wpe(torch.arange(idx.shape[1]))
            for block in tr.h:
                x = block(x)
            logits = self.lm_head(tr.ln_f(x))
            loss = None if targets is None else F.cross_entropy(logits.view(-1, V), targets.view(-1))
            return logits, loss

    model = GPT()
    with torch.no_grad():
        for name, p in model.named_parameters():
            src = name.replace("c_attn.base.", "c_attn.").replace("c_attn.lora_A", "c_attn.lora_A.weight") \
                .replace("c_attn.lora_B", "c_attn.lora_B.weight")
            p.copy_(torch.from_numpy(np.ascontiguousarray(state[src], dtype=np.float32)))
    if lora:
        for name, p in model.named_parameters():
            p.requires_grad_("lora_" in name)
    return model, [p for p in model.parameters() if p.requires_grad]
