"""Switching a packed model between runtimes.

"simulated" unpacks the signs and runs the same float ops as training (bit-identical to the trained
student); "packed" routes PackedLinear and Bi-Attention through the bit kernels (`ops.py`), gives w1a4 /
w1a8 FFNs an in-place GELU (`inplace_act.py`), and every eligible BiBERT, w1a4 or w1a8 layer a
fused forward (`fused_layer.py`, `fused_lsq.py`). Both give the same outputs bit for bit; only the speed differs.
Small forwards may run on one thread (`serial.py`).
"""

from __future__ import annotations

from bebert_cli.quant import inplace_act, serial
from bebert_cli.quant.attention import AttentionQuant
from bebert_cli.quant.fused_layer import install
from bebert_cli.quant.layers import PackedEmbedding, PackedLinear

RUNTIMES = ("simulated", "packed")


def set_runtime(model, runtime: str) -> None:
    """Switch every packed layer between the simulated and the bit-kernel runtime."""
    for m in model.modules():
        if isinstance(m, (PackedLinear, AttentionQuant)):
            m.runtime = runtime


def runtime_of(model) -> str:
    """The runtime `model` really runs: "packed" (bit kernels), "simulated" (fake-quant), or "fp" when it
    has no binary layer at all (a full-precision checkpoint, whatever --runtime asked for)."""
    runtimes = {m.runtime for m in model.modules() if isinstance(m, (PackedLinear, AttentionQuant))}
    if not runtimes:
        return "simulated" if any(isinstance(m, PackedEmbedding) for m in model.modules()) else "fp"
    return "packed" if runtimes == {"packed"} else "simulated"


def prepare_packed_runtime(model) -> None:
    """Switch a packed model to the kernels and prepare every binary layer once, at load time."""
    set_runtime(model, "packed")
    for m in model.modules():
        if isinstance(m, PackedLinear):
            m.drop_kernel_state()
            m.kernel_state()
    inplace_act.install(model)  # w1a4 / w1a8: GELU over the up-projection's output (the same bits)
    install(model)  # fused layers (after the GELU above, which they call): identical outputs, see fused_layer
    serial.install(model)  # small forwards on one thread under a passive OpenMP wait policy
