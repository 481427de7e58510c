"""The exercise grader: references pass, stubs fail politely, typical mistakes fail with a useful hint."""
import importlib
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from minilora.exercises import EXERCISES, CheckResult, check, check_file, list_exercises, stub_source

NAMES = list(EXERCISES)


# ---------------------------------------------------------------- the catalog


def test_at_least_twelve_exercises_each_with_stub_and_reference():
    items = list_exercises()
    assert len(items) >= 12
    required = {"softmax_backward", "softmax_forward", "layer_norm_backward", "attention_backward",
                "lora_forward", "lora_backward", "merge", "unmerge", "lora_param_count", "choose_rank",
                "subspace_similarity", "effective_rank", "broadcast_add_backward",
                "cross_entropy_backward", "lora_scaling"}
    assert required <= {name for name, _ in items}
    for name, summary in items:
        ex = EXERCISES[name]
        assert ex.name == name and summary == ex.summary and summary
        assert ex.stub_path.is_file() and ex.stub_path.name == f"{name}.py"
        assert callable(ex.reference) and ex.reference.__name__ == name
        assert ex.reference.__module__ == f"minilora.exercises.solutions.{name}"


@pytest.mark.parametrize("name", NAMES)
def test_stub_source_is_a_documented_stub(name):
    src = stub_source(name)
    assert f"def {name}(" in src
    assert "raise NotImplementedError" in src
    assert "Hints:" in src and "Result" in src
    assert src.count("def ") == 1
    mod = importlib.import_module(f"minilora.exercises.stubs.{name}")   # stubs form a package
    assert (getattr(mod, name).__doc__ or "").strip()


def test_unknown_name():
    with pytest.raises(KeyError, match="choose from"):
        stub_source("nope")
    res = check_file("nope", __file__)
    assert not res.passed and "unknown exercise" in res.message


# ---------------------------------------------------------------- reference and stubs


@pytest.mark.parametrize("name", NAMES)
def test_reference_passes(name):
    res = check(name, EXERCISES[name].reference)
    assert isinstance(res, CheckResult)
    assert res.passed, res.message
    assert str(res).startswith("PASS") and "hypothesis-drawn" in str(res)


@pytest.mark.parametrize("name", NAMES)
def test_stub_fails_with_not_implemented_message(name):
    stub = getattr(importlib.import_module(f"minilora.exercises.stubs.{name}"), name)
    res = check(name, stub)
    assert not res.passed and not res
    assert "NotImplementedError" in res.message
    assert "stub is not filled in" in res.message
    assert "inputs:" in res.message


# ---------------------------------------------------------------- typical mistakes


def _fails(name, func, *needles):
    res = check(name, func)
    assert not res.passed, f"{name}: a wrong solution passed"
    for needle in needles:
        assert needle.lower() in res.message.lower(), f"{needle!r} not in:\n{res.message}"
    return res.message


def test_lora_forward_forgotten_scaling():
    def lora_forward(x, W0, A, B, scaling):
        return x @ W0.T + (x @ A.T) @ B.T
    msg = _fails("lora_forward", lora_forward, "output 'y' is wrong at index", "expected", "got",
                 "abs error", "rel error", "x (3, 5)", "W0 (4, 5)", "forget scaling")
    assert "alpha != r" in msg


def test_lora_forward_A_untransposed():
    def lora_forward(x, W0, A, B, scaling):
        return x @ W0.T + scaling * (x @ A) @ B.T       # A is (r, d_in): x @ A fails for d_in != r
    _fails("lora_forward", lora_forward, "raised ValueError", "transposes", "x @ A.T")


def test_lora_forward_W0_untransposed():
    def lora_forward(x, W0, A, B, scaling):
        return x @ W0.reshape(W0.shape[1], W0.shape[0]) + scaling * (x @ A.T) @ B.T
    _fails("lora_forward", lora_forward, "FAIL lora_forward")


