"""Every differentiable op: a `Function` with its forward and its hand-written backward side by side.

Notation: `g` is dL/d(output) (same shape as the output); each backward returns dL/d(input).
Broadcasting ops call `unbroadcast` visibly. Ops keep their input dtype (float32 or float64).

Fused ops (`linear`, `softmax`, `log_softmax`, `layer_norm`, `cross_entropy`, `attention`) have a
backward derived by hand for speed and stability; each keeps a `*_composed` twin built only from
primitives, which the tests use as the oracle (fused == composed == finite differences).
Each `Function` class is followed by its public function and, for a fused op, its composed twin,
so one screen shows the whole op.

Sums over the row axis (bias gradients, `unbroadcast`, `sum`/`mean` over leading axes) go through
`function.reduce_sum`, whose float32 error does not grow with the number of rows.

Shape letters: B batch, T time, C channels, nh heads, hs head size (C = nh*hs), V vocabulary, N rows.

One module per family, all names re-exported here (`ops.softmax`, `ops.LayerNorm`, ...):
`elementwise` (arithmetic, exp ... gelu, dropout), `reduce` (sum, mean, var, max), `shape` (reshape,
transpose, getitem, split, concatenate, stack, where, masked_fill, embedding), `linalg` (matmul,
linear), `softmax_family` (softmax, log_softmax, cross_entropy), `norm` (layer_norm),
`fused_attention` (attention); shared checks in `_common`.
"""
from __future__ import annotations

from ._common import Axis, TensorLike, _centre  # noqa: F401  (_centre: lesson 03 shows its source)
from .elementwise import (  # noqa: F401
    GELU,
    Add,
    Div,
    Dropout,
    Exp,
    Log,
    Mul,
    Neg,
    Pow,
    ReLU,
    Sigmoid,
    Sqrt,
    Sub,
    Tanh,
    add,
    div,
    dropout,
    exp,
    gelu,
    log,
    mul,
    neg,
    pow,
    relu,
    sigmoid,
    sqrt,
    sub,
    tanh,
)
from .fused_attention import (  # noqa: F401
    Attention,
    attention,
    attention_composed,
)
from .linalg import (  # noqa: F401
    Linear,
    MatMul,
    linear,
    linear_composed,
    matmul,
)
from .norm import (  # noqa: F401
    LayerNorm,
    layer_norm,
    layer_norm_composed,
)
from .reduce import (  # noqa: F401
    Max,
    Mean,
    Sum,
    Var,
    max,
    mean,
    sum,
    var,
)
from .shape import (  # noqa: F401
    Concatenate,
    Embedding,
    GetItem,
    Reshape,
    Stack,
    Transpose,
    Where,
    concatenate,
    embedding,
    getitem,
    masked_fill,
    reshape,
    split,
    stack,
    transpose,
    where,
)
from .softmax_family import (  # noqa: F401
    CrossEntropy,
    LogSoftmax,
    Softmax,
    cross_entropy,
    cross_entropy_composed,
    log_softmax,
    log_softmax_composed,
    softmax,
    softmax_composed,
)
