"""Independent check of minilora's checkpoint and adapter files against real transformers + PEFT.

Not part of the test suite (the suite runs without torch or network). Run it in a separate venv:

    python -m venv /work/venv-hf
    /work/venv-hf/bin/pip install torch==2.13.0        # FIRST: the CPU wheel (never let pip pull a CUDA torch)
    /work/venv-hf/bin/pip install transformers peft safetensors numpy
    PYTHONPATH=. OPENBLAS_NUM_THREADS=1 /work/venv-hf/bin/python tools/check_against_hf.py

It builds a tiny random GPT-2 with transformers (nothing is downloaded) and checks, printing the
largest logit difference of each (float32):
  1. a GPT-2 folder written by transformers loads with `GPT.from_pretrained`: transformers' logits;
     and minilora's `save_pretrained` folder loads in transformers: minilora's logits.
  2. a minilora adapter folder (q/v slices of c_attn, c_fc, rsLoRA, trained biases) loads with
     `PeftModel.from_pretrained` unchanged, with no warning, and gives minilora's logits.
  3. a PEFT adapter folder (alpha_pattern, rank_pattern, layers_to_transform, use_rslora,
     bias="lora_only") loads with `load_lora_model`: PEFT's logits.
  4. a PEFT DoRA adapter is refused with a message naming use_dora (unless a "dora" variant exists).
  5. a byte-level BPE trained here: minilora's GPT2Tokenizer gives the ids of transformers' GPT2Tokenizer.
Exit code 0 when every check passes.
"""
from __future__ import annotations

import logging
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model
from transformers import GPT2Config, GPT2LMHeadModel

from minilora.lora.model import LoraConfig, load_lora_model
from minilora.lora.model import get_peft_model as ml_get_peft_model
from minilora.lora.variant import VARIANTS
from minilora.nn.gpt import GPT
from minilora.tensor import no_grad

TOL = 2e-5
torch.manual_seed(0)
ids = np.random.default_rng(0).integers(0, 64, (2, 16))


def hf_logits(model):
    model.eval()
    with torch.no_grad():
        return model(torch.tensor(ids)).logits.numpy()


def ml_logits(model):
    model.eval()
    with no_grad():
        return model(ids)[0].data


def report(name, a, b):
    d = float(np.abs(a - b).max())
    ok = d < TOL * max(1.0, float(np.abs(a).max()))
    print(f"{'PASS' if ok else 'FAIL'}  {name}: max |logit difference| = {d:.2e}")
    return ok


