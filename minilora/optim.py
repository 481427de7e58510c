"""Optimizers (SGD, AdamW), parameter groups, a learning-rate schedule and gradient clipping.

Every update runs once per training step, so it is written in place: the optimizer state (momentum
buffers, Adam moments) is allocated once, at construction, and each step works through one scratch
buffer per parameter shape with `out=` arguments, never building a new array per parameter.

Parameter groups (as in PyTorch): `params` is either a plain list of Parameters/Tensors, or a list of
dicts `{"params": [...], "lr": ..., "weight_decay": ...}`; a key missing from a group takes the
optimizer's default. Each group remembers its starting lr as `base_lr`, so a schedule can move all
groups together (`set_lr`). A parameter listed twice (a tied weight such as GPT-2's
`lm_head.weight is transformer.wte.weight`) is kept once, in its first group: it is updated once per
step, with the gradient that backward accumulated from both uses.

Sources: Loshchilov & Hutter, "Decoupled Weight Decay Regularization" (ICLR 2019) for AdamW;
Kingma & Ba, "Adam" (ICLR 2015) for the moments and bias correction; Loshchilov & Hutter, "SGDR"
(ICLR 2017) for cosine annealing; Pascanu et al., "On the difficulty of training recurrent neural
networks" (ICML 2013) for clipping by the global norm. The defaults (betas (0.9, 0.95), weight
decay 0.1 on matrices only) are GPT-3's / nanoGPT's.
"""
from __future__ import annotations

import math

import numpy as np

from .tensor import Tensor

__all__ = ["Optimizer", "SGD", "AdamW", "cosine_schedule", "clip_grad_norm"]


def _check_nonneg(name, value):
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


