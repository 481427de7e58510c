"""Exercise: export LoRA on the q and v slices of GPT-2's fused c_attn as one PEFT LoRA (lesson 15)."""


def fused_qv_to_peft(A, B, lora_alpha):
    """The plain rank-2r LoRA on the whole c_attn that computes exactly the same ΔW as the q/v one.

    GPT-2's c_attn has weight (3C, C): output rows [0, C) are q, [C, 2C) k, [2C, 3C) v. The grouped
    (loralib MergedLinear) LoRA adapts q and v only, each with rank r and scaling lora_alpha / r:
        ΔW[q rows] = s * B_q @ A_q,   ΔW[k rows] = 0,   ΔW[v rows] = s * B_v @ A_v.

    Arguments (float64 arrays; lora_alpha a float):
      A  (2r, C)   rows [0, r) are A_q, rows [r, 2r) are A_v
      B  (2C, r)   rows [0, C) are B_q, rows [C, 2C) are B_v
      lora_alpha   float > 0, the grouped LoRA's alpha (scaling = lora_alpha / r)
    Result: (A_peft (2r, C), B_peft (3C, 2r), alpha_peft float), new arrays, such that
        (alpha_peft / (2r)) * B_peft @ A_peft == ΔW of the grouped LoRA.

    Hints:
      1. A_peft is A: the two A's stacked are already the rank-2r A.
      2. B_peft is block-diagonal: B_q in rows [0, C) and columns [0, r), B_v in rows [2C, 3C) and
         columns [r, 2r), zeros elsewhere (the k rows are zero).
      3. The rank doubled: keep alpha / r the same.
    """
    raise NotImplementedError("fused_qv_to_peft: fill me in")
