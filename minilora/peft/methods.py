"""The baselines as `PeftModel`s: how each one changes the GPT and which parameters train.

    AdapterModel       AdapterLinear in place of attn.c_proj / mlp.c_proj          (adapters.py)
    PrefixTuningModel  PrefixSelfAttention in place of every block.attn            (prefix_attention.py)
    PromptModel        a soft prompt prepended to the token embeddings             (prompt.py)
    BitFitModel        nothing added: the selected biases train
    IA3Model           IA3Linear in place of the targets                           (ia3.py)
"""
from __future__ import annotations

import re
from collections import OrderedDict

import numpy as np

from .. import ops
from ..lora.model import find_target_modules
from ..nn.layers import Linear
from ..tensor import Tensor
from .adapters import AdapterLinear
from .ia3 import IA3Linear
from .model import PeftModel, replace_module
from .prefix_attention import PrefixSelfAttention
from .prompt import PromptEncoder, prepend_prompt

__all__ = ["AdapterModel", "PrefixTuningModel", "PromptModel", "BitFitModel", "IA3Model"]


def _selects(name: str, targets) -> bool:
    """PEFT's matching: a regex str must match the whole name; list items match the name or a suffix."""
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


class AdapterModel(PeftModel):
    """Houlsby / Lin adapters (`AdapterConfig`); not mergeable (a nonlinearity sits in the branch)."""

    peft_type = "ADAPTER"

    def _inject(self, rng):
        cfg = self.peft_config
        names = find_target_modules(self.base_model, list(cfg.target_modules))
        for name in names:
            lin = self.base_model.get_submodule(name)
            replace_module(self.base_model, name,
                           AdapterLinear(lin, cfg.bottleneck_size, cfg.non_linearity, cfg.init_std, rng))
        self.adapter_module_names = names

    def _is_adapter(self, name):
        return ".adapter_down." in name or ".adapter_up." in name


class PrefixTuningModel(PeftModel):
    """Prefix-layer tuning (`PrefixTuningConfig`): `prompt_encoder` gives E (P, n_layer 2 C); layer l
    reads its keys from columns [2l C, (2l+1) C) and its values from [(2l+1) C, (2l+2) C) (PEFT's
    past_key_values layout)."""

    peft_type = "PREFIX_TUNING"

    def _inject(self, rng):
        cfg, gcfg = self.peft_config, self.base_model.config
        C, L = gcfg.n_embd, gcfg.n_layer
        for i in range(L):
            replace_module(self.base_model, f"transformer.h.{i}.attn",
                           PrefixSelfAttention(self.base_model.get_submodule(f"transformer.h.{i}.attn")))
        init = None
        if cfg.prefix_init_text is not None and not cfg.prefix_projection:
            init = _real_word_kv(self.base_model, cfg.prefix_init_text, cfg.num_virtual_tokens)
        self.prompt_encoder = PromptEncoder(cfg.num_virtual_tokens, C, 2 * L * C, cfg.prefix_projection,
                                            cfg.encoder_hidden_size, init=init, init_std=cfg.init_std, rng=rng,
                                            dtype=self.base_model.dtype)

    def _is_adapter(self, name):
        return name.startswith("prompt_encoder.")

    def forward(self, idx, targets=None):
        """As GPT.forward, every layer attending over [its prefix ; the sequence]."""
        E = self.prompt_encoder()                                  # (P, n_layer 2 C)
        C = self.base_model.config.n_embd
        blocks = list(self.base_model.transformer.h)
        for i, block in enumerate(blocks):
            k = ops.getitem(E, (slice(None), slice(2 * i * C, (2 * i + 1) * C)))
            v = ops.getitem(E, (slice(None), slice((2 * i + 1) * C, (2 * i + 2) * C)))
            block.attn.prefix = (k, v)
        try:
            return self.base_model(idx, targets)
        finally:
            for block in blocks:
                block.attn.prefix = None

    def adapter_state(self):
        """{"prompt_embeddings": E (P, n_layer 2 C)}: the encoder's output, as PEFT saves it."""
        return OrderedDict(prompt_embeddings=np.array(_no_grad_value(self.prompt_encoder)))

    def _load_state(self, tensors):
        if self.prompt_encoder.prefix_projection:
            raise ValueError("load_adapter: build the model with prefix_projection=False to load a prefix "
                             "(the file holds the encoder's output; load_peft_model does this)")
        self.prompt_encoder.embedding.weight.data = np.array(tensors["prompt_embeddings"], copy=True)


