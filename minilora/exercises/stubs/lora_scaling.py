"""Exercise: the factor LoRA multiplies its branch by, from lora_alpha and r (and rsLoRA)."""


def lora_scaling(lora_alpha, r, use_rslora):
    """The scaling of the LoRA branch: y = x W0ᵀ + scaling * (x Aᵀ) Bᵀ, and ΔW = scaling * B @ A.

    Arguments:
      lora_alpha: a number > 0 (int or float), PEFT's `lora_alpha`.
      r: the rank, a Python int >= 1.
      use_rslora: bool; True selects rank-stabilized LoRA (Kalajdzievski 2023, arXiv:2312.03732).
    Result: a Python float.

    Formula (LoRA paper, Hu et al. 2021, Sec. 4.1: "we then scale ΔWx by α/r"; PEFT's LoraLayer):

        scaling = lora_alpha / r            if not use_rslora
        scaling = lora_alpha / sqrt(r)      if use_rslora

    Hints:
      1. lora_alpha is not the scaling: with lora_alpha = 16 and r = 8 the branch is multiplied by 2,
         not by 16. Dividing by r keeps the size of the update roughly the same when you change r
         (lesson 5, section 6, "The scaling rule α/r", works it out with numbers).
      2. Use true division: 16 // 3 is 5, but 16 / 3 is 5.333...
      3. rsLoRA divides by the square root of r only; lora_alpha stays outside the root.
    """
    raise NotImplementedError("lora_scaling: fill me in")
