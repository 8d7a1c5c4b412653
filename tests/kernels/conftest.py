"""The kernel tests run once per backend this machine has."""

import pytest

from bebert_cli import kernels as bk

COMPILED = ["avx512_vpopcntdq", "avx2", "scalar"]


def _select(name):
    if name not in bk.available_backends():
        pytest.skip(f"{name} not available here ({bk.available_backends()})")
    return bk.set_backend(name)


@pytest.fixture(params=COMPILED)
def backend(request):
    """Each compiled backend in turn."""
    prev = _select(request.param)
    yield request.param
    bk.set_backend(prev)


@pytest.fixture(params=COMPILED + ["torch"])
def any_backend(request):
    """Each compiled backend and the pure-torch fallback."""
    prev = _select(request.param)
    yield request.param
    bk.set_backend(prev)