class PromptModel(PeftModel):
    """Soft prompts: prompt tuning (`PromptTuningConfig`) and prefix-embedding (`PrefixEmbeddingConfig`).

    `config.block_size` reads block_size - P: the positions left for real tokens (the P virtual
    tokens take positions 0..P-1). Logits and loss cover the real tokens only.
    """

    @property
    def peft_type(self) -> str:
        """PROMPT_TUNING or PREFIX_EMBEDDING (the config's)."""
        return self.peft_config.peft_type

    def _inject(self, rng):
        cfg, gcfg = self.peft_config, self.base_model.config
        P, C = cfg.num_virtual_tokens, gcfg.n_embd
        if P >= gcfg.block_size:
            raise ValueError(f"{cfg.peft_type}: num_virtual_tokens = {P} leaves no position of block_size = "
                             f"{gcfg.block_size} for the input")
        wte = self.base_model.transformer.wte.weight.data
        init = None
        if getattr(cfg, "prompt_tuning_init", None) == "TEXT":
            init = wte[_text_ids(cfg.prompt_tuning_init_text, P, wte.shape[0])]   # repeated or cut to P, as PEFT
        elif getattr(cfg, "prompt_tuning_init", None) == "SAMPLE_VOCAB":
            init = wte[rng.integers(0, wte.shape[0], P)]
        elif getattr(cfg, "prompt_tuning_init", None) == "RANDOM":
            init = rng.normal(0.0, float(wte.std()), (P, C))
        projection = getattr(cfg, "prefix_projection", False)
        self.prompt_encoder = PromptEncoder(P, C, C, projection, getattr(cfg, "encoder_hidden_size", None),
                                            init=init, init_std=getattr(cfg, "init_std", 0.02), rng=rng,
                                            dtype=self.base_model.dtype)

    def _is_adapter(self, name):
        return name.startswith("prompt_encoder.")

    @property
    def sequence_tokens_used(self) -> int:
        return self.peft_config.num_virtual_tokens

    @property
    def config(self):
        """The GPT's config with block_size reduced by P (what generate may feed)."""
        from dataclasses import replace
        c = self.base_model.config
        return replace(c, block_size=c.block_size - self.sequence_tokens_used)

    def forward(self, idx, targets=None):
        """idx (B, T) with T <= block_size - P -> (logits (B, T, V), loss or None)."""
        gpt = self.base_model
        P = self.sequence_tokens_used
        idx = np.asarray(idx.data if isinstance(idx, Tensor) else idx)
        if idx.ndim == 2 and idx.shape[1] + P > gpt.config.block_size:
            raise ValueError(f"{self.peft_type}: sequence length {idx.shape[1]} + {P} virtual tokens exceeds "
                             f"block_size = {gpt.config.block_size} (the soft prompt uses up {P} positions)")
        idx = gpt._check_idx(idx)
        T = idx.shape[1]
        tr = gpt.transformer
        x = prepend_prompt(tr.wte(idx), self.prompt_encoder())     # (B, P+T, C)
        x = tr.drop(x + tr.wpe(np.arange(P + T)))
        for block in tr.h:
            x = block(x)
        x = ops.getitem(x, (slice(None), slice(P, None)))          # the real tokens (B, T, C)
        logits = gpt.lm_head(tr.ln_f(x))
        loss = None if targets is None else ops.cross_entropy(logits, np.asarray(targets))
        return logits, loss

    def adapter_state(self):
        """{"prompt_embeddings": (P, C)}: the encoder's output, as PEFT saves it."""
        return OrderedDict(prompt_embeddings=np.array(_no_grad_value(self.prompt_encoder)))

    def _load_state(self, tensors):
        if self.prompt_encoder.prefix_projection:
            raise ValueError("load_adapter: build the model with prefix_projection=False to load a prompt")
        self.prompt_encoder.embedding.weight.data = np.array(tensors["prompt_embeddings"], copy=True)