def test_lora_backward_mask_missing_from_dx():
    def lora_backward(x, W0, A, B, scaling, g, mask, keep_prob):
        xt = x * mask / keep_prob
        gB = g @ B
        return g @ W0 + scaling * (gB @ A), scaling * gB.T @ xt, scaling * g.T @ (xt @ A.T)
    _fails("lora_backward", lora_backward, "output 'dx'", "missing the dropout mask")


def test_lora_backward_dA_transposed():
    def lora_backward(x, W0, A, B, scaling, g, mask, keep_prob):
        xt = x * mask / keep_prob
        gB = g @ B
        dx = g @ W0 + scaling * (gB @ A) * mask / keep_prob
        return dx, scaling * xt.T @ gB, scaling * g.T @ (xt @ A.T)
    _fails("lora_backward", lora_backward, "output 'dA' has the wrong shape", "expected shape (2, 6)",
           "got shape (6, 2)", "transpose")


def test_lora_backward_dA_without_dropout():
    def lora_backward(x, W0, A, B, scaling, g, mask, keep_prob):
        xt = x * mask / keep_prob
        gB = g @ B
        dx = g @ W0 + scaling * (gB @ A) * mask / keep_prob
        return dx, scaling * gB.T @ x, scaling * g.T @ (xt @ A.T)
    _fails("lora_backward", lora_backward, "output 'dA'", "dropped-out input")


def test_lora_backward_wrong_count():
    def lora_backward(x, W0, A, B, scaling, g, mask, keep_prob):
        return g @ W0
    _fails("lora_backward", lora_backward, "expected a tuple of 3 outputs (dx, dA, dB)")


def test_softmax_without_max_shift():
    def softmax_forward(x):
        e = np.exp(x)
        return e / e.sum(axis=-1, keepdims=True)
    _fails("softmax_forward", softmax_forward, "nan", "logits of 1e4", "shift by the max")


def test_softmax_wrong_axis():
    def softmax_forward(x):
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=0, keepdims=True)
    _fails("softmax_forward", softmax_forward, "FAIL softmax_forward")


def test_softmax_backward_diagonal_jacobian():
    def softmax_backward(y, g):
        return y * (1 - y) * g
    _fails("softmax_backward", softmax_backward, "not diagonal")


def test_broadcast_gradient_not_reduced():
    def broadcast_add_backward(g, shape_a, shape_b):
        return g, g
    _fails("broadcast_add_backward", broadcast_add_backward, "output 'da' has the wrong shape",
           "expected shape (3, 1)", "got shape (3, 4)", "sum over broadcast dims")


def test_broadcast_gradient_without_keepdims():
    def broadcast_add_backward(g, shape_a, shape_b):
        def red(shape):
            lead = g.ndim - len(shape)
            axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape) if n == 1)
            return g.sum(axis=axes)
        return red(shape_a), red(shape_b)
    _fails("broadcast_add_backward", broadcast_add_backward, "wrong shape", "keepdims=True")


def test_layer_norm_backward_missing_mean_terms():
    def layer_norm_backward(x, gamma, g, eps):
        mu = x.mean(-1, keepdims=True)
        rstd = 1 / np.sqrt(x.var(-1, keepdims=True) + eps)
        xhat = (x - mu) * rstd
        return rstd * g * gamma, (g * xhat).sum(0), g.sum(0)
    _fails("layer_norm_backward", layer_norm_backward, "output 'dx'", "missing the mean terms")


def test_layer_norm_backward_unsummed_dgamma():
    def layer_norm_backward(x, gamma, g, eps):
        dx, dgamma, dbeta = EXERCISES["layer_norm_backward"].reference(x, gamma, g, eps)
        mu = x.mean(-1, keepdims=True)
        xhat = (x - mu) / np.sqrt(x.var(-1, keepdims=True) + eps)
        return dx, g * xhat, dbeta
    _fails("layer_norm_backward", layer_norm_backward, "'dgamma'", "sum over the rows")


