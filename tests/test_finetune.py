"""finetune: the base is never modified, and LoRA initialisations are independent across ranks and
seeds but reproducible for the same (seed, r)."""
import numpy as np

from minilora.data import TokenDataset
from minilora.finetune import finetune
from minilora.lora import LoraConfig
from minilora.nn import GPT, GPTConfig
from minilora.train import TrainConfig

BASE = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16), seed=3)
DATA = TokenDataset(np.random.default_rng(0).integers(32, 127, 4000).astype(np.uint8).tobytes())
ONE_STEP = TrainConfig(max_steps=1, batch_size=2, lr=1e-3, weight_decay=0.0, eval_batches=1, log_interval=1)


def _initial_A(r, seed):
    # One step with B = 0 leaves A exactly at its initial value (dA = 0 at step 0, no weight decay).
    res = finetune(BASE, DATA, "lora", LoraConfig(r=r, lora_alpha=8, target_modules=["c_attn"]), ONE_STEP,
                   log=lambda s: None, seed=seed)
    _, layer = res.model.lora_layers()[0]
    return layer.lora_A.weight.data.copy()


def test_ranks_and_seeds_start_from_independent_A():
    a4, a16 = _initial_A(4, 0), _initial_A(16, 0)
    assert not np.allclose(a4, a16[:4]), "A of rank 4 must not be the first rows of A of rank 16"
    assert not np.allclose(a4, _initial_A(4, 1))
    np.testing.assert_array_equal(a4, _initial_A(4, 0))


def test_finetune_never_modifies_the_base():
    before = BASE.state_dict()
    finetune(BASE, DATA, "full", None, ONE_STEP, log=lambda s: None)
    finetune(BASE, DATA, "lora", LoraConfig(r=2, lora_alpha=4), ONE_STEP, log=lambda s: None)
    for k, v in BASE.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
