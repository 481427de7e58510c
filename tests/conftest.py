"""Shared pytest configuration: the hypothesis `ci` profile (deterministic, no deadlines)."""
import os

# One BLAS thread for the tests and the notebooks they start (kernels inherit the environment):
# the test shapes are small, and OpenBLAS threads on a busy 2-core machine wait for each other
# (3-50x slower). Set before NumPy is first imported; a value the user set wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", deadline=None, derandomize=True, max_examples=30,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", deadline=None, max_examples=30)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