def test_attention_backward_ignores_causal_and_scale():
    ref = EXERCISES["attention_backward"].reference

    def no_mask(q, k, v, g, causal=True):
        return ref(q, k, v, g, causal=False)
    _fails("attention_backward", no_mask, "causal")

    def no_scale_in_grads(q, k, v, g, causal=True):
        dq, dk, dv = ref(q, k, v, g, causal)
        return dq * np.sqrt(q.shape[1]), dk * np.sqrt(q.shape[1]), dv
    _fails("attention_backward", no_scale_in_grads, "output 'dq'", "1/sqrt(hs)")


def test_cross_entropy_backward_sum_instead_of_mean():
    def cross_entropy_backward(logits, targets):
        p = np.exp(logits - logits.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        p[np.arange(len(targets)), targets] -= 1
        return p
    _fails("cross_entropy_backward", cross_entropy_backward, "divide by N")


def test_merge_and_unmerge_mistakes():
    def merge(W0, A, B, scaling):
        return W0 + B @ A
    _fails("merge", merge, "forget scaling")

    def merge_in_place(W0, A, B, scaling):
        W0 += scaling * B @ A
        return W0
    _fails("merge", merge_in_place, "modified its input 'W0' in place")

    def unmerge(W, A, B, scaling):
        return W + scaling * B @ A
    _fails("unmerge", unmerge, "wrong sign")


def test_param_count_mistakes():
    def lora_param_count(d_in, d_out, r, n_matrices):
        return 2 * n_matrices * r * d_in
    _fails("lora_param_count", lora_param_count, "square matrices")

    def as_float(d_in, d_out, r, n_matrices):
        return float(n_matrices * r * (d_in + d_out))
    _fails("lora_param_count", as_float, "return an int")


def test_rank_mistakes():
    def choose_rank(s, threshold):
        e = np.cumsum(s) / np.sum(s)
        return int(np.searchsorted(e, threshold)) + 1
    _fails("choose_rank", choose_rank, "s**2")

    def choose_rank_off_by_one(s, threshold):
        e = np.cumsum(s ** 2) / np.sum(s ** 2)
        return int(np.argmax(e >= threshold))
    _fails("choose_rank", choose_rank_off_by_one, "off by one")

    def effective_rank(s):
        p = s / s.sum()
        return float(np.exp(-np.sum(p * np.log(p))))
    _fails("effective_rank", effective_rank, "0 * log(0)")

    def subspace_similarity(A1, A2, i, j):
        U1 = np.linalg.svd(A1)[0][:, :i]
        U2 = np.linalg.svd(A2)[0][:, :j]
        return float(np.sum((U1.T @ U2) ** 2) / min(i, j))
    _fails("subspace_similarity", subspace_similarity, "right singular vectors")


# ---------------------------------------------------------------- alpha instead of alpha / r, and friends

ALPHA_HINT = "scaling * r = lora_alpha"


def test_lora_scaling_exercise():
    ref = EXERCISES["lora_scaling"].reference
    assert ref(16, 8, False) == 2.0 and ref(16, 4, True) == 8.0 and isinstance(ref(16, 3, False), float)
    assert ref(16, 3, False) == pytest.approx(16 / 3, rel=1e-15)
    assert list(EXERCISES).index("lora_scaling") == list(EXERCISES).index("lora_param_count") + 1

    def alpha(lora_alpha, r, use_rslora):
        return float(lora_alpha)
    _fails("lora_scaling", alpha, "expected  2", "got       16", "lora_alpha itself", "lora_alpha / r = 2")

    def floor_div(lora_alpha, r, use_rslora):
        return lora_alpha // (r ** 0.5 if use_rslora else r)
    _fails("lora_scaling", floor_div, "true division", "16 // 3 = 5")

    def no_rslora(lora_alpha, r, use_rslora):
        return lora_alpha / r
    _fails("lora_scaling", no_rslora, "rsLoRA divides by sqrt(r)")

    def always_rslora(lora_alpha, r, use_rslora):
        return lora_alpha / r ** 0.5
    _fails("lora_scaling", always_rslora, "use_rslora is False here")


def test_alpha_instead_of_alpha_over_r_gets_its_hint():
    """The classic mistake `scaling * r` (that is, lora_alpha) fails with its hint in every exercise that has a
    scaling: the forward pass, merge, unmerge and each output of the backward pass."""
    def lora_forward(x, W0, A, B, scaling):
        return x @ W0.T + scaling * A.shape[0] * (x @ A.T) @ B.T
    msg = _fails("lora_forward", lora_forward, ALPHA_HINT, "with r = 2", "expected  -21.75139619")
    assert "alpha != r" in msg

    def merge(W0, A, B, scaling):
        return W0 + scaling * A.shape[0] * B @ A
    _fails("merge", merge, ALPHA_HINT)

    def unmerge(W, A, B, scaling):
        return W - scaling * A.shape[0] * B @ A
    _fails("unmerge", unmerge, ALPHA_HINT)

    ref = EXERCISES["lora_backward"].reference
    for pos, out in enumerate(("dx", "dA", "dB")):
        def lora_backward(x, W0, A, B, scaling, g, mask, keep_prob, pos=pos):
            outs = list(ref(x, W0, A, B, scaling, g, mask, keep_prob))
            if pos == 0:
                outs[0] = g @ W0 + A.shape[0] * (outs[0] - g @ W0)
            else:
                outs[pos] = outs[pos] * A.shape[0]
            return tuple(outs)
        _fails("lora_backward", lora_backward, f"output '{out}'", ALPHA_HINT)


def test_lora_backward_missing_keep_prob_in_dA_and_dB():
    ref = EXERCISES["lora_backward"].reference

    def no_kp_in_dA(x, W0, A, B, scaling, g, mask, keep_prob):
        dx, _, dB = ref(x, W0, A, B, scaling, g, mask, keep_prob)
        return dx, scaling * (g @ B).T @ (x * mask), dB
    _fails("lora_backward", no_kp_in_dA, "output 'dA'", "keep_prob 0.8", "missing the 1/keep_prob")

    def no_kp_in_dB(x, W0, A, B, scaling, g, mask, keep_prob):
        dx, dA, _ = ref(x, W0, A, B, scaling, g, mask, keep_prob)
        return dx, dA, scaling * g.T @ ((x * mask) @ A.T)
    _fails("lora_backward", no_kp_in_dB, "output 'dB'", "missing the 1/keep_prob")


@pytest.mark.parametrize("log", [np.log2, np.log10])
def test_effective_rank_entropy_in_other_base_undone_with_exp(log):
    def effective_rank(s):
        p = s[s > 0] / s.sum()
        return float(np.exp(-np.sum(p * log(p))))
    msg = _fails("effective_rank", effective_rank, "undid it with exp")
    assert "expected  3" in msg and ("got       4.879" if log is np.log2 else "got       1.611") in msg  # s = [1, 1, 1]


def test_subspace_similarity_divided_by_i_times_j():
    def subspace_similarity(A1, A2, i, j):
        V1 = np.linalg.svd(A1)[2][:i]
        V2 = np.linalg.svd(A2)[2][:j]
        return float(np.sum((V1 @ V2.T) ** 2) / (i * j))
    msg = _fails("subspace_similarity", subspace_similarity, "not i * j")
    assert "expected  1" in msg and "got       0.333333" in msg               # the same row space, i = j = 3


def test_exception_and_bad_return_type():
    def boom(x):
        raise ZeroDivisionError("oops")
    msg = _fails("softmax_forward", boom, "raised ZeroDivisionError: oops", "inputs: x (2, 3)")
    assert "test_exercises.py" in msg   # points at the learner's line

    def returns_string(x):
        return "hello"
    _fails("softmax_forward", returns_string, "wrong type")

    _fails("softmax_forward", 42, "expected a function")


def test_correct_alternative_solutions_pass():
    """Solutions written differently from the references must not fail on rounding."""
    def softmax_backward(y, g):
        V = y.shape[-1]
        J = y[..., :, None] * (np.eye(V) - y[..., None, :])      # (..., V, V) full Jacobian
        return np.einsum("...ij,...i->...j", J, g)

    def layer_norm_backward(x, gamma, g, eps):
        C = x.shape[-1]
        mu = x.mean(-1, keepdims=True)
        var = (x * x).mean(-1, keepdims=True) - mu * mu
        rstd = (var + eps) ** -0.5
        xhat = (x - mu) * rstd
        dxhat = g * gamma
        dvar = np.sum(dxhat * (x - mu), -1, keepdims=True) * -0.5 * rstd ** 3
        dmu = -np.sum(dxhat * rstd, -1, keepdims=True) - 2 * dvar * np.mean(x - mu, -1, keepdims=True)
        dx = dxhat * rstd + dvar * 2 * (x - mu) / C + dmu / C
        return dx, np.einsum("nc,nc->c", g, xhat), g.sum(0)

    def effective_rank(s):
        p = s[s > 0] / s.sum()
        return float(np.exp(-(p @ np.log(p))))

    for name, f in [("softmax_backward", softmax_backward),
                    ("layer_norm_backward", layer_norm_backward),
                    ("effective_rank", effective_rank)]:
        res = check(name, f)
        assert res.passed, res.message


# ---------------------------------------------------------------- check_file


def test_check_file_correct_and_wrong(tmp_path):
    good = tmp_path / "good.py"
    good.write_text(textwrap.dedent("""
        import numpy as np

        def lora_forward(x, W0, A, B, scaling):
            return x @ W0.T + scaling * (x @ A.T) @ B.T
    """))
    res = check_file("lora_forward", good)
    assert res.passed, res.message

    bad = tmp_path / "bad.py"
    bad.write_text("def lora_forward(x, W0, A, B, scaling):\n    return x @ W0.T + (x @ A.T) @ B.T\n")
    res = check_file("lora_forward", str(bad))
    assert not res.passed and "forget scaling" in res.message


def test_check_file_problems(tmp_path):
    misnamed = tmp_path / "misnamed.py"
    misnamed.write_text("def my_merge(W0, A, B, scaling):\n    return W0 + scaling * B @ A\n")
    res = check_file("merge", misnamed)
    assert not res.passed
    assert "no function named 'merge'" in res.message and "my_merge" in res.message

    broken = tmp_path / "broken.py"
    broken.write_text("def merge(W0, A, B, scaling)\n    return W0\n")
    res = check_file("merge", broken)
    assert not res.passed and "SyntaxError" in res.message

    res = check_file("merge", tmp_path / "missing.py")
    assert not res.passed and "no such file" in res.message


def test_check_file_on_a_copied_stub(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text(stub_source("choose_rank"))
    res = check_file("choose_rank", path)
    assert not res.passed and "NotImplementedError" in res.message


# ---------------------------------------------------------------- check_file runs the file in a child process


# one child process per file: a sample of the output kinds (int, float, one array, a tuple of arrays with
# shape arguments or a bool); every reference also passes in-process in test_reference_passes
@pytest.mark.parametrize("name", ["lora_param_count", "lora_scaling", "softmax_forward", "broadcast_add_backward",
                                  "attention_backward"])
def test_check_file_passes_reference_solutions(name):
    res = check_file(name, EXERCISES[name].solution_path)
    assert res.passed, res.message
    assert res.message.startswith(f"PASS {name}:")


def _write(tmp_path, text, fname="mine.py"):
    path = tmp_path / fname
    path.write_text(textwrap.dedent(text))
    return path


def test_check_file_infinite_loop_in_the_function_times_out(tmp_path):
    path = _write(tmp_path, """
        def lora_param_count(d_in, d_out, r, n_matrices):
            while n_matrices == 1:          # loops on the third hand-picked case only
                pass
            return n_matrices * r * (d_in + d_out)
    """)
    res = check_file("lora_param_count", path, timeout=1.0)
    assert not res.passed
    assert res.message.startswith('FAIL lora_param_count: your function did not return within 1 s on the '
                                  'hand-picked case "one matrix, r=1"')
    assert "inputs: d_in=10, d_out=3, r=1, n_matrices=1" in res.message and "infinite loop" in res.message


def test_check_file_infinite_loop_at_import_times_out(tmp_path):
    path = _write(tmp_path, """
        while True:
            pass

        def merge(W0, A, B, scaling):
            return W0 + scaling * B @ A
    """)
    res = check_file("merge", path, timeout=1.0)
    assert not res.passed
    assert f"importing {path} did not finish within 1 s" in res.message and "module-level" in res.message


@pytest.mark.parametrize("where", ["function", "import"])
def test_check_file_exit_without_verdict_is_a_fail(tmp_path, where):
    exit_in_function = where == "function"
    path = _write(tmp_path, f"""
        import os
        print("PASS merge: a learner's print is not a verdict")
        if not {exit_in_function}:
            os._exit(0)

        def merge(W0, A, B, scaling):
            os._exit(0)
    """)
    res = check_file("merge", path)
    assert not res.passed
    assert res.message.startswith("FAIL merge: no verdict: the Python process running your file exited with "
                                  "code 0 ")
    where = 'during the hand-picked case "non-square W0 (4, 6)' if exit_in_function else "while importing"
    assert f"code 0 {where}" in res.message
    assert "os._exit()" in res.message


@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_check_file_killed_child_is_a_fail(tmp_path):
    path = _write(tmp_path, """
        import os, signal

        def merge(W0, A, B, scaling):
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    res = check_file("merge", path)
    assert not res.passed and "was killed by SIGKILL" in res.message


def test_cli_check_exits_nonzero_without_verdict(tmp_path, capsys):
    from minilora.cli import main

    bad = _write(tmp_path, "import os\n\ndef merge(W0, A, B, scaling):\n    os._exit(0)\n")
    assert main(["exercises", "check", "merge", "--file", str(bad)]) == 1
    assert "FAIL merge: no verdict" in capsys.readouterr().out
    good = _write(tmp_path, "def merge(W0, A, B, scaling):\n    return W0 + scaling * B @ A\n", "good.py")
    assert main(["exercises", "check", "merge", "--file", str(good)]) == 0
    assert capsys.readouterr().out.startswith("PASS merge:")
    assert main(["exercises", "list"]) == 0
    assert "lora_scaling" in capsys.readouterr().out


def test_cli_without_hypothesis_prints_one_line(tmp_path):
    """hypothesis is a main dependency, but if it is missing the command says so in one line."""
    code = textwrap.dedent("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "hypothesis" or name.startswith("hypothesis."):
                    raise ImportError("No module named 'hypothesis'", name="hypothesis")
        sys.meta_path.insert(0, Block())
        from minilora.cli import main
        sys.exit(main(["exercises", "list"]))
    """)
    env = dict(os.environ, PYTHONPATH=str(EXERCISES["merge"].stub_path.parents[3]))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs hypothesis" in lines[0] and "pip install" in lines[0]


def test_adapter_backward_without_the_skip_path():
    def adapter_backward(h, W_down, b_down, W_up, b_up, g):
        z = h @ W_down.T + b_down
        dz = (g @ W_up) * (z > 0)
        return dz @ W_down, dz.T @ h, dz.sum(0), g.T @ np.maximum(z, 0), g.sum(0)
    _fails("adapter_backward", adapter_backward, "output 'dh' is wrong", "skip connection")


def test_adapter_backward_without_the_relu_derivative():
    def adapter_backward(h, W_down, b_down, W_up, b_up, g):
        z = h @ W_down.T + b_down
        dz = g @ W_up
        return g + dz @ W_down, dz.T @ h, dz.sum(0), g.T @ np.maximum(z, 0), g.sum(0)
    _fails("adapter_backward", adapter_backward, "derivative is missing")


def test_prefix_attention_mask_with_an_unshifted_triangle():
    def prefix_attention_mask(T, P):
        return np.tril(np.ones((T, P + T), dtype=bool))
    _fails("prefix_attention_mask", prefix_attention_mask, "hides prefix slots")


def test_prefix_attention_mask_with_the_prefix_hidden():
    def prefix_attention_mask(T, P):
        return np.concatenate([np.zeros((T, P), bool), np.tril(np.ones((T, T), bool))], axis=1)
    _fails("prefix_attention_mask", prefix_attention_mask, "visible to every token")
