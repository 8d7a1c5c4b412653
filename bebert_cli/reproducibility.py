"""What makes a training run repeatable, and what it cannot control.

Every training command calls `seed_all(seed)` before it creates any random tensor (a new
classification head, a smaller student, hashed embeddings), so the same options and seed give
bit-identical weights on the same machine with the same thread count. What still changes float
results (the thread count splits reductions differently, the kernel backend, library versions,
the CPU or GPU) is recorded by `uncontrolled()` in bebert_run.json.
"""

from __future__ import annotations


def seed_all(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (every device's) in one place."""
    from accelerate.utils import set_seed

    set_seed(seed)


def uncontrolled() -> dict:
    """The facts a seed does not pin down, yet that can change the trained weights' last bits."""
    import torch

    from bebert_cli import kernels
    from bebert_cli.hardware import cpu_model

    info = {
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "kernel_backend": kernels.backend(),
        "cpu": cpu_model(),
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
    }
    return info
