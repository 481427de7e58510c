"""Reference solution: the q/v LoRA of a fused c_attn as one block-diagonal rank-2r LoRA."""
import numpy as np


def fused_qv_to_peft(A, B, lora_alpha):
    """Reference solution of the `fused_qv_to_peft` exercise (see stubs/fused_qv_to_peft.py)."""
    r, C = A.shape[0] // 2, A.shape[1]
    B_peft = np.zeros((3 * C, 2 * r))
    B_peft[:C, :r] = B[:C]                  # q rows, A_q's columns
    B_peft[2 * C:, r:] = B[C:]              # v rows, A_v's columns; the k rows stay zero
    return A.copy(), B_peft, 2.0 * lora_alpha   # (2·alpha) / (2r) = alpha / r