class Optimizer:
    """Base class: parameter groups, per-parameter state arrays, lr control and (de)serialisation.

    Args:
        params: a list of Parameters/Tensors, or a list of group dicts (see the module docstring).
        defaults: dict of hyper-parameters (must contain "lr") that groups inherit.
    Attributes:
        param_groups: list of dicts with "params" (list of Tensors), "lr", "base_lr" and the
            subclass's hyper-parameters.
        state: list (one dict per parameter, in group order) name -> preallocated ndarray.
        step_count: number of `step()` calls so far (the global step).
        param_steps: int64 array (one entry per parameter, in group order): how many updates each
            parameter has received. A parameter is updated only in a step where it has a gradient,
            so a parameter that first gets one at global step 11 has param_steps 1 after it (AdamW's
            bias-correction t is this count, as in PyTorch, which keeps `state[p]["step"]`).
    Raises:
        ValueError: no parameters, a group without "params", an unknown key in a group, a negative
            hyper-parameter.
        TypeError: an entry that is not a Tensor.
    """

    _state_names: tuple = ()

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        groups = self._split_groups(list(params))
        self.param_groups = []
        seen = set()
        for i, g in enumerate(groups):
            if not isinstance(g, dict) or "params" not in g:
                raise ValueError(f"{type(self).__name__}: parameter group {i} must be a dict with a 'params' key")
            unknown = set(g) - set(self.defaults) - {"params", "base_lr"}
            if unknown:
                raise ValueError(f"{type(self).__name__}: group {i} has unknown keys {sorted(unknown)} "
                                 f"(known: params, {', '.join(sorted(self.defaults))})")
            group = {**self.defaults, **{k: v for k, v in g.items() if k != "params"}}
            plist = []
            for p in g["params"]:
                if not isinstance(p, Tensor):
                    raise TypeError(f"{type(self).__name__}: parameters must be Tensors, got {type(p).__name__}")
                if id(p) in seen:          # a tied parameter: update it once, in its first group
                    continue
                seen.add(id(p))
                plist.append(p)
            group["params"] = plist
            for k, v in group.items():
                if k not in ("params", "betas"):
                    group[k] = _check_nonneg(f"{type(self).__name__} group {i} {k}", v)
            group["base_lr"] = float(g.get("base_lr", group["lr"]))
            self.param_groups.append(group)
        if not any(g["params"] for g in self.param_groups):
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        self.state = [self._init_state(p) for p in self._all_params()]
        self.step_count = 0
        self.param_steps = np.zeros(len(self.state), dtype=np.int64)
        self._scratch = {}

    # ---- helpers ------------------------------------------------------------------------------
    def _split_groups(self, params):
        """A plain list becomes one group; subclasses may split it (AdamW: decay / no decay)."""
        if params and all(isinstance(g, dict) for g in params):
            return params
        return [{"params": params}]

    def _init_state(self, p):
        return {name: np.zeros_like(p.data) for name in self._state_names}

    def _all_params(self):
        return [p for g in self.param_groups for p in g["params"]]

    def _updates(self):
        """Yield (group, param, state, scratch, t) for every parameter that has a gradient this step.

        t is the parameter's own update count including this one (its entry of `param_steps`, which
        this advances); parameters without a gradient are skipped and their count stays.
        """
        i = 0
        for g in self.param_groups:
            for p in g["params"]:
                st = self.state[i]
                i += 1
                if not p.requires_grad or p.grad is None:
                    continue
                for name, arr in st.items():
                    if arr.shape != p.data.shape or arr.dtype != p.data.dtype:
                        raise ValueError(
                            f"{type(self).__name__}: state {name!r} of parameter {i - 1} has shape "
                            f"{arr.shape} {arr.dtype} but the parameter is {p.data.shape} {p.data.dtype} "
                            "(was the model cast or reshaped after the optimizer was built?)")
                key = (p.data.shape, p.data.dtype.str)
                tmp = self._scratch.get(key)
                if tmp is None:
                    tmp = self._scratch[key] = np.empty_like(p.data)
                self.param_steps[i - 1] += 1
                yield g, p, st, tmp, int(self.param_steps[i - 1])

    # ---- public API ---------------------------------------------------------------------------
    def zero_grad(self):
        """Forget every parameter's gradient (sets `.grad = None`, so backward allocates afresh)."""
        for p in self._all_params():
            p.grad = None

    def step(self):  # pragma: no cover - abstract
        """Apply one update to every parameter with requires_grad and a gradient."""
        raise NotImplementedError

    def set_lr(self, lr):
        """Set the learning rate of the default group to `lr`, and scale every group alike.

        Each group keeps the ratio it was built with: `group.lr = group.base_lr * lr / defaults.lr`.
        So a schedule that computes absolute learning rates for the optimizer's `lr` (e.g.
        `cosine_schedule(step, max_lr=cfg.lr, ...)`) also drives groups that were given their own lr.
        (With `defaults.lr == 0` there is no ratio: every group gets `lr`.)

        Raises:
            ValueError: lr negative or not finite.
        """
        lr = _check_nonneg("lr", lr)
        ref = self.defaults["lr"]
        for g in self.param_groups:
            g["lr"] = g["base_lr"] * (lr / ref) if ref > 0 else lr

    def state_bytes(self) -> int:
        """Bytes held by the optimizer state arrays (moments, momentum buffers; not the scratch)."""
        return int(sum(a.nbytes for st in self.state for a in st.values()))

    def state_dict(self) -> dict:
        """Flat dict name -> ndarray (copies), ready for an .npz file.

        Keys: "step" (0-d int64, the global step), "param_steps" (int64 (n_params,), each parameter's
        own update count), "group.{g}.lr" (0-d float64, the current lr of group g) and
        "param.{i}.{name}" for each state array of parameter i (in group order).
        """
        out = {"step": np.array(self.step_count, dtype=np.int64), "param_steps": self.param_steps.copy()}
        for gi, g in enumerate(self.param_groups):
            out[f"group.{gi}.lr"] = np.array(g["lr"], dtype=np.float64)
        for i, st in enumerate(self.state):
            for name, arr in st.items():
                out[f"param.{i}.{name}"] = arr.copy()
        return out

    def load_state_dict(self, state):
        """Restore what `state_dict` returned, bit for bit, into the preallocated arrays.

        A state dict written before per-parameter steps existed (no "param_steps" key, one global
        "step") loads too: every parameter gets that step, which is what the old code used.

        Raises:
            KeyError: missing or unexpected keys (all listed).
            ValueError: an array whose shape or dtype differs from this optimizer's (all listed,
                with both shapes), e.g. a checkpoint of another model.
        """
        expected = self.state_dict()
        if "param_steps" not in state and "step" in state:     # the older format: one global step
            state = {**state, "param_steps": np.full(len(self.state), int(state["step"]), dtype=np.int64)}
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in expected]
        if missing or unexpected:
            raise KeyError(f"{type(self).__name__}.load_state_dict: missing keys {missing}, "
                           f"unexpected keys {unexpected}")
        bad = [f"{k}: optimizer {v.shape} {v.dtype}, state {np.shape(state[k])} {np.asarray(state[k]).dtype}"
               for k, v in expected.items()
               if np.shape(state[k]) != v.shape or (k.startswith("param.") and np.asarray(state[k]).dtype != v.dtype)]
        if bad:
            raise ValueError(f"{type(self).__name__}.load_state_dict: mismatched arrays:\n  " + "\n  ".join(bad))
        steps = np.asarray(state["param_steps"])
        if not np.issubdtype(steps.dtype, np.integer) or (steps < 0).any():
            raise ValueError(f"{type(self).__name__}.load_state_dict: param_steps must be integers >= 0, "
                             f"got {steps.dtype} {steps.tolist()}")
        self.step_count = int(state["step"])
        self.param_steps[...] = steps
        for gi, g in enumerate(self.param_groups):
            g["lr"] = float(state[f"group.{gi}.lr"])
        for i, st in enumerate(self.state):
            for name, arr in st.items():
                arr[...] = state[f"param.{i}.{name}"]


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum and (coupled, L2) weight decay.

    Per parameter p with gradient g (PyTorch's formulation, dampening 0, no Nesterov):

        g <- g + weight_decay * p          (L2 penalty folded into the gradient)
        buf <- momentum * buf + g          (buf starts at 0, so the first buf is g)
        p <- p - lr * buf                  (momentum 0: p <- p - lr * g)

    A parameter with requires_grad False or grad None is skipped (weights and buffer untouched), as in
    PyTorch; its buffer is still 0 at its first gradient, so that first buffer is its gradient, even
    when it arrives late (PyTorch's `buf = clone(g)` at a parameter's first step).

    Args:
        params: list of Tensors or of group dicts. lr: step size >= 0. momentum, weight_decay: >= 0.
    """

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0):
        self._state_names = ("momentum_buffer",) if momentum else ()
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))
        if any(g["momentum"] for g in self.param_groups) and not self._state_names:
            self._state_names = ("momentum_buffer",)
            self.state = [self._init_state(p) for p in self._all_params()]

    def step(self):
        """One SGD update of every parameter that has a gradient (in place)."""
        self.step_count += 1
        for g, p, st, tmp, _ in self._updates():
            lr, mu, wd = g["lr"], g["momentum"], g["weight_decay"]
            d = p.grad
            if wd:
                np.multiply(p.data, wd, out=tmp)
                tmp += d
                d = tmp
            if mu:
                buf = st["momentum_buffer"]
                buf *= mu
                buf += d
                d = buf
            if d is not tmp:
                np.multiply(d, lr, out=tmp)
            else:
                tmp *= lr
            p.data -= tmp


class AdamW(Optimizer):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019, Algorithm 2).

    With t = this parameter's own update count (1, 2, ...), gradient g, moments m, v (both start at 0):

        p <- p - lr * weight_decay * p                 (decoupled decay, not part of g)
        m <- beta1 * m + (1 - beta1) * g
        v <- beta2 * v + (1 - beta2) * g**2
        m_hat = m / (1 - beta1**t),  v_hat = v / (1 - beta2**t)     (bias correction)
        p <- p - lr * m_hat / (sqrt(v_hat) + eps)

    (The decay is applied first, to the pre-update weights, as PyTorch does.)

    Args:
        params: list of Tensors, or of group dicts. Given a plain list, weight decay applies only to
            parameters with ndim >= 2 (weight matrices, embeddings); vectors (biases, LayerNorm gains)
            go into a second group with weight_decay 0, as in GPT-3 / nanoGPT.
        lr: peak step size. betas: (beta1, beta2) in [0, 1). eps: added to sqrt(v_hat).
        weight_decay: decoupled decay coefficient lambda (the per-step shrink is lr * lambda).
    Parameters with requires_grad False or grad None are skipped: their weights, moments and step
    count are not touched (no weight decay either), as in PyTorch.

    Per-parameter steps: t counts the updates of each parameter (`param_steps`), not the calls to
    `step()`. A parameter that first receives a gradient at global step 11 is bias-corrected with
    t = 1, so its first update is lr * g / (|g| + eps), about lr, as at any parameter's first step
    (with one global t = 11 and betas (0.9, 0.999) it would be 0.048 for lr = 0.1). When every
    parameter gets a gradient at every step, per-parameter and global steps are equal. The counts are
    in `state_dict()` ("param_steps"), so checkpoints keep them; an older state dict with only the
    global "step" loads by giving every parameter that step.
    """

    _state_names = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1):
        b1, b2 = (float(b) for b in betas)
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(f"AdamW: betas must be in [0, 1), got {betas}")
        super().__init__(params, dict(lr=lr, betas=(b1, b2), eps=eps, weight_decay=weight_decay))

    def _split_groups(self, params):
        if params and all(isinstance(g, dict) for g in params):
            return params
        decay = [p for p in params if getattr(p, "ndim", 0) >= 2]
        no_decay = [p for p in params if getattr(p, "ndim", 0) < 2]
        groups = [{"params": decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        return groups

    def step(self):
        """One AdamW update of every parameter that has a gradient (in place, one scratch array)."""
        self.step_count += 1
        for g, p, st, tmp, t in self._updates():
            lr, wd, eps = g["lr"], g["weight_decay"], g["eps"]
            b1, b2 = g["betas"]
            m, v, grad, w = st["exp_avg"], st["exp_avg_sq"], p.grad, p.data
            bc1, bc2 = 1.0 - b1 ** t, 1.0 - b2 ** t
            if wd:
                w *= 1.0 - lr * wd                       # decoupled weight decay
            m *= b1                                      # m = b1 m + (1 - b1) g
            np.multiply(grad, 1.0 - b1, out=tmp)
            m += tmp
            v *= b2                                      # v = b2 v + (1 - b2) g^2
            np.multiply(grad, grad, out=tmp)
            tmp *= 1.0 - b2
            v += tmp
            np.sqrt(v, out=tmp)                          # tmp = sqrt(v_hat) + eps
            tmp *= 1.0 / math.sqrt(bc2)
            tmp += eps
            np.divide(m, tmp, out=tmp)                   # tmp = m / (sqrt(v_hat) + eps)
            tmp *= lr / bc1                              # ... * lr / (1 - b1^t)
            w -= tmp


def cosine_schedule(step, max_lr, min_lr, warmup_steps, total_steps) -> float:
    """Learning rate at `step`: linear warm-up from 0, cosine decay to min_lr, then flat.

        step < warmup:              lr = max_lr * step / warmup_steps
        warmup <= step <= total:    lr = min_lr + (max_lr - min_lr) * (1 + cos(pi * s)) / 2,
                                    s = (step - warmup) / (total - warmup)
        step > total:               lr = min_lr

    So lr(0) = 0, lr(warmup) = max_lr (when total > warmup), lr(total) = min_lr. (`train` asks for update k's rate with
    step = k, k = 1, 2, ..., so no update is wasted at lr 0.) Cosine annealing: Loshchilov & Hutter,
    "SGDR" (2017); warm-up then cosine as in GPT-3 and nanoGPT.

    Raises:
        ValueError: negative values, min_lr > max_lr, or total_steps < warmup_steps.
    """
    step = int(step)
    max_lr, min_lr = _check_nonneg("max_lr", max_lr), _check_nonneg("min_lr", min_lr)
    if min_lr > max_lr:
        raise ValueError(f"cosine_schedule: min_lr={min_lr} is larger than max_lr={max_lr}")
    if warmup_steps < 0 or total_steps < warmup_steps or step < 0:
        raise ValueError(f"cosine_schedule: need 0 <= warmup_steps <= total_steps and step >= 0, got "
                         f"step={step}, warmup_steps={warmup_steps}, total_steps={total_steps}")
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    if step >= total_steps:
        return min_lr
    s = (step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr + 0.5 * (max_lr - min_lr) * (1.0 + math.cos(math.pi * s))


def _global_norm(grads) -> float:
    """L2 norm of all arrays in `grads` together, in float64, without overflow or underflow.

    Each gradient is summed in float64 (float32 squares cannot overflow or underflow there). When the
    largest |entry| is beyond 2**±400 (float64 gradients of extreme size), every entry is first
    multiplied by a power of two that brings the largest to [0.5, 1): exact, so the result is the
    norm of the given values to float64 rounding. nan if any entry is nan, inf if any is inf.
    """
    amax = 0.0
    for gr in grads:
        if gr.size:
            m = float(np.max(np.abs(gr)))
            if math.isnan(m):
                return m
            amax = max(amax, m)
    if amax == 0.0 or not math.isfinite(amax):
        return amax
    shift = 0
    if not 2.0 ** -400 < amax < 2.0 ** 400:
        shift = -math.frexp(amax)[1]       # amax * 2**shift is in [0.5, 1)
    sq = 0.0
    for gr in grads:
        flat = np.asarray(gr, dtype=np.float64).reshape(-1)
        if shift:
            flat = np.ldexp(flat, shift)
        sq += float(np.dot(flat, flat))
    return math.ldexp(math.sqrt(sq), -shift) if shift else math.sqrt(sq)


def clip_grad_norm(params, max_norm) -> float:
    """Scale all gradients together so that their global L2 norm is at most max_norm.

        total = sqrt(sum over params of sum(g**2));   if total > max_norm: g <- g * max_norm / (total + 1e-6)

    Parameters without a gradient are ignored; a parameter listed twice counts once. The norm is
    accumulated in float64, with an exact power-of-two rescaling when the entries are too large or
    too small for their squares (see `_global_norm`): 100 float32 entries of 1e20 give 1e21, not inf,
    and entries of 1e-30 give 1e-29, not 0. The gradients are scaled in place, in their own dtype
    (they are arrays backward allocated for the leaf). Nothing is scaled when the norm is not finite
    (the caller decides what to do with a nan/inf step). The 1e-6 is PyTorch's, so the clipped norm
    is max_norm * total / (total + 1e-6).

    Returns:
        the total norm before clipping, as a Python float (nan if a gradient holds nan, inf if one
        holds inf or the norm exceeds the float64 range).
    Raises:
        ValueError: max_norm <= 0.
    Source: Pascanu et al., "On the difficulty of training recurrent neural networks" (ICML 2013).
    """
    max_norm = float(max_norm)
    if not max_norm > 0:
        raise ValueError(f"clip_grad_norm: max_norm must be > 0, got {max_norm}")
    grads, seen = [], set()
    for p in params:
        if id(p) in seen or p.grad is None:
            continue
        seen.add(id(p))
        grads.append(p.grad)
    total = _global_norm(grads)
    if math.isfinite(total) and total > max_norm:
        scale = max_norm / (total + 1e-6)
        for gr in grads:
            gr *= scale
    return total
