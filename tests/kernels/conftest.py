"""The kernel tests run once per backend this machine has, or only the one BEBERT_KERNEL_BACKEND forces.

The CI runs the suite once per backend with BEBERT_KERNEL_BACKEND set; a forced backend that this
process cannot run is an error (bk.forced_backend() raises), never a silent switch to another one.
The backends that actually ran are listed at the end of the pytest run.
"""

import pytest

from bebert_cli import kernels as bk

_FORCED = bk.forced_backend()
_ALL = [_FORCED] if _FORCED else bk.available_backends()  # fastest first, "torch" last
COMPILED = [b for b in _ALL if b != "torch"]
_RAN: set[str] = set()


def _select(name):
    _RAN.add(name)
    return bk.set_backend(name)


@pytest.fixture(params=COMPILED or [pytest.param("compiled", marks=pytest.mark.skip(reason="no compiled backend"))])
def backend(request):
    """Each compiled backend in turn (only the forced one under BEBERT_KERNEL_BACKEND)."""
    prev = _select(request.param)
    yield request.param
    bk.set_backend(prev)


@pytest.fixture(params=_ALL)
def any_backend(request):
    """Each compiled backend and the pure-torch fallback (only the forced one under BEBERT_KERNEL_BACKEND)."""
    prev = _select(request.param)
    yield request.param
    bk.set_backend(prev)


def pytest_terminal_summary(terminalreporter):
    forced = f" (forced by BEBERT_KERNEL_BACKEND={_FORCED})" if _FORCED else ""
    terminalreporter.write_line(f"kernel backends exercised: {', '.join(sorted(_RAN)) or 'none'}{forced}")