class BitFitModel(PeftModel):
    """BitFit (`BitFitConfig`): nothing is added; merging is a no-op (the biases are the model's)."""

    peft_type = "BITFIT"
    mergeable = True

    def _inject(self, rng):
        tm = self.peft_config.target_modules
        if tm is not None:
            mods = [n for n, m in self.base_model.named_modules() if n and "bias" in m._parameters
                    and m._parameters["bias"] is not None and _selects(n, tm)]
            if not mods:
                raise ValueError(f"BitFitConfig.target_modules {tm!r} selects no module with a bias")

    def _is_adapter(self, name):
        if name.rpartition(".")[2] != "bias":
            return False
        tm = self.peft_config.target_modules
        return tm is None or _selects(name.rpartition(".")[0], tm)

    def merge_adapter(self):
        """Nothing to do: the trained biases are the model's own."""

    def unmerge_adapter(self):
        """Nothing to do."""

    def merge_and_unload(self):
        """The GPT itself, every parameter trainable again."""
        self.base_model.requires_grad_(True)
        return self.base_model


class IA3Model(PeftModel):
    """(IA)^3 (`IA3Config`), mergeable: merge folds every ia3_l into its weight."""

    peft_type = "IA3"
    mergeable = True

    def _inject(self, rng):
        cfg = self.peft_config
        tm = cfg.target_modules if isinstance(cfg.target_modules, str) else list(cfg.target_modules)
        self.ia3_module_names = find_target_modules(self.base_model, tm)
        for name in self.ia3_module_names:
            lin = self.base_model.get_submodule(name)
            ff = _selects(name, cfg.feedforward_modules)
            replace_module(self.base_model, name, IA3Linear(lin, ff, cfg.init_ia3_weights, rng))

    def _is_adapter(self, name):
        return name.endswith(".ia3_l")

    def _layers(self):
        layers = [(n, m) for n, m in self.base_model.named_modules() if isinstance(m, IA3Linear)]
        if not layers:
            raise RuntimeError("IA3Model: no IA3 layers left (merge_and_unload already ran?)")
        return layers

    def merge_adapter(self):
        """W <- diag(l) W (output scaling) or W diag(l) (input scaling); see ia3.py."""
        for _, m in self._layers():
            m.merge()

    def unmerge_adapter(self):
        """Divide every ia3_l back out."""
        for _, m in self._layers():
            m.unmerge()

    def merge_and_unload(self):
        """Merge, put a plain Linear in place of each IA3 layer and return the GPT (all trainable)."""
        for name, m in self._layers():
            if not m.merged:
                m.merge()
            replace_module(self.base_model, name, Linear.from_parameters(m.weight, m.bias))
        self.base_model.requires_grad_(True)
        return self.base_model


def _text_ids(text: str, n: int, vocab: int) -> np.ndarray:
    """The byte ids of `text`, repeated or cut to n (PEFT's TEXT init rule)."""
    ids = np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64) % vocab
    return np.resize(ids, n)


def _real_word_kv(gpt, text: str, P: int) -> np.ndarray:
    """(P, n_layer 2 C): every layer's keys and values of the base model reading `text` (PEFT's layout)."""
    from ..tensor import no_grad
    ids = _text_ids(text, min(P, gpt.config.block_size), gpt.config.vocab_size)
    ids = np.resize(ids, P)[None, :min(P, gpt.config.block_size)]
    tr, C = gpt.transformer, gpt.config.n_embd
    cols = []
    with no_grad():
        x = tr.wte(ids) + tr.wpe(np.arange(ids.shape[1]))
        for block in tr.h:
            qkv = block.attn.c_attn(block.ln_1(x)).data[0]          # (P', 3C)
            cols += [qkv[:, C:2 * C], qkv[:, 2 * C:]]
            x = block(x)
    return np.resize(np.concatenate(cols, axis=1), (P, 2 * len(tr.h) * C))


def _no_grad_value(encoder):
    from ..tensor import no_grad
    with no_grad():
        return encoder().data
