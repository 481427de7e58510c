"""The lesson-11 exercises (catalog/many_adapters.py): references pass, classic mistakes fail with their hint."""
import numpy as np
import pytest

from minilora.exercises import EXERCISES, check, check_file


def _fails(name, func, *needles):
    res = check(name, func)
    assert not res.passed, f"{name}: a wrong solution passed"
    for needle in needles:
        assert needle.lower() in res.message.lower(), f"{needle!r} not in:\n{res.message}"


@pytest.mark.parametrize("name", ["vera_param_count", "mixed_batch_forward"])
def test_reference_passes_and_file_check(name):
    assert check(name, EXERCISES[name].reference).passed
    assert check_file(name, EXERCISES[name].solution_path).passed


def test_vera_count_known_value():
    assert EXERCISES["vera_param_count"].reference(768, 2304, 256, 12) == 30720


@pytest.mark.parametrize("wrong, needle", [
    (lambda d_in, d_out, r, n: n * r * (d_in + d_out), "that is LoRA's count"),
    (lambda d_in, d_out, r, n: n * (r + d_out) + r * (d_in + d_out), "do not count, even once"),
    (lambda d_in, d_out, r, n: n * (r + d_in), "d_out entries, not d_in"),
    (lambda d_in, d_out, r, n: r + d_out, "multiply by n_matrices"),
])
def test_vera_count_mistakes(wrong, needle):
    def vera_param_count(d_in, d_out, r, n_matrices):
        return wrong(d_in, d_out, r, n_matrices)
    _fails("vera_param_count", vera_param_count, "expected", needle)


def test_mixed_batch_minus_one_is_the_last_adapter():
    def mixed_batch_forward(x, W0, A, B, scaling, adapter_ids):
        y = x @ W0.T
        for n, k in enumerate(adapter_ids):
            y[n] += scaling[k] * (B[k] @ (A[k] @ x[n]))          # A[-1]: the last adapter
        return y
    _fails("mixed_batch_forward", mixed_batch_forward, "A[-1] indexes from the end")


def test_mixed_batch_every_adapter_on_every_row():
    def mixed_batch_forward(x, W0, A, B, scaling, adapter_ids):
        return x @ W0.T + sum(scaling[k] * (x @ A[k].T) @ B[k].T for k in range(A.shape[0]))
    _fails("mixed_batch_forward", mixed_batch_forward, "every adapter to every row")


def test_mixed_batch_forgotten_scaling():
    def mixed_batch_forward(x, W0, A, B, scaling, adapter_ids):
        y = x @ W0.T
        for k in range(A.shape[0]):
            rows = np.flatnonzero(adapter_ids == k)
            y[rows] += (x[rows] @ A[k].T) @ B[k].T
        return y
    _fails("mixed_batch_forward", mixed_batch_forward, "scaling[k]")
