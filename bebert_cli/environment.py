"""What a run ran on: versions, CPU features, the kernel backend and why, threads. `bebert env` prints it;
`bebert eval` and the benchmarks record the kernel part beside their numbers."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

from bebert_cli import __version__, hardware

PACKAGES = ("torch", "transformers", "accelerate", "datasets", "safetensors", "tokenizers", "huggingface_hub",
            "typer", "rich", "numpy")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def kernel_info() -> dict:
    """The compiled-kernel backend in use, the ones available, and why this one was chosen."""
    from bebert_cli import kernels

    chosen, available = kernels.backend(), kernels.available_backends()
    forced = os.environ.get("BEBERT_KERNEL_BACKEND", "").strip()
    if os.environ.get("BEBERT_DISABLE_KERNELS", "").strip() not in ("", "0"):
        why = "BEBERT_DISABLE_KERNELS is set: pure torch"
    elif chosen == "torch" and len(available) == 1:
        why = f"compiled kernels unavailable ({getattr(kernels, '_reason', '') or 'unknown reason'}): pure torch"
    elif forced and forced == chosen:
        why = f"forced by BEBERT_KERNEL_BACKEND={forced}"
    elif forced:
        why = f"BEBERT_KERNEL_BACKEND={forced} is not available here; using the best this CPU has"
    else:
        why = "the best level this CPU supports"
    info = {"backend": chosen, "reason": why, "available": available,
            "fused_layers": os.environ.get("BEBERT_FUSED_LAYERS", "1").strip() not in ("0", "false", "no")}
    if chosen == "avx512_vpopcntdq":  # which of its two 4-bit (w1a4) kernels runs, and why
        from bebert_cli.errors import UsageError

        try:
            info["lowbit_kernel"] = kernels.lowbit_kernel()
        except UsageError as exc:
            info["lowbit_kernel"] = {"kernel": None, "why": f"invalid: {exc}"}
    ext = getattr(kernels, "_ext", None)
    if ext is not None and hasattr(ext, "info"):
        built = ext.info()
        info["openmp"] = bool(built.get("openmp", False))
    info["pool"] = kernels.pool_available()  # the revocable pool of small forwards (quant/serial.py)
    return info


def threads_info() -> dict:
    import torch

    from bebert_cli.errors import UsageError
    from bebert_cli.quant.serial import serial_max_tokens

    try:
        serial = serial_max_tokens()  # "measured", or packed forwards of at most this many tokens on one thread
    except UsageError as exc:
        serial = f"invalid: {exc}"
    return {"torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY") or "unset (OpenMP runtime default)",
            "serial_max_tokens": serial}


def report() -> dict:
    """Everything a bug report needs, as one JSON-ready dict."""
    precision, reason = hardware.resolve_mixed_precision("auto", "cpu")
    return {
        "bebert": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {p: _version(p) for p in PACKAGES},
        "cpu": {"model": hardware.cpu_model(), "arch": hardware.cpu_arch(), "features": hardware.shown_cpu_features(),
                "native_bf16": hardware.native_bf16_cpu()[0]},
        "kernels": kernel_info(),
        "threads": threads_info(),
        "mixed_precision_auto": {"cpu": precision, "reason": reason},
    }
