"""What this machine's CPU offers, and the training precision that follows from it.

bf16 autocast is only fast where the hardware computes bf16 natively: on x86 AVX512_BF16 or AMX-BF16,
on ARM the BF16 extension, on a GPU what torch says. Elsewhere torch emulates it, and a training step
gets many times slower (a 1280 x 384 -> 1536 linear forward + backward on a Zen 2 core: 1,646 ms under
bf16 autocast against 72 ms in fp32), so `--mixed-precision auto` (the default) uses bf16 only natively.
"""

from __future__ import annotations

import platform
import warnings
from functools import cache

MIXED_PRECISION_CHOICES = ("auto", "no", "bf16")
_BF16_FLAGS = {"x86": ("avx512_bf16", "amx_bf16"), "arm": ("bf16",)}
_SHOWN = ("avx2", "fma", "popcnt", "avx512f", "avx512bw", "avx512vl", "avx512_vpopcntdq", "avx512_vnni", "avx_vnni",
          "avx512_bf16", "amx_bf16", "amx_int8", "asimd", "asimddp", "bf16", "i8mm", "sve")


@cache
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if not line.strip():
                    if fields:
                        break
                    continue
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_flags() -> frozenset[str]:
    info = _cpuinfo()
    return frozenset((info.get("flags") or info.get("Features") or "").split())


def cpu_model() -> str:
    info = _cpuinfo()
    return info.get("model name") or info.get("Hardware") or info.get("CPU part") or platform.processor() or "unknown"


def cpu_arch() -> str:
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64", "i386", "i686"):
        return "x86"
    if machine in ("aarch64", "arm64") or machine.startswith("arm"):
        return "arm"
    return machine or "unknown"


def shown_cpu_features() -> list[str]:
    """The features that matter to bebert's kernels and training precision, as this CPU reports them."""
    flags = cpu_flags()
    return [f for f in _SHOWN if f in flags]


def native_bf16_cpu() -> tuple[bool, str]:
    """(whether this CPU computes bf16 natively, why)."""
    wanted = _BF16_FLAGS.get(cpu_arch())
    if wanted is None:
        return False, f"unknown CPU architecture {platform.machine()!r}"
    have = [f for f in wanted if f in cpu_flags()]
    if have:
        return True, f"this CPU has {', '.join(f.upper() for f in have)}"
    if not cpu_flags():
        return False, "the CPU's features cannot be read here"
    return False, f"this CPU has no native bf16 ({' / '.join(f.upper() for f in wanted)} missing): torch would emulate it"


def resolve_mixed_precision(requested: str, device_type: str, warn=None) -> tuple[str, str]:
    """("no" | "bf16", the reason) for `--mixed-precision requested` on a `device_type` device.

    "auto" picks bf16 only where it runs natively; an explicit "bf16" is honoured, with a warning
    (once per process) where it would be emulated.
    """
    if requested not in MIXED_PRECISION_CHOICES:
        raise ValueError(f"--mixed-precision must be one of {', '.join(MIXED_PRECISION_CHOICES)}, got {requested!r}")
    if requested == "no":
        return "no", "fp32 (--mixed-precision no)"
    if device_type == "cuda":
        import torch

        native, why = torch.cuda.is_bf16_supported(), "this GPU " + ("supports bf16" if torch.cuda.is_bf16_supported() else "has no bf16")
    elif device_type == "cpu":
        native, why = native_bf16_cpu()
    else:
        native, why = False, f"bf16 support on {device_type} is not known to bebert"
    if requested == "auto":
        return ("bf16", f"bf16 autocast (auto: {why})") if native else ("no", f"fp32 (auto: {why})")
    if not native and why not in _WARNED:
        _WARNED.add(why)
        message = f"--mixed-precision bf16: {why}; training will be much slower than fp32 (use auto or no)"
        warn(message) if warn is not None else warnings.warn(message, RuntimeWarning, stacklevel=2)
    return "bf16", f"bf16 autocast (--mixed-precision bf16; {why})"


_WARNED: set[str] = set()