def main() -> int:
    ok = True
    tmp = Path(tempfile.mkdtemp())
    cfg = GPT2Config(n_layer=2, n_head=2, n_embd=24, n_positions=32, vocab_size=64)
    hf = GPT2LMHeadModel(cfg)
    with torch.no_grad():                       # non-zero biases and LayerNorm weights, so transposes show
        for n, p in hf.named_parameters():
            if n.endswith("bias") or ".ln_" in n:
                p.add_(0.1 * torch.randn_like(p))
    hf.save_pretrained(tmp / "gpt2")
    print("files written by transformers:", sorted(p.name for p in (tmp / "gpt2").iterdir()))
    base = GPT.from_pretrained(tmp / "gpt2")
    ok &= report("1a transformers folder -> GPT.from_pretrained", ml_logits(base), hf_logits(hf))
    base.save_pretrained(tmp / "ml-gpt2")
    back = GPT2LMHeadModel.from_pretrained(tmp / "ml-gpt2")
    ok &= report("1b minilora save_pretrained -> transformers", hf_logits(back), ml_logits(base))

    ml = ml_get_peft_model(GPT.from_pretrained(tmp / "gpt2"),
                           LoraConfig(r=2, lora_alpha=5, target_modules=["c_attn", "c_fc"], use_rslora=True,
                                      enable_lora=[True, False, True], init_lora_weights=False, bias="lora_only"))
    rng = np.random.default_rng(1)
    for n, p in ml.named_trainable_parameters():
        if n.endswith("bias"):
            p.data = p.data + rng.normal(0, 0.1, p.shape).astype(p.dtype)
    notes = ml.save_adapter(tmp / "ml-adapter")
    print("save_adapter notes:", notes)
    hf_model = GPT2LMHeadModel.from_pretrained(tmp / "gpt2")
    logged = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = lambda record: logged.append(record.getMessage())
    logging.getLogger("peft").addHandler(handler)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        peft_model = PeftModel.from_pretrained(hf_model, tmp / "ml-adapter")
    logging.getLogger("peft").removeHandler(handler)
    relevant = logged + [str(w.message) for w in caught
                         if "peft" in (w.filename or "") or "adapter" in str(w.message)]
    print("warnings (and PEFT log warnings) while PEFT loaded the minilora adapter:", relevant or "none")
    ok &= not relevant
    ok &= report("2  minilora adapter -> PeftModel.from_pretrained", hf_logits(peft_model), ml_logits(ml))

    hf_base = GPT2LMHeadModel.from_pretrained(tmp / "gpt2")
    pcfg = PeftLoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True,
                          rank_pattern={"c_fc": 2, "h.1.attn.c_attn": 3}, alpha_pattern={"attn.c_proj": 3},
                          layers_to_transform=[1], layers_pattern="h", use_rslora=True, bias="lora_only",
                          init_lora_weights=False, task_type="CAUSAL_LM")
    pm = get_peft_model(hf_base, pcfg)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if p.requires_grad and n.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    pm.save_pretrained(tmp / "peft-adapter")
    print("files written by PEFT:", sorted(p.name for p in (tmp / "peft-adapter").iterdir()))
    loaded = load_lora_model(GPT.from_pretrained(tmp / "gpt2"), tmp / "peft-adapter")
    print("minilora layers:", [(n, m.r, m.lora_alpha) for n, m in loaded.lora_layers()])
    ok &= report("3  PEFT adapter -> load_lora_model", ml_logits(loaded), hf_logits(pm))

    dora = get_peft_model(GPT2LMHeadModel.from_pretrained(tmp / "gpt2"),
                          PeftLoraConfig(r=2, target_modules=["c_attn"], use_dora=True, fan_in_fan_out=True))
    dora.save_pretrained(tmp / "dora-adapter")
    try:
        d = load_lora_model(GPT.from_pretrained(tmp / "gpt2"), tmp / "dora-adapter")
        if "dora" in VARIANTS:
            ok &= report("4  PEFT DoRA adapter -> load_lora_model", ml_logits(d), hf_logits(dora))
        else:
            print("FAIL  4  a DoRA adapter loaded without a dora variant")
            ok = False
    except ValueError as e:
        named = "use_dora" in str(e) and "dora" not in VARIANTS
        print(f"{'PASS' if named else 'FAIL'}  4  PEFT DoRA adapter refused: {e}")
        ok &= named
    # 5. the tokenizer: a byte-level BPE trained here, read by transformers' GPT2Tokenizer (the Python port of
    #    OpenAI's encoder.py) and by minilora's GPT2Tokenizer, must give the same ids and text
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Tokenizer as HFGPT2Tokenizer

    from minilora.bpe import GPT2Tokenizer
    corpus = ["The quick brown fox jumps over the lazy dog. " * 20, "def f(x):\n    return x ** 2  # squares\n" * 20,
              "Les élèves ont déjà mangé 12 crêpes — 😀 naïve café. " * 20]
    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(corpus, vocab_size=400, min_frequency=2, special_tokens=["<|endoftext|>"])
    (tmp / "bpe").mkdir()
    trainer.save_model(str(tmp / "bpe"))
    hf_tok = HFGPT2Tokenizer(str(tmp / "bpe" / "vocab.json"), str(tmp / "bpe" / "merges.txt"))
    ml_tok = GPT2Tokenizer(tmp / "bpe")
    texts = ["The lazy fox squares x.", "  two  spaces\n\nand newlines", "crêpes 😀 naïve", "it's 2024, isn't it?",
             "unseen words: zygote quixotic", "a<|endoftext|>b"]
    same = all(hf_tok.encode(t) == ml_tok.encode(t).tolist() and ml_tok.decode(ml_tok.encode(t)) == t for t in texts)
    print(f"{'PASS' if same else 'FAIL'}  5  byte-level BPE: minilora's GPT2Tokenizer == transformers' GPT2Tokenizer "
          f"on {len(texts)} texts (vocab {ml_tok.vocab_size})")
    ok &= same
    print("ALL PASS" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
